//! `lb stop`: remove the datapath (program, pins, state, VIP routes) and stop the agent.

use anyhow::{Context, Result, anyhow, bail};
use lb_userspace::{
    config::VipRoutes as VipRoutesSetting,
    control::{Request, Response, client},
    datapath::pins::{self, Pins},
    routes::{self, VipRoutes},
};

use super::target::Target;

pub fn run(target: &Target) -> Result<()> {
    let control = &target.socket;
    match target.try_request(&Request::Stop) {
        Ok(Response::Done { message }) => {
            println!("{message}");
            Ok(())
        }
        Ok(Response::Error { message }) => bail!("{message}"),
        Ok(_) => bail!("the agent answered something else"),
        // No agent: what the last one left is removed here. Unpinned
        // links detach at once, since no process holds them.
        Err(e @ client::ClientError::Connect { .. }) => {
            // A socket named alone does not say where its datapath is pinned.
            let Some(pin_dir) = target.pin_dir() else {
                return Err(anyhow!(
                    "{:#}; to remove the datapath a stopped agent left, name its config with \
                     --config FILE (for its agent.pin_dir)",
                    target.explain(e)
                ));
            };
            // Its announcements first: the router stops sending here before
            // the datapath goes.
            if let Some(a) = target.announce() {
                let gone = routes::announce::remove_left(a).with_context(|| {
                    format!(
                        "withdrawing the VIPs the stopped agent announced (table {}, proto {})",
                        a.table, a.protocol
                    )
                })?;
                if !gone.is_empty() {
                    println!(
                        "withdrew {} announced VIP(s) (table {}, proto {})",
                        gone.len(),
                        a.table,
                        a.protocol
                    );
                }
            }
            // And those a previous setting left (see routes::announce).
            let note = routes::announce::note_path(control);
            if let Some((old, gone)) = routes::announce::remove_noted(&note, target.announce())
                .context("withdrawing the VIPs an earlier agent announced")?
                && !gone.is_empty()
            {
                println!(
                    "withdrew {} announced VIP(s) (table {}, proto {})",
                    gone.len(),
                    old.table,
                    old.protocol
                );
            }
            routes::announce::note(&note, None);
            let pins = Pins::new(&pin_dir);
            let pinned = pins.exist();
            pins.remove().with_context(|| format!("removing {}", pins.dir().display()))?;
            let _ = std::fs::remove_file(pins::state_file(control));
            let _ = std::fs::remove_file(control);
            if pinned {
                println!(
                    "no agent running; removed the pinned datapath in {}",
                    pins.dir().display()
                );
            } else {
                println!("no agent running, and no datapath pinned in {}", pins.dir().display());
            }
            // The routes a stopped agent left with its datapath.
            let gone = VipRoutes::new(VipRoutesSetting::Local)
                .remove_all()
                .context("removing the VIP routes the stopped agent left")?;
            if !gone.is_empty() {
                println!("removed {} VIP route(s) (proto {})", gone.len(), routes::PROTOCOL);
            }
            Ok(())
        }
        Err(e) => Err(target.explain(e)),
    }
}
