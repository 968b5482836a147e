//! `[service.health]`: probe kind, timings and thresholds.

use std::time::Duration;

use super::report::{Issue, Report, Scope};
use super::values::{Span, bounded, duration, one_of, timer, within};
use crate::config::defaults;
use crate::config::duration::Written;
use crate::config::model::{Health, HealthKind, Protocol};
use crate::config::raw::RawHealth;

/// Accepted `kind` values, in the order messages list them (default first).
const KINDS: [&str; 4] = ["tcp", "http", "udp", "none"];

/// Limits of `syn_timeout`.
const SYN_SPAN: Span = Span {
    min: Duration::ZERO,
    below: "with no wait at all every forwarded SYN would count as unanswered",
    max: Duration::from_secs(10),
    above: "a longer wait would leave clients resending their SYNs (after 1s, 3s, 7s) to a \
            dead backend before it is taken out",
};

/// Most unanswered SYNs `syn_unanswered` may ask for: a bound that catches
/// typos, since a backend that leaves this many SYNs unanswered has long
/// been caught by its probes.
const MAX_SYN_UNANSWERED: u32 = 1000;

/// Validates the health table of one service (absent = all defaults).
pub(super) fn check(
    raw: Option<RawHealth>,
    protocol: Option<Protocol>,
    scope: &Scope,
    report: &mut Report,
) -> Option<Health> {
    let raw = raw.unwrap_or_default();
    let kind = kind(&raw, protocol, scope, report);
    let interval = report
        .take(scope, duration("health.interval", raw.interval.as_deref(), defaults::INTERVAL));
    let timeout =
        report.take(scope, duration("health.timeout", raw.timeout.as_deref(), defaults::TIMEOUT));
    let rise = report.take(
        scope,
        bounded("health.rise", raw.rise.unwrap_or(defaults::RISE.into()), 1, u32::MAX),
    );
    let fall = report.take(
        scope,
        bounded("health.fall", raw.fall.unwrap_or(defaults::FALL.into()), 1, u32::MAX),
    );
    let (syn_timeout, syn_unanswered) = syn_signal(&raw, protocol, kind.as_ref(), scope, report);
    let (interval, timeout) = report.take(scope, timings(interval?, timeout?))?;
    Some(Health {
        kind: kind?,
        interval,
        timeout,
        rise: rise?,
        fall: fall?,
        syn_timeout: syn_timeout?,
        syn_unanswered: syn_unanswered?,
        // Set by the service's check, which knows its forwarding.
        tunnel: false,
    })
}

/// The unanswered-SYN signal: `syn_timeout` and `syn_unanswered`. It
/// watches TCP handshakes, so on a UDP service either key is a mistake; and
/// like the RST-to-SYN signal it only acts where probes run, since only a
/// probe brings a backend back up: asking for it with `kind = "none"` would
/// silently do nothing. A UDP service keeps the defaults, which never act.
fn syn_signal(
    raw: &RawHealth,
    protocol: Option<Protocol>,
    kind: Option<&HealthKind>,
    scope: &Scope,
    report: &mut Report,
) -> (Option<Duration>, Option<u32>) {
    if protocol == Some(Protocol::Udp) {
        let keys = [
            ("syn_timeout", raw.syn_timeout.is_some()),
            ("syn_unanswered", raw.syn_unanswered.is_some()),
        ];
        for (key, _) in keys.iter().filter(|(_, present)| *present) {
            report.add(
                scope,
                Issue::new(
                    format!("health.{key} applies to TCP services only"),
                    "remove it: a UDP service has no SYN to wait for",
                ),
            );
        }
        return (Some(defaults::SYN_TIMEOUT), Some(defaults::SYN_UNANSWERED));
    }
    let field = "health.syn_timeout";
    let syn_timeout = report.take(
        scope,
        duration(field, raw.syn_timeout.as_deref(), defaults::SYN_TIMEOUT)
            .and_then(|value| within(field, value, &SYN_SPAN)),
    );
    let count = raw.syn_unanswered.unwrap_or(defaults::SYN_UNANSWERED.into());
    let syn_unanswered =
        report.take(scope, bounded("health.syn_unanswered", count, 0, MAX_SYN_UNANSWERED));
    let asked = raw.syn_unanswered.is_some() && syn_unanswered.is_some_and(|n| n > 0);
    if asked && kind == Some(&HealthKind::None) {
        report.add(
            scope,
            Issue::new(
                format!(
                    "health.syn_unanswered = {count} would take backends down, but kind = \"none\" \
                     runs no probe to bring them back up"
                ),
                "remove syn_unanswered (or set it to 0), or set a probe kind such as kind = \"tcp\"",
            ),
        );
        return (syn_timeout, None);
    }
    (syn_timeout, syn_unanswered)
}

