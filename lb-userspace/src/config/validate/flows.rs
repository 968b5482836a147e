//! `[flows]`: idle timeouts of the XDP datapath's flow table.

use std::time::Duration;

use lb_common::abi::{REFRESH_TICKS, TICK_SHIFT};

use super::report::{Report, Scope};
use super::values::{Span, bounded, duration, within};
use crate::config::model::Flows;
use crate::config::raw::RawFlows;

/// How often, at most, the datapath rewrites a busy flow's time (about
/// 1.07 s), in nanoseconds.
const REFRESH_NANOS: u64 = (REFRESH_TICKS as u64) << TICK_SHIFT;

/// A flow's time is refreshed only that often, so a flow expires between
/// its timeout and one refresh period later: a timeout not above the period
/// would be mostly slack. The smallest whole second above it (2 s).
const MIN_TIMEOUT: Duration = Duration::from_secs(REFRESH_NANOS / 1_000_000_000 + 1);

/// Seven days: times are a 32-bit count of ~1.05 ms ticks that wraps after
/// about 52 days, and ages are only meaningful well below half of that.
const MAX_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 60 * 60);

const SPAN: Span = Span {
    min: MIN_TIMEOUT,
    below: "the datapath refreshes a flow's time only about once a second, so expiry is no \
            finer than that",
    max: MAX_TIMEOUT,
    above: "at most 7 days: the datapath keeps a flow's time as a 32-bit count of ~1.05 ms \
            ticks",
};

/// Fewest flow-table entries: below this a handful of clients evicts each
/// other's flows.
const MIN_CAPACITY: u32 = 1024;
/// Most flow-table entries: 2^25 entries of 56 bytes of key and value alone
/// are 1.9 GB of kernel memory, before the kernel's per-element overhead.
const MAX_CAPACITY: u32 = 1 << 25;

/// Fewest new flows a second flood mode may be set to switch on at: below
/// this an ordinary busy minute would count as a flood.
const MIN_FLOOD_THRESHOLD: u32 = 100;
/// Most: about what one core can admit; a threshold above it never fires.
const MAX_FLOOD_THRESHOLD: u32 = 10_000_000;

/// Validates the flows table (absent = all defaults).
pub(super) fn check(raw: RawFlows, report: &mut Report) -> Option<Flows> {
    let d = Flows::default();
    let mut timeout = |field: &str, text: Option<String>, default: Duration| {
        let checked =
            duration(field, text.as_deref(), default).and_then(|value| within(field, value, &SPAN));
        report.take(&Scope::FILE, checked)
    };
    let tcp_idle_timeout =
        timeout("flows.tcp_idle_timeout", raw.tcp_idle_timeout, d.tcp_idle_timeout);
    let tcp_closing_timeout =
        timeout("flows.tcp_closing_timeout", raw.tcp_closing_timeout, d.tcp_closing_timeout);
    let udp_idle_timeout =
        timeout("flows.udp_idle_timeout", raw.udp_idle_timeout, d.udp_idle_timeout);
    let capacity = report.take(
        &Scope::FILE,
        bounded(
            "flows.capacity",
            raw.capacity.unwrap_or(d.capacity.into()),
            MIN_CAPACITY,
            MAX_CAPACITY,
        ),
    );
    let flood_threshold = report.take(
        &Scope::FILE,
        bounded(
            "flows.flood_threshold",
            raw.flood_threshold.unwrap_or(d.flood_threshold.into()),
            MIN_FLOOD_THRESHOLD,
            MAX_FLOOD_THRESHOLD,
        ),
    );
    Some(Flows {
        syn_challenge: raw.syn_challenge.unwrap_or(d.syn_challenge),
        flood_threshold: flood_threshold?,
        tcp_idle_timeout: tcp_idle_timeout?,
        tcp_closing_timeout: tcp_closing_timeout?,
        udp_idle_timeout: udp_idle_timeout?,
        capacity: capacity?,
    })
}

#[cfg(test)]
mod tests {
    use lb_common::abi::{FlowTimeouts, ticks};

    use super::super::testing::{accepted, refused, service, with_table};
    use super::*;

