//! What lb knows of one service's name: the backends it last took from it,
//! and the rules that decide whether an answer replaces them.
//!
//! The rule for an answer that would empty a service: a failed resolution
//! (timeout, SERVFAIL, REFUSED, no server) never changes anything. An empty
//! answer or NXDOMAIN is a valid answer that DNS gives by mistake as often
//! as on purpose (a zone reloaded half-written, a typo in a deploy), so it
//! too keeps the last set, counted as `empty`, unless `dns.allow_empty`
//! says the name may truly go empty. Either way it is logged.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use super::records::{self, Found};
use crate::config::{Backend, Dns, defaults::DNS_MIN_INTERVAL};

/// What one resolution of a name gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Records, and how long the shortest of them may be cached.
    Found {
        /// The addresses, with their SRV weight and priority.
        found: Vec<Found>,
        /// The answer's shortest TTL.
        ttl: Duration,
    },
    /// A valid answer with no usable record: NXDOMAIN, or NOERROR and none.
    Empty {
        /// The server said the name does not exist.
        nxdomain: bool,
    },
    /// No answer: timeout, an error code, no server.
    Failed(String),
}

/// What to do with the service's DNS backends after an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Make them these (maybe the same as now).
    Apply(Vec<Backend>),
    /// Keep those of the last accepted answer.
    Keep,
}

/// One DNS service's state, for the agent and `lb status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsState {
    /// The backends of the last accepted answer (those in the datapath).
    pub backends: Vec<Backend>,
    /// When an answer was last accepted.
    pub last_success: Option<SystemTime>,
    /// The last failure or refused answer, and when.
    pub last_error: Option<(SystemTime, String)>,
    /// Resolutions that got no answer, or whose answer could not be applied.
    pub failures: u64,
    /// Empty answers and NXDOMAINs.
    pub empty: u64,
    /// Answers accepted.
    pub resolutions: u64,
    /// Accepted answers that changed the backends.
    pub changes: u64,
    /// The TTL of the last answer with records.
    pub ttl: Option<Duration>,
}

/// The wait before the next resolution: the TTL when it is shorter than
/// the interval, never below [`DNS_MIN_INTERVAL`].
pub fn next_delay(interval: Duration, ttl: Option<Duration>) -> Duration {
    ttl.map_or(interval, |t| t.min(interval)).max(DNS_MIN_INTERVAL)
}

impl DnsState {
    /// Judges `outcome` by the rules above. `vip` and `file` are the
    /// service's VIP and file backends; `table_size` caps the backends a
    /// service can have. Counts and records it; returns the verdict and
    /// the wait before the next resolution.
    pub fn judge(
        &mut self,
        outcome: Outcome,
        dns: &Dns,
        vip: SocketAddr,
        file: &[Backend],
        table_size: u32,
        now: SystemTime,
    ) -> (Verdict, Duration) {
        let found = match outcome {
            Outcome::Failed(why) => return (self.fail(why, now), next_delay(dns.interval, None)),
            Outcome::Empty { nxdomain } => return (self.empty(nxdomain, dns, now), dns.interval),
            Outcome::Found { found, ttl } => {
                self.ttl = Some(ttl);
                (records::backends(&found, vip, file), ttl)
            }
        };
        let delay = next_delay(dns.interval, Some(found.1));
        let backends = found.0;
        if backends.is_empty() {
            return (self.empty(false, dns, now), delay);
        }
        let total = backends.len() + file.len();
        if total > table_size as usize {
            let why = format!(
                "{} backends from DNS and {} from the file exceed table_size {table_size}; \
                 kept the last set (raise table_size)",
                backends.len(),
                file.len()
            );
            return (self.fail(why, now), delay);
        }
        self.resolutions += 1;
        self.last_success = Some(now);
        (Verdict::Apply(backends), delay)
    }

    /// Counts a failure: the set stays.
    pub fn fail(&mut self, why: String, now: SystemTime) -> Verdict {
        self.failures += 1;
        self.last_error = Some((now, why));
        Verdict::Keep
    }

