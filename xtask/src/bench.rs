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
    /// lb (XDP, splice) against direct routing, nftables DNAT, HAProxy and
    /// nginx: TCP throughput, UDP rate, connections, latency, CPU, plus the
    /// datapath ns/packet; writes bench-results/peers.{md,json,svg} (root).
    Peers,
    /// lb (XDP, tc, splice), nftables DNAT and HAProxy under a spoofed SYN
    /// flood: legitimate success rate, rate during / before, p99, broken
    /// keep-alive connections, CPU; writes bench-results/flood.{md,json}
    /// (root).
    Flood,
}

/// Runs the chosen benchmarks; `quick`: fewer repetitions where a
/// benchmark offers it (peers).
pub fn run(root: &Path, which: Which, quick: bool) -> Result<()> {
    match which {
        Which::Maglev => maglev(root),
        Which::Datapath => datapath(root),
        Which::Failover => release_bin(root, "lb-failover"),
        Which::Agent => release_bin(root, "lb-scale"),
        Which::Peers => peers(root, quick),
        Which::Flood => flood(root),
        // peers runs the datapath benchmark too (its report includes it).
        Which::All => maglev(root)
            .and_then(|()| release_bin(root, "lb-failover"))
            .and_then(|()| release_bin(root, "lb-scale"))
            .and_then(|()| peers(root, quick))
            .and_then(|()| flood(root)),
    }
}

/// The peers' Debian packages: iperf3 3.12, HAProxy 2.6, nginx 1.22 with its
/// stream module, nftables; ethtool for the offloads.
pub const PEER_PACKAGES: &[&str] =
    &["iperf3", "haproxy", "nginx", "libnginx-mod-stream", "nftables", "ethtool"];

/// Installs the peers (idempotently) and runs lb-peers, which also runs
/// lb-bench for the ns/packet table.
fn peers(root: &Path, quick: bool) -> Result<()> {
    if !crate::prereqs::is_root() {
        anyhow::bail!("this benchmark creates namespaces and loads XDP programs: run it as root");
    }
    crate::prereqs::ensure_packages(PEER_PACKAGES, "")?;
    crate::ebpf::build_with_binaries(root)?;
    let mut c = Command::new(root.join("target/release/lb-peers"));
    c.current_dir(root);
    if quick {
        c.arg("--quick");
    }
    cmd::run(&mut c)
}

/// Installs hping3 and the peers it compares with (nftables, HAProxy), then
/// runs lb-flood.
fn flood(root: &Path) -> Result<()> {
    if !crate::prereqs::is_root() {
        anyhow::bail!("this benchmark creates namespaces and loads XDP programs: run it as root");
    }
    crate::prereqs::ensure_packages(&["hping3", "haproxy", "nftables", "ethtool"], "")?;
    release_bin(root, "lb-flood")
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