/// Probes start every `interval` and must finish before the next one starts,
/// or a slow backend would pile up probes and a dead one would be detected
/// later than `fall × interval`.
fn timings(interval: Duration, timeout: Duration) -> Result<(Duration, Duration), Issue> {
    if interval.is_zero() {
        return Err(Issue::new(
            "health.interval is zero, which would probe in a busy loop",
            "set a positive interval, e.g. interval = \"50ms\"",
        ));
    }
    if timeout.is_zero() {
        return Err(Issue::new(
            "health.timeout is zero, so every probe would fail",
            "set a positive timeout below the interval, e.g. timeout = \"40ms\"",
        ));
    }
    let interval = timer("health.interval", interval, "50ms")?;
    let timeout = timer("health.timeout", timeout, "40ms")?;
    if timeout >= interval {
        return Err(Issue::new(
            format!(
                "health.timeout {} is not below health.interval {}",
                Written(timeout),
                Written(interval),
            ),
            "lower the timeout or raise the interval, e.g. interval = \"50ms\", timeout = \"40ms\"",
        ));
    }
    Ok((interval, timeout))
}

/// The probe kind with its own settings; keys that belong to another kind are
/// reported rather than ignored, since they show the user expects a probe
/// that will not run.
fn kind(
    raw: &RawHealth,
    protocol: Option<Protocol>,
    scope: &Scope,
    report: &mut Report,
) -> Option<HealthKind> {
    // A UDP service has nothing to connect to, and a UDP probe needs a payload
    // only the user knows: defaulting it to "tcp" would mark every backend down.
    let default = match protocol {
        Some(Protocol::Udp) => "none",
        _ => "tcp",
    };
    let name = raw.kind.as_deref().unwrap_or(default);
    let Some(&name) = KINDS.iter().find(|&&known| known == name) else {
        report.add(
            scope,
            Issue::new(
                format!("health.kind {name:?} is not supported"),
                format!("use {}", one_of(&KINDS)),
            ),
        );
        return None;
    };
    let foreign = [
        ("path", raw.path.is_some(), "http"),
        ("expect_status", raw.expect_status.is_some(), "http"),
        ("send", raw.send.is_some(), "udp"),
        ("expect", raw.expect.is_some(), "udp"),
    ];
    for (key, present, owner) in foreign {
        if present && owner != name {
            report.add(
                scope,
                Issue::new(
                    format!(
                        "health.{key} only applies to kind = \"{owner}\", but kind is \"{name}\""
                    ),
                    format!("remove {key} or set kind = \"{owner}\""),
                ),
            );
        }
    }
    match name {
        "none" => Some(HealthKind::None),
        "http" => http(raw, scope, report),
        "udp" => udp(raw, scope, report),
        _ => Some(HealthKind::Tcp),
    }
}

