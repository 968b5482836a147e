//! The descriptors splice mode may hold: its open-file limit less what lb
//! had open when it started and a reserve. Connections, pipes and UDP
//! sessions take theirs from the budget before they open them; at the
//! budget, new connections wait in the listen queue, a direction copies
//! instead of splicing, and a new UDP session is refused (counted).
//!
//! Why a budget and not the kernel's EMFILE: at the limit every descriptor
//! a connection frees goes to the next of the many accepts and connects
//! retrying, so the health probes, `lb status` and the metrics, which need
//! one now and then, would find none for as long as the load lasts (a
//! probe meeting EMFILE is skipped, see `health`, but the operator would be
//! left without a status just when lb is busiest).

use std::{
    sync::atomic::{AtomicI64, Ordering},
    time::Duration,
};

use crate::throttle::{self, Throttle};

/// Descriptors kept out of the budget for everything else lb opens: the
/// control and metrics connections, DNS, files, and a few probes at once.
pub const RESERVE: u64 = 64;

/// A count of descriptors left.
#[derive(Debug)]
pub struct Budget(AtomicI64);

/// Splice mode's budget: unlimited until [`set`] (unit tests, other modes).
static BUDGET: Budget = Budget::new(i64::MAX);

/// Sets the budget to `n` descriptors (at start, before any is taken).
pub fn set(n: u64) {
    BUDGET.0.store(i64::try_from(n).unwrap_or(i64::MAX), Ordering::Relaxed);
}

/// What the budget should be: `limit` (the open-file limit) less `open`
/// (descriptors lb holds now), the reserve and two per probed backend (a
/// probe can hold two: direct and through the tunnel).
pub fn size(limit: u64, open: u64, probed: u64) -> u64 {
    limit.saturating_sub(open + RESERVE + 2 * probed)
}

/// Descriptors taken from a budget; given back when dropped.
#[derive(Debug)]
pub struct Held(&'static Budget, i64);

/// `n` descriptors of splice mode's budget, if it has them.
pub fn take(n: u32) -> Option<Held> {
    BUDGET.take(n)
}

impl Budget {
    const fn new(n: i64) -> Self {
        Self(AtomicI64::new(n))
    }

    fn take(&'static self, n: u32) -> Option<Held> {
        let n = i64::from(n);
        let mut left = self.0.load(Ordering::Relaxed);
        loop {
            if left < n {
                return None;
            }
            match self.0.compare_exchange_weak(left, left - n, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Some(Held(self, n)),
                Err(now) => left = now,
            }
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.0.fetch_add(self.1, Ordering::Relaxed);
    }
}

/// `n` descriptors, waiting for them (every 10 ms) while the budget is
/// spent, and saying so at most once a second.
pub async fn wait(n: u32, what: &str) -> Held {
    loop {
        if let Some(held) = take(n) {
            return held;
        }
        static EVERY: Throttle = Throttle::new(Duration::from_secs(1));
        if let Some(skipped) = EVERY.allow() {
            tracing::warn!(
                "{what}: splice mode holds all the descriptors its open-file limit allows (less \
                 {RESERVE} kept for status, metrics and probes): new connections wait in the \
                 listen queue until others close; raise the limit (LimitNOFILE= in the unit, \
                 ulimit -n){}",
                throttle::more(skipped)
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_taken_are_given_back_when_dropped() {
        static B: Budget = Budget::new(5);
        let a = B.take(2).expect("2 of 5");
        let b = B.take(3).expect("3 of 3");
        assert!(B.take(1).is_none(), "spent");
        drop(a);
        assert!(B.take(3).is_none(), "2 back, not 3");
        let c = B.take(2).expect("the 2 given back");
        drop((b, c));
        assert_eq!(B.0.load(Ordering::Relaxed), 5);
    }

    #[test]
    fn the_budget_is_the_limit_less_what_is_open_and_the_reserve() {
        assert_eq!(size(1024, 40, 3), 1024 - 40 - 64 - 6);
        assert_eq!(size(100, 40, 3), 0, "never below nothing");
    }
}
