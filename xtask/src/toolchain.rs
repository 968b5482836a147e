//! Which compiler builds the eBPF crate, and making sure it is there.
//!
//! `bpfel-unknown-none` needs `-Z build-std=core`, so a library source that
//! matches the compiler exactly, and a bpf-linker built against the same LLVM
//! major. Two setups give that (see ../shared/notes/toolchain.md):
//! - the usual aya setup: a rustup nightly with rust-src and bpf-linker on PATH;
//! - Debian's Rust (rustc-web with rust-web-src, LLVM 22) with
//!   `RUSTC_BOOTSTRAP=1` and a bpf-linker built against Debian's LLVM 22 in
//!   the project's `.tools/`. This is what a fresh machine here gets.

use std::{
    ffi::OsString,
    fmt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Result;

use crate::{cmd, prereqs};

/// A toolchain able to build and lint the eBPF crate.
#[derive(Debug)]
pub enum Toolchain {
    /// rustup's nightly with rust-src; bpf-linker found on PATH.
    RustupNightly,
    /// Debian's Rust at /usr/bin with bpf-linker in `tools_bin`.
    Debian {
        /// Directory holding the project's bpf-linker.
        tools_bin: PathBuf,
    },
}

impl fmt::Display for Toolchain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Toolchain::RustupNightly => {
                write!(f, "eBPF toolchain: rustup nightly + bpf-linker on PATH")
            }
            Toolchain::Debian { tools_bin } => write!(
                f,
                "eBPF toolchain: Debian rustc at /usr/bin + bpf-linker in {}",
                tools_bin.display()
            ),
        }
    }
}

impl Toolchain {
    /// A `cargo` command set up to build for `bpfel-unknown-none`.
    pub fn cargo(&self) -> Command {
        match self {
            Toolchain::RustupNightly => {
                let mut c = Command::new("cargo");
                c.arg("+nightly");
                c
            }
            Toolchain::Debian { tools_bin } => {
                let mut c = Command::new("/usr/bin/cargo");
                // /usr/bin before ~/.cargo/bin so `cargo clippy` finds Debian's
                // cargo-clippy, not rustup's proxy for another compiler.
                let mut path = vec![tools_bin.clone(), PathBuf::from("/usr/bin")];
                path.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
                c.env(
                    "PATH",
                    std::env::join_paths(path).unwrap_or_else(|_| OsString::from("/usr/bin")),
                )
                .env("RUSTC", "/usr/bin/rustc")
                .env("RUSTC_BOOTSTRAP", "1")
                .env_remove("RUSTUP_TOOLCHAIN")
                .env_remove("RUSTC_WRAPPER")
                .env_remove("CARGO_BUILD_RUSTC");
                c
            }
        }
    }
}

/// Finds a usable toolchain, installing the Debian one if nothing else fits.
pub fn ensure(root: &Path) -> Result<Toolchain> {
    if rustup_nightly_ready() {
        return Ok(Toolchain::RustupNightly);
    }
    prereqs::ensure_debian_packages()?;
    let tools_bin = prereqs::ensure_bpf_linker(root)?;
    Ok(Toolchain::Debian { tools_bin })
}

/// The usual aya setup: `rustup run nightly` works, its sysroot has the
/// library source, and a bpf-linker is on PATH.
fn rustup_nightly_ready() -> bool {
    let Some(sysroot) =
        cmd::output(Command::new("rustup").args(["run", "nightly", "rustc", "--print", "sysroot"]))
    else {
        return false;
    };
    let src = Path::new(sysroot.trim()).join("lib/rustlib/src/rust/library/core");
    src.is_dir() && cmd::output(Command::new("bpf-linker").arg("--version")).is_some()
}
