//! The report: a markdown file for people, a JSON file for tools, from the
//! same figures.

use std::fmt::Write;

use serde_json::{Value, json};

use crate::{
    paths::Path,
    results::{Metric, Results, Spread},
};

/// What the run was, for both files.
#[derive(Debug)]
pub struct Context {
    /// The command that reproduces it.
    pub command: String,
    /// Repetitions per figure.
    pub reps: usize,
    /// iperf3 seconds per run.
    pub iperf_secs: u32,
    /// UDP and short-connection seconds per run.
    pub secs: f64,
    /// Per interface: MTU and offloads.
    pub settings: Vec<(String, String)>,
    /// Kernel, CPUs, peer versions.
    pub machine: Vec<(String, String)>,
    /// lb-bench's table (BPF_PROG_TEST_RUN), verbatim.
    pub datapath: String,
}

const HOW: &str = "\
- TCP: iperf3 3.12 from the client to the VIP (direct: to the backend), 1 and 4 \
  streams, Gbit/s received by the backend's iperf3 server. Download: iperf3 -R, 1 \
  stream, the backend sending as a server answers, Gbit/s received by the client; \
  \"Gbit through lb\" is what the backend sent into the balancer namespace (its \
  backend-side veth's received bytes) during it, per Gbit the client received (1 for paths that carry the answers, about 0 for \
  lb-dsr, whose backend answers over its own return link to the client).
- lb-dsr: lb at the tc hook, every service `forwarding = \"dsr-ipip\"` with the lb \
  namespace's backend-side address as tunnel source; the backend holds the VIP on lo \
  and runs `lb decap` at tc, and its route to the client goes over the return link \
  (only while lb-dsr runs). Client segments of 1500 bytes do not fit once wrapped: \
  they are answered \"fragmentation needed\" and the client's path MTU to the VIP \
  drops to 1480 (20 bytes per segment less payload than the NAT paths).
- UDP: one flow of 64-byte frames (60 without FCS) sent out of the client's veth by \
  BPF_PROG_TEST_RUN of a tiny tc program that transmits 32 clones of its skb per run \
  with bpf_clone_redirect (lb_tests::udpgen; this kernel refuses live-frames XDP runs); \
  counted as frames arriving at the backend's veth, where an XDP \
  program drops them (and a tc ingress one, for what lb-tc's bpf_redirect_peer puts \
  straight into its ingress, where XDP never runs). The generator, the path and the sink run in softirq on the \
  generator's CPU, so a path's rate is 1 / (its per-packet cost + a fixed cost of \
  generator and sink); a proxy runs on the other CPU and drops what it cannot take. \
  HAProxy 2.6 does not proxy UDP.
- Short connections: lb-rr (connect, 64-byte request, 128-byte response, close); \
  8 client threads for the rate, 1 for latency (p50/p99 of the whole exchange). \
  Added latency: the path's median minus direct's; p99 differences are within the \
  run-to-run noise of this shared 2-vCPU machine and can come out negative.
- 1000 clients: `lb-rr many` (1000 tasks on one client thread, as `ab -c 1000`, each \
  one short connection at a time: connect, request, response, close) for the \
  connection rate and the p50/p99 of the whole exchange; `lb-rr keep` (netperf \
  TCP_RR style: 1000 connections opened before the clock starts, each sending a \
  64-byte request and awaiting the 128-byte response in a loop) for requests/s and \
  the p50/p99 of one request. An exchange slower than 1 s (2 s with its connect) \
  counts as an error; a run with more than 1% errors is a failed run. Frames lost \
  by lb: what `lb status` counts as lost on lb's interfaces (XDP redirects a veth \
  could not take, drops), summed over the short-connection runs at 1000 clients.
- CPU: /proc/stat and /proc/PID/stat deltas across each run.";

fn cell(s: Option<Spread>, digits: usize) -> String {
    s.map_or("n/a".into(), |s| {
        format!("{:.d$} ({:.d$}–{:.d$})", s.median, s.min, s.max, d = digits)
    })
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.digits$}"))
}

/// A goal line for a ratio that must not exceed 1.
fn at_most(v: Option<f64>, what: &str) -> (String, Option<f64>, String, Option<bool>) {
    (what.to_owned(), v, "≤ 1.0x".into(), v.map(|v| v <= 1.0))
}

