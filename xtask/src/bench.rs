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
}

/// Runs the chosen benchmarks.
pub fn run(root: &Path, which: Which) -> Result<()> {
    match which {
        Which::All | Which::Maglev => maglev(root),
    }
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
