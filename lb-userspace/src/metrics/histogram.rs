//! A fixed-bucket latency histogram in the Prometheus shape.

use std::time::Duration;

/// Upper bounds of the buckets, in seconds: probes on a LAN take well under a
/// millisecond; a timeout is tens of milliseconds.
pub const BOUNDS: [f64; 10] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.04, 0.1, 0.25, 1.0];

/// Counts per bucket (not cumulative), plus the total count and sum.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// One count per bound, plus the +Inf bucket last.
    pub buckets: [u64; BOUNDS.len() + 1],
    /// Observations.
    pub count: u64,
    /// Sum of observed seconds.
    pub sum: f64,
}

impl Histogram {
    /// Counts one observation.
    pub fn observe(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        let i = BOUNDS.iter().position(|&b| s <= b).unwrap_or(BOUNDS.len());
        self.buckets[i] += 1;
        self.count += 1;
        self.sum += s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        let mut h = Histogram::default();
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(5));
        assert_eq!(h.buckets[0], 1);
        assert_eq!(h.buckets[3], 1);
        assert_eq!(h.buckets[BOUNDS.len()], 1);
        assert_eq!(h.count, 3);
    }
}