/// lb splice's process CPU per unit of `metric` over HAProxy's.
fn cpu_ratio(r: &Results, metric: Metric) -> Option<f64> {
    Some(
        r.proc_cpu_per_unit(Path::LbSplice, metric)?
            / r.proc_cpu_per_unit(Path::Haproxy, metric)?,
    )
}

/// The goal of no frame lost by lb at 1000 clients (issue 12).
fn none_lost(r: &Results, p: Path) -> (String, Option<f64>, String, Option<bool>) {
    let lost = r.lost_frames(p, Metric::Conn1k);
    (
        format!("{}: frames lost by lb, 1000 clients", p.name()),
        lost.map(|n| n as f64),
        "0".to_owned(),
        lost.map(|n| n == 0),
    )
}

/// A goal ratio line: (what, measured, goal, met).
pub fn goals(r: &Results) -> Vec<(String, Option<f64>, String, Option<bool>)> {
    let ratio = |a, b, m, what: &str, goal: f64| {
        let v = r.ratio(a, b, m);
        (what.to_owned(), v, format!("≥ {goal:.1}x"), v.map(|v| v >= goal))
    };
    let added = |p, p99, what: &str, goal: Option<f64>| {
        let v = r.added_latency(p, p99);
        let g = goal.map_or("report".into(), |g| format!("≤ {g:.0} µs"));
        (what.to_owned(), v, g, goal.and_then(|g| Some(v? <= g)))
    };
    vec![
        ratio(Path::LbXdp, Path::Nft, Metric::Tcp1, "lb-xdp / nft-dnat, TCP 1 stream", 1.2),
        ratio(Path::LbXdp, Path::Nft, Metric::Tcp4, "lb-xdp / nft-dnat, TCP 4 streams", 1.2),
        ratio(Path::LbXdp, Path::Haproxy, Metric::Tcp1, "lb-xdp / haproxy, TCP 1 stream", 1.2),
        ratio(Path::LbXdp, Path::Haproxy, Metric::Tcp4, "lb-xdp / haproxy, TCP 4 streams", 1.2),
        ratio(Path::LbXdp, Path::Nft, Metric::Udp, "lb-xdp / nft-dnat, UDP 64 B rate", 3.0),
        added(Path::LbXdp, false, "lb-xdp added latency p50 (µs)", Some(10.0)),
        added(Path::LbXdp, true, "lb-xdp added latency p99 (µs)", None),
        ratio(Path::LbTc, Path::Nft, Metric::Tcp1, "lb-tc / nft-dnat, TCP 1 stream", 1.2),
        ratio(Path::LbTc, Path::Nft, Metric::Tcp4, "lb-tc / nft-dnat, TCP 4 streams", 1.2),
        ratio(Path::LbTc, Path::Direct, Metric::Tcp1, "lb-tc / direct, TCP 1 stream", 1.0),
        ratio(Path::LbTc, Path::Direct, Metric::Tcp4, "lb-tc / direct, TCP 4 streams", 1.0),
        ratio(Path::LbTc, Path::Nft, Metric::Udp, "lb-tc / nft-dnat, UDP 64 B rate", 3.0),
        ratio(Path::LbTc, Path::Nft, Metric::Conn1k, "lb-tc / nft-dnat, 1000 clients", 1.2),
        none_lost(r, Path::LbTc),
        ratio(Path::LbXdp, Path::Nft, Metric::Conn1k, "lb-xdp / nft-dnat, 1000 clients", 1.2),
        none_lost(r, Path::LbXdp),
        ratio(Path::LbDsr, Path::LbTc, Metric::TcpDown, "lb-dsr / lb-tc, TCP download", 1.0),
        (
            "lb-dsr: Gbit through lb per Gbit downloaded".to_owned(),
            r.through_lb(Path::LbDsr),
            "≤ 0.05".to_owned(),
            r.through_lb(Path::LbDsr).map(|v| v <= 0.05),
        ),
        ratio(
            Path::LbSplice,
            Path::Haproxy,
            Metric::Tcp1,
            "lb-splice / haproxy, TCP 1 stream",
            1.0,
        ),
        ratio(
            Path::LbSplice,
            Path::Haproxy,
            Metric::Tcp4,
            "lb-splice / haproxy, TCP 4 streams",
            1.0,
        ),
        ratio(
            Path::LbSplice,
            Path::Haproxy,
            Metric::Conn,
            "lb-splice / haproxy, connections/s",
            1.0,
        ),
        ratio(
            Path::LbSplice,
            Path::Haproxy,
            Metric::Conn1k,
            "lb-splice / haproxy, connections/s (1000 clients)",
            1.0,
        ),
        at_most(
            r.latency_ratio(Path::LbSplice, Path::Haproxy, Metric::Conn1k, true),
            "lb-splice / haproxy, p99 of short connections (1000 clients)",
        ),
        ratio(
            Path::LbSplice,
            Path::Haproxy,
            Metric::Rr1k,
            "lb-splice / haproxy, requests/s (1000 kept connections)",
            1.0,
        ),
        at_most(
            r.latency_ratio(Path::LbSplice, Path::Haproxy, Metric::Rr1k, true),
            "lb-splice / haproxy, p99 of requests (1000 kept connections)",
        ),
        at_most(
            cpu_ratio(r, Metric::Conn1k),
            "lb-splice / haproxy, process CPU per 1000 connections (1000 clients)",
        ),
        added(Path::LbSplice, false, "lb-splice added latency p50 (µs)", None),
        added(Path::LbSplice, true, "lb-splice added latency p99 (µs)", None),
        added(Path::Haproxy, false, "haproxy added latency p50 (µs)", None),
        added(Path::Haproxy, true, "haproxy added latency p99 (µs)", None),
    ]
}

