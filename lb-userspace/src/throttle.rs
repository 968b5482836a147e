//! Warnings about a condition that lasts (out of descriptors, say) and is
//! met by every accept or probe while it does: logged at most once a
//! period, with how many were left out, so the log names the problem
//! without drowning in it.

use std::{
    sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// One warning's schedule; a `static` shared by every thread that meets
/// the condition.
#[derive(Debug)]
pub struct Throttle {
    period: Duration,
    /// When the last warning went out: ms since the process's first use of
    /// any throttle, plus one (0: never).
    last: AtomicU64,
    /// Occurrences left out since then.
    skipped: AtomicU64,
}

impl Throttle {
    pub const fn new(period: Duration) -> Self {
        Self { period, last: AtomicU64::new(0), skipped: AtomicU64::new(0) }
    }

    /// Whether to log this occurrence: `Some(n)` with the `n` occurrences
    /// left out since the last one logged, or `None` (left out, counted).
    pub fn allow(&self) -> Option<u64> {
        static EPOCH: OnceLock<Instant> = OnceLock::new();
        let now = EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1;
        let last = self.last.load(Ordering::Relaxed);
        let due = last == 0 || now >= last + self.period.as_millis() as u64;
        if due
            && self.last.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            return Some(self.skipped.swap(0, Ordering::Relaxed));
        }
        self.skipped.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// " (and N more since the last)" for a warning, or nothing: how many
/// occurrences its throttle left out.
pub fn more(skipped: u64) -> String {
    if skipped == 0 { String::new() } else { format!(" (and {skipped} more since the last)") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_warning_a_period_with_the_count_of_those_left_out() {
        let t = Throttle::new(Duration::from_millis(200));
        assert_eq!(t.allow(), Some(0), "the first is logged");
        for _ in 0..50 {
            assert_eq!(t.allow(), None);
        }
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(t.allow(), Some(50), "the next period's first says how many were left out");
        assert_eq!(t.allow(), None);
    }

    #[test]
    fn threads_racing_log_once() {
        let t = Throttle::new(Duration::from_secs(60));
        let logged: u32 = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|_| s.spawn(|| (0..1000).filter(|_| t.allow().is_some()).count() as u32))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(logged, 1);
        assert_eq!(t.skipped.load(Ordering::Relaxed), 7999);
    }

    #[test]
    fn the_count_reads_as_part_of_a_sentence() {
        assert_eq!(more(0), "");
        assert_eq!(more(3), " (and 3 more since the last)");
    }
}
