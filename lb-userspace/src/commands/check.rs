//! `lb check`: validate a config and print what it would run.
use std::path::Path;

use anyhow::Result;
use lb_userspace::config;

pub fn run(path: &Path) -> Result<()> {
    // The error already names the file and every problem with its fix.
    let cfg = config::load(path)?;
    print!("{}", cfg.summary());
    Ok(())
}
