//! From the records an answer holds to the backends they stand for: pure,
//! so the rules are tested without a DNS server.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::config::{Backend, defaults::MAX_WEIGHT, not_one_host};

/// One address an answer gave, before the rules below.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Where the backend listens.
    pub addr: SocketAddr,
    /// The SRV weight; `None` for an address record.
    pub weight: Option<u16>,
    /// The SRV priority (0 for an address record): lower is preferred.
    pub priority: u16,
    /// The record it came from, for `lb status`: the A/AAAA name, or the
    /// SRV target.
    pub record: String,
}

/// The backends `found` stands for, in address order (so an unchanged
/// answer gives an equal set, whatever order the server listed it in):
/// - only the lowest SRV priority is used: the others are fallbacks
///   (RFC 2782) that lb's own health checks make unnecessary;
/// - an SRV weight becomes the backend's weight, 0 counting as 1 (RFC 2782
///   gives weight 0 a small share, never none);
/// - an address found twice (two SRV records, or two targets with one
///   address) is one backend whose weight is the sum, up to the maximum;
/// - addresses of the VIP's other family, the VIP itself (traffic would
///   loop), the file's own backends (which the file's weight governs), and
///   addresses the file may not name as a backend either, since they name
///   no single host (`0.0.0.0`, which DNS blocklists answer with, broadcast,
///   multicast), are left out.
pub fn backends(found: &[Found], vip: SocketAddr, file: &[Backend]) -> Vec<Backend> {
    let usable = |f: &&Found| {
        f.addr.is_ipv4() == vip.is_ipv4()
            && f.addr.port() != 0
            && not_one_host(f.addr.ip()).is_none()
            && (f.addr.ip(), f.addr.port()) != (vip.ip(), vip.port())
            && !file.iter().any(|b| (b.addr.ip(), b.addr.port()) == (f.addr.ip(), f.addr.port()))
    };
    let Some(best) = found.iter().filter(usable).map(|f| f.priority).min() else {
        return Vec::new();
    };
    let mut by_addr: BTreeMap<SocketAddr, Backend> = BTreeMap::new();
    for f in found.iter().filter(usable).filter(|f| f.priority == best) {
        let weight = f.weight.map_or(crate::config::defaults::WEIGHT, |w| u32::from(w.max(1)));
        by_addr
            .entry(f.addr)
            .and_modify(|b| b.weight = (b.weight + weight).min(MAX_WEIGHT))
            .or_insert_with(|| Backend { addr: f.addr, weight, dns: Some(f.record.clone()) });
    }
    by_addr.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn srv(addr: &str, weight: u16, priority: u16) -> Found {
        Found {
            addr: addr.parse().unwrap(),
            weight: Some(weight),
            priority,
            record: format!("t-{addr}"),
        }
    }

    fn a(addr: &str) -> Found {
        Found {
            addr: addr.parse().unwrap(),
            weight: None,
            priority: 0,
            record: "web.example".into(),
        }
    }

    fn vip() -> SocketAddr {
        "10.0.0.100:80".parse().unwrap()
    }

    fn pairs(b: &[Backend]) -> Vec<(String, u32)> {
        b.iter().map(|b| (b.addr.to_string(), b.weight)).collect()
    }

    #[test]
    fn address_records_are_sorted_backends_of_weight_one() {
        let got = backends(&[a("10.0.1.2:8080"), a("10.0.1.1:8080")], vip(), &[]);
        assert_eq!(pairs(&got), [("10.0.1.1:8080".into(), 1), ("10.0.1.2:8080".into(), 1)]);
        assert_eq!(got[0].dns.as_deref(), Some("web.example"));
    }

    #[test]
    fn srv_weights_priorities_and_duplicates() {
        let got = backends(
            &[
                srv("10.0.1.1:80", 10, 1),
                srv("10.0.1.2:81", 0, 1),
                srv("10.0.1.3:80", 50, 2),
                srv("10.0.1.1:80", 5, 1),
            ],
            vip(),
            &[],
        );
        assert_eq!(
            pairs(&got),
            [("10.0.1.1:80".into(), 15), ("10.0.1.2:81".into(), 1)],
            "priority 2 is a fallback; weight 0 counts as 1; duplicates add up"
        );
        let heavy = backends(&[srv("10.0.1.1:80", 65535, 0), srv("10.0.1.1:80", 9, 0)], vip(), &[]);
        assert_eq!(heavy[0].weight, MAX_WEIGHT);
    }

    #[test]
    fn other_family_and_file_backends_are_left_out() {
        let file = [Backend { addr: "10.0.1.1:8080".parse().unwrap(), weight: 7, dns: None }];
        let got = backends(
            &[a("10.0.1.1:8080"), a("[2001:db8::1]:8080"), a("10.0.1.3:8080")],
            vip(),
            &file,
        );
        assert_eq!(pairs(&got), [("10.0.1.3:8080".into(), 1)]);
        // Only the left-out ones: nothing, and the priority of a left-out
        // record does not hide the others.
        assert!(backends(&[a("[2001:db8::1]:8080")], vip(), &[]).is_empty());
        let got = backends(&[srv("[2001:db8::1]:80", 1, 0), srv("10.0.1.5:80", 1, 3)], vip(), &[]);
        assert_eq!(pairs(&got), [("10.0.1.5:80".into(), 1)]);
    }

    #[test]
    fn addresses_of_no_single_host_are_left_out() {
        let got = backends(
            &[a("0.0.0.0:80"), a("255.255.255.255:80"), a("224.0.0.1:80"), a("127.0.0.1:80")],
            vip(),
            &[],
        );
        assert_eq!(pairs(&got), [("127.0.0.1:80".into(), 1)]);
        let v6: SocketAddr = "[2001:db8::100]:80".parse().unwrap();
        let got = backends(&[a("[::]:80"), a("[ff02::1]:80"), a("[::ffff:0.0.0.0]:80")], v6, &[]);
        assert!(got.is_empty(), "{got:?}");
    }
}
