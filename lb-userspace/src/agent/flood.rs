//! Flood mode: on while new flows arrive faster than
//! `flows.flood_threshold` a second, off once they have stayed below half
//! of it for [`CALM`] (hysteresis, so a flood that pauses does not turn it
//! off and on again each second).
//!
//! The rate is the growth of the services' `new_flows` counters between
//! two readings (every 250 ms, `commands::run`), plus, in splice
//! mode, the SYNs the kernel answered with a SYN cookie (see
//! [`kernel_syncookies`]): a spoofed SYN flood never reaches the proxy as
//! accepted connections.

use std::time::{Duration, Instant};

/// How long the rate must stay below half the threshold before flood mode
/// turns off.
pub const CALM: Duration = Duration::from_secs(5);

/// The state of flood mode and what it is judged from.
#[derive(Debug, Clone)]
pub struct FloodWatch {
    threshold: u32,
    on: bool,
    /// The last reading: when, and the counter's total then.
    last: Option<(Instant, u64)>,
    /// Since when the rate has been below half the threshold (flood mode on).
    calm_since: Option<Instant>,
    /// The last rate measured, new flows a second.
    rate: u64,
    /// When flood mode last turned on, and how many times it did.
    since: Option<Instant>,
    episodes: u64,
}

/// What a reading changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Flood mode turned on at this rate.
    On { rate: u64 },
    /// Flood mode turned off, the rate having stayed low for [`CALM`].
    Off { rate: u64 },
}

impl FloodWatch {
    /// Flood mode off, switching on above `threshold` new flows a second.
    pub fn new(threshold: u32) -> Self {
        Self {
            threshold,
            on: false,
            last: None,
            calm_since: None,
            rate: 0,
            since: None,
            episodes: 0,
        }
    }

    /// A reload may change the threshold; the state is kept.
    pub fn set_threshold(&mut self, threshold: u32) {
        self.threshold = threshold;
    }

    /// Whether flood mode is on.
    pub fn on(&self) -> bool {
        self.on
    }

    /// The last measured rate of new flows a second.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// The threshold, new flows a second.
    pub fn threshold(&self) -> u32 {
        self.threshold
    }

    /// How many times flood mode has turned on.
    pub fn episodes(&self) -> u64 {
        self.episodes
    }

    /// How long flood mode has been on (None: it is off).
    pub fn on_for(&self, now: Instant) -> Option<Duration> {
        self.since.filter(|_| self.on).map(|s| now.saturating_duration_since(s))
    }

    /// Takes a reading: `total` new flows counted so far at `now`. The
    /// first reading only sets the base; a counter that went back (a
    /// restarted datapath) too.
    pub fn observe(&mut self, now: Instant, total: u64) -> Option<Change> {
        let last = self.last.replace((now, total));
        let (then, before) = last?;
        let secs = now.saturating_duration_since(then).as_secs_f64();
        if secs <= 0.0 || total < before {
            return None;
        }
        self.rate = ((total - before) as f64 / secs) as u64;
        let threshold = u64::from(self.threshold);
        if !self.on {
            if self.rate > threshold {
                self.on = true;
                self.calm_since = None;
                self.since = Some(now);
                self.episodes += 1;
                return Some(Change::On { rate: self.rate });
            }
            return None;
        }
        if self.rate * 2 >= threshold {
            self.calm_since = None;
            return None;
        }
        let calm = *self.calm_since.get_or_insert(now);
        if now.saturating_duration_since(calm) >= CALM {
            self.on = false;
            self.calm_since = None;
            return Some(Change::Off { rate: self.rate });
        }
        None
    }
}

/// SYNs this network namespace's kernel answered with a SYN cookie so far
/// (`TcpExt: SyncookiesSent` of /proc/net/netstat): what a SYN flood at a
/// listening socket (splice mode's VIP) costs, as the proxy never sees
/// those connections. 0 if it cannot be read.
pub fn kernel_syncookies() -> u64 {
    std::fs::read_to_string("/proc/net/netstat").map(|t| syncookies_sent(&t)).unwrap_or(0)
}

