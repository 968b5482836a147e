//! `[[service.backend]]`: address and weight of one backend.

use std::net::SocketAddr;

use super::report::{Issue, Report, Scope};
use super::values::{bounded, nonzero_port, one_host, socket_addr};
use crate::config::defaults;
use crate::config::error::Subject;
use crate::config::model::Backend;
use crate::config::raw::RawBackend;

/// The address shown in fixes; styled like the VIP example so the two read
/// as a pair.
const EXAMPLE: &str = "10.0.1.1:80";

/// One backend after its own checks; cross-backend rules need its address and
/// scope even when another field is invalid.
#[derive(Debug)]
pub(super) struct Checked {
    pub(super) scope: Scope,
    pub(super) addr: Option<SocketAddr>,
    pub(super) backend: Option<Backend>,
}

/// Validates backend number `index` (0-based) of the service at `service`,
/// whose VIP is `vip` when that parsed.
pub(super) fn check(
    index: usize,
    raw: RawBackend,
    vip: Option<SocketAddr>,
    service: &Scope,
    report: &mut Report,
) -> Checked {
    let addr = match raw.addr.as_deref() {
        Some(text) => socket_addr("addr", text, EXAMPLE),
        None => Err(Issue::new("it has no addr", format!("add addr = \"{EXAMPLE}\""))),
    };
    // A backend is named by its address once that parses; the canonical form
    // is used so `[2001:db8::1]:80` reads the same however it was written.
    let subject = match &addr {
        Ok(addr) => Subject::Named(addr.to_string()),
        Err(_) => Subject::Index(index + 1),
    };
    let scope = service.backend(subject);
    let addr = report.take(&scope, addr);
    let usable = addr.filter(|&addr| {
        let port_ok = report.take(&scope, nonzero_port("addr", addr, EXAMPLE)).is_some();
        let host_ok = report.take(&scope, one_host("addr", addr, EXAMPLE)).is_some();
        let family_ok = vip.is_none_or(|vip| report.take(&scope, same_family(addr, vip)).is_some());
        port_ok && host_ok && family_ok
    });
    let weight = raw.weight.unwrap_or(defaults::WEIGHT.into());
    let advice = if weight < 1 {
        "to send a backend no traffic, remove it"
    } else {
        "weights are relative, so scale the service's weights down together"
    };
    let weight = report.take(
        &scope,
        bounded("weight", weight, 1, defaults::MAX_WEIGHT).map_err(|issue| issue.also(advice)),
    );
    let backend = usable.zip(weight).map(|(addr, weight)| Backend { addr, weight, dns: None });
    Checked { scope, addr, backend }
}

/// The datapath rewrites addresses in place (NAT), which cannot turn an IPv4
/// packet into an IPv6 one or back.
fn same_family(addr: SocketAddr, vip: SocketAddr) -> Result<(), Issue> {
    let family = |addr: SocketAddr| if addr.is_ipv4() { "IPv4" } else { "IPv6" };
    if addr.is_ipv4() == vip.is_ipv4() {
        return Ok(());
    }
    Err(Issue::new(
        format!(
            "addr is {} but the VIP {vip} is {}, and the NAT datapath cannot translate between \
             address families",
            family(addr),
            family(vip)
        ),
        format!(
            "use an {} backend address, or put {} backends behind a separate {} VIP",
            family(vip),
            family(addr),
            family(addr)
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn check_one(addr: Option<&str>, weight: Option<i64>) -> (Checked, Vec<String>) {
        let mut report = Report::new(Path::new("lb.toml"));
        let service = Scope::service(Subject::Named("web".into()));
        let vip = "10.0.0.100:80".parse().ok();
        let raw = RawBackend { addr: addr.map(str::to_owned), weight };
        let checked = check(2, raw, vip, &service, &mut report);
        let problems = report.into_problems().iter().map(ToString::to_string).collect();
        (checked, problems)
    }

    fn refused(addr: Option<&str>, weight: Option<i64>, words: &[&str]) {
        let (checked, problems) = check_one(addr, weight);
        assert!(checked.backend.is_none());
        assert_eq!(problems.len(), 1, "{problems:?}");
        for word in words {
            assert!(problems[0].contains(word), "missing {word:?} in {}", problems[0]);
        }
    }

    #[test]
    fn valid_backend_defaults_to_weight_one() {
        let (checked, problems) = check_one(Some("10.0.1.1:8080"), None);
        assert!(problems.is_empty(), "{problems:?}");
        let addr = "10.0.1.1:8080".parse().expect("valid");
        assert_eq!(checked.backend, Some(Backend { addr, weight: 1, dns: None }));
    }

    #[test]
    fn missing_or_unparsable_addr_is_named_by_position() {
        refused(None, None, &["service \"web\" backend #3: it has no addr", "add addr"]);
        refused(
            Some("10.0.1.1"),
            None,
            &["backend #3: addr \"10.0.1.1\"", "\"10.0.1.1:80\"", "[2001:db8::1]:80"],
        );
    }

    #[test]
    fn port_zero() {
        refused(
            Some("10.0.1.1:0"),
            None,
            &["backend \"10.0.1.1:0\"", "port 0", "give the real port"],
        );
    }

    #[test]
    fn weight_zero_negative_and_too_large() {
        refused(
            Some("10.0.1.1:80"),
            Some(0),
            &["backend \"10.0.1.1:80\": weight = 0 is below the minimum 1", "remove it"],
        );
        refused(Some("10.0.1.1:80"), Some(-1), &["weight = -1 is below"]);
        refused(
            Some("10.0.1.1:80"),
            Some(65536),
            &["weight = 65536 is above the maximum 65535", "set weight = 65535 or less", "scale"],
        );
    }

    #[test]
    fn a_backend_must_be_one_host() {
        for (addr, kind) in [
            ("0.0.0.0:80", "the unspecified address"),
            ("255.255.255.255:80", "the limited broadcast address"),
            ("224.0.0.1:80", "a multicast address"),
            ("239.1.2.3:80", "a multicast address"),
        ] {
            refused(
                Some(addr),
                None,
                &[
                    &format!("backend \"{addr}\": addr {addr} is {kind}"),
                    "not one host",
                    "give one host's address, e.g. addr = \"10.0.1.1:80\"",
                ],
            );
        }
        // Every problem of the address is reported, the mapped form's
        // family (IPv6, beside an IPv4 VIP) included.
        let (_, problems) = check_one(Some("[::ffff:224.0.0.1]:0"), None);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[1].contains("addr [::ffff:224.0.0.1]:0 is a multicast address"));
        // Loopback is a host: splice mode may relay to a service on this one.
        let (checked, problems) = check_one(Some("127.0.0.1:8080"), None);
        assert!(problems.is_empty() && checked.backend.is_some(), "{problems:?}");
    }

    #[test]
    fn family_must_match_the_vip() {
        refused(
            Some("[2001:db8::1]:80"),
            None,
            &[
                "backend \"[2001:db8::1]:80\": addr is IPv6 but the VIP 10.0.0.100:80 is IPv4",
                "use an IPv4 backend",
            ],
        );
    }
}
