//! `lb stop`: remove the datapath (program, pins, state) and stop the agent.

use std::path::Path;

use anyhow::{Context, Result, bail};
use lb_userspace::{
    config,
    control::{Request, Response, client},
    datapath::pins::{self, Pins},
};

pub fn run(config_path: &Path) -> Result<()> {
    let cfg = config::load(config_path)?;
    let control = &cfg.agent.control_socket;
    match client::request(control, &Request::Stop) {
        Ok(Response::Done { message }) => {
            println!("{message}");
            Ok(())
        }
        Ok(Response::Error { message }) => bail!("{message}"),
        Ok(_) => bail!("the agent answered something else"),
        // No agent: what the last one left is removed here. Unpinned
        // links detach at once, since no process holds them.
        Err(client::ClientError::Connect { .. }) => {
            let pins = Pins::new(&cfg.agent.pin_dir);
            pins.remove().with_context(|| format!("removing {}", pins.dir().display()))?;
            let _ = std::fs::remove_file(pins::state_file(control));
            let _ = std::fs::remove_file(control);
            println!("no agent running; removed the pinned datapath in {}", pins.dir().display());
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}
