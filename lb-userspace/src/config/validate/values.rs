//! Checks of single values shared by several sections: addresses, names,
//! enumerations, bounded integers and durations.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::report::Issue;
use crate::config::defaults::{MAX_IFNAME_LEN, MAX_NAME_LEN, MIN_TIMER};
use crate::config::duration::{self, Written};
use crate::config::unicast::not_one_host;

/// Parses `text` as `ip:port`; `example` is shown in the fix so it matches the
/// field (a VIP, a backend, a listener).
pub(super) fn socket_addr(field: &str, text: &str, example: &str) -> Result<SocketAddr, Issue> {
    text.parse().map_err(|_| {
        Issue::new(
            format!("{field} {text:?} is not an IP address and port"),
            format!("write it like \"{example}\" or \"[2001:db8::1]:80\""),
        )
    })
}

/// Refuses port 0, which no client can connect to and no server listens on.
pub(super) fn nonzero_port(field: &str, addr: SocketAddr, example: &str) -> Result<(), Issue> {
    if addr.port() == 0 {
        return Err(Issue::new(
            format!("{field} {addr} has port 0, which cannot carry traffic"),
            format!("give the real port, e.g. \"{example}\""),
        ));
    }
    Ok(())
}

/// Refuses an address that names no single host (see `config::unicast`):
/// a VIP or a backend must be one.
pub(super) fn one_host(field: &str, addr: SocketAddr, example: &str) -> Result<(), Issue> {
    match not_one_host(addr.ip()) {
        None => Ok(()),
        Some(why) => Err(Issue::new(
            format!("{field} {addr} is {why}, not one host"),
            format!(
                "give one host's address, e.g. {field} = \"{example}\" or \"[2001:db8::1]:80\""
            ),
        )),
    }
}

/// What the datapath and Maglev tell endpoints apart by: an IPv6 scope id or
/// flow label in the text does not make a different VIP or backend, so
/// duplicate checks compare this rather than the whole `SocketAddr`.
pub(super) fn identity(addr: SocketAddr) -> (IpAddr, u16) {
    (addr.ip(), addr.port())
}

/// Parses one of a fixed set of names; `default` applies when the key is absent.
pub(super) fn choice<T: Copy>(
    field: &str,
    text: Option<&str>,
    default: T,
    all: &[T],
    name: fn(T) -> &'static str,
) -> Result<T, Issue> {
    let Some(text) = text else { return Ok(default) };
    all.iter().copied().find(|&value| name(value) == text).ok_or_else(|| {
        let names: Vec<&str> = all.iter().map(|&value| name(value)).collect();
        Issue::new(format!("{field} {text:?} is not supported"), format!("use {}", one_of(&names)))
    })
}

/// `"a"`, `"a" or "b"`, `"a", "b" or "c"`.
pub(super) fn one_of(names: &[&str]) -> String {
    let mut list = String::new();
    for (index, name) in names.iter().enumerate() {
        let separator = match index {
            0 => "",
            _ if index + 1 == names.len() => " or ",
            _ => ", ",
        };
        // Writing to a String cannot fail.
        let _ = write!(list, "{separator}\"{name}\"");
    }
    list
}

/// An integer key that must lie in `min..=max`; kept as `i64` in the raw file
/// so `-1` gets this message rather than a serde type error.
pub(super) fn bounded(field: &str, value: i64, min: u32, max: u32) -> Result<u32, Issue> {
    if value < i64::from(min) {
        return Err(Issue::new(
            format!("{field} = {value} is below the minimum {min}"),
            format!("set {field} = {min} or more"),
        ));
    }
    u32::try_from(value).ok().filter(|&value| value <= max).ok_or_else(|| {
        Issue::new(
            format!("{field} = {value} is above the maximum {max}"),
            format!("set {field} = {max} or less"),
        )
    })
}

/// A duration key such as `health.interval`; `default` applies when absent.
pub(super) fn duration(
    field: &str,
    text: Option<&str>,
    default: Duration,
) -> Result<Duration, Issue> {
    let Some(text) = text else { return Ok(default) };
    duration::parse(text).map_err(|why| {
        Issue::new(
            format!("{field} {text:?} is not a duration: {why}"),
            "write a whole number followed by ns, us, ms, s or m, e.g. \"50ms\"",
        )
    })
}

/// Refuses a positive duration shorter than lb's timers can wait (see
/// `defaults::MIN_TIMER`); `example` is a sensible value for the key.
pub(super) fn timer(field: &str, value: Duration, example: &str) -> Result<Duration, Issue> {
    if value < MIN_TIMER {
        return Err(Issue::new(
            format!(
                "{field} {} is below the minimum {}, the tick of lb's timers",
                Written(value),
                Written(MIN_TIMER)
            ),
            format!(
                "set {field} = \"{}\" or more, e.g. \"{example}\" (a shorter wait is rounded \
                 up to a tick)",
                Written(MIN_TIMER)
            ),
        ));
    }
    Ok(value)
}

