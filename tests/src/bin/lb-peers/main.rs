//! `cargo xtask bench peers`: lb (XDP and splice mode) against direct
//! routing, nftables DNAT, HAProxy and nginx, in one run on one machine:
//! TCP throughput (iperf3, 1 and 4 streams), 64-byte UDP rate, short
//! connections (rate, latency), CPU cost, and the BPF_PROG_TEST_RUN
//! ns/packet of `lb-bench`. Writes bench-results/<name>.{md,json,svg}.
//!
//! Usage: lb-peers [--quick] [--name NAME]   (root; run from the workspace
//! root with the release binaries built). `--quick` or LB_BENCH_QUICK=1:
//! one repetition of shorter runs.
//!
//! Modules: [`bed`] the namespaces and backend servers, [`paths`] each peer
//! started and torn down, [`measure`] one run of each measurement (the packet
//! generator is `lb_tests::udpgen`), [`cpu`] CPU accounting, [`results`] figures,
//! [`report`] markdown and JSON, [`svg`] the chart, [`signals`] interruption.

mod bed;
mod cpu;
mod measure;
mod paths;
mod report;
mod results;
mod signals;
mod svg;

use std::process::Command;

use anyhow::{Context, Result};

use crate::{
    bed::Bed,
    measure::Clients,
    paths::Path,
    results::{Metric, Results},
};

/// Clients for the connection-rate figure (enough to keep a proxy busy on
/// 2 CPUs without queueing far beyond it).
const RATE_CLIENTS: u32 = 8;
/// Clients for the many-clients figures (issue 18: proxies fall behind
/// where users have many clients).
const MANY_CLIENTS: u32 = 1000;

fn main() -> Result<()> {
    signals::install()?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick")
        || std::env::var("LB_BENCH_QUICK").is_ok_and(|v| v == "1");
    let name = args
        .iter()
        .position(|a| a == "--name")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| "peers".into());
    // LB_PEERS_ONLY=<path>[,<path>...]: those paths alone (debugging a peer);
    // LB_PEERS_METRICS likewise for measurements (see `measure_path`).
    let only = std::env::var("LB_PEERS_ONLY").ok();
    let (reps, iperf_secs, secs) = if quick { (1, 3, 2.0) } else { (3, 5, 4.0) };
    let root = std::env::current_dir()?;
    anyhow::ensure!(
        root.join("scripts/bench").is_dir(),
        "run from the workspace root (scripts/bench not found)"
    );

    let bed = Bed::new(root.clone())?;
    let mut results = Results::default();
    let mut failures = Vec::new();
    for rep in 0..reps {
        for path in Path::ALL {
            signals::check()?;
            if only.as_ref().is_some_and(|o| !o.split(',').any(|o| o == path.name())) {
                continue;
            }
            eprintln!("repetition {}/{reps}: {}", rep + 1, path.name());
            // The harness panics on setup failures: one path's failure is
            // reported, and the others still run.
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                measure_path(&bed, path, &mut results, iperf_secs, secs)
            }))
            .unwrap_or_else(|_| Err(anyhow::anyhow!("panicked (see above)")));
            if let Err(e) = r {
                signals::check()?;
                eprintln!("  {} failed: {e:#}", path.name());
                failures.push(format!("{} (repetition {}): {e:#}", path.name(), rep + 1));
            }
        }
    }
    let settings = bed.settings();
    drop(bed);
    signals::check()?;
    eprintln!("datapath: lb-bench (BPF_PROG_TEST_RUN)");
    let datapath = datapath(&root)?;

    let mut machine = machine_info();
    for f in &failures {
        machine.push(("failed run".into(), f.clone()));
    }
    let ctx = report::Context {
        command: command(quick, &name),
        reps,
        iperf_secs,
        secs,
        settings,
        machine,
        datapath,
    };
    let out = root.join("bench-results");
    std::fs::create_dir_all(&out)?;
    let md = report::markdown(&results, &ctx);
    std::fs::write(out.join(format!("{name}.md")), &md)?;
    std::fs::write(
        out.join(format!("{name}.json")),
        serde_json::to_string_pretty(&report::json(&results, &ctx))? + "\n",
    )?;
    std::fs::write(out.join(format!("{name}.svg")), svg::chart(&results, &ctx.settings))?;
    println!("{md}");
    println!("written: {}/{name}.{{md,json,svg}}", out.display());
    Ok(())
}

