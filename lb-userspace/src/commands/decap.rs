//! `lb decap`: the backend side of direct server return. In the foreground
//! it strips IP-in-IP outer headers addressed to this host on the given
//! interfaces until SIGINT/SIGTERM or `lb decap --stop`, then detaches.
//! `--status` prints the counters of the one running.

use std::{collections::BTreeSet, net::IpAddr, path::Path, time::Duration};

use anyhow::{Context, Result, bail};
use lb_common::abi::DecapCounters;
use lb_userspace::{
    config::Attach,
    datapath::pins::Pins,
    decap::{self, Decap, addrs, attach},
    object,
};
use tokio::signal::unix::{SignalKind, signal};

/// How often the foreground process looks at its pins (gone: `--stop`
/// ran) and, without `--address`, at the host's addresses.
const POLL: Duration = Duration::from_secs(1);

/// What `lb decap` was asked for.
#[derive(Debug)]
pub struct Args<'a> {
    /// Interfaces to attach to.
    pub interfaces: &'a [String],
    /// Addresses to decapsulate for; empty: every address of the host.
    pub addresses: &'a [IpAddr],
    /// The hook.
    pub attach: Attach,
    /// Where to pin.
    pub pin_dir: &'a Path,
    /// `--bpf-object`.
    pub bpf_object: Option<&'a Path>,
}

/// The `[decap]` role of the config file `path`, if one was given
/// (`--config`): a file without one is an error naming the fix.
pub fn role(path: Option<&Path>) -> Result<Option<lb_userspace::config::DecapRole>> {
    let Some(path) = path else { return Ok(None) };
    let cfg = lb_userspace::config::load(path)?;
    match cfg.decap {
        Some(role) => Ok(Some(role)),
        None => bail!(
            "{} has no [decap] table; add one (e.g. [decap] interfaces = [\"eth0\"]) or give \
             --interface instead of --config",
            path.display()
        ),
    }
}

/// Runs in the foreground until a signal or `--stop`, detaching at the end.
pub fn run(args: &Args<'_>) -> Result<()> {
    if decap::pinned(args.pin_dir) {
        bail!(
            "a decap is already pinned at {} (another lb decap runs there, or one was killed); \
             `lb decap --stop --pin-dir {}` removes it",
            args.pin_dir.display(),
            args.pin_dir.display()
        );
    }
    let obj = object::resolve(args.bpf_object)?;
    let pins = Pins::new(args.pin_dir);
    pins.prepare().with_context(|| format!("preparing {}", args.pin_dir.display()))?;
    let started = start(args, &obj, &pins);
    let mut dp = match started {
        Ok(dp) => dp,
        Err(e) => {
            // Whatever was attached before the failure goes again.
            let _ = pins.remove();
            return Err(e);
        }
    };
    let why = foreground(args, &mut dp, &pins);
    let totals = dp.counters();
    pins.remove().with_context(|| format!("removing {}", args.pin_dir.display()))?;
    match totals {
        Ok(c) => tracing::info!("detached; {}", line(&c)),
        Err(e) => tracing::warn!("detached; counters unreadable: {e}"),
    }
    why.map(|why| tracing::info!("lb decap stopped: {why}"))
}

fn start(args: &Args<'_>, obj: &object::BpfObject, pins: &Pins) -> Result<Decap> {
    let mut dp = Decap::load(obj, Some(pins))?;
    let want = wanted(args.addresses)?;
    dp.set_addresses(&want)?;
    tracing::info!(
        addresses = ?want,
        "decapsulating IP-in-IP packets to {} address(es)",
        want.len()
    );
    let netlink = lb_userspace::datapath::tc_netlink::forced().map_err(anyhow::Error::msg)?;
    for iface in args.interfaces {
        let (hook, link) = attach::attach(&mut dp, iface, args.attach, pins, netlink)?;
        match link {
            None => tracing::info!(interface = %iface, hook = hook.name(), "decap attached"),
            Some(link) => {
                tracing::info!(interface = %iface, hook = hook.name(), link = %link, "decap attached");
            }
        }
    }
    Ok(dp)
}

/// `--address`, or every address of the host.
fn wanted(given: &[IpAddr]) -> Result<BTreeSet<IpAddr>> {
    if given.is_empty() {
        addrs::host_addresses().context("listing the host's addresses (getifaddrs)")
    } else {
        Ok(given.iter().copied().collect())
    }
}

/// Waits for the end; returns why it came.
fn foreground(args: &Args<'_>, dp: &mut Decap, pins: &Pins) -> Result<&'static str> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        loop {
            tokio::select! {
                _ = term.recv() => return Ok("SIGTERM"),
                _ = int.recv() => return Ok("SIGINT"),
                () = tokio::time::sleep(POLL) => {}
            }
            if !decap::pinned(pins.dir()) {
                return Ok("lb decap --stop");
            }
            if args.addresses.is_empty() {
                refresh(dp);
            }
        }
    })
}

/// Follows the host's addresses as they come and go.
fn refresh(dp: &mut Decap) {
    let result = addrs::host_addresses()
        .map_err(anyhow::Error::from)
        .and_then(|want| dp.set_addresses(&want).map_err(anyhow::Error::from));
    match result {
        Ok((added, removed)) if !added.is_empty() || !removed.is_empty() => {
            tracing::info!(?added, ?removed, "the host's addresses changed");
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("refreshing the addresses to decapsulate for: {e:#}"),
    }
}

/// `lb decap --stop`: detaches and removes what is pinned at `pin_dir`.
pub fn stop(pin_dir: &Path) -> Result<()> {
    if !decap::pinned(pin_dir) {
        bail!("no decap is pinned at {} (nothing to stop)", pin_dir.display());
    }
    Pins::new(pin_dir).remove().with_context(|| format!("removing {}", pin_dir.display()))?;
    println!("lb decap at {} stopped", pin_dir.display());
    Ok(())
}

/// `lb decap --status`: the counters of the decap pinned at `pin_dir`.
pub fn status(pin_dir: &Path) -> Result<()> {
    if !decap::pinned(pin_dir) {
        bail!(
            "no decap is pinned at {}; start one with `lb decap --interface IF`",
            pin_dir.display()
        );
    }
    let c = decap::pinned_counters(&Pins::new(pin_dir))?;
    println!("decapsulated {}", c.decapsulated);
    println!("passed {}", c.passed);
    println!("malformed {}", c.malformed);
    println!("failed {}", c.failed);
    Ok(())
}

fn line(c: &DecapCounters) -> String {
    format!(
        "{} decapsulated, {} passed, {} malformed, {} failed",
        c.decapsulated, c.passed, c.malformed, c.failed
    )
}
