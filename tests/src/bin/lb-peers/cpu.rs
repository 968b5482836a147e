//! CPU time across a run, two ways:
//!
//! - the machine's, from /proc/stat (all CPUs, all namespaces): client,
//!   balancer and backend share these 2 vCPUs, so this is the whole
//!   exchange; its excess over the direct path is what balancing added. For
//!   kernel paths (nftables, XDP) it is the only measure: their work runs in
//!   softirq context, charged to no process.
//! - the balancer process's (proxies and `lb`), from /proc/PID/stat of the
//!   process and its children (nginx workers): utime + stime. It misses the
//!   softirq work the kernel does for its sockets.

use std::time::Instant;

/// CPU seconds spent across a run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu {
    /// Wall time of the run.
    pub wall_s: f64,
    /// Busy time of all CPUs (everything but idle and iowait).
    pub busy_s: f64,
    /// Of which system + irq + softirq.
    pub kernel_s: f64,
    /// The balancer process tree's user + system time, if there is one.
    pub proc_s: Option<f64>,
}

/// A run being timed.
#[derive(Debug)]
pub struct Started {
    t: Instant,
    stat: [u64; 3],
    pid: Option<u32>,
    proc_ticks: u64,
}

impl Cpu {
    /// Takes the starting snapshot.
    pub fn start(pid: Option<u32>) -> Started {
        Started { t: Instant::now(), stat: machine(), pid, proc_ticks: pid.map_or(0, tree_ticks) }
    }
}

impl Started {
    /// The CPU time since [`Cpu::start`].
    pub fn stop(self) -> Cpu {
        let now = machine();
        let hz = ticks_per_second();
        Cpu {
            wall_s: self.t.elapsed().as_secs_f64(),
            busy_s: now[0].saturating_sub(self.stat[0]) as f64 / hz,
            kernel_s: now[1].saturating_sub(self.stat[1]) as f64 / hz,
            proc_s: self.pid.map(|p| tree_ticks(p).saturating_sub(self.proc_ticks) as f64 / hz),
        }
    }
}

/// (busy, kernel) ticks from the `cpu` line of /proc/stat.
fn machine() -> [u64; 3] {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    let get = |i: usize| f.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal
    let total: u64 = (0..8).map(get).sum();
    [total - get(3) - get(4), get(2) + get(5) + get(6), total]
}

/// utime + stime of `pid` and every process below it.
fn tree_ticks(pid: u32) -> u64 {
    let stats = processes();
    let tree = descendants(&stats, pid);
    stats.iter().filter(|(p, _, _)| tree.contains(p)).map(|(_, _, t)| t).sum()
}

/// (pid, parent pid, utime + stime ticks) of every process.
fn processes() -> Vec<(u32, u32, u64)> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| {
            let s = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            // Fields after the command name (which may contain spaces).
            let rest: Vec<&str> = s.rsplit_once(')')?.1.split_whitespace().collect();
            let ppid = rest.get(1)?.parse().ok()?;
            let ticks = rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?;
            Some((p, ppid, ticks))
        })
        .collect()
}

fn descendants(stats: &[(u32, u32, u64)], pid: u32) -> Vec<u32> {
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(stats.iter().filter(|(_, pp, _)| *pp == parent).map(|(p, _, _)| *p));
        i += 1;
    }
    tree
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}