/// Starts `path`, runs every measurement through it once, stops it.
/// LB_PEERS_METRICS=<key>[,<key>...] (the JSON keys): those alone.
fn measure_path(
    bed: &Bed,
    path: Path,
    results: &mut Results,
    iperf_secs: u32,
    secs: f64,
) -> Result<()> {
    let only = std::env::var("LB_PEERS_METRICS").ok();
    let wanted = |m: Metric| only.as_ref().is_none_or(|o| o.split(',').any(|k| k == m.key()));
    let run = paths::start(path, bed)?;
    for (metric, streams, down) in
        [(Metric::Tcp1, 1, false), (Metric::Tcp4, 4, false), (Metric::TcpDown, 1, true)]
    {
        if wanted(metric) {
            let s = measure::iperf(bed, &run, streams, iperf_secs, down)?;
            eprintln!("    {:?}: {:.2} Gbit/s", metric, s.value);
            results.push(path, metric, s);
        }
    }
    if path.udp() && wanted(Metric::Udp) {
        results.push(path, Metric::Udp, measure::udp(bed, &run, secs)?);
    }
    // lb-rr runs: metric, clients, how many, seconds, what it counts.
    let rr_runs = [
        (Metric::Conn, Clients::Threads, RATE_CLIENTS, secs, "connections"),
        (Metric::Conn1k, Clients::Async, MANY_CLIENTS, secs, "connections"),
        (Metric::Rr1k, Clients::Keep, MANY_CLIENTS, secs, "requests (kept connections)"),
        (Metric::Latency, Clients::Threads, 1, secs / 2.0, "connections"),
    ];
    for (metric, clients, n, secs, what) in rr_runs {
        if wanted(metric) {
            let before = measure::lb_lost(&run);
            let mut s = measure::rr(bed, &run, clients, n, secs)?;
            s.lb_lost_frames = before.zip(measure::lb_lost(&run)).map(|(b, a)| a.saturating_sub(b));
            eprintln!(
                "    {what}, {n} clients: {:.0}/s, p50 {:.1} µs, p99 {:.1} µs",
                s.value, s.p50_us, s.p99_us
            );
            results.push(path, metric, s);
        }
    }
    Ok(())
}

/// The command that reproduces this run: the selecting variables that were
/// set, and the binary itself where a name other than the default was given
/// (`cargo xtask bench peers` takes none).
fn command(quick: bool, name: &str) -> String {
    let env: String = ["LB_PEERS_ONLY", "LB_PEERS_METRICS", "LB_PEERS_OFFLOADS"]
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| format!("{k}={v} ")))
        .collect();
    let quick = if quick { " --quick" } else { "" };
    if name == "peers" {
        format!("{env}cargo xtask bench peers{quick}")
    } else {
        format!("{env}target/release/lb-peers{quick} --name {name}")
    }
}

/// Runs lb-bench and keeps its table.
fn datapath(root: &std::path::Path) -> Result<String> {
    let out = Command::new(root.join("target/release/lb-bench"))
        .current_dir(root)
        .output()
        .context("running lb-bench")?;
    let text = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success(),
        "lb-bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(text
        .lines()
        .filter(|l| l.starts_with('|') || l.starts_with("datapath"))
        .collect::<Vec<_>>()
        .join("\n"))
}

/// Kernel, CPUs and the peers' versions.
fn machine_info() -> Vec<(String, String)> {
    let first_line = |cmd: &[&str]| -> String {
        Command::new(cmd[0])
            .args(&cmd[1..])
            .output()
            .map(|o| {
                let s = if o.stdout.is_empty() { o.stderr } else { o.stdout };
                String::from_utf8_lossy(&s).lines().next().unwrap_or("").trim().to_owned()
            })
            .unwrap_or_else(|e| format!("unknown ({e})"))
    };
    vec![
        ("kernel".into(), first_line(&["uname", "-r"])),
        ("CPUs".into(), first_line(&["nproc"])),
        ("haproxy".into(), first_line(&["haproxy", "-v"])),
        ("nginx".into(), first_line(&["nginx", "-v"])),
        ("iperf3".into(), first_line(&["iperf3", "--version"])),
    ]
}