    fn with(keys: &str) -> String {
        with_table("flows", keys)
    }

    fn in_ticks(duration: Duration) -> u32 {
        ticks(u64::try_from(duration.as_nanos()).expect("fits"))
    }

    #[test]
    fn defaults_apply_when_absent_and_match_the_datapath() {
        let flows = accepted(&service("web", "10.0.0.100:80", "10.0.1.1:80")).flows;
        assert_eq!(flows, Flows::default());
        assert_eq!(flows.tcp_idle_timeout, Duration::from_secs(300));
        assert_eq!(flows.tcp_closing_timeout, Duration::from_secs(10));
        assert_eq!(flows.udp_idle_timeout, Duration::from_secs(30));
        // The datapath falls back to its own defaults until the agent writes
        // these; the two must agree, or a restart would change the timeouts.
        let datapath = FlowTimeouts::DEFAULT;
        assert_eq!(in_ticks(flows.tcp_idle_timeout), datapath.tcp);
        assert_eq!(in_ticks(flows.tcp_closing_timeout), datapath.tcp_closing);
        assert_eq!(in_ticks(flows.udp_idle_timeout), datapath.udp);
    }

    #[test]
    fn bounds_fit_the_datapath_clock() {
        assert!(MIN_TIMEOUT.as_nanos() > u128::from(REFRESH_NANOS));
        assert_eq!(MIN_TIMEOUT, Duration::from_secs(2));
        assert!(in_ticks(MAX_TIMEOUT) < u32::MAX / 4);
    }

    #[test]
    fn values_are_read() {
        let flows = accepted(&with(
            "tcp_idle_timeout = \"1m\"\ntcp_closing_timeout = \"2s\"\n\
             udp_idle_timeout = \"10080m\"",
        ))
        .flows;
        assert_eq!(flows.tcp_idle_timeout, Duration::from_secs(60));
        assert_eq!(flows.tcp_closing_timeout, MIN_TIMEOUT);
        assert_eq!(flows.udp_idle_timeout, MAX_TIMEOUT);
    }

    #[test]
    fn bad_values_name_the_key_and_the_fix() {
        refused(
            &with("tcp_idle_timeout = \"0s\""),
            &["lb.toml: flows.tcp_idle_timeout is zero", "= \"2s\" or more", "no finer"],
        );
        refused(
            &with("tcp_closing_timeout = \"1s\""),
            &["flows.tcp_closing_timeout 1s is below the minimum 2s", "about once a second"],
        );
        refused(
            &with("udp_idle_timeout = \"10081m\""),
            &["flows.udp_idle_timeout 10081m is above the maximum 10080m", "7 days", "32-bit"],
        );
        refused(&with("udp_idle_timeout = \"30\""), &["flows.udp_idle_timeout \"30\"", "no unit"]);
        refused(&with("capacity = 100"), &["flows.capacity = 100 is below the minimum 1024"]);
        refused(&with("capacity = 1000000000"), &["flows.capacity", "above the maximum 33554432"]);
        assert_eq!(accepted(&with("capacity = 4096")).flows.capacity, 4096);
    }

    #[test]
    fn the_syn_challenge_is_on_unless_turned_off() {
        assert!(accepted(&with("flood_threshold = 5000")).flows.syn_challenge);
        assert!(!accepted(&with("syn_challenge = false")).flows.syn_challenge);
        let wrong = crate::config::parse(&with("syn_challenge = \"no\""), "lb.toml".as_ref());
        let error = wrong.expect_err("a string for a boolean").to_string();
        assert!(error.contains("lb.toml:2") && error.contains("expected a boolean"), "{error}");
    }

    #[test]
    fn the_flood_threshold_is_bounded() {
        assert_eq!(accepted(&with("flood_threshold = 5000")).flows.flood_threshold, 5000);
        refused(
            &with("flood_threshold = 10"),
            &["flows.flood_threshold = 10 is below the minimum 100"],
        );
        refused(
            &with("flood_threshold = 100000000"),
            &["flows.flood_threshold", "above the maximum"],
        );
    }
}