/// `SyncookiesSent` from the text of /proc/net/netstat (a line of names
/// followed by a line of values, per group).
fn syncookies_sent(text: &str) -> u64 {
    let lines: Vec<&str> = text.lines().collect();
    for pair in lines.chunks(2) {
        let [names, values] = pair else { continue };
        if !names.starts_with("TcpExt:") {
            continue;
        }
        let found = names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(n, _)| *n == "SyncookiesSent");
        if let Some((_, v)) = found {
            return v.parse().unwrap_or(0);
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds one reading a second at `rate` new flows a second for `secs`
    /// seconds, returning the changes.
    fn feed(
        w: &mut FloodWatch,
        t: &mut Instant,
        total: &mut u64,
        rate: u64,
        secs: u32,
    ) -> Vec<Change> {
        let mut out = Vec::new();
        for _ in 0..secs {
            *t += Duration::from_secs(1);
            *total += rate;
            out.extend(w.observe(*t, *total));
        }
        out
    }

    #[test]
    fn turns_on_above_the_threshold_and_off_after_five_calm_seconds() {
        let (mut t, mut total) = (Instant::now(), 0);
        let mut w = FloodWatch::new(20_000);
        assert_eq!(w.observe(t, total), None, "the first reading is the base");
        assert_eq!(feed(&mut w, &mut t, &mut total, 19_000, 3), vec![]);
        assert!(!w.on());
        assert_eq!(feed(&mut w, &mut t, &mut total, 50_000, 1), vec![Change::On { rate: 50_000 }]);
        assert!(w.on());
        // Below the threshold but above half of it: still a flood.
        assert_eq!(feed(&mut w, &mut t, &mut total, 12_000, 10), vec![]);
        assert!(w.on());
        // Below half: off after 5 s of it, not before.
        assert_eq!(feed(&mut w, &mut t, &mut total, 500, 5), vec![]);
        assert!(w.on(), "the first calm reading starts the 5 s");
        assert_eq!(feed(&mut w, &mut t, &mut total, 500, 1), vec![Change::Off { rate: 500 }]);
        assert!(!w.on());
        assert_eq!(w.episodes(), 1);
    }

    #[test]
    fn a_burst_inside_the_calm_period_starts_it_again() {
        let (mut t, mut total) = (Instant::now(), 0);
        let mut w = FloodWatch::new(1000);
        w.observe(t, total);
        assert_eq!(feed(&mut w, &mut t, &mut total, 5000, 1).len(), 1);
        assert_eq!(feed(&mut w, &mut t, &mut total, 100, 4), vec![]);
        assert_eq!(feed(&mut w, &mut t, &mut total, 600, 1), vec![], "above half: not calm");
        assert_eq!(feed(&mut w, &mut t, &mut total, 100, 5), vec![]);
        assert!(w.on());
        assert_eq!(feed(&mut w, &mut t, &mut total, 100, 1), vec![Change::Off { rate: 100 }]);
    }

    #[test]
    fn rates_are_per_second_of_the_interval_and_a_reset_counter_is_a_new_base() {
        let t = Instant::now();
        let mut w = FloodWatch::new(1000);
        w.observe(t, 10_000);
        // 3000 flows in 2 s: 1500/s.
        assert_eq!(w.observe(t + Duration::from_secs(2), 13_000), Some(Change::On { rate: 1500 }));
        assert_eq!(w.observe(t + Duration::from_secs(3), 5), None, "counter went back");
        assert_eq!(w.observe(t + Duration::from_secs(4), 505), None);
        assert_eq!(w.rate(), 500);
    }

    #[test]
    fn syncookies_are_read_from_the_tcpext_group() {
        let text = "TcpExt: SyncookiesSent SyncookiesRecv\nTcpExt: 42 7\n\
                    IpExt: InNoRoutes\nIpExt: 3\n";
        assert_eq!(syncookies_sent(text), 42);
        assert_eq!(syncookies_sent("IpExt: A\nIpExt: 1\n"), 0);
    }
}
