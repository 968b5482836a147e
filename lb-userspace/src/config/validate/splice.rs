//! `[splice]`: the userspace proxy's connection bounds.

use std::time::Duration;

use super::report::{Issue, Report, Scope};
use super::values::{bounded, duration, timer};
use crate::config::duration::Written;
use crate::config::model::Splice;
use crate::config::raw::RawSplice;

/// Most connections per service: six descriptors each must fit under the
/// kernel's per-process ceiling (fs.nr_open, 1 048 576 by default).
const MAX_CONNECTIONS: u32 = 1 << 17;

/// Validates the splice table (absent = all defaults).
pub(super) fn check(raw: RawSplice, report: &mut Report) -> Option<Splice> {
    let scope = &Scope::FILE;
    let d = Splice::default();
    let max_connections = report.take(
        scope,
        bounded(
            "splice.max_connections",
            raw.max_connections.unwrap_or(d.max_connections.into()),
            1,
            MAX_CONNECTIONS,
        ),
    );
    let connect_tries = report.take(
        scope,
        bounded("splice.connect_tries", raw.connect_tries.unwrap_or(d.connect_tries.into()), 1, 64),
    );
    // Zero is meaningful for `shutdown_timeout` (close everything at once),
    // and any wait under a timer tick means the same: only parsed.
    let shutdown_timeout = report.take(
        scope,
        duration("splice.shutdown_timeout", raw.shutdown_timeout.as_deref(), d.shutdown_timeout),
    );
    let mut timeout = |field: &str, text: Option<&str>, default: Duration| {
        let value = report.take(scope, duration(field, text, default))?;
        if value.is_zero() {
            report.add(
                scope,
                Issue::new(
                    format!("{field} is zero, so every connection would time out at once"),
                    format!("set a positive duration, or leave it out for {}", Written(default)),
                ),
            );
            return None;
        }
        report.take(scope, timer(field, value, &Written(default).to_string()))
    };
    let connect_timeout =
        timeout("splice.connect_timeout", raw.connect_timeout.as_deref(), d.connect_timeout);
    let idle_timeout = timeout("splice.idle_timeout", raw.idle_timeout.as_deref(), d.idle_timeout);
    let udp_idle_timeout =
        timeout("splice.udp_idle_timeout", raw.udp_idle_timeout.as_deref(), d.udp_idle_timeout);
    Some(Splice {
        max_connections: max_connections?,
        connect_timeout: connect_timeout?,
        connect_tries: connect_tries?,
        idle_timeout: idle_timeout?,
        udp_idle_timeout: udp_idle_timeout?,
        shutdown_timeout: shutdown_timeout?,
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{accepted, refused, service, with_table};
    use super::*;
    use crate::config::defaults;

    fn with(keys: &str) -> String {
        with_table("splice", keys)
    }

    #[test]
    fn defaults_apply_when_absent() {
        let s = accepted(&service("web", "10.0.0.100:80", "10.0.1.1:80")).splice;
        assert_eq!(s, Splice::default());
        assert_eq!(s.max_connections, defaults::MAX_CONNECTIONS);
        assert_eq!(s.shutdown_timeout, defaults::SHUTDOWN_TIMEOUT);
    }

    #[test]
    fn values_are_read() {
        let s = accepted(&with(
            "max_connections = 10\nconnect_timeout = \"300ms\"\nconnect_tries = 1\n\
             idle_timeout = \"1m\"\nudp_idle_timeout = \"5s\"\nshutdown_timeout = \"0s\"",
        ))
        .splice;
        assert_eq!(s.max_connections, 10);
        assert_eq!(s.connect_timeout, Duration::from_millis(300));
        assert_eq!(s.connect_tries, 1);
        assert_eq!(s.idle_timeout, Duration::from_secs(60));
        assert_eq!(s.udp_idle_timeout, Duration::from_secs(5));
        assert_eq!(s.shutdown_timeout, Duration::ZERO);
    }

    #[test]
    fn bad_values_name_the_key_and_the_fix() {
        refused(&with("max_connections = 0"), &["splice.max_connections = 0", "minimum 1"]);
        refused(&with("max_connections = 1000000"), &["splice.max_connections", "maximum"]);
        refused(&with("connect_tries = 0"), &["splice.connect_tries = 0", "set"]);
        refused(&with("idle_timeout = \"0s\""), &["splice.idle_timeout is zero", "positive"]);
        refused(&with("connect_timeout = \"soon\""), &["splice.connect_timeout", "not a duration"]);
        refused(&with("udp_idle_timeout = \"0ms\""), &["splice.udp_idle_timeout is zero"]);
    }

    #[test]
    fn timeouts_of_less_than_a_tick() {
        refused(
            &with("connect_timeout = \"1ns\""),
            &[
                "splice.connect_timeout 1ns is below the minimum 1ms",
                "set splice.connect_timeout = \"1ms\" or more, e.g. \"2s\"",
            ],
        );
        refused(&with("idle_timeout = \"999us\""), &["splice.idle_timeout 999us is below"]);
        refused(&with("udp_idle_timeout = \"5ns\""), &["splice.udp_idle_timeout 5ns is below"]);
        let s = accepted(&with(
            "connect_timeout = \"1ms\"\nidle_timeout = \"1000us\"\nudp_idle_timeout = \"1ms\"\n\
             shutdown_timeout = \"1ns\"",
        ))
        .splice;
        let tick = Duration::from_millis(1);
        assert_eq!((s.connect_timeout, s.idle_timeout, s.udp_idle_timeout), (tick, tick, tick));
        assert_eq!(s.shutdown_timeout, Duration::from_nanos(1));
    }
}
