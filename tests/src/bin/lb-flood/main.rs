//! `cargo xtask bench flood`: legitimate traffic through lb (XDP, tc,
//! splice), nftables DNAT and HAProxy before, during and after a spoofed
//! SYN flood at the same VIP port, in one run on one machine. Per path:
//! the legitimate success rate and connection rate during the flood and
//! before it, p99 latency, broken keep-alive connections, the rate in the
//! first second after the flood, and the CPU time during it. Writes
//! bench-results/flood.{md,json}.
//!
//! Usage: lb-flood   (root, from the workspace root, release binaries
//! built; hping3, haproxy and nft installed: `cargo xtask bench flood`
//! does all that).
//!
//! Shares the peers bench's test bed, paths, CPU accounting and signal
//! handling (its modules, included by path).

#[path = "../lb-peers/bed.rs"]
#[allow(dead_code)] // shared with lb-peers, which uses all of it
mod bed;
#[path = "../lb-peers/cpu.rs"]
#[allow(dead_code)]
mod cpu;
mod load;
#[path = "../lb-peers/paths.rs"]
#[allow(dead_code)]
mod paths;
mod report;
#[path = "../lb-peers/signals.rs"]
#[allow(dead_code)]
mod signals;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use lb_tests::{flood::SynFlood, topology::VIP4};

use crate::{bed::Bed, paths::Path, report::Figures};

/// The phases of one path's run: legitimate load alone, with the flood,
/// and after it.
pub const BEFORE: Duration = Duration::from_secs(4);
pub const FLOOD: Duration = Duration::from_secs(4);
pub const AFTER: Duration = Duration::from_secs(3);
/// The first second of the load is its ramp-up, left out of "before".
pub const WARM: Duration = Duration::from_secs(1);

/// The paths compared, in report order.
const PATHS: [Path; 5] = [Path::LbXdp, Path::LbTc, Path::LbSplice, Path::Haproxy, Path::Nft];

fn main() -> Result<()> {
    signals::install()?;
    let root = std::env::current_dir()?;
    anyhow::ensure!(
        root.join("scripts/bench").is_dir(),
        "run from the workspace root (scripts/bench not found)"
    );
    let bed = Bed::new(root.clone())?;
    // The client namespace stands for the internet: the balancer's default
    // route leads there, so answers to spoofed sources leave as from a real
    // gateway, and the kernel's reverse-path filter does not drop the flood
    // before a proxy's listener sees it.
    bed.topo.lb.ip("route replace default via 10.200.0.2");
    // LB_FLOOD_ONLY=<path>[,<path>...]: those paths alone (investigating one).
    let only = std::env::var("LB_FLOOD_ONLY").ok();
    let mut all = Vec::new();
    for path in PATHS {
        signals::check()?;
        if only.as_ref().is_some_and(|o| !o.split(',').any(|o| o == path.name())) {
            continue;
        }
        eprintln!("flood bench: {}", path.name());
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_path(&bed, path)))
            .unwrap_or_else(|_| Err(anyhow::anyhow!("panicked (see above)")));
        match r {
            Ok(f) => {
                eprintln!("  {}", f.summary());
                all.push(f);
            }
            Err(e) => eprintln!("  {} failed: {e:#}", path.name()),
        }
    }
    let settings = report::settings(&bed);
    let dir = root.join("bench-results");
    std::fs::create_dir_all(&dir)?;
    let md = report::markdown(&all, &settings);
    std::fs::write(dir.join("flood.md"), &md).context("writing bench-results/flood.md")?;
    std::fs::write(dir.join("flood.json"), report::json(&all, &settings)?)
        .context("writing bench-results/flood.json")?;
    println!("{md}");
    Ok(())
}

/// One path: start it, run the load with the flood in its middle, stop it.
fn run_path(bed: &Bed, path: Path) -> Result<Figures> {
    // A killed lb leaves the local route of its VIP (`agent.vip_routes`),
    // which the next proxy's own route would collide with.
    let _ = std::process::Command::new("ip")
        .args([
            "-n",
            bed.topo.lb.name(),
            "route",
            "del",
            "local",
            &format!("{VIP4}/32"),
            "dev",
            "lo",
        ])
        .output();
    let running = paths::start(path, bed)?;
    let to = SocketAddr::new(VIP4.parse()?, bed::RR_PORT);
    let client = bed.topo.client.name().to_owned();
    let start = Instant::now();
    let load = load::start(&client, to, start);
    sleep_until(start + BEFORE)?;
    let cpu = cpu::Cpu::start(running.pid);
    let sent_before = Bed::iface_stat(&bed.topo.client, "c0", "tx_packets");
    let flood = SynFlood::with_flag(&client, VIP4.parse()?, bed::RR_PORT, &report::flag());
    let mut flood_mode_seen = false;
    while start.elapsed() < BEFORE + FLOOD {
        if let Some(lb) = &running.lb {
            flood_mode_seen |= lb.report().flood.on;
        }
        sleep_until((Instant::now() + Duration::from_millis(200)).min(start + BEFORE + FLOOD))?;
    }
    flood.stop();
    let cpu = cpu.stop();
    let client_packets = Bed::iface_stat(&bed.topo.client, "c0", "tx_packets") - sent_before;
    sleep_until(start + BEFORE + FLOOD + AFTER)?;
    let seen = load.stop();
    let flood_mode_after = running.lb.as_ref().map(|lb| lb.report().flood);
    drop(running);
    Ok(Figures::of(path, &seen, client_packets, cpu, flood_mode_seen, flood_mode_after))
}

fn sleep_until(t: Instant) -> Result<()> {
    while Instant::now() < t {
        signals::check()?;
        std::thread::sleep(
            t.saturating_duration_since(Instant::now()).min(Duration::from_millis(100)),
        );
    }
    Ok(())
}
