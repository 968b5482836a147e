//! `cargo xtask bench`: benchmarks, each printing its settings and figures.

use std::{path::Path, process::Command};

use anyhow::Result;

use crate::cmd;

/// The benchmarks there are.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Which {
    /// Every benchmark.
    All,
    /// Maglev table construction time and disruption figures.
    Maglev,
    /// ns/packet of the XDP program vs a no-op XDP program (root).
    Datapath,
    /// Time for a dead backend to stop getting new flows, 3 fault kinds (root).
    Failover,
    /// Maglev rebuild + swap for 1000 backends; agent memory at 100x100 (root).
    Agent,
}

/// Runs the chosen benchmarks.
pub fn run(root: &Path, which: Which) -> Result<()> {
    match which {
        Which::Maglev => maglev(root),
        Which::Datapath => datapath(root),
        Which::Failover => release_bin(root, "lb-failover"),
        Which::Agent => release_bin(root, "lb-scale"),
        Which::All => maglev(root)
            .and_then(|()| datapath(root))
            .and_then(|()| release_bin(root, "lb-failover"))
            .and_then(|()| release_bin(root, "lb-scale")),
    }
}

fn datapath(root: &Path) -> Result<()> {
    release_bin(root, "lb-bench")
}

/// Builds the release binaries and runs `bin` (root: namespaces, XDP).
fn release_bin(root: &Path, bin: &str) -> Result<()> {
    if !crate::prereqs::is_root() {
        anyhow::bail!("this benchmark creates namespaces and loads XDP programs: run it as root");
    }
    crate::ebpf::build_with_binaries(root)?;
    cmd::run(Command::new(root.join("target/release").join(bin)).current_dir(root))
}

fn maglev(root: &Path) -> Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    cmd::run(Command::new(cargo).current_dir(root).args([
        "bench",
        "--package",
        "lb-common",
        "--features",
        "alloc",
        "--bench",
        "maglev",
    ]))
}
