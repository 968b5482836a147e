//! `dns = { ... }` of a service: the name its backends are resolved from.

use std::net::{IpAddr, SocketAddr};

use super::report::{Issue, Report, Scope};
use super::values::{Span, bounded, choice, duration, within};
use crate::config::defaults;
use crate::config::model::{Dns, DnsRecords};
use crate::config::raw::RawDns;
use crate::config::unicast::not_one_host;

const SPAN: Span = Span {
    min: defaults::DNS_MIN_INTERVAL,
    below: "resolving more often would load the DNS server for nothing",
    max: defaults::DNS_MAX_INTERVAL,
    above: "a backend set that old is no longer DNS-driven",
};

/// The two record types, by the name `dns.type` takes.
const KINDS: &[&str] = &["a", "srv"];

/// Validates a service's `dns` table; every problem is reported, and the
/// value is returned only when all hold.
pub(super) fn check(raw: RawDns, scope: &Scope, report: &mut Report) -> Option<Dns> {
    let before = report.count();
    let name = report.take(scope, name(raw.name.as_deref()));
    let kind = report.take(scope, choice("dns.type", raw.kind.as_deref(), "a", KINDS, |k| k));
    let records = kind.and_then(|kind| report.take(scope, records(kind, raw.port)));
    let interval = report
        .take(scope, duration("dns.interval", raw.interval.as_deref(), defaults::DNS_INTERVAL))
        .and_then(|d| report.take(scope, within("dns.interval", d, &SPAN)));
    let resolver = match raw.resolver.as_deref() {
        None => Some(None),
        Some(text) => report.take(scope, resolver(text)).map(Some),
    };
    if report.count() != before {
        return None;
    }
    Some(Dns {
        name: name?,
        records: records?,
        interval: interval?,
        resolver: resolver?,
        allow_empty: raw.allow_empty.unwrap_or(false),
    })
}

/// A DNS name: dot-separated labels of 1-63 letters, digits, '-' or '_'
/// (SRV names start with `_service._proto`), 253 characters at most, an
/// optional final dot. Checked here so a typo is an error of `lb check`,
/// not a resolution failure found at run time.
fn name(text: Option<&str>) -> Result<String, Issue> {
    const FIX: &str = "write a DNS name such as name = \"web.default.svc.cluster.local\" or \"_http._tcp.web.example\"";
    let text = text.ok_or_else(|| Issue::new("dns has no name", FIX))?;
    let bare = text.strip_suffix('.').unwrap_or(text);
    let bad = |why: String| Err(Issue::new(format!("dns.name {text:?} {why}"), FIX));
    if bare.is_empty() {
        return bad("is empty".into());
    }
    if bare.len() > 253 {
        return bad(format!("is {} characters long, above DNS's 253", bare.len()));
    }
    for label in bare.split('.') {
        if label.is_empty() {
            return bad("has an empty label (two dots in a row)".into());
        }
        if label.len() > 63 {
            return bad(format!("has a label of {} characters, above DNS's 63", label.len()));
        }
        if let Some(c) = label.chars().find(|c| !(c.is_ascii_alphanumeric() || "-_".contains(*c))) {
            return bad(format!("contains {c:?}"));
        }
    }
    Ok(text.to_owned())
}

/// A and AAAA records carry no port, so `dns.port` is required with them;
/// SRV records carry theirs, so a `dns.port` would be ignored and is
/// refused instead.
fn records(kind: &str, port: Option<i64>) -> Result<DnsRecords, Issue> {
    match (kind, port) {
        ("srv", None) => Ok(DnsRecords::Srv),
        ("srv", Some(_)) => Err(Issue::new(
            "dns.port is set with dns.type = \"srv\", whose records carry their own port",
            "remove dns.port, or use dns.type = \"a\"",
        )),
        (_, None) => Err(Issue::new(
            "dns.type = \"a\" needs dns.port: address records carry no port",
            "add the backends' port, e.g. port = 8080",
        )),
        (_, Some(port)) => {
            let port = bounded("dns.port", port, 1, u32::from(u16::MAX))?;
            Ok(DnsRecords::Address { port: port as u16 })
        }
    }
}