/// The range a duration key must lie in, with the reason for each bound
/// (shown in the fix, so the user learns why rather than just a number).
pub(super) struct Span {
    /// Smallest value; `Duration::ZERO` means any positive value.
    pub(super) min: Duration,
    /// Why a smaller value (or zero) would not work.
    pub(super) below: &'static str,
    /// Largest value.
    pub(super) max: Duration,
    /// Why a larger value would not work.
    pub(super) above: &'static str,
}

/// A duration within `span`; zero is always refused, being no timeout at all.
pub(super) fn within(field: &str, value: Duration, span: &Span) -> Result<Duration, Issue> {
    let max = Written(span.max);
    if value.is_zero() || value < span.min {
        let what = if value.is_zero() {
            format!("{field} is zero")
        } else {
            format!("{field} {} is below the minimum {}", Written(value), Written(span.min))
        };
        let fix = if span.min.is_zero() {
            format!("set {field} to a positive duration of at most \"{max}\"")
        } else {
            format!("set {field} = \"{}\" or more", Written(span.min))
        };
        return Err(Issue::new(what, fix).also(span.below));
    }
    if value > span.max {
        return Err(Issue::new(
            format!("{field} {} is above the maximum {max}", Written(value)),
            format!("set {field} = \"{max}\" or less"),
        )
        .also(span.above));
    }
    Ok(value)
}

/// Service names appear in CLI commands and metric labels, so they are kept
/// to characters that need no quoting in either.
pub(super) fn service_name(text: Option<&str>) -> Result<String, Issue> {
    const FIX: &str = "use 1 to 64 letters, digits, '_', '.' or '-', e.g. name = \"web\"";
    let Some(text) = text else {
        return Err(Issue::new("it has no name", FIX));
    };
    if text.is_empty() {
        return Err(Issue::new("name is empty", FIX));
    }
    if text.len() > MAX_NAME_LEN {
        return Err(Issue::new(
            format!("name {text:?} is {} characters, more than {MAX_NAME_LEN}", text.len()),
            FIX,
        ));
    }
    if let Some(bad) = text.chars().find(|&c| !(c.is_ascii_alphanumeric() || "_.-".contains(c))) {
        return Err(Issue::new(format!("name {text:?} contains {bad:?}"), FIX));
    }
    Ok(text.to_owned())
}

