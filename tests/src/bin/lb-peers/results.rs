//! The samples of a whole run, and the figures derived from them: medians,
//! spreads, ratios, CPU per unit of work.

use std::collections::BTreeMap;

use crate::{measure::Sample, paths::Path};

/// What is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Metric {
    /// iperf3, one stream, Gbit/s.
    Tcp1,
    /// iperf3, four streams, Gbit/s.
    Tcp4,
    /// iperf3 reversed (`-R`), one stream: the backend sends, as a server
    /// answers; Gbit/s.
    TcpDown,
    /// 64-byte UDP at the backend, Mpps.
    Udp,
    /// Short connections per second (concurrency 8).
    Conn,
    /// Short connections one at a time: latency.
    Latency,
    /// Short connections from 1000 async clients: rate and latency.
    Conn1k,
    /// Requests on 1000 kept connections (TCP_RR style): rate, latency.
    Rr1k,
}

impl Metric {
    /// Every metric, in report order.
    pub const ALL: [Metric; 8] = [
        Metric::Tcp1,
        Metric::Tcp4,
        Metric::TcpDown,
        Metric::Udp,
        Metric::Conn,
        Metric::Latency,
        Metric::Conn1k,
        Metric::Rr1k,
    ];

    /// Short key for JSON.
    pub fn key(self) -> &'static str {
        match self {
            Metric::Tcp1 => "tcp_1_stream_gbps",
            Metric::Tcp4 => "tcp_4_streams_gbps",
            Metric::TcpDown => "tcp_1_stream_download_gbps",
            Metric::Udp => "udp_64b_mpps",
            Metric::Conn => "connections_per_s",
            Metric::Latency => "latency",
            Metric::Conn1k => "connections_per_s_1000_clients",
            Metric::Rr1k => "requests_per_s_1000_connections",
        }
    }
}

/// Median, lowest and highest of a set of figures.
#[derive(Debug, Clone, Copy)]
pub struct Spread {
    /// The median.
    pub median: f64,
    /// The lowest.
    pub min: f64,
    /// The highest.
    pub max: f64,
}

impl Spread {
    /// Of `v`; None when empty.
    pub fn of(v: impl IntoIterator<Item = f64>) -> Option<Spread> {
        let mut s: Vec<f64> = v.into_iter().collect();
        if s.is_empty() {
            return None;
        }
        s.sort_by(f64::total_cmp);
        let n = s.len();
        let median = if n % 2 == 1 { s[n / 2] } else { (s[n / 2 - 1] + s[n / 2]) / 2.0 };
        Some(Spread { median, min: s[0], max: s[n - 1] })
    }
}

/// Every sample, by path and metric.
#[derive(Debug, Default)]
pub struct Results {
    samples: BTreeMap<(usize, Metric), Vec<Sample>>,
}

fn index(p: Path) -> usize {
    Path::ALL.iter().position(|q| *q == p).unwrap_or(0)
}

impl Results {
    /// Adds one sample.
    pub fn push(&mut self, path: Path, metric: Metric, s: Sample) {
        self.samples.entry((index(path), metric)).or_default().push(s);
    }

    /// The samples of a path and metric.
    pub fn samples(&self, path: Path, metric: Metric) -> &[Sample] {
        self.samples.get(&(index(path), metric)).map_or(&[], Vec::as_slice)
    }

    /// Frames lb lost over every run of `metric` (lb paths only).
    pub fn lost_frames(&self, path: Path, metric: Metric) -> Option<u64> {
        let samples = self.samples(path, metric);
        if samples.is_empty() {
            return None;
        }
        samples.iter().map(|s| s.lb_lost_frames).sum()
    }

    /// Spread of the main figure.
    pub fn value(&self, path: Path, metric: Metric) -> Option<Spread> {
        Spread::of(self.samples(path, metric).iter().map(|s| s.value))
    }

    /// Spread of latency p50 or p99 (µs) of the one-client runs.
    pub fn latency(&self, path: Path, p99: bool) -> Option<Spread> {
        self.latency_of(path, Metric::Latency, p99)
    }

    /// Spread of latency p50 or p99 (µs) of `metric`'s runs.
    pub fn latency_of(&self, path: Path, metric: Metric, p99: bool) -> Option<Spread> {
        Spread::of(self.samples(path, metric).iter().map(|s| if p99 { s.p99_us } else { s.p50_us }))
    }

    /// Median ratio of `a`'s latency to `b`'s for a metric.
    pub fn latency_ratio(&self, a: Path, b: Path, metric: Metric, p99: bool) -> Option<f64> {
        Some(self.latency_of(a, metric, p99)?.median / self.latency_of(b, metric, p99)?.median)
    }

    /// Latency added over the direct path (medians), µs.
    pub fn added_latency(&self, path: Path, p99: bool) -> Option<f64> {
        Some(self.latency(path, p99)?.median - self.latency(Path::Direct, p99)?.median)
    }

    /// Median ratio of `a` to `b` for a metric.
    pub fn ratio(&self, a: Path, b: Path, metric: Metric) -> Option<f64> {
        Some(self.value(a, metric)?.median / self.value(b, metric)?.median)
    }

    /// Median machine CPU seconds per unit of work (Gbit, Mpacket, 1000
    /// connections).
    pub fn machine_cpu_per_unit(&self, path: Path, metric: Metric) -> Option<f64> {
        Spread::of(
            self.samples(path, metric)
                .iter()
                .filter(|s| s.work > 0.0)
                .map(|s| s.cpu.busy_s / unit_work(metric, s.work)),
        )
        .map(|s| s.median)
    }

    /// Median share of a download's bits that crossed the balancer
    /// namespace towards the client (1: all of them; direct server return
    /// takes it to about 0).
    pub fn through_lb(&self, path: Path) -> Option<f64> {
        Spread::of(
            self.samples(path, Metric::TcpDown)
                .iter()
                .filter(|s| s.work > 0.0)
                .map(|s| s.lb_out_gbit / s.work),
        )
        .map(|s| s.median)
    }

    /// Median balancer-process CPU seconds per unit of work.
    pub fn proc_cpu_per_unit(&self, path: Path, metric: Metric) -> Option<f64> {
        Spread::of(
            self.samples(path, metric)
                .iter()
                .filter(|s| s.work > 0.0)
                .filter_map(|s| Some(s.cpu.proc_s? / unit_work(metric, s.work))),
        )
        .map(|s| s.median)
    }

    /// The best of the peers (nftables, HAProxy, nginx) for a metric.
    pub fn best_peer(&self, metric: Metric) -> Option<(Path, f64)> {
        [Path::Nft, Path::Haproxy, Path::Nginx]
            .into_iter()
            .filter_map(|p| Some((p, self.value(p, metric)?.median)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }
}

/// Connections count per thousand, so all units read alike.
fn unit_work(metric: Metric, work: f64) -> f64 {
    if matches!(metric, Metric::Conn | Metric::Conn1k | Metric::Rr1k) {
        work / 1000.0
    } else {
        work
    }
}
