//! `[agent.announce]`: the kernel table and protocol of the routes a routing
//! daemon learns and exports while a VIP can be served.

use super::report::{Issue, Report, Scope};
use super::values::bounded;
use crate::config::model::Announce;
use crate::config::raw::RawAnnounce;

/// `rtm_protocol` lb's routes carry unless told otherwise (see
/// [`crate::routes::PROTOCOL`]).
const DEFAULT_PROTOCOL: u8 = 252;

/// Tables a routing daemon's kernel table cannot be: `unspec` (0), the
/// `default` (253) and `local` (255) tables.
fn reserved_table(table: u32) -> Option<&'static str> {
    match table {
        0 => Some("0 means no table (RT_TABLE_UNSPEC)"),
        253 => Some("253 is the kernel's \"default\" table, consulted after main"),
        255 => Some("255 is the kernel's \"local\" table, which holds the VIPs' local routes"),
        _ => None,
    }
}

/// Protocols that mean something else to the kernel or to BIRD.
fn reserved_protocol(protocol: u8) -> Option<&'static str> {
    match protocol {
        0..=4 => Some("0-4 are the kernel's own (unspec, redirect, kernel, boot, static)"),
        12 => Some("12 is BIRD's own, and BIRD does not learn routes it takes for its own"),
        _ => None,
    }
}

/// Validates the table; `None` (with the issues reported) when invalid.
pub(super) fn check(raw: &RawAnnounce, report: &mut Report) -> Option<Announce> {
    let scope = &Scope::FILE;
    let before = report.count();
    let table =
        match raw.table {
            None => {
                report.add(
                    scope,
                    Issue::new(
                        "agent.announce.table is missing",
                        "name the kernel table the routing daemon learns from, e.g. table = 100 \
                     (BIRD: `kernel table 100` with `learn`; FRR: table = 254 with \
                     `redistribute kernel`, see config/frr.conf.example)",
                    ),
                );
                None
            }
            Some(n) => report
                .take(scope, bounded("agent.announce.table", n, 1, u32::MAX))
                .and_then(|t| match reserved_table(t) {
                    Some(why) => {
                        report.add(
                            scope,
                            Issue::new(
                                format!(
                                    "agent.announce.table = {t} cannot hold lb's routes: {why}"
                                ),
                                "choose a table of its own, e.g. table = 100",
                            ),
                        );
                        None
                    }
                    None => Some(t),
                }),
        };
    let protocol = match raw.protocol {
        None => Some(DEFAULT_PROTOCOL),
        Some(n) => report
            .take(scope, bounded("agent.announce.protocol", n, 1, 255))
            .and_then(|p| u8::try_from(p).ok())
            .and_then(|p| match reserved_protocol(p) {
                Some(why) => {
                    report.add(
                        scope,
                        Issue::new(
                            format!("agent.announce.protocol = {p} cannot mark lb's routes: {why}"),
                            format!("leave it out for {DEFAULT_PROTOCOL} (lb's), or pick 5-255"),
                        ),
                    );
                    None
                }
                None => Some(p),
            }),
    };
    if report.count() != before {
        return None;
    }
    Some(Announce { table: table?, protocol: protocol? })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn check_raw(raw: RawAnnounce) -> Result<Announce, Vec<String>> {
        let mut report = Report::new(Path::new("lb.toml"));
        let got = check(&raw, &mut report);
        let problems: Vec<String> =
            report.into_problems().iter().map(ToString::to_string).collect();
        got.filter(|_| problems.is_empty()).ok_or(problems)
    }

    fn refused(raw: RawAnnounce, words: &[&str]) {
        let problems = check_raw(raw).expect_err("should be refused");
        assert_eq!(problems.len(), 1, "{problems:?}");
        for word in words {
            assert!(problems[0].contains(word), "missing {word:?} in {}", problems[0]);
        }
    }

    #[test]
    fn a_table_alone_takes_lbs_protocol() {
        let got = check_raw(RawAnnounce { table: Some(100), protocol: None });
        assert_eq!(got, Ok(Announce { table: 100, protocol: 252 }));
        let got = check_raw(RawAnnounce { table: Some(254), protocol: Some(200) });
        assert_eq!(got, Ok(Announce { table: 254, protocol: 200 }), "main is allowed (FRR)");
        let got = check_raw(RawAnnounce { table: Some(100_000), protocol: None });
        assert_eq!(got.map(|a| a.table), Ok(100_000), "tables beyond 255 are fine");
    }

    #[test]
    fn errors_name_the_field_and_the_fix() {
        refused(
            RawAnnounce { table: None, protocol: Some(252) },
            &["agent.announce.table is missing", "table = 100", "kernel table 100"],
        );
        refused(
            RawAnnounce { table: Some(255), protocol: None },
            &["agent.announce.table = 255", "\"local\" table", "e.g. table = 100"],
        );
        refused(RawAnnounce { table: Some(-1), protocol: None }, &["agent.announce.table = -1"]);
        refused(
            RawAnnounce { table: Some(100), protocol: Some(12) },
            &["agent.announce.protocol = 12", "BIRD", "pick 5-255"],
        );
        refused(
            RawAnnounce { table: Some(100), protocol: Some(256) },
            &["agent.announce.protocol = 256 is above the maximum 255"],
        );
    }
}
