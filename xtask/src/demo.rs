//! `cargo xtask demo`: build what is needed, then run the demo binary
//! (tests/src/bin/lb-demo.rs), which needs root for its namespaces.

use std::{path::Path, process::Command};

use anyhow::{Result, bail};

use crate::{cmd, ebpf, prereqs};

/// Builds the eBPF object, `lb` and the demo, then runs the demo.
pub fn run(root: &Path) -> Result<()> {
    if !prereqs::is_root() {
        bail!(
            "the demo creates network namespaces and loads XDP: run it as root (sudo -E cargo xtask demo)"
        );
    }
    prereqs::ensure_packages(prereqs::TEST_PACKAGES, "")?;
    ebpf::build_with_binaries(root)?;
    cmd::run(Command::new(root.join("target/release/lb-demo")).current_dir(root))
}
