//! `lb run`: serve the config until SIGINT or SIGTERM.
use std::path::Path;

use anyhow::{Result, bail};
use lb_userspace::{config, object};

pub fn run(path: &Path, mode: Option<config::Mode>, bpf_object: Option<&Path>) -> Result<()> {
    let cfg = config::load(path)?;
    let mode = mode.unwrap_or(cfg.agent.mode);
    if !matches!(mode, config::Mode::Splice) {
        let obj = object::resolve(bpf_object)?;
        tracing::info!(origin = %obj.origin, "eBPF object verified");
    }
    bail!("forwarding is not implemented yet in this build ({mode:?} mode)")
}
