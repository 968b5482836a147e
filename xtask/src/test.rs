//! `cargo xtask test`: every check CI runs, fastest first.

use std::{path::Path, process::Command};

use anyhow::Result;

use crate::{
    cmd, deb,
    ebpf::{self, Profile},
    prereqs, toolchain,
};

/// Runs formatting, lints, the eBPF build and every test.
pub fn run(root: &Path) -> Result<()> {
    cmd::run(cargo(root).args(["fmt", "--all", "--check"]))?;
    // The object first: `lb` embeds it, and its build script must see it
    // before the host crates are linted and tested.
    let tc = toolchain::ensure(root)?;
    prereqs::ensure_packages(prereqs::TEST_PACKAGES, "")?;
    prereqs::ensure_packages(prereqs::BROWSER_PACKAGES, "")?;
    prereqs::ensure_packages(prereqs::DNS_PACKAGES, "")?;
    prereqs::ensure_packages(prereqs::BGP_PACKAGES, "")?;
    eprintln!("{tc}");
    ebpf::build(root, &tc, Profile::Release)?;
    ebpf::clippy(root, &tc)?;
    cmd::run(cargo(root).args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
    // The object was just built: a test that finds none must fail.
    cmd::run(cargo(root).args(["test", "--all-targets"]).env("LB_REQUIRE_EBPF_OBJECT", "1"))?;
    cmd::run(cargo(root).args(["test", "--doc"]))?;
    // The package: built from the release binary, installed, checked and
    // removed in a throwaway copy of this host.
    deb::run(root, true)?;
    eprintln!("xtask test: all checks passed");
    Ok(())
}

fn cargo(root: &Path) -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(root);
    c
}
