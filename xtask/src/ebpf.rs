//! Building and linting the eBPF crate.
//!
//! It has its own target directory (`target/ebpf`): it is built by another
//! compiler than the host crates, and sharing one directory would make each
//! toolchain rebuild the other's build scripts every time. The finished
//! object is copied to `target/bpf/lb-ebpf.o`, where `lb`'s build script
//! looks for it.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::{cmd, toolchain::Toolchain};

const TARGET: &str = "bpfel-unknown-none";

/// Cargo profile of the eBPF build.
#[derive(Debug, Clone, Copy)]
pub enum Profile {
    /// `dev` (still optimised: see the workspace's profile for lb-ebpf).
    Dev,
    /// `release`.
    Release,
}

impl Profile {
    /// `--release` or not.
    pub fn from_release(release: bool) -> Self {
        if release { Profile::Release } else { Profile::Dev }
    }

    fn dir(self) -> &'static str {
        match self {
            Profile::Dev => "debug",
            Profile::Release => "release",
        }
    }
}

/// Where `lb`'s build script picks the object up.
pub fn object_path(root: &Path) -> PathBuf {
    root.join("target/bpf/lb-ebpf.o")
}

fn ebpf_command(root: &Path, tc: &Toolchain, subcommand: &str) -> Command {
    let mut c = tc.cargo();
    c.current_dir(root)
        .arg(subcommand)
        .args(["--package", "lb-ebpf", "--target", TARGET, "-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(root.join("target/ebpf"))
        .env_remove("RUSTFLAGS")
        .env("CARGO_TARGET_BPFEL_UNKNOWN_NONE_RUSTFLAGS", "-C debuginfo=2 -C link-arg=--btf");
    c
}

/// Builds the program and publishes it at [`object_path`].
pub fn build(root: &Path, tc: &Toolchain, profile: Profile) -> Result<PathBuf> {
    let mut c = ebpf_command(root, tc, "build");
    if let Profile::Release = profile {
        c.arg("--release");
    }
    cmd::run(&mut c)?;
    let built = root.join("target/ebpf").join(TARGET).join(profile.dir()).join("lb-ebpf");
    let data = fs::read(&built).with_context(|| format!("reading {}", built.display()))?;
    if !data.windows(12).any(|w| w == b"LB_BUILD_ID=") {
        bail!("{} has no LB_BUILD_ID stamp; the linker dropped it", built.display());
    }
    let dest = object_path(root);
    // Rewriting an identical object would only make cargo rebuild `lb`.
    if fs::read(&dest).ok().as_deref() != Some(&data[..]) {
        fs::create_dir_all(dest.parent().context("object path has a parent")?)?;
        let tmp = dest.with_extension("o.tmp");
        fs::write(&tmp, &data)?;
        fs::rename(&tmp, &dest)?;
    }
    Ok(dest)
}

/// Lints the program with the compiler that builds it.
pub fn clippy(root: &Path, tc: &Toolchain) -> Result<()> {
    cmd::run(ebpf_command(root, tc, "clippy").args(["--release", "--", "-D", "warnings"]))
}

/// The release eBPF object, then the release `lb` (embedding it) and the
/// test binaries (`lb-demo`, `lb-bench`, `lbt-server`) in target/release.
pub fn build_with_binaries(root: &Path) -> Result<()> {
    let tc = crate::toolchain::ensure(root)?;
    build(root, &tc, Profile::Release)?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    cmd::run(Command::new(&cargo).current_dir(root).args([
        "build",
        "--release",
        "-p",
        "lb-userspace",
        "-p",
        "lb-tests",
        "--bins",
    ]))
}
