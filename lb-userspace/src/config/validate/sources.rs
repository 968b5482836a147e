//! A service's `allow`, `deny` and `new_flow_limit`.

use std::collections::HashMap;
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
    if let Some(vip) = vip
        && covers_family(&deny, vip.is_ipv4())
    {
        let family = if vip.is_ipv4() { "IPv4" } else { "IPv6" };
        report.add(
            scope,
            Issue::new(
                format!(
                    "deny covers every {family} address, so every client of its {family} VIP \
                     would be refused, whatever allow lists (deny wins)"
                ),
                "deny only the sources to refuse; to let only some in, list those in allow \
                 instead",
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
    // Where each prefix was first written: a repeat is a slip (a host meant
    // to differ, an edit merged twice), and listing both names it.
    let mut first: HashMap<Prefix, usize> = HashMap::with_capacity(raw.len());
    for (i, text) in raw.iter().enumerate() {
        match text.parse::<Prefix>() {
            Ok(p) => match first.get(&p) {
                Some(&j) => report.add(
                    scope,
                    Issue::new(
                        format!(
                            "{field}[{i}] {text:?} is the same prefix as {field}[{j}] {:?}",
                            raw[j]
                        ),
                        format!("remove {field}[{i}]"),
                    ),
                ),
                None => {
                    first.insert(p, i);
                    out.push(p);
                }
            },
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
    out
}

/// Whether `prefixes` leave no address of the family (IPv4 if `v4`) out.
fn covers_family(prefixes: &[Prefix], v4: bool) -> bool {
    let last = if v4 { u128::from(u32::MAX) } else { u128::MAX };
    let mut ranges: Vec<(u128, u128)> =
        prefixes.iter().filter(|p| p.addr().is_ipv4() == v4).map(Prefix::range).collect();
    ranges.sort_unstable();
    // Every address below `next` is covered.
    let mut next = 0u128;
    for (first, end) in ranges {
        if first > next {
            return false;
        }
        if end == last {
            return true;
        }
        next = next.max(end + 1);
    }
    false
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
            "allow = [\"2001:db8::/32\", \"10.0.0.0/8\"]\ndeny = [\"10.9.9.9\"]\n\
             new_flow_limit = { rate = 100, burst = 200, prefix_v6 = 56 }",
        ));
        let s = &c.services[0].sources;
        assert_eq!(s.allow.len(), 2, "{s:?}");
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
        refused(
            &with("allow = [\"10.0.0.0/8\", \"2001:db8::/32\", \"10.0.0.0/8\"]"),
            &[
                "service \"web\": allow[2] \"10.0.0.0/8\" is the same prefix as allow[0] \"10.0.0.0/8\"",
                "remove allow[2]",
            ],
        );
        refused(
            &with("deny = [\"10.0.0.1\", \"10.0.0.2\", \"10.0.0.1/32\"]"),
            &[
                "deny[2] \"10.0.0.1/32\" is the same prefix as deny[0] \"10.0.0.1\"",
                "remove deny[2]",
            ],
        );
        let typo = crate::config::parse(
            &with("new_flow_limit = { rate = 1, per = 3 }"),
            std::path::Path::new("lb.toml"),
        );
        assert!(typo.unwrap_err().to_string().contains("unknown field `per`"));
    }

    #[test]
    fn the_same_prefix_in_both_lists_or_of_another_length_is_fine() {
        // Deny wins where they overlap, by design.
        let s = accepted(&with(
            "allow = [\"10.0.0.0/8\", \"10.0.0.0/16\"]\ndeny = [\"10.0.0.0/8\", \"10.0.0.0/16\"]",
        ));
        assert_eq!((s.services[0].sources.allow.len(), s.services[0].sources.deny.len()), (2, 2));
    }

    #[test]
    fn a_deny_list_that_refuses_every_client() {
        let words = [
            "service \"web\": deny covers every IPv4 address, so every client of its IPv4 VIP \
             would be refused, whatever allow lists (deny wins)",
            "deny only the sources to refuse; to let only some in, list those in allow instead",
        ];
        refused(&with("deny = [\"0.0.0.0/0\"]"), &words);
        refused(&with("allow = [\"10.0.0.0/8\"]\ndeny = [\"0.0.0.0/0\"]"), &words);
        refused(&with("deny = [\"128.0.0.0/1\", \"10.0.0.0/8\", \"0.0.0.0/1\"]"), &words);
        let v6 = service("web", "[2001:db8::100]:80", "[2001:db8::1]:80").replacen(
            "vip = ",
            "deny = [\"::/0\"]\nvip = ",
            1,
        );
        refused(&v6, &["deny covers every IPv6 address", "IPv6 VIP"]);
        // Less than every address, or every address of the other family,
        // leaves clients that may connect.
        accepted(&with("deny = [\"0.0.0.0/1\", \"128.0.0.0/2\", \"192.0.0.0/3\"]"));
        accepted(&with("deny = [\"::/0\"]"));
        let v6 = service("web", "[2001:db8::100]:80", "[2001:db8::1]:80").replacen(
            "vip = ",
            "deny = [\"0.0.0.0/0\", \"::/1\"]\nvip = ",
            1,
        );
        accepted(&v6);
    }

    #[test]
    fn covering_a_family_takes_every_address() {
        use super::covers_family;
        let list = |texts: &[&str]| -> Vec<crate::config::Prefix> {
            texts.iter().map(|t| t.parse().unwrap()).collect()
        };
        assert!(covers_family(&list(&["0.0.0.0/0"]), true));
        assert!(covers_family(&list(&["0.0.0.0/1", "128.0.0.0/1"]), true));
        assert!(covers_family(&list(&["0.0.0.0/1", "64.0.0.0/2", "128.0.0.0/1"]), true));
        let v4_all = list(&["0.0.0.0/1", "128.0.0.0/2", "192.0.0.0/2"]);
        assert!(covers_family(&v4_all, true) && !covers_family(&v4_all, false));
        assert!(!covers_family(&list(&["0.0.0.1/32", "0.0.0.2/31", "0.0.0.4/30"]), true));
        assert!(!covers_family(&list(&["0.0.0.0/1", "128.0.0.0/2", "255.255.255.255"]), true));
        assert!(!covers_family(&list(&["0.0.0.0/0"]), false));
        assert!(!covers_family(&[], true));
        assert!(covers_family(&list(&["8000::/1", "::/1"]), false));
        assert!(!covers_family(&list(&["8000::/1", "::/2"]), false));
    }
}
