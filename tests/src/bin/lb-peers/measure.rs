//! One run of each measurement through a started path, with the CPU time
//! spent across it.

use std::{
    net::SocketAddr,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use lb_tests::{packet::Frame, topology::CLIENT4};

use crate::{
    bed::{Bed, IPERF_PORT, RR_PORT, SINK_PORT},
    cpu::Cpu,
    paths::Running,
};

/// One measured run: its figure(s) and the CPU spent meanwhile.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// The main figure: Gbit/s, Mpps or connections/s.
    pub value: f64,
    /// Latency p50 and p99 in µs (short connections only).
    pub p50_us: f64,
    /// See `p50_us`.
    pub p99_us: f64,
    /// CPU time used across the run.
    pub cpu: Cpu,
    /// Amount of work done: Gbit, Mpackets or connections.
    pub work: f64,
    /// Gbit the backend sent into the balancer namespace (received on its
    /// backend-side veth) during a download run.
    pub lb_out_gbit: f64,
    /// Frames lb's interfaces lost during the run, as `lb status` counts
    /// them (XDP redirects a veth could not take, drops): lb paths only.
    pub lb_lost_frames: Option<u64>,
}

/// iperf3 for `secs` seconds with `streams` parallel streams: Gbit/s
/// received by the backend, or by the client if `down` (iperf3 -R).
pub fn iperf(bed: &Bed, run: &Running, streams: u32, secs: u32, down: bool) -> Result<Sample> {
    let target = run.path.target(bed).to_string();
    let lb_out = || Bed::iface_stat(&bed.topo.lb, "lb-b1", "rx_bytes");
    let lb_out_before = lb_out();
    let cpu = Cpu::start(run.pid);
    let child = bed
        .topo
        .client
        .command(&[
            "iperf3",
            "-c",
            &target,
            "-p",
            &IPERF_PORT.to_string(),
            "-t",
            &secs.to_string(),
            "-P",
            &streams.to_string(),
            "--connect-timeout",
            "2000",
            "-J",
            if down { "-R" } else { "-4" },
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawning iperf3")?;
    let out = wait_bounded(child, secs + 10)?;
    let cpu = cpu.stop();
    let json: serde_json::Value =
        serde_json::from_str(&out).with_context(|| format!("iperf3 output: {out}"))?;
    if let Some(err) = json.get("error") {
        bail!("iperf3 via {}: {err}", run.path.name());
    }
    let bps = json["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .with_context(|| format!("no end.sum_received in iperf3 output: {out}"))?;
    let secs = json["end"]["sum_received"]["seconds"].as_f64().unwrap_or(f64::from(secs));
    let lb_out_gbit = lb_out().saturating_sub(lb_out_before) as f64 * 8.0 / 1e9;
    Ok(Sample { value: bps / 1e9, cpu, work: bps / 1e9 * secs, lb_out_gbit, ..Default::default() })
}

/// How lb-rr drives the requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clients {
    /// Short connections, a thread per client (`lb-rr run`).
    Threads,
    /// Short connections, async clients on one thread (`lb-rr many`).
    Async,
    /// Persistent connections, request after request (`lb-rr keep`).
    Keep,
}

/// lb-rr for `secs` seconds with `conc` clients: exchanges/s, p50, p99.
pub fn rr(bed: &Bed, run: &Running, clients: Clients, conc: u32, secs: f64) -> Result<Sample> {
    let mode = match clients {
        Clients::Threads => "run",
        Clients::Async => "many",
        Clients::Keep => "keep",
    };
    let target = SocketAddr::new(run.path.target(bed), RR_PORT).to_string();
    let rr = bed.root.join("target/release/lb-rr");
    let cpu = Cpu::start(run.pid);
    let child = bed
        .topo
        .client
        .command(&[
            rr.to_str().context("utf-8 path")?,
            mode,
            &target,
            &secs.to_string(),
            &conc.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawning lb-rr")?;
    let out = wait_bounded(child, secs as u32 + 10)?;
    let cpu = cpu.stop();
    let json: serde_json::Value =
        serde_json::from_str(&out).with_context(|| format!("lb-rr output: {out}"))?;
    let ok = json["ok"].as_f64().unwrap_or(0.0);
    let errors = json["errors"].as_f64().unwrap_or(0.0);
    if errors > ok * 0.01 {
        bail!("{} of {} exchanges ({mode}) via {} failed", errors, ok + errors, run.path.name());
    }
    let elapsed = json["secs"].as_f64().unwrap_or(secs);
    Ok(Sample {
        value: ok / elapsed,
        p50_us: json["p50_us"].as_f64().unwrap_or(0.0),
        p99_us: json["p99_us"].as_f64().unwrap_or(0.0),
        cpu,
        work: ok,
        lb_out_gbit: 0.0,
        lb_lost_frames: None,
    })
}

/// 64-byte UDP frames (one flow) blasted at the path for `secs` seconds:
/// Mpps counted arriving at the backend's interface, where a program drops
/// them (XDP, and tc ingress for what `bpf_redirect_peer` puts there).
pub fn udp(bed: &Bed, run: &Running, secs: f64) -> Result<Sample> {
    let client = &bed.topo.client;
    let lb_mac = bed.topo.lb.exec(&["cat", "/sys/class/net/lb-cli/address"]);
    let c0_mac = client.exec(&["cat", "/sys/class/net/c0/address"]);
    let mac =
        |o: &std::process::Output| lb_tests::packet::mac(String::from_utf8_lossy(&o.stdout).trim());
    let frame = Frame::udp(
        &format!("{CLIENT4}:10000"),
        &SocketAddr::new(run.path.target(bed), SINK_PORT).to_string(),
    )
    .macs(mac(&c0_mac), mac(&lb_mac))
    .pad_to(60)
    .bytes();
    let ifindex = client.ifindex("c0");
    let backend = bed.backend();
    let b0 = backend.ifindex("b0");
    let sink = {
        let _in = backend.enter();
        lb_tests::udpgen::attach_drop(b0)?
    };
    let before = Bed::iface_stat(backend, "b0", "rx_packets");
    let lb_before = Bed::iface_stat(&bed.topo.lb, "lb-cli", "rx_packets");
    let cpu = Cpu::start(run.pid);
    let t = Instant::now();
    let ns = client.name().to_owned();
    let sent = std::thread::spawn(move || {
        let _in = lb_tests::netns::enter(&ns);
        lb_tests::udpgen::blast(ifindex, &frame, secs, &crate::signals::stopped)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the generator thread panicked"))??;
    let elapsed = t.elapsed().as_secs_f64();
    // Let queues drain into the count.
    std::thread::sleep(Duration::from_millis(200));
    let cpu = cpu.stop();
    let got = Bed::iface_stat(backend, "b0", "rx_packets").saturating_sub(before) as f64;
    drop(sink);
    let at_lb = Bed::iface_stat(&bed.topo.lb, "lb-cli", "rx_packets").saturating_sub(lb_before);
    if at_lb == 0 {
        bail!(
            "none of the generator's {sent} frames reached the balancer's interface \
             (lb-cli rx_packets did not move): the generator is broken, not the path"
        );
    }
    eprintln!(
        "    udp via {}: offered {:.2} Mpps, reached the balancer {:.2} Mpps, delivered {:.3} Mpps",
        run.path.name(),
        sent as f64 / elapsed / 1e6,
        at_lb as f64 / elapsed / 1e6,
        got / elapsed / 1e6
    );
    Ok(Sample { value: got / elapsed / 1e6, cpu, work: got / 1e6, ..Default::default() })
}

/// Waits for `child` at most `secs` seconds (killing it then, or on a stop
/// signal) and returns its stdout, read meanwhile so a full pipe never
/// blocks it.
fn wait_bounded(mut child: Child, secs: u32) -> Result<String> {
    let mut stdout = child.stdout.take().context("stdout piped")?;
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(u64::from(secs));
    loop {
        if let Some(status) = child.try_wait()? {
            let out = reader.join().map_err(|_| anyhow::anyhow!("reader thread panicked"))?;
            if !status.success() && out.is_empty() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                bail!("failed ({status}): {err}");
            }
            return Ok(out);
        }
        if Instant::now() > deadline || crate::signals::stopped() {
            let _ = child.kill();
            let _ = child.wait();
            crate::signals::check()?;
            bail!("timed out after {secs} s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Frames lb's interfaces have lost so far, where the path is lb in a
/// kernel mode (`None` otherwise).
pub fn lb_lost(run: &Running) -> Option<u64> {
    let lb = run.lb.as_ref()?;
    let report = lb.report();
    Some(report.interfaces.iter().map(|i| i.lost.total()).sum())
}