fn http(raw: &RawHealth, scope: &Scope, report: &mut Report) -> Option<HealthKind> {
    let path = report.take(scope, http_path(raw.path.as_deref().unwrap_or(defaults::HTTP_PATH)));
    let status = raw.expect_status.unwrap_or(defaults::HTTP_EXPECT_STATUS.into());
    let expect_status = report.take(
        scope,
        u16::try_from(status).ok().filter(|s| (100..=599).contains(s)).ok_or_else(|| {
            Issue::new(
                format!("health.expect_status = {status} is not an HTTP status"),
                "use a status in 100..=599, e.g. expect_status = 200",
            )
        }),
    );
    Some(HealthKind::Http { path: path?, expect_status: expect_status? })
}

/// The path goes into the request line verbatim, so it must be absolute and
/// free of anything that would split or corrupt that line.
fn http_path(path: &str) -> Result<String, Issue> {
    if !path.starts_with('/') {
        return Err(Issue::new(
            format!("health.path {path:?} does not start with '/'"),
            "give an absolute path, e.g. path = \"/healthz\"",
        ));
    }
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Issue::new(
            format!("health.path {path:?} contains whitespace or control characters"),
            "percent-encode them, e.g. %20 for a space",
        ));
    }
    Ok(path.to_owned())
}

