//! The benchmark's tables: one row per fault kind, then which backend failed
//! in which trials.

use std::{collections::BTreeMap, time::Duration};

use crate::{BACKENDS, Fault, Trial};

/// The summary table, then the per-victim breakdown.
pub fn print(rows: &[(Fault, Vec<Trial>)]) {
    println!(
        "\n| fault | failover p50 | p99 | max | failed new conns (failed / attempted) | broken flows to survivors | detected by | detection p50 / max (agent log) | client-side port exhaustion |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (fault, trials) in rows {
        println!("{}", summary_row(*fault, trials));
    }
    println!("\nPer victim: max failover (trials)\n");
    println!(
        "| fault | {} |",
        (1..=BACKENDS).map(|i| format!("b{i}")).collect::<Vec<_>>().join(" | ")
    );
    println!("|---|{}", "---|".repeat(BACKENDS));
    for (fault, trials) in rows {
        let cells: Vec<String> = (1..=BACKENDS).map(|v| victim_cell(trials, v)).collect();
        println!("| {} | {} |", fault.name(), cells.join(" | "));
    }
}

fn summary_row(fault: Fault, trials: &[Trial]) -> String {
    let failover: Vec<Duration> = trials.iter().map(|t| t.failover).collect();
    let detection: Vec<Duration> = trials.iter().filter_map(|t| t.detected_after).collect();
    let sum = |f: fn(&Trial) -> usize| trials.iter().map(f).sum::<usize>();
    format!(
        "| {} | {} | {} | {} | {} / {} | {} | {} | {} / {} | {} |",
        fault.name(),
        fmt_ms(percentile(&failover, 0.5)),
        fmt_ms(percentile(&failover, 0.99)),
        fmt_ms(percentile(&failover, 1.0)),
        sum(|t| t.failed),
        sum(|t| t.attempted),
        sum(|t| t.broken_survivors),
        signals(trials),
        fmt_ms(percentile(&detection, 0.5)),
        fmt_ms(percentile(&detection, 1.0)),
        sum(|t| t.port_exhausted),
    )
}

/// `refused 47, probe 3`: how many trials each signal detected, most first.
fn signals(trials: &[Trial]) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for t in trials {
        *counts.entry(t.signal.as_deref().unwrap_or("undetected")).or_default() += 1;
    }
    let mut counts: Vec<_> = counts.into_iter().collect();
    counts.sort_by_key(|&(_, n)| std::cmp::Reverse(n));
    counts.iter().map(|(s, n)| format!("{s} {n}")).collect::<Vec<_>>().join(", ")
}

fn victim_cell(trials: &[Trial], victim: usize) -> String {
    let of: Vec<Duration> =
        trials.iter().filter(|t| t.victim == victim).map(|t| t.failover).collect();
    format!("{} ({})", fmt_ms(percentile(&of, 1.0)), of.len())
}

/// Nearest-rank percentile (`q` = 1.0: the maximum); None if empty.
fn percentile(values: &[Duration], q: f64) -> Option<Duration> {
    let mut v = values.to_vec();
    v.sort();
    let rank = (v.len() as f64 * q).ceil() as usize;
    v.get(rank.clamp(1, v.len().max(1)) - 1).copied()
}

fn fmt_ms(d: Option<Duration>) -> String {
    d.map_or("–".to_owned(), |d| format!("{:.1} ms", d.as_secs_f64() * 1e3))
}