    fn empty(&mut self, nxdomain: bool, dns: &Dns, now: SystemTime) -> Verdict {
        self.empty += 1;
        let what = if nxdomain { "NXDOMAIN" } else { "an answer with no usable record" };
        if dns.allow_empty {
            self.resolutions += 1;
            self.last_success = Some(now);
            self.last_error = Some((now, format!("{what}: DNS backends removed (allow_empty)")));
            return Verdict::Apply(Vec::new());
        }
        self.last_error = Some((
            now,
            format!(
                "{what}: kept the last {} backends (set dns.allow_empty = true to apply it)",
                self.backends.len()
            ),
        ));
        Verdict::Keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DnsRecords;

    fn dns(allow_empty: bool) -> Dns {
        Dns {
            name: "web.example".into(),
            records: DnsRecords::Address { port: 80 },
            interval: Duration::from_secs(5),
            resolver: None,
            allow_empty,
        }
    }

    fn found(addrs: &[&str], ttl: u64) -> Outcome {
        Outcome::Found {
            found: addrs
                .iter()
                .map(|a| Found {
                    addr: a.parse().unwrap(),
                    weight: None,
                    priority: 0,
                    record: "web.example".into(),
                })
                .collect(),
            ttl: Duration::from_secs(ttl),
        }
    }

    fn judge(st: &mut DnsState, o: Outcome, allow_empty: bool) -> (Verdict, Duration) {
        st.judge(o, &dns(allow_empty), "10.0.0.1:80".parse().unwrap(), &[], 7, SystemTime::now())
    }

    #[test]
    fn the_ttl_brings_the_next_resolution_forward_down_to_the_floor() {
        let i = Duration::from_secs(5);
        assert_eq!(next_delay(i, None), i);
        assert_eq!(next_delay(i, Some(Duration::from_secs(60))), i);
        assert_eq!(next_delay(i, Some(Duration::from_secs(2))), Duration::from_secs(2));
        assert_eq!(next_delay(i, Some(Duration::ZERO)), DNS_MIN_INTERVAL);
        let mut st = DnsState::default();
        assert_eq!(judge(&mut st, found(&["10.0.1.1:80"], 3), false).1, Duration::from_secs(3));
        assert_eq!(st.ttl, Some(Duration::from_secs(3)));
    }

    #[test]
    fn records_apply_and_failures_keep() {
        let mut st = DnsState::default();
        let (v, _) = judge(&mut st, found(&["10.0.1.1:80", "10.0.1.2:80"], 30), false);
        let Verdict::Apply(set) = v else { panic!("{v:?}") };
        assert_eq!(set.len(), 2);
        assert_eq!((st.resolutions, st.failures), (1, 0));
        assert!(st.last_success.is_some());
        let (v, delay) = judge(&mut st, Outcome::Failed("timed out".into()), false);
        assert_eq!(v, Verdict::Keep);
        assert_eq!(delay, Duration::from_secs(5));
        assert_eq!(st.failures, 1);
        assert_eq!(st.last_error.as_ref().map(|e| e.1.as_str()), Some("timed out"));
    }

    #[test]
    fn empty_answers_keep_the_last_set_unless_allowed() {
        let mut st = DnsState {
            backends: vec![Backend { addr: "10.0.1.1:80".parse().unwrap(), weight: 1, dns: None }],
            ..Default::default()
        };
        assert_eq!(judge(&mut st, Outcome::Empty { nxdomain: true }, false).0, Verdict::Keep);
        assert_eq!(st.empty, 1);
        let why = &st.last_error.as_ref().unwrap().1;
        assert!(why.starts_with("NXDOMAIN: kept the last 1 backends"), "{why}");
        // Records of the other family only: empty too.
        assert_eq!(judge(&mut st, found(&["[2001:db8::1]:80"], 30), false).0, Verdict::Keep);
        assert_eq!((st.empty, st.resolutions), (2, 0));
        let (v, _) = judge(&mut st, Outcome::Empty { nxdomain: false }, true);
        assert_eq!(v, Verdict::Apply(Vec::new()));
        assert_eq!((st.empty, st.resolutions), (3, 1));
    }

    #[test]
    fn more_backends_than_table_slots_is_a_failure() {
        let mut st = DnsState::default();
        let many: Vec<String> = (1..=8).map(|i| format!("10.0.1.{i}:80")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(judge(&mut st, found(&many, 30), false).0, Verdict::Keep);
        assert_eq!(st.failures, 1);
        assert!(st.last_error.as_ref().unwrap().1.contains("exceed table_size 7"));
    }
}
