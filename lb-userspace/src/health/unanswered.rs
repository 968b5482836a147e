//! The unanswered-SYN signal: a backend that stops answering connections
//! (blackholed, its host gone, its accept queue full) is found from the
//! datapath's per-backend counts of connections opened and answered,
//! sampled every few milliseconds, well before a probe times out.
//!
//! A backend is reported when at least `needed` connections were opened
//! towards it more than `timeout` ago and it has answered none since the
//! first of them. An answer (a SYN-ACK or a reset) from it starts the count
//! again, keeping only the connections opened since the previous sample
//! that the answers seen since then cannot cover (so a backend that dies
//! right after answering an older connection is not forgiven the ones just
//! sent to it). A single lost packet, a slow connection among answered
//! ones, or a backend that is merely busy never trips it.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use lb_common::abi::SynCounters;

/// What one backend's counters have done lately.
#[derive(Debug, Clone)]
pub struct SynWatch {
    /// Connections opened before this count were answered, or reported.
    baseline: u64,
    /// The answered count last seen.
    answered: u64,
    /// The opened count of the previous sample.
    last_opened: u64,
    /// Samples of the opened count newer than `timeout`, plus the newest
    /// one older than it (the count as of `timeout` ago), oldest first.
    history: VecDeque<(Instant, u64)>,
}

/// A report: connections opened more than `timeout` ago, none answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unanswered {
    /// How many.
    pub connections: u64,
}

impl SynWatch {
    /// Starts watching from counters `now`: what came before is not judged.
    pub fn new(now: SynCounters) -> Self {
        Self {
            baseline: now.opened,
            answered: now.answered,
            last_opened: now.opened,
            history: VecDeque::new(),
        }
    }

    /// Takes a sample `c` at `at`; reports when at least `needed` (> 0)
    /// connections opened more than `timeout` ago are unanswered. After a
    /// report the count starts again, so it fires once per `needed` more.
    pub fn observe(
        &mut self,
        at: Instant,
        c: SynCounters,
        timeout: Duration,
        needed: u32,
    ) -> Option<Unanswered> {
        if c.opened < self.baseline {
            // Counters that went back: a new datapath.
            *self = Self::new(c);
        } else if c.answered != self.answered {
            // Of the connections opened since the previous sample, as many
            // as the new answers do not cover may still wait (answers come
            // roughly in order): they keep counting.
            let opened = c.opened.saturating_sub(self.last_opened);
            let answers = c.answered.wrapping_sub(self.answered);
            let waiting = opened.saturating_sub(answers);
            self.baseline = c.opened.saturating_sub(waiting).max(self.baseline);
            self.answered = c.answered;
            self.history.clear();
        }
        self.last_opened = c.opened;
        self.history.push_back((at, c.opened));
        let cutoff = at.checked_sub(timeout)?;
        // Keep only the newest sample at or before the cutoff.
        while self.history.get(1).is_some_and(|&(t, _)| t <= cutoff) {
            self.history.pop_front();
        }
        let &(t, opened) = self.history.front()?;
        if t > cutoff || needed == 0 {
            return None;
        }
        let connections = opened.saturating_sub(self.baseline);
        (connections >= u64::from(needed)).then(|| {
            self.baseline = c.opened;
            self.history.clear();
            Unanswered { connections }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_millis(25);

    fn c(opened: u64, answered: u64) -> SynCounters {
        SynCounters { opened, answered }
    }

    /// Feeds (ms, opened, answered) samples; returns the ms of each report.
    fn run(samples: &[(u64, u64, u64)]) -> Vec<u64> {
        let t0 = Instant::now();
        let mut w = SynWatch::new(c(0, 0));
        samples
            .iter()
            .filter_map(|&(ms, o, a)| {
                w.observe(t0 + Duration::from_millis(ms), c(o, a), T, 3).map(|_| ms)
            })
            .collect()
    }

    #[test]
    fn reports_once_three_connections_are_older_than_the_timeout_and_unanswered() {
        // Opened at 0, 3 and 6 ms; nothing answers.
        let s: Vec<_> = (0..=40).step_by(5).map(|ms| (ms, (ms / 3 + 1).min(3), 0)).collect();
        // The third was opened by 10 ms: old enough at 35 ms.
        assert_eq!(run(&s), vec![35]);
    }

    #[test]
    fn any_answer_starts_the_count_again() {
        let mut s = vec![(0, 1, 0), (5, 2, 0), (10, 3, 0)];
        // An answer at 20 ms (to anything): the three are forgiven.
        s.extend([(20, 3, 1), (30, 3, 1), (40, 3, 1), (60, 3, 1)]);
        assert_eq!(run(&s), Vec::<u64>::new());
    }

    #[test]
    fn connections_sent_just_before_the_last_answer_still_count() {
        // Samples every 5 ms. At 10 ms three connections have gone out since
        // the last sample, and one earlier connection's answer arrives with
        // them; then the backend dies and no client opens anything more.
        // Two of the three still wait; one more connection makes three.
        let s = [(0, 1, 0), (5, 1, 0), (10, 4, 1), (15, 5, 1), (30, 5, 1), (40, 5, 1)];
        assert_eq!(run(&s), vec![40]);
    }

    #[test]
    fn connections_answered_with_the_answer_seen_are_forgiven() {
        // Three connections between two samples, all three answered by the
        // second; then the backend gets no more connections (it lives).
        let s = [(0, 1, 1), (5, 4, 4), (10, 4, 4), (40, 4, 4), (100, 4, 4)];
        assert_eq!(run(&s), Vec::<u64>::new());
    }

    #[test]
    fn one_lost_syn_long_ago_does_not_count_with_fresh_ones() {
        // One unanswered connection at 0, then answers stop mattering: two
        // more just now, younger than the timeout.
        let s = [(0, 1, 0), (1000, 1, 0), (1001, 3, 0), (1010, 3, 0)];
        assert_eq!(run(&s), Vec::<u64>::new());
    }

    #[test]
    fn busy_backend_answering_slowly_is_never_reported() {
        // 1 connection a ms, each answered 20 ms later (below the timeout).
        let s: Vec<_> = (0..500u64).map(|ms| (ms, ms + 1, ms.saturating_sub(20))).collect();
        assert_eq!(run(&s), Vec::<u64>::new());
    }

    #[test]
    fn reports_again_only_after_as_many_more() {
        let s: Vec<_> = (0..=200).step_by(5).map(|ms| (ms, ms / 5 + 1, 0)).collect();
        let fired = run(&s);
        assert!(fired.len() >= 2, "{fired:?}");
        assert_eq!(fired[0], 25 + 10);
    }

    #[test]
    fn zero_needed_is_off() {
        let t0 = Instant::now();
        let mut w = SynWatch::new(c(0, 0));
        for ms in 0..100 {
            assert!(w.observe(t0 + Duration::from_millis(ms), c(ms, 0), T, 0).is_none());
        }
    }
}