fn udp(raw: &RawHealth, scope: &Scope, report: &mut Report) -> Option<HealthKind> {
    let Some(send) = &raw.send else {
        report.add(
            scope,
            Issue::new(
                "health kind \"udp\" has no send payload, and UDP has no handshake to probe with",
                "add send = \"ping\" (and optionally expect = \"pong\"), or use kind = \"none\"",
            ),
        );
        return None;
    };
    Some(HealthKind::Udp {
        send: send.clone().into_bytes(),
        expect: raw.expect.clone().map(String::into_bytes),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::error::{Problem, Subject};
    use std::path::Path;

    fn check_raw(raw: RawHealth) -> Result<Health, Vec<Problem>> {
        check_for(raw, Protocol::Tcp)
    }

    fn check_for(raw: RawHealth, protocol: Protocol) -> Result<Health, Vec<Problem>> {
        let mut report = Report::new(Path::new("lb.toml"));
        let scope = Scope::service(Subject::Named("web".into()));
        let health = check(Some(raw), Some(protocol), &scope, &mut report);
        match (health, report.count()) {
            (Some(health), 0) => Ok(health),
            (_, _) => Err(report.into_problems()),
        }
    }

    #[test]
    fn default_kind_follows_the_protocol() {
        let tcp = check_for(RawHealth::default(), Protocol::Tcp).unwrap();
        assert_eq!(tcp.kind, HealthKind::Tcp);
        let udp = check_for(RawHealth::default(), Protocol::Udp).unwrap();
        assert_eq!(udp.kind, HealthKind::None);
    }

    fn text(problems: &[Problem]) -> String {
        problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
    }

    fn refused(raw: RawHealth, words: &[&str]) {
        let problems = check_raw(raw).expect_err("should be refused");
        let text = text(&problems);
        assert_eq!(problems.len(), 1, "{text}");
        assert!(text.starts_with("lb.toml: service \"web\": "), "{text}");
        for word in words {
            assert!(text.contains(word), "missing {word:?} in {text}");
        }
    }

    fn some(s: &str) -> Option<String> {
        Some(s.to_owned())
    }

    #[test]
    fn defaults_are_a_fast_tcp_probe() {
        let health = check_raw(RawHealth::default()).expect("defaults are valid");
        assert_eq!(health.kind, HealthKind::Tcp);
        assert!(health.interval <= Duration::from_millis(100));
        assert!(health.timeout < health.interval);
        assert_eq!((health.rise, health.fall), (defaults::RISE, defaults::FALL));
    }

    #[test]
    fn every_kind_name_parses_back() {
        for kind in [
            HealthKind::None,
            HealthKind::Tcp,
            HealthKind::Http { path: "/".into(), expect_status: 200 },
            HealthKind::Udp { send: b"x".to_vec(), expect: None },
        ] {
            let raw =
                RawHealth { kind: some(kind.name()), send: some("x"), ..RawHealth::default() };
            let raw = match kind {
                HealthKind::Udp { .. } => raw,
                _ => RawHealth { send: None, ..raw },
            };
            assert_eq!(check_raw(raw).expect("valid").kind, kind);
        }
    }

    #[test]
    fn http_and_udp_settings() {
        let raw = RawHealth {
            kind: some("http"),
            path: some("/healthz"),
            expect_status: Some(204),
            ..RawHealth::default()
        };
        let kind = check_raw(raw).expect("valid").kind;
        assert_eq!(kind, HealthKind::Http { path: "/healthz".into(), expect_status: 204 });
        let raw = RawHealth {
            kind: some("udp"),
            send: some("ping"),
            expect: some("pong"),
            ..RawHealth::default()
        };
        let kind = check_raw(raw).expect("valid").kind;
        assert_eq!(
            kind,
            HealthKind::Udp { send: b"ping".to_vec(), expect: Some(b"pong".to_vec()) }
        );
    }

    #[test]
    fn unknown_kind() {
        refused(
            RawHealth { kind: some("icmp"), ..RawHealth::default() },
            &["\"icmp\"", "\"none\""],
        );
    }

    #[test]
    fn interval_zero() {
        refused(
            RawHealth { interval: some("0ms"), ..RawHealth::default() },
            &["interval is zero", "\"50ms\""],
        );
    }

    #[test]
    fn timeout_zero() {
        refused(RawHealth { timeout: some("0s"), ..RawHealth::default() }, &["timeout is zero"]);
    }

    #[test]
    fn interval_and_timeout_of_less_than_a_tick() {
        refused(
            RawHealth { interval: some("2ns"), timeout: some("1ns"), ..RawHealth::default() },
            &["health.interval 2ns is below the minimum 1ms", "set health.interval = \"1ms\""],
        );
        refused(
            RawHealth { timeout: some("999us"), ..RawHealth::default() },
            &["health.timeout 999us is below the minimum 1ms", "e.g. \"40ms\""],
        );
        let raw =
            RawHealth { interval: some("1001us"), timeout: some("1ms"), ..RawHealth::default() };
        let health = check_raw(raw).expect("the tick is enough");
        assert_eq!(health.timeout, Duration::from_millis(1));
        assert_eq!(health.interval, Duration::from_micros(1001));
    }

    #[test]
    fn timeout_not_below_interval() {
        let raw =
            RawHealth { interval: some("50ms"), timeout: some("50ms"), ..RawHealth::default() };
        refused(raw, &["timeout 50ms is not below health.interval 50ms", "lower the timeout"]);
    }

    #[test]
    fn bad_duration() {
        refused(
            RawHealth { interval: some("1.5s"), ..RawHealth::default() },
            &["health.interval \"1.5s\"", "\"50ms\""],
        );
    }

    #[test]
    fn rise_and_fall_zero() {
        refused(
            RawHealth { rise: Some(0), ..RawHealth::default() },
            &["health.rise = 0", "set health.rise = 1 or more"],
        );
        refused(
            RawHealth { fall: Some(-2), ..RawHealth::default() },
            &["health.fall = -2", "set health.fall = 1 or more"],
        );
    }

    #[test]
    fn http_status_out_of_range() {
        for status in [99, 600, -1, 70000] {
            let raw = RawHealth {
                kind: some("http"),
                expect_status: Some(status),
                ..RawHealth::default()
            };
            refused(raw, &["expect_status", "100..=599"]);
        }
    }

    #[test]
    fn http_path_must_be_absolute_and_clean() {
        let raw = RawHealth { kind: some("http"), path: some("healthz"), ..RawHealth::default() };
        refused(raw, &["does not start with '/'", "\"/healthz\""]);
        let raw = RawHealth { kind: some("http"), path: some("/a b"), ..RawHealth::default() };
        refused(raw, &["whitespace", "percent-encode"]);
    }

    #[test]
    fn udp_without_send() {
        refused(
            RawHealth { kind: some("udp"), ..RawHealth::default() },
            &["no send payload", "add send = \"ping\""],
        );
    }

    #[test]
    fn keys_of_another_kind() {
        refused(
            RawHealth { path: some("/x"), ..RawHealth::default() },
            &["health.path only applies to kind = \"http\"", "remove path"],
        );
        let raw = RawHealth { kind: some("http"), send: some("x"), ..RawHealth::default() };
        refused(raw, &["health.send only applies to kind = \"udp\""]);
    }

    #[test]
    fn syn_signal_defaults_and_values() {
        let health = check_raw(RawHealth::default()).expect("defaults are valid");
        assert_eq!(health.syn_timeout, Duration::from_millis(25));
        assert_eq!(health.syn_unanswered, 3);
        let raw =
            RawHealth { syn_timeout: some("10s"), syn_unanswered: Some(0), ..RawHealth::default() };
        let health = check_raw(raw).expect("valid");
        assert_eq!((health.syn_timeout, health.syn_unanswered), (Duration::from_secs(10), 0));
        let raw = RawHealth { syn_unanswered: Some(1000), ..RawHealth::default() };
        assert_eq!(check_raw(raw).expect("valid").syn_unanswered, 1000);
    }

    #[test]
    fn syn_signal_bounds() {
        refused(
            RawHealth { syn_timeout: some("0ms"), ..RawHealth::default() },
            &["health.syn_timeout is zero", "positive duration of at most \"10s\""],
        );
        refused(
            RawHealth { syn_timeout: some("11s"), ..RawHealth::default() },
            &["health.syn_timeout 11s is above the maximum 10s", "resending"],
        );
        refused(
            RawHealth { syn_timeout: some("25"), ..RawHealth::default() },
            &["health.syn_timeout \"25\" is not a duration"],
        );
        refused(
            RawHealth { syn_unanswered: Some(-1), ..RawHealth::default() },
            &["health.syn_unanswered = -1 is below the minimum 0"],
        );
        refused(
            RawHealth { syn_unanswered: Some(1001), ..RawHealth::default() },
            &["health.syn_unanswered = 1001 is above the maximum 1000"],
        );
    }

    #[test]
    fn syn_signal_is_for_tcp_services_only() {
        let udp = |raw: RawHealth| check_for(raw, Protocol::Udp);
        let health = udp(RawHealth::default()).expect("defaults are valid for UDP");
        assert_eq!(health.syn_unanswered, defaults::SYN_UNANSWERED);
        for (raw, key) in [
            (RawHealth { syn_timeout: some("25ms"), ..RawHealth::default() }, "syn_timeout"),
            (RawHealth { syn_unanswered: Some(0), ..RawHealth::default() }, "syn_unanswered"),
        ] {
            let problems = udp(raw).expect_err("refused");
            assert_eq!(problems.len(), 1, "{}", text(&problems));
            let line = problems[0].to_string();
            assert!(line.contains(&format!("health.{key} applies to TCP services only")), "{line}");
            assert!(line.contains("remove it"), "{line}");
        }
    }

    #[test]
    fn syn_signal_needs_probes() {
        let none = || RawHealth { kind: some("none"), ..RawHealth::default() };
        assert_eq!(check_raw(none()).expect("default is fine").kind, HealthKind::None);
        let off = RawHealth { syn_unanswered: Some(0), ..none() };
        assert_eq!(check_raw(off).expect("0 is off").syn_unanswered, 0);
        refused(
            RawHealth { syn_unanswered: Some(3), ..none() },
            &["health.syn_unanswered = 3", "kind = \"none\"", "no probe", "set it to 0"],
        );
    }

    #[test]
    fn all_problems_are_reported_together() {
        let raw = RawHealth {
            kind: some("udp"),
            interval: some("x"),
            rise: Some(0),
            fall: Some(0),
            ..RawHealth::default()
        };
        assert_eq!(check_raw(raw).expect_err("invalid").len(), 4);
    }
}
