//! A service's `allow`, `deny` and `new_flow_limit`.

use std::net::SocketAddr;

use super::report::{Issue, Report, Scope};
use super::values::bounded;
use crate::config::model::{NewFlowLimit, Sources};
use crate::config::prefix::{Prefix, PrefixError};
use crate::config::raw::RawNewFlowLimit;

/// Most prefixes one list of one service may hold (the datapath's tries
/// hold 65 536 a family over every service).
pub(crate) const MAX_PREFIXES: usize = 4096;
/// Highest `new_flow_limit.rate` and `burst`: a new flow costs 1 s / rate
/// of allowance, counted in whole nanoseconds.
const MAX_RATE: u32 = 1_000_000;

/// Checks the lists and the limit of the service on `vip` (if it parsed).
pub(super) fn check(
    allow: Option<Vec<String>>,
    deny: Option<Vec<String>>,
    limit: Option<RawNewFlowLimit>,
    vip: Option<SocketAddr>,
    scope: &Scope,
    report: &mut Report,
) -> Option<Sources> {
    let before = report.count();
    let allow = list("allow", allow.unwrap_or_default(), scope, report);
    let deny = list("deny", deny.unwrap_or_default(), scope, report);
    if let Some(vip) = vip
        && !allow.is_empty()
        && !allow.iter().any(|p| p.addr().is_ipv4() == vip.is_ipv4())
    {
        let family = if vip.is_ipv4() { "IPv4" } else { "IPv6" };
        report.add(
            scope,
            Issue::new(
                format!(
                    "allow lists no {family} prefix, so every client of its {family} VIP would \
                     be refused"
                ),
                format!(
                    "add the {family} sources that may connect, or remove allow to let everyone in"
                ),
            ),
        );
    }
    let new_flow_limit = limit.and_then(|raw| new_flow_limit(raw, scope, report));
    // A limit that did not parse added a problem: `None` here is then
    // never taken for "no limit".
    (report.count() == before).then_some(Sources { allow, deny, new_flow_limit })
}

/// The prefixes of list `field`; each bad entry is reported with its
/// position.
fn list(field: &str, raw: Vec<String>, scope: &Scope, report: &mut Report) -> Vec<Prefix> {
    if raw.len() > MAX_PREFIXES {
        report.add(
            scope,
            Issue::new(
                format!("{field} has {} entries, more than the {MAX_PREFIXES} allowed", raw.len()),
                "merge neighbouring prefixes into shorter ones",
            ),
        );
        return Vec::new();
    }
    let mut out: Vec<Prefix> = Vec::with_capacity(raw.len());
    for (i, text) in raw.iter().enumerate() {
        match text.parse::<Prefix>() {
            Ok(p) => out.push(p),
            Err(e) => {
                let fix = match &e {
                    PrefixError::Syntax(_) => {
                        "write an address or a prefix, e.g. \"10.0.0.0/8\", \"192.0.2.7\" or \
                         \"2001:db8::/32\""
                            .to_owned()
                    }
                    PrefixError::Length { max, .. } => format!("use a length of 0 to {max}"),
                    PrefixError::HostBits { masked, .. } => format!("write \"{masked}\""),
                };
                report.add(scope, Issue::new(format!("{field}[{i}]: {e}"), fix));
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

fn new_flow_limit(
    raw: RawNewFlowLimit,
    scope: &Scope,
    report: &mut Report,
) -> Option<NewFlowLimit> {
    let field = |name: &str| format!("new_flow_limit.{name}");
    let rate = match raw.rate {
        Some(r) => report.take(scope, bounded(&field("rate"), r, 1, MAX_RATE)),
        None => {
            report.add(
                scope,
                Issue::new(
                    "new_flow_limit has no rate",
                    "add the new flows a second one source may open, e.g. \
                     new_flow_limit = { rate = 100, burst = 200 }",
                ),
            );
            None
        }
    };
    let burst = match raw.burst {
        Some(b) => report.take(scope, bounded(&field("burst"), b, 1, MAX_RATE)),
        None => rate,
    };
    let v4 = raw
        .prefix_v4
        .map_or(Some(32), |p| report.take(scope, bounded(&field("prefix_v4"), p, 0, 32)));
    let v6 = raw
        .prefix_v6
        .map_or(Some(64), |p| report.take(scope, bounded(&field("prefix_v6"), p, 0, 128)));
    Some(NewFlowLimit {
        rate: rate?,
        burst: burst?,
        prefix_v4: u8::try_from(v4?).ok()?,
        prefix_v6: u8::try_from(v6?).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{accepted, refused, service};

    fn with(keys: &str) -> String {
        service("web", "10.0.0.100:80", "10.0.1.1:80").replacen(
            "vip = ",
            &format!("{keys}\nvip = "),
            1,
        )
    }

    #[test]
    fn lists_and_limit_parse() {
        let c = accepted(&with(
            "allow = [\"10.0.0.0/8\", \"2001:db8::/32\", \"10.0.0.0/8\"]\ndeny = [\"10.9.9.9\"]\n\
             new_flow_limit = { rate = 100, burst = 200, prefix_v6 = 56 }",
        ));
        let s = &c.services[0].sources;
        assert_eq!(s.allow.len(), 2, "duplicates merged: {s:?}");
        assert_eq!(s.deny[0].to_string(), "10.9.9.9/32");
        let l = s.new_flow_limit.expect("limit");
        assert_eq!((l.rate, l.burst, l.prefix_v4, l.prefix_v6), (100, 200, 32, 56));
        let plain = accepted(&with("new_flow_limit = { rate = 5 }"));
        let l = plain.services[0].sources.new_flow_limit.expect("limit");
        assert_eq!((l.burst, l.prefix_v6), (5, 64), "burst defaults to the rate");
        assert_eq!(accepted(&with("")).services[0].sources, Default::default());
        assert_eq!(
            s.describe(),
            "allow 10.0.0.0/8, 2001:db8::/32; deny 10.9.9.9/32; new flows 100/s burst 200 per /32 /56"
        );
        assert!(c.summary().to_string().contains("    sources: allow 10.0.0.0/8"));
    }

    #[test]
    fn bad_entries_are_named_with_their_fix() {
        refused(&with("allow = [\"10.1.0.0/8\"]"), &["allow[0]", "bits set", "\"10.0.0.0/8\""]);
        refused(&with("deny = [\"10.0.0.0/8\", \"nope\"]"), &["deny[1]", "\"nope\"", "e.g."]);
        refused(&with("deny = [\"10.0.0.0/40\"]"), &["deny[0]", "length 40", "0 to 32"]);
        refused(&with("allow = [\"2001:db8::/32\"]"), &["allow lists no IPv4", "remove allow"]);
        refused(&with("new_flow_limit = { burst = 3 }"), &["no rate", "rate = 100"]);
        refused(&with("new_flow_limit = { rate = 0 }"), &["new_flow_limit.rate = 0", "below"]);
        refused(
            &with("new_flow_limit = { rate = 1, prefix_v4 = 33 }"),
            &["new_flow_limit.prefix_v4 = 33", "32 or less"],
        );
        let typo = crate::config::parse(
            &with("new_flow_limit = { rate = 1, per = 3 }"),
            std::path::Path::new("lb.toml"),
        );
        assert!(typo.unwrap_err().to_string().contains("unknown field `per`"));
    }
}
