//! The flood bench's figures per path, and the report (markdown, JSON).

use std::{fmt::Write as _, time::Duration};

use anyhow::Result;
use lb_userspace::control::protocol::FloodStatus;

use crate::{
    AFTER, BEFORE, FLOOD, WARM,
    bed::Bed,
    cpu::Cpu,
    load::{self, Attempt, Seen},
    paths::Path,
};

/// One path's figures.
#[derive(Debug, Clone)]
pub struct Figures {
    pub path: &'static str,
    /// Successful short connections a second, before the flood (after the
    /// ramp-up).
    pub rate_before: f64,
    /// The same during the flood.
    pub rate_during: f64,
    /// During / before.
    pub rate_ratio: f64,
    /// In the first second after the flood, / before.
    pub after_1s_ratio: f64,
    /// Short connections that succeeded among those started during the
    /// flood (%).
    pub success_during_pct: f64,
    /// Short connections started during the flood.
    pub tried_during: usize,
    /// p99 duration of a short connection (connect to close), ms, before
    /// and during (failures counted at the time they took).
    pub p99_before_ms: f64,
    pub p99_during_ms: f64,
    /// Keep-alive connections broken (reset, closed, or no answer within
    /// 5 s), of [`load::KEEP`]; and those that did not open at all.
    pub keep_broken: usize,
    pub keep_not_opened: usize,
    /// Packets the client namespace sent while hping3 flooded (the flood's
    /// SYNs and the legitimate load's packets), and their rate.
    pub flood_syns: u64,
    pub flood_rate: f64,
    /// CPU during the flood: all CPUs busy (cores), of which kernel
    /// (system + irq + softirq), and the balancer process's own (cores).
    pub cpu_busy_cores: f64,
    pub cpu_kernel_cores: f64,
    pub cpu_process_cores: Option<f64>,
    /// lb only: whether `lb status` showed flood mode on during the flood,
    /// and its state at the end of the run.
    pub flood_mode_seen: Option<bool>,
    pub flood_mode_end: Option<FloodStatus>,
}

impl Figures {
    /// The figures of `seen` for `path`.
    pub fn of(
        path: Path,
        seen: &Seen,
        flood_syns: u64,
        cpu: Cpu,
        flood_mode_seen: bool,
        flood_mode_end: Option<FloodStatus>,
    ) -> Figures {
        let lb = flood_mode_end.is_some();
        let in_window = |from: Duration, to: Duration| -> Vec<&Attempt> {
            seen.attempts.iter().filter(|a| a.at >= from && a.at < to).collect()
        };
        let rate = |v: &[&Attempt], secs: f64| v.iter().filter(|a| a.ok).count() as f64 / secs;
        let before = in_window(WARM, BEFORE);
        let during = in_window(BEFORE, BEFORE + FLOOD);
        let after = in_window(BEFORE + FLOOD, BEFORE + FLOOD + Duration::from_secs(1));
        let rate_before = rate(&before, (BEFORE - WARM).as_secs_f64());
        let rate_during = rate(&during, FLOOD.as_secs_f64());
        let ratio = |x: f64| if rate_before > 0.0 { x / rate_before } else { 0.0 };
        let ok_during = during.iter().filter(|a| a.ok).count();
        Figures {
            path: path.name(),
            rate_before,
            rate_during,
            rate_ratio: ratio(rate_during),
            after_1s_ratio: ratio(rate(&after, 1.0)),
            success_during_pct: if during.is_empty() {
                0.0
            } else {
                100.0 * ok_during as f64 / during.len() as f64
            },
            tried_during: during.len(),
            p99_before_ms: p99_ms(&before),
            p99_during_ms: p99_ms(&during),
            keep_broken: seen.broken.len(),
            keep_not_opened: seen.not_opened,
            flood_syns,
            flood_rate: flood_syns as f64 / cpu.wall_s.max(1e-9),
            cpu_busy_cores: cpu.busy_s / cpu.wall_s.max(1e-9),
            cpu_kernel_cores: cpu.kernel_s / cpu.wall_s.max(1e-9),
            cpu_process_cores: cpu.proc_s.map(|p| p / cpu.wall_s.max(1e-9)),
            flood_mode_seen: lb.then_some(flood_mode_seen),
            flood_mode_end,
        }
    }

    /// As JSON.
    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "path": self.path,
            "rate_before": self.rate_before,
            "rate_during": self.rate_during,
            "rate_ratio": self.rate_ratio,
            "after_1s_ratio": self.after_1s_ratio,
            "success_during_pct": self.success_during_pct,
            "tried_during": self.tried_during,
            "p99_before_ms": self.p99_before_ms,
            "p99_during_ms": self.p99_during_ms,
            "keep_broken": self.keep_broken,
            "keep_not_opened": self.keep_not_opened,
            "flood_syns": self.flood_syns,
            "flood_rate": self.flood_rate,
            "cpu_busy_cores": self.cpu_busy_cores,
            "cpu_kernel_cores": self.cpu_kernel_cores,
            "cpu_process_cores": self.cpu_process_cores,
            "flood_mode_seen": self.flood_mode_seen,
            "flood_mode_end": self.flood_mode_end.as_ref().map(serde_json::to_value).transpose().ok().flatten(),
        })
    }

    /// One line for the progress output.
    pub fn summary(&self) -> String {
        format!(
            "{}: success {:.2} % of {}, rate {:.0}/s during vs {:.0}/s before ({:.2}x), p99 \
             {:.1} ms (before {:.1}), {} keep-alive broken, first second after {:.2}x, flood \
             {:.0} packets/s",
            self.path,
            self.success_during_pct,
            self.tried_during,
            self.rate_during,
            self.rate_before,
            self.rate_ratio,
            self.p99_during_ms,
            self.p99_before_ms,
            self.keep_broken,
            self.after_1s_ratio,
            self.flood_rate
        )
    }
}

