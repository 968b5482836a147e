//! Splice mode's source lists and per-source new-flow limit: the rules of
//! the XDP datapath (deny wins, an empty allow list admits everyone, one
//! bucket per source prefix with the same arithmetic), checked when a TCP
//! connection is accepted and for every UDP datagram (the limit only for
//! datagrams that open a session).

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Mutex, OnceLock},
    time::Instant,
};

use lb_common::abi::{admit, tolerance_ns};

use crate::{config::Prefix, datapath::plan::PlannedService};

/// Buckets kept at most; beyond it the full ones (equal to no bucket) are
/// forgotten, and if that is not enough, all (as the datapath's LRU map
/// forgets its least recently used).
const MAX_BUCKETS: usize = 65536;

/// One service's rules, replaced whole when the config changes.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    allow: Vec<Prefix>,
    deny: Vec<Prefix>,
    /// ns of allowance a new flow costs; 0: no limit.
    cost_ns: u32,
    burst: u32,
    prefix_v4: u8,
    prefix_v6: u8,
}

impl Policy {
    /// The rules of `svc` as planned (the record's limit fields).
    pub fn of(svc: &PlannedService) -> Self {
        let r = &svc.record;
        Self {
            allow: svc.allow.clone(),
            deny: svc.deny.clone(),
            cost_ns: r.limit_cost_ns,
            burst: r.limit_burst,
            prefix_v4: r.limit_prefix_v4,
            prefix_v6: r.limit_prefix_v6,
        }
    }

    /// Whether `ip` may reach the service. Lists are scanned: they are
    /// short, and a connection costs far more than the scan.
    pub fn admits(&self, ip: IpAddr) -> bool {
        !self.deny.iter().any(|p| p.contains(ip))
            && (self.allow.is_empty() || self.allow.iter().any(|p| p.contains(ip)))
    }

    /// Whether a new flow from `ip` is within the limit, taking it from
    /// its prefix's bucket in `buckets` if so.
    pub fn within_limit(&self, ip: IpAddr, buckets: &Buckets) -> bool {
        if self.cost_ns == 0 {
            return true;
        }
        let len = if ip.is_ipv4() { self.prefix_v4 } else { self.prefix_v6 };
        let key = Prefix::new(ip, len).addr();
        let now = now_ns();
        let mut map = buckets.0.lock().unwrap_or_else(|p| p.into_inner());
        let tat = map.get(&key).copied().unwrap_or(0);
        let Some(next) =
            admit(tat, now, u64::from(self.cost_ns), tolerance_ns(self.cost_ns, self.burst))
        else {
            return false;
        };
        if map.len() >= MAX_BUCKETS && !map.contains_key(&key) {
            map.retain(|_, &mut t| t > now);
            if map.len() >= MAX_BUCKETS {
                map.clear();
            }
        }
        map.insert(key, next);
        true
    }
}

/// One service's buckets: source prefix -> the time its bucket is full
/// again (ns since the process's first use of them). Kept across config
/// changes, as the datapath keeps its map.
#[derive(Debug, Default)]
pub struct Buckets(Mutex<HashMap<IpAddr, u64>>);

/// Monotonic ns since the first call (never 0 after it, so a fresh bucket
/// at tat 0 is full).
fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    1 + epoch.elapsed().as_nanos() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &[&str], deny: &[&str], rate: u32, burst: u32) -> Policy {
        Policy {
            allow: allow.iter().map(|p| p.parse().unwrap()).collect(),
            deny: deny.iter().map(|p| p.parse().unwrap()).collect(),
            cost_ns: lb_common::abi::cost_ns(rate),
            burst,
            prefix_v4: 24,
            prefix_v6: 64,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn deny_wins_and_an_empty_allow_admits_everyone() {
        let p = policy(&["10.0.0.0/8", "10.1.2.0/24"], &["10.1.0.0/16"], 0, 0);
        assert!(p.admits(ip("10.2.0.1")));
        assert!(!p.admits(ip("10.1.2.3")), "deny wins over a longer allow");
        assert!(!p.admits(ip("192.0.2.1")), "outside the allow list");
        let open = policy(&[], &["2001:db8::/32"], 0, 0);
        assert!(open.admits(ip("192.0.2.1")));
        assert!(!open.admits(ip("2001:db8::5")));
        assert!(open.admits(ip("2001:db9::5")));
    }

    #[test]
    fn a_prefix_over_its_limit_is_limited_and_others_are_not() {
        let p = policy(&[], &[], 1, 3);
        let b = Buckets::default();
        let admitted = (0..10).filter(|_| p.within_limit(ip("10.0.0.1"), &b)).count();
        assert_eq!(admitted, 3, "the burst");
        assert!(!p.within_limit(ip("10.0.0.200"), &b), "the same /24");
        assert!(p.within_limit(ip("10.0.1.1"), &b), "another /24");
        assert!(policy(&[], &[], 0, 0).within_limit(ip("10.0.0.1"), &b), "no limit");
    }
}
