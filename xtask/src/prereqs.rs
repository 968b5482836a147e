//! Installing the Debian eBPF toolchain, idempotently.
//!
//! Each step first checks whether its result is already there, so a second
//! run costs a dpkg query and a `--version` call.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::cmd;

/// Debian packages: the compiler with its library source and clippy (1.96,
/// LLVM 22), and what building bpf-linker against LLVM 22 needs.
pub const APT_PACKAGES: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "rust-web-src",
    "rust-web-clippy",
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
];

/// What the namespace tests (and the demo) run: `ip`, `ethtool` (veth
/// offloads), `hping3` (the spoofed SYN and ACK floods of `flood_mode.rs`,
/// `syn_challenge.rs` and `cargo xtask bench flood`), `nft` (the NAT
/// gateway of `syn_challenge.rs`, the blackholes of `failover.rs` and
/// `edges.rs`).
pub const TEST_PACKAGES: &[&str] = &["iproute2", "ethtool", "hping3", "nftables"];

/// What only the test suite runs: headless `chromium`, which the status page
/// test loads the page in (about 350 MB with its libraries).
pub const BROWSER_PACKAGES: &[&str] = &["chromium"];

/// What only the DNS test runs: dnsmasq, as the DNS server whose records
/// it changes. `dnsmasq-base` is the binary alone: the `dnsmasq` package
/// would also start a system-wide server on port 53.
pub const DNS_PACKAGES: &[&str] = &["dnsmasq-base"];

/// What only the announcement test runs (and `bird -p` checks the shipped
/// `config/bird.conf.example` with): BIRD 2, one daemon in the balancer's
/// namespace exporting lb's routes by BGP, one in a router namespace
/// learning them.
pub const BGP_PACKAGES: &[&str] = &["bird2"];

/// The bpf-linker release known to work with Debian's LLVM 22.
pub const BPF_LINKER_VERSION: &str = "0.13.0";

/// Installs the missing eBPF toolchain packages, or explains how.
pub fn ensure_debian_packages() -> Result<()> {
    ensure_packages(
        APT_PACKAGES,
        "\nor use a rustup nightly with rust-src and bpf-linker on PATH:\n    \
         rustup toolchain install nightly --component rust-src\n    cargo install bpf-linker",
    )
}

/// Installs the missing Debian `packages`, or explains how when it cannot;
/// `alternative` is appended to that explanation.
pub fn ensure_packages(packages: &[&str], alternative: &str) -> Result<()> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !dpkg_installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let install = format!("apt-get install -y --no-install-recommends {}", missing.join(" "));
    let is_debian = Path::new("/etc/debian_version").exists();
    let is_root = is_root();
    if !is_debian || !is_root {
        bail!(
            "required packages are missing: {}.\n\
             {}Install them with:\n    sudo apt-get update\n    sudo {install}{alternative}",
            missing.join(", "),
            if is_debian {
                "Not running as root, so not installing it. "
            } else {
                "This is not Debian. "
            },
        );
    }
    eprintln!("installing Debian packages: {}", missing.join(" "));
    cmd::run(Command::new("apt-get").arg("update").arg("-qq"))?;
    cmd::run(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn dpkg_installed(pkg: &str) -> bool {
    cmd::output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
        .is_some_and(|s| s.trim() == "install ok installed")
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    cmd::output(Command::new("id").arg("-u")).is_some_and(|s| s.trim() == "0")
}

/// Builds bpf-linker against Debian's LLVM 22 into `<root>/.tools/bin`
/// unless the right version is already there. Returns that bin directory.
pub fn ensure_bpf_linker(root: &Path) -> Result<PathBuf> {
    let tools = root.join(".tools");
    let bin = tools.join("bin");
    let linker = bin.join("bpf-linker");
    if cmd::output(Command::new(&linker).arg("--version"))
        .is_some_and(|v| v.contains(BPF_LINKER_VERSION))
    {
        return Ok(bin);
    }
    // Keep cargo's build directory inside the project: `cargo install` leaves
    // it behind on failure, and it must not fill /tmp.
    let build_dir = tools.join("build");
    eprintln!("building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (about a minute)");
    cmd::run(
        Command::new("cargo")
            .args(["install", &format!("bpf-linker@{BPF_LINKER_VERSION}"), "--locked"])
            .args(["--no-default-features", "--features", "llvm-22", "--root"])
            .arg(&tools)
            .arg("--target-dir")
            .arg(&build_dir)
            // Without it llvm-sys finds /usr/bin/llvm-config (LLVM 14).
            .env("LLVM_PREFIX", "/usr/lib/llvm-22")
            .env_remove("RUSTFLAGS"),
    )
    .context("building bpf-linker failed; see the output above")?;
    fs::remove_dir_all(&build_dir).ok();
    Ok(bin)
}