/// The 99th percentile of the attempts' durations, in ms.
fn p99_ms(v: &[&Attempt]) -> f64 {
    let mut d: Vec<Duration> = v.iter().map(|a| a.took).collect();
    if d.is_empty() {
        return 0.0;
    }
    d.sort_unstable();
    let i = ((d.len() as f64 * 0.99).ceil() as usize).clamp(1, d.len()) - 1;
    d[i].as_secs_f64() * 1000.0
}

/// hping3's TCP flag option for the flood: `LB_FLOOD_FLAG` (`-A` for an
/// ACK flood, the next attack once SYNs are challenged), `-S` by default.
pub fn flag() -> String {
    std::env::var("LB_FLOOD_FLAG").unwrap_or_else(|_| "-S".to_owned())
}

/// Every setting the figures depend on.
pub fn settings(bed: &Bed) -> Vec<(String, String)> {
    let mut s = vec![
        (
            "flood".to_owned(),
            format!(
                "hping3 --flood {} -p {} --rand-source {} from the client namespace, {} s, in \
                 its own process group, stopped by SIGKILL to the group; its rate is the \
                 client interface's packets in that time (the legitimate load's included)",
                flag(),
                crate::bed::RR_PORT,
                lb_tests::topology::VIP4,
                FLOOD.as_secs()
            ),
        ),
        (
            "legitimate load".to_owned(),
            format!(
                "{} workers of short connections (connect, 64-byte request, 128-byte answer, \
                 close; failed after {} s) and {} keep-alive connections asking every {} ms \
                 (broken: reset, closed or no answer within {} s), to lb-rr serve on the one \
                 backend",
                load::SHORT,
                load::SHORT_PATIENCE.as_secs(),
                load::KEEP,
                load::KEEP_EVERY.as_millis(),
                load::KEEP_PATIENCE.as_secs()
            ),
        ),
        (
            "phases".to_owned(),
            format!(
                "{} s load alone (first {} s left out as ramp-up), {} s with the flood, {} s \
                 after",
                BEFORE.as_secs(),
                WARM.as_secs(),
                FLOOD.as_secs(),
                AFTER.as_secs()
            ),
        ),
        (
            "lb".to_owned(),
            "scripts/bench/lb.toml.in: defaults (flows.capacity 262144, so 32768 pending; \
             flows.flood_threshold 20000/s); lb-xdp native XDP, lb-tc tc hook, lb-splice \
             splice mode"
                .to_owned(),
        ),
        (
            "peers".to_owned(),
            "nftables DNAT (scripts/bench/nft-dnat.nft.in, conntrack defaults of the \
             namespace), HAProxy 2.6 (scripts/bench/haproxy.cfg.in, maxconn 7000); the \
             kernels' SYN cookies on (net.ipv4.tcp_syncookies default)"
                .to_owned(),
        ),
        (
            "balancer routes".to_owned(),
            "default route of the lb namespace towards the client namespace (answers to \
             spoofed sources leave and end there)"
                .to_owned(),
        ),
        (
            "CPU".to_owned(),
            "/proc/stat over the flood's 4 s (the machine's 2 vCPUs: client, flooder, \
             balancer and backend share them), and the balancer process tree's own time"
                .to_owned(),
        ),
    ];
    s.extend(bed.settings());
    s
}

/// The report as markdown.
pub fn markdown(all: &[Figures], settings: &[(String, String)]) -> String {
    let mut out = String::from("# Flood bench: a spoofed SYN flood at the VIP\n\n");
    let _ = writeln!(
        out,
        "| path | success during | rate during / before | p99 during (before) | keep-alive \
         broken | first 1 s after / before | client packets/s | CPU busy (kernel) | balancer \
         process | flood mode |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|");
    for f in all {
        let _ = writeln!(
            out,
            "| {} | {:.2} % of {} | {:.0}/s / {:.0}/s = {:.2}x | {:.1} ms ({:.1} ms) | {} of {}{} \
             | {:.2}x | {:.0} | {:.2} ({:.2}) cores | {} | {} |",
            f.path,
            f.success_during_pct,
            f.tried_during,
            f.rate_during,
            f.rate_before,
            f.rate_ratio,
            f.p99_during_ms,
            f.p99_before_ms,
            f.keep_broken,
            load::KEEP,
            if f.keep_not_opened > 0 {
                format!(" ({} not opened)", f.keep_not_opened)
            } else {
                String::new()
            },
            f.after_1s_ratio,
            f.flood_rate,
            f.cpu_busy_cores,
            f.cpu_kernel_cores,
            f.cpu_process_cores.map_or("-".to_owned(), |c| format!("{c:.2} cores")),
            match f.flood_mode_seen {
                Some(true) => "on during the flood",
                Some(false) => "never on",
                None => "-",
            },
        );
    }
    let _ = writeln!(
        out,
        "\nGoals (issue 14): success >= 99.9 %, rate during >= 0.6x before, 0 \
                           keep-alive broken, normal service within 1 s of the flood's end.\n"
    );
    let _ = writeln!(out, "## Settings\n");
    for (k, v) in settings {
        let _ = writeln!(out, "- {k}: {v}");
    }
    out
}

/// The report as JSON.
pub fn json(all: &[Figures], settings: &[(String, String)]) -> Result<String> {
    let settings: std::collections::BTreeMap<&str, &str> =
        settings.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Ok(serde_json::to_string_pretty(&serde_json::json!({
        "paths": all.iter().map(Figures::to_json).collect::<Vec<_>>(),
        "settings": settings,
    }))?)
}