/// The markdown report.
pub fn markdown(r: &Results, c: &Context) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# lb against its peers\n\nCommand: `{}`\n", c.command);
    let _ = writeln!(
        s,
        "Every cell: median (min–max) of {} repetitions. iperf3 runs {} s each; UDP and \
         short-connection runs {} s each. One backend; client, balancer and backend in \
         their own network namespaces on one machine, sharing its CPUs.\n",
        c.reps, c.iperf_secs, c.secs
    );
    let _ = writeln!(s, "## Throughput, packet rate, connections\n");
    let _ = writeln!(
        s,
        "| path | TCP 1 stream Gbit/s | TCP 4 streams Gbit/s | TCP download Gbit/s | \
         UDP 64 B Mpps at backend | connections/s (8 clients) | latency p50 µs (1 client) | \
         p99 µs | added p50 / p99 µs |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
    for p in Path::ALL {
        let udp = if p.udp() { cell(r.value(p, Metric::Udp), 3) } else { "n/a (no UDP)".into() };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} / {} |",
            p.name(),
            cell(r.value(p, Metric::Tcp1), 2),
            cell(r.value(p, Metric::Tcp4), 2),
            cell(r.value(p, Metric::TcpDown), 2),
            udp,
            cell(r.value(p, Metric::Conn), 0),
            cell(r.latency(p, false), 1),
            cell(r.latency(p, true), 1),
            opt(r.added_latency(p, false), 1),
            opt(r.added_latency(p, true), 1),
        );
    }
    let _ = writeln!(s, "\n## 1000 clients\n");
    let _ = writeln!(
        s,
        "| path | short connections/s | p50 µs | p99 µs | process s/1000 conns | \
         frames lost by lb | requests/s (kept connections) | p50 µs | p99 µs |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
    for p in Path::ALL {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            p.name(),
            cell(r.value(p, Metric::Conn1k), 0),
            cell(r.latency_of(p, Metric::Conn1k, false), 0),
            cell(r.latency_of(p, Metric::Conn1k, true), 0),
            opt(r.proc_cpu_per_unit(p, Metric::Conn1k), 3),
            r.lost_frames(p, Metric::Conn1k).map_or("n/a".to_owned(), |n| n.to_string()),
            cell(r.value(p, Metric::Rr1k), 0),
            cell(r.latency_of(p, Metric::Rr1k, false), 0),
            cell(r.latency_of(p, Metric::Rr1k, true), 0),
        );
    }
    let _ = writeln!(s, "\n## CPU cost\n");
    let _ = writeln!(
        s,
        "Machine: busy CPU seconds of the whole machine (/proc/stat: client, balancer and \
         backend together) per unit of work; its excess over `direct` is what the path \
         added. Process: the balancer process tree's user+system seconds (/proc/PID/stat), \
         which leaves out the softirq work done for its sockets; kernel paths have none, \
         their work runs in softirq.\n"
    );
    let _ = writeln!(
        s,
        "| path | machine s/Gbit (TCP 4) | process s/Gbit (TCP 4) | machine s/Gbit (download) | \
         Gbit through lb per Gbit downloaded | machine s/Mpacket (UDP) | process s/Mpacket (UDP) | \
         machine s/1000 conns | process s/1000 conns |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
    for p in Path::ALL {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            p.name(),
            opt(r.machine_cpu_per_unit(p, Metric::Tcp4), 3),
            opt(r.proc_cpu_per_unit(p, Metric::Tcp4), 3),
            opt(r.machine_cpu_per_unit(p, Metric::TcpDown), 3),
            opt(r.through_lb(p), 2),
            opt(r.machine_cpu_per_unit(p, Metric::Udp), 3),
            opt(r.proc_cpu_per_unit(p, Metric::Udp), 3),
            opt(r.machine_cpu_per_unit(p, Metric::Conn), 3),
            opt(r.proc_cpu_per_unit(p, Metric::Conn), 3),
        );
    }
    let _ = writeln!(s, "\n## Goals\n\n| figure | measured | goal | met |\n|---|---|---|---|");
    for (what, v, goal, met) in goals(r) {
        let met = met.map_or("—", |m| if m { "yes" } else { "no" });
        let _ = writeln!(s, "| {what} | {} | {goal} | {met} |", opt(v, 2));
    }
    let _ = writeln!(s, "\n## How each figure is measured\n\n{HOW}");
    let _ = writeln!(s, "\n## Settings\n");
    for (k, v) in c.settings.iter().chain(&c.machine) {
        let _ = writeln!(s, "- {k}: {v}");
    }
    let _ = writeln!(s, "\n## Datapath: ns/packet under BPF_PROG_TEST_RUN (lb-bench)\n");
    let _ = writeln!(s, "{}", c.datapath.trim());
    s
}

