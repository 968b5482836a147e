//! `lb check`: validate a config and print what it would run.
use std::path::Path;

use anyhow::Result;
use lb_userspace::config::{self, Mode};

pub fn run(path: &Path) -> Result<()> {
    // The error already names the file and every problem with its fix.
    let cfg = config::load(path)?;
    print!("{}", cfg.summary());
    // A note, not an error: the file may be checked on another host than
    // the one it is for. `lb run` refuses to start without them.
    let absent = absent_interfaces(&cfg);
    if cfg.agent.mode != Mode::Splice && !absent.is_empty() {
        println!(
            "note: this host has no interface {} (agent.interfaces); `lb run` here would \
             refuse to start",
            absent.iter().map(|m| format!("{m:?}")).collect::<Vec<_>>().join(", ")
        );
    }
    Ok(())
}

/// The `agent.interfaces` entries of `cfg` this host has no interface for.
pub fn absent_interfaces(cfg: &config::Config) -> Vec<&str> {
    cfg.agent
        .interfaces
        .iter()
        .map(String::as_str)
        .filter(|name| nix::net::if_::if_nametoindex(*name).is_err())
        .collect()
}
