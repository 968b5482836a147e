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
}

/// Runs the chosen benchmarks.
pub fn run(root: &Path, which: Which) -> Result<()> {
    match which {
        Which::Maglev => maglev(root),
        Which::Datapath => datapath(root),
        Which::All => maglev(root).and_then(|()| datapath(root)),
    }
}

fn datapath(root: &Path) -> Result<()> {
    if !crate::prereqs::is_root() {
        anyhow::bail!("the datapath benchmark loads XDP programs: run it as root");
    }
    crate::ebpf::build_with_binaries(root)?;
    cmd::run(Command::new(root.join("target/release/lb-bench")).current_dir(root))
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