/// The kernel's own rules for interface names (`dev_valid_name`), so a bad
/// name is caught here rather than as a failed attach at startup.
pub(super) fn interface_name(field: &str, text: &str) -> Result<(), Issue> {
    const FIX: &str = "use the name `ip link` shows, e.g. \"eth0\"";
    if text.is_empty() {
        return Err(Issue::new(format!("{field} is an empty string"), FIX));
    }
    if text.len() > MAX_IFNAME_LEN {
        return Err(Issue::new(
            format!(
                "{field} {text:?} is {} bytes, longer than the kernel's limit of \
                 {MAX_IFNAME_LEN} (IFNAMSIZ)",
                text.len()
            ),
            FIX,
        ));
    }
    if text == "."
        || text == ".."
        || text.chars().any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(Issue::new(format!("{field} {text:?} is not a valid interface name"), FIX));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_addrs_parse_both_families_and_refuse_the_rest() {
        assert!(socket_addr("vip", "10.0.0.1:80", "10.0.0.100:80").is_ok());
        assert!(socket_addr("vip", "[2001:db8::1]:80", "10.0.0.100:80").is_ok());
        for bad in ["10.0.0.1", "host:80", "10.0.0.1:99999", "2001:db8::1:80", ""] {
            let issue = socket_addr("vip", bad, "10.0.0.100:80").expect_err(bad);
            assert!(issue.what.contains("is not an IP address and port"), "{issue:?}");
            assert!(issue.fix.contains("10.0.0.100:80"), "{issue:?}");
        }
    }

    #[test]
    fn port_zero_is_refused() {
        let zero: SocketAddr = "10.0.0.1:0".parse().expect("valid");
        assert!(nonzero_port("vip", zero, "10.0.0.100:80").is_err());
        let ok: SocketAddr = "10.0.0.1:1".parse().expect("valid");
        assert!(nonzero_port("vip", ok, "10.0.0.100:80").is_ok());
    }

    #[test]
    fn one_host_names_the_field_and_shows_an_example() {
        let vip: SocketAddr = "0.0.0.0:80".parse().expect("valid");
        let issue = one_host("vip", vip, "10.0.0.100:80").expect_err("unspecified");
        assert_eq!(
            issue.what,
            "vip 0.0.0.0:80 is the unspecified address, which stands for any address of a host, \
             not one host"
        );
        assert_eq!(
            issue.fix,
            "give one host's address, e.g. vip = \"10.0.0.100:80\" or \"[2001:db8::1]:80\""
        );
        let loopback: SocketAddr = "127.0.0.1:8080".parse().expect("valid");
        assert_eq!(one_host("addr", loopback, "10.0.1.1:80"), Ok(()));
    }

    #[test]
    fn identity_ignores_ipv6_scope() {
        let a: SocketAddr = "[fe80::1%1]:80".parse().expect("valid");
        let b: SocketAddr = "[fe80::1%2]:80".parse().expect("valid");
        assert_ne!(a, b);
        assert_eq!(identity(a), identity(b));
    }

    #[test]
    fn choice_defaults_and_lists_the_options() {
        let all = [1u8, 2, 3];
        let name = |v: u8| match v {
            1 => "one",
            2 => "two",
            _ => "three",
        };
        assert_eq!(choice("f", None, 2, &all, name), Ok(2));
        assert_eq!(choice("f", Some("three"), 1, &all, name), Ok(3));
        let issue = choice("f", Some("four"), 1, &all, name).expect_err("unknown");
        assert_eq!(issue.fix, "use \"one\", \"two\" or \"three\"");
        assert_eq!(one_of(&["a"]), "\"a\"");
        assert_eq!(one_of(&["a", "b"]), "\"a\" or \"b\"");
    }

    #[test]
    fn bounded_reports_below_and_above() {
        assert_eq!(bounded("weight", 1, 1, 10), Ok(1));
        assert_eq!(bounded("weight", 10, 1, 10), Ok(10));
        assert!(bounded("weight", 0, 1, 10).expect_err("0").what.contains("below the minimum 1"));
        assert!(bounded("weight", -1, 1, 10).expect_err("-1").what.contains("-1 is below"));
        assert!(bounded("weight", 11, 1, 10).expect_err("11").what.contains("above the maximum"));
        assert!(bounded("rise", i64::MAX, 1, u32::MAX).is_err());
    }

    #[test]
    fn duration_names_the_field_and_shows_an_example() {
        assert_eq!(
            duration("health.interval", None, Duration::from_secs(1)),
            Ok(Duration::from_secs(1))
        );
        let issue =
            duration("health.interval", Some("1.5s"), Duration::ZERO).expect_err("fraction");
        assert!(issue.what.starts_with("health.interval \"1.5s\" is not a duration"), "{issue:?}");
        assert!(issue.fix.contains("\"50ms\""), "{issue:?}");
    }

    #[test]
    fn timer_refuses_less_than_a_tick() {
        let tick = Duration::from_millis(1);
        assert_eq!(timer("f", tick, "2s"), Ok(tick));
        let issue =
            timer("splice.connect_timeout", Duration::from_nanos(1), "2s").expect_err("1ns");
        assert_eq!(
            issue.what,
            "splice.connect_timeout 1ns is below the minimum 1ms, the tick of lb's timers"
        );
        assert_eq!(
            issue.fix,
            "set splice.connect_timeout = \"1ms\" or more, e.g. \"2s\" (a shorter wait is \
             rounded up to a tick)"
        );
        assert!(timer("f", Duration::from_micros(999), "2s").is_err());
    }

    #[test]
    fn within_names_the_bound_and_its_reason() {
        let span = Span {
            min: Duration::from_secs(1),
            below: "low",
            max: Duration::from_secs(60),
            above: "high",
        };
        let secs = Duration::from_secs;
        assert_eq!(within("f", secs(1), &span), Ok(secs(1)));
        assert_eq!(within("f", secs(60), &span), Ok(secs(60)));
        let zero = within("f", Duration::ZERO, &span).expect_err("zero");
        assert_eq!(
            (zero.what.as_str(), zero.fix.as_str()),
            ("f is zero", "set f = \"1s\" or more (low)")
        );
        let low = within("f", Duration::from_millis(500), &span).expect_err("low");
        assert_eq!(low.what, "f 500ms is below the minimum 1s");
        let high = within("f", secs(61), &span).expect_err("high");
        assert_eq!(high.what, "f 61s is above the maximum 1m");
        assert_eq!(high.fix, "set f = \"1m\" or less (high)");
        let positive = Span { min: Duration::ZERO, ..span };
        assert_eq!(within("f", Duration::from_nanos(1), &positive), Ok(Duration::from_nanos(1)));
        let zero = within("f", Duration::ZERO, &positive).expect_err("zero");
        assert_eq!(zero.fix, "set f to a positive duration of at most \"1m\" (low)");
    }

    #[test]
    fn service_names_are_label_safe() {
        assert_eq!(service_name(Some("web-1.prod_x")), Ok("web-1.prod_x".into()));
        assert!(service_name(Some(&"a".repeat(64))).is_ok());
        assert!(service_name(Some(&"a".repeat(65))).is_err());
        assert!(service_name(Some("")).expect_err("empty").what.contains("empty"));
        assert!(service_name(None).expect_err("missing").what.contains("no name"));
        let issue = service_name(Some("web server")).expect_err("space");
        assert!(issue.what.contains("' '"), "{issue:?}");
        assert!(service_name(Some("wéb")).is_err());
    }

    #[test]
    fn interface_names_follow_the_kernel() {
        assert!(interface_name("i", "eth0").is_ok());
        assert!(interface_name("i", "a23456789012345").is_ok());
        assert!(interface_name("i", "a234567890123456").expect_err("16").what.contains("IFNAMSIZ"));
        assert!(interface_name("i", "").expect_err("empty").what.contains("empty"));
        for bad in [".", "..", "eth/0", "eth:0", "eth 0"] {
            assert!(interface_name("i", bad).is_err(), "{bad}");
        }
    }
}
