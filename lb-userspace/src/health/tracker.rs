//! The health state of one backend from consecutive probe results.
//!
//! Only *consecutive* results count (loxilb's cumulative counters flap):
//! `fall` failures in a row take an up backend down, `rise` successes in a
//! row bring a down one back, and any result agreeing with the current state
//! resets the streak.

use std::time::{Duration, Instant};

/// Up or down, as the checks see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Takes new flows.
    Up,
    /// Gets nothing.
    Down,
}

/// A change of state, with what the log needs to explain it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The new state.
    pub to: Health,
    /// Consecutive results that decided it.
    pub streak: u32,
    /// From the first result of that streak to the decision.
    pub detection: Duration,
}

/// Consecutive-result counter of one backend. Starts up: a backend in the
/// config serves until its checks say otherwise, so a restart of the agent
/// never empties a service.
#[derive(Debug, Clone)]
pub struct Tracker {
    rise: u32,
    fall: u32,
    health: Health,
    streak: u32,
    streak_start: Option<Instant>,
}

impl Tracker {
    /// A tracker needing `rise` successes to come up and `fall` failures to
    /// go down (both at least 1; validated by the config).
    pub fn new(rise: u32, fall: u32) -> Self {
        Self {
            rise: rise.max(1),
            fall: fall.max(1),
            health: Health::Up,
            streak: 0,
            streak_start: None,
        }
    }

    /// New thresholds (a reload changed them); the current state and streak
    /// carry over.
    pub fn set_thresholds(&mut self, rise: u32, fall: u32) {
        self.rise = rise.max(1);
        self.fall = fall.max(1);
    }

    /// The current state.
    pub fn health(&self) -> Health {
        self.health
    }

    /// Counts one probe result seen at `at`.
    pub fn observe(&mut self, ok: bool, at: Instant) -> Option<Transition> {
        let agrees = ok == (self.health == Health::Up);
        if agrees {
            self.streak = 0;
            self.streak_start = None;
            return None;
        }
        self.streak += 1;
        let start = *self.streak_start.get_or_insert(at);
        let needed = if ok { self.rise } else { self.fall };
        (self.streak >= needed).then(|| self.flip(at.saturating_duration_since(start)))
    }

    /// Takes the backend down at once (a passive signal from the datapath
    /// that it refused a connection). A no-op if it is already down.
    pub fn force_down(&mut self) -> Option<Transition> {
        (self.health == Health::Up).then(|| self.flip(Duration::ZERO))
    }

    fn flip(&mut self, detection: Duration) -> Transition {
        self.health = match self.health {
            Health::Up => Health::Down,
            Health::Down => Health::Up,
        };
        let t = Transition { to: self.health, streak: self.streak.max(1), detection };
        self.streak = 0;
        self.streak_start = None;
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(t: &mut Tracker, results: &[bool]) -> Vec<Option<Health>> {
        let t0 = Instant::now();
        results
            .iter()
            .enumerate()
            .map(|(i, &ok)| t.observe(ok, t0 + Duration::from_millis(50 * i as u64)).map(|x| x.to))
            .collect()
    }

    #[test]
    fn goes_down_after_fall_consecutive_failures_only() {
        let mut t = Tracker::new(3, 2);
        // Alternating failures never reach two in a row.
        assert!(run(&mut t, &[false, true, false, true, false, true]).iter().all(Option::is_none));
        assert_eq!(run(&mut t, &[false, false]), vec![None, Some(Health::Down)]);
        assert_eq!(t.health(), Health::Down);
    }

    #[test]
    fn comes_back_after_rise_consecutive_successes() {
        let mut t = Tracker::new(3, 1);
        assert_eq!(run(&mut t, &[false]), vec![Some(Health::Down)]);
        assert_eq!(run(&mut t, &[true, true, false, true, true]), vec![None; 5]);
        assert_eq!(run(&mut t, &[true]), vec![Some(Health::Up)]);
    }

    #[test]
    fn detection_spans_the_streak() {
        let mut t = Tracker::new(1, 3);
        let t0 = Instant::now();
        assert!(t.observe(false, t0).is_none());
        assert!(t.observe(false, t0 + Duration::from_millis(50)).is_none());
        let tr = t.observe(false, t0 + Duration::from_millis(100)).unwrap();
        assert_eq!((tr.to, tr.streak, tr.detection), (Health::Down, 3, Duration::from_millis(100)));
    }

    #[test]
    fn forced_down_needs_rise_to_return() {
        let mut t = Tracker::new(2, 5);
        assert_eq!(t.force_down().map(|x| x.to), Some(Health::Down));
        assert_eq!(t.force_down(), None);
        assert_eq!(run(&mut t, &[true, true]), vec![None, Some(Health::Up)]);
    }
}