/// `ip:port`, or an `ip` alone for port 53.
fn resolver(text: &str) -> Result<SocketAddr, Issue> {
    let addr = match text.parse::<IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, defaults::DNS_PORT),
        Err(_) => text.parse().map_err(|_| {
            Issue::new(
                format!("dns.resolver {text:?} is not an IP address (and port)"),
                "write it like \"10.0.0.53:53\" or \"10.0.0.53\", or remove it to use \
                 /etc/resolv.conf",
            )
        })?,
    };
    // Queries to it would go nowhere, or to whoever answers first.
    match not_one_host(addr.ip()) {
        None => Ok(addr),
        Some(why) => Err(Issue::new(
            format!("dns.resolver {addr} is {why}, not one DNS server"),
            "give the address of one server, e.g. \"10.0.0.53\", or remove it to use \
             /etc/resolv.conf",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{accepted, problems, refused};
    use super::*;
    use std::time::Duration;

    fn with_dns(dns: &str) -> String {
        format!("[[service]]\nname = \"web\"\nvip = \"10.0.0.100:80\"\ndns = {{ {dns} }}\n")
    }

    #[test]
    fn a_records_need_a_port_and_take_defaults() {
        let c = accepted(&with_dns("name = \"web.svc.example\", port = 8080"));
        let dns = c.services[0].dns.clone().unwrap();
        assert_eq!(dns.records, DnsRecords::Address { port: 8080 });
        assert_eq!(dns.interval, defaults::DNS_INTERVAL);
        assert_eq!(dns.resolver, None);
        assert!(!dns.allow_empty);
        assert!(c.services[0].backends.is_empty(), "no static backend needed");
        refused(&with_dns("name = \"web.svc.example\""), &["dns.port", "port = 8080"]);
        refused(&with_dns("name = \"w\", port = 0"), &["dns.port = 0 is below the minimum 1"]);
        refused(&with_dns("name = \"w\", port = 70000"), &["dns.port = 70000 is above"]);
    }

    #[test]
    fn srv_records_carry_their_port() {
        let c = accepted(&with_dns(
            "name = \"_http._tcp.web.example.\", type = \"srv\", interval = \"2s\", \
             resolver = \"10.0.0.53\", allow_empty = true",
        ));
        let dns = c.services[0].dns.clone().unwrap();
        assert_eq!(dns.records, DnsRecords::Srv);
        assert_eq!(dns.interval, Duration::from_secs(2));
        assert_eq!(dns.resolver, Some("10.0.0.53:53".parse().unwrap()));
        assert!(dns.allow_empty);
        refused(&with_dns("name = \"w\", type = \"srv\", port = 80"), &["remove dns.port"]);
        refused(
            &with_dns("name = \"w\", type = \"mx\", port = 80"),
            &["dns.type \"mx\"", "\"a\" or \"srv\""],
        );
    }

    #[test]
    fn every_field_is_named_in_its_problem() {
        let p = problems(&with_dns(
            "name = \"web..example\", type = \"a\", port = 80, interval = \"100ms\", resolver = \"nope\"",
        ));
        assert_eq!(p.len(), 3, "{p:#?}");
        assert!(p[0].contains("service \"web\": dns.name \"web..example\" has an empty label"));
        assert!(p[1].contains("dns.interval 100ms is below the minimum 1s"), "{}", p[1]);
        assert!(p[2].contains("dns.resolver \"nope\""));
        refused(&with_dns("port = 80"), &["dns has no name"]);
        refused(&with_dns("name = \"a b\", port = 80"), &["dns.name \"a b\" contains ' '"]);
        refused(
            &with_dns("name = \"w\", port = 80, interval = \"61m\""),
            &["dns.interval 61m is above"],
        );
    }

    #[test]
    fn without_dns_a_service_still_needs_a_backend() {
        refused(
            "[[service]]\nname = \"web\"\nvip = \"10.0.0.100:80\"\n",
            &["it has no backends", "or a dns table"],
        );
    }

    #[test]
    fn a_resolver_must_be_one_server() {
        for (text, why) in [
            ("0.0.0.0", "the unspecified address"),
            ("255.255.255.255:53", "the limited broadcast address"),
            ("[ff02::fb]:5353", "a multicast address"),
        ] {
            let issue = resolver(text).expect_err(text);
            assert!(issue.what.contains("dns.resolver") && issue.what.contains(why), "{text}");
        }
        assert!(resolver("10.0.0.53").is_ok());
    }
}