fn spread_json(s: Option<Spread>) -> Value {
    s.map_or(Value::Null, |s| json!({"median": s.median, "min": s.min, "max": s.max}))
}

/// The JSON report.
pub fn json(r: &Results, c: &Context) -> Value {
    let mut paths = serde_json::Map::new();
    for p in Path::ALL {
        let mut m = serde_json::Map::new();
        for metric in Metric::ALL {
            let samples: Vec<Value> = r
                .samples(p, metric)
                .iter()
                .map(|s| {
                    json!({"value": s.value, "p50_us": s.p50_us, "p99_us": s.p99_us,
                           "work": s.work, "wall_s": s.cpu.wall_s, "machine_busy_s": s.cpu.busy_s,
                           "machine_kernel_s": s.cpu.kernel_s, "process_s": s.cpu.proc_s,
                           "lb_lost_frames": s.lb_lost_frames})
                })
                .collect();
            m.insert(
                metric.key().into(),
                json!({
                    "value": spread_json(r.value(p, metric)),
                    "machine_cpu_per_unit": r.machine_cpu_per_unit(p, metric),
                    "process_cpu_per_unit": r.proc_cpu_per_unit(p, metric),
                    "samples": samples,
                }),
            );
        }
        m.insert("latency_p50_us".into(), spread_json(r.latency(p, false)));
        m.insert("latency_p99_us".into(), spread_json(r.latency(p, true)));
        paths.insert(p.name().into(), Value::Object(m));
    }
    let goals: Vec<Value> = goals(r)
        .into_iter()
        .map(
            |(what, v, goal, met)| json!({"figure": what, "measured": v, "goal": goal, "met": met}),
        )
        .collect();
    let kv = |v: &[(String, String)]| -> Value {
        v.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    json!({
        "command": c.command,
        "repetitions": c.reps,
        "iperf_seconds": c.iperf_secs,
        "run_seconds": c.secs,
        "interfaces": kv(&c.settings),
        "machine": kv(&c.machine),
        "paths": paths,
        "goals": goals,
        "datapath_bpf_prog_test_run": c.datapath,
    })
}
