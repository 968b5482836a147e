//! The descriptors splice mode may hold: its open-file limit less what lb
//! holds besides its connections and a reserve. Connections, pipes and UDP
//! sessions count theirs against the budget; at the budget, new
//! connections wait in the listen queue, a direction copies instead of
//! splicing, and a new UDP session is refused (counted).
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
/// control and metrics connections, DNS, files, listeners a reload adds.
pub const RESERVE: u64 = 64;

/// Below this, the budget is reported as too small to serve with.
pub const LOW: u64 = 256;

/// A budget: how many descriptors may be held, and how many are.
#[derive(Debug)]
pub struct Budget {
    limit: AtomicI64,
    used: AtomicI64,
}

/// Splice mode's budget: unlimited until [`set`] (unit tests, other modes).
static BUDGET: Budget = Budget::new(i64::MAX);

/// Sets the budget to `n` descriptors; those already held count against
/// it (listeners serve before the budget is known).
pub fn set(n: u64) {
    BUDGET.limit.store(i64::try_from(n).unwrap_or(i64::MAX), Ordering::Relaxed);
}

/// Descriptors counted against the budget now.
pub fn used() -> u64 {
    BUDGET.used.load(Ordering::Relaxed).max(0) as u64
}

/// The budget, if one was set (splice mode).
pub fn limit() -> Option<u64> {
    let limit = BUDGET.limit.load(Ordering::Relaxed);
    (limit != i64::MAX).then_some(limit.max(0) as u64)
}

/// What the budget should be: `limit` (the open-file limit) less `others`
/// (descriptors lb holds besides those the budget counts), the reserve and
/// one per probed backend (a probe holds one socket while it runs).
pub fn size(limit: u64, others: u64, probed: u64) -> u64 {
    limit.saturating_sub(others + RESERVE + probed)
}

/// Descriptors counted against a budget; given back when dropped.
#[derive(Debug)]
pub struct Held(&'static Budget, i64);

/// `n` descriptors of splice mode's budget, if it has them.
pub fn take(n: u32) -> Option<Held> {
    BUDGET.take(n)
}

/// Whether the budget has room for `n` more descriptors now.
pub fn room(n: u32) -> bool {
    BUDGET.room(i64::from(n))
}

/// `n` descriptors opened already (a connection accepted once [`room`]
/// said yes): counted even if others took the room meanwhile, which the
/// reserve absorbs (a few per thread at most).
pub fn count(n: u32) -> Held {
    BUDGET.count(i64::from(n))
}

impl Budget {
    const fn new(limit: i64) -> Self {
        Self { limit: AtomicI64::new(limit), used: AtomicI64::new(0) }
    }

    fn room(&self, n: i64) -> bool {
        self.used.load(Ordering::Relaxed) + n <= self.limit.load(Ordering::Relaxed)
    }

    fn count(&'static self, n: i64) -> Held {
        self.used.fetch_add(n, Ordering::Relaxed);
        Held(self, n)
    }

    fn take(&'static self, n: u32) -> Option<Held> {
        let n = i64::from(n);
        let limit = self.limit.load(Ordering::Relaxed);
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            if used + n > limit {
                return None;
            }
            match self.used.compare_exchange_weak(
                used,
                used + n,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(Held(self, n)),
                Err(now) => used = now,
            }
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.used.fetch_sub(self.1, Ordering::Relaxed);
    }
}

/// Waits (looking every 10 ms) until the budget has room for `n`
/// descriptors, saying so at most once a second; `short` is called first
/// each time there is none (to give back descriptors kept idle).
pub async fn wait_for_room(n: u32, what: &str, short: impl Fn()) {
    loop {
        if room(n) {
            return;
        }
        short();
        if room(n) {
            return;
        }
        static EVERY: Throttle = Throttle::new(Duration::from_secs(1));
        if let Some(skipped) = EVERY.allow() {
            tracing::warn!(
                "{what}: splice mode holds all the descriptors its open-file limit allows (less \
                 those lb needs besides: status, metrics, DNS, probes): new connections wait in \
                 the listen queue until others close; raise the limit (LimitNOFILE= in the unit, \
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
        assert!(B.take(1).is_none() && !B.room(1), "spent");
        drop(a);
        assert!(B.take(3).is_none(), "2 back, not 3");
        let c = B.take(2).expect("the 2 given back");
        // Counted past the limit: the next take waits for it to come back.
        let d = B.count(2);
        assert!(!B.room(0), "over the limit");
        drop((b, c, d));
        assert_eq!(B.used.load(Ordering::Relaxed), 0);
        assert!(B.room(5));
    }

    #[test]
    fn the_budget_is_the_limit_less_what_is_open_and_the_reserve() {
        assert_eq!(size(1024, 40, 3), 1024 - 40 - 64 - 3);
        assert_eq!(size(100, 40, 3), 0, "never below nothing");
    }
}
