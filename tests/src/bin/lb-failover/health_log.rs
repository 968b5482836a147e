//! The agent's `backend health changed` lines, as tracing's default `fmt`
//! output writes them to lb.log:
//!
//! ```text
//! 2025-06-01T12:00:00.123456Z  WARN lb_userspace::agent: backend health changed service=tcp-v4 backend=10.200.1.1:80 to="down" reason="connection refused" consecutive=2 ...
//! ```
//!
//! Fields recorded with `%` are written bare, `&str` and `String` fields in
//! Debug form (quoted, escaped); the timestamp is RFC 3339 in UTC with
//! microseconds.

use std::{
    net::SocketAddr,
    time::{Duration, SystemTime},
};

use lb_tests::topology::{backend4, backend6};

const MESSAGE: &str = "backend health changed";

/// One health change the agent logged.
#[derive(Debug)]
pub struct Change {
    /// When the agent logged it (None if the timestamp did not parse).
    pub at: Option<SystemTime>,
    fields: Vec<(String, String)>,
}

impl Change {
    /// Parses one log line; None unless it is a health change.
    pub fn parse(line: &str) -> Option<Self> {
        let (head, rest) = line.split_once(MESSAGE)?;
        let at = head.split_whitespace().next().and_then(parse_rfc3339);
        Some(Self { at, fields: fields(rest) })
    }

    /// A field's value, unquoted.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The backend it is about, as its 1-based index in the topology (either
    /// address family).
    pub fn backend(&self) -> Option<usize> {
        let addr: SocketAddr = self.get("backend")?.parse().ok()?;
        (1..=3).find(|&i| addr.ip() == backend4(i) || addr.ip() == backend6(i))
    }

    /// Whether the backend was taken down.
    pub fn is_down(&self) -> bool {
        self.get("to") == Some("down")
    }

    /// Which signal made the change: the agent's `signal=` field, or, from
    /// an agent that does not log one, `passive` for the datapath's refused
    /// SYN and `probe` otherwise. A probe's own reason can say "connection
    /// refused" as well, so the passive line is told apart by its lack of a
    /// probe streak (`consecutive=`), not by its reason alone.
    pub fn signal(&self) -> &str {
        if let Some(s) = self.get("signal") {
            return s;
        }
        let reason = self.get("reason").unwrap_or_default();
        let passive = self.get("consecutive").is_none()
            && (reason.contains("refused") || reason.contains("reset"));
        if passive { "passive" } else { "probe" }
    }

    /// `b<i> <to>: <reason>`, for listing changes nobody expected.
    pub fn describe(&self) -> String {
        format!(
            "b{} {}: {}",
            self.backend().map_or("?".to_owned(), |i| i.to_string()),
            self.get("to").unwrap_or("?"),
            self.get("reason").unwrap_or("?")
        )
    }
}

/// Every health change in `log`.
pub fn changes(log: &str) -> impl Iterator<Item = Change> + '_ {
    log.lines().filter_map(Change::parse)
}

/// The `key=value` fields after the message; quoted values unescaped.
fn fields(mut rest: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    loop {
        rest = rest.trim_start();
        let Some((key, after)) = rest.split_once('=') else { return out };
        let (value, next) = match after.strip_prefix('"') {
            Some(quoted) => unquote(quoted),
            None => {
                let end = after.find(' ').unwrap_or(after.len());
                (after[..end].to_owned(), &after[end..])
            }
        };
        out.push((key.to_owned(), value));
        rest = next;
    }
}

/// Reads a Debug-quoted string up to its closing quote (the opening one
/// already taken): the value and what follows it.
fn unquote(s: &str) -> (String, &str) {
    let mut value = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return (value, &s[i + 1..]),
            '\\' => {
                if let Some((_, e)) = chars.next() {
                    value.push(match e {
                        'n' => '\n',
                        't' => '\t',
                        other => other,
                    });
                }
            }
            c => value.push(c),
        }
    }
    (value, "")
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` (tracing's timestamp) as a SystemTime.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let (date, time) = s.strip_suffix('Z')?.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, mo, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<u64>().ok());
    let (h, mi, sec) = (t.next()??, t.next()??, t.next()??);
    let nanos =
        frac.parse::<u32>().ok()? * 10u32.checked_pow(9u32.checked_sub(frac.len() as u32)?)?;
    let days = u64::try_from(days_from_civil(y, mo, day)).ok()?;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec;
    Some(SystemTime::UNIX_EPOCH + Duration::new(secs, nanos))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm: years start in March, so the leap day ends a year).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROBE: &str = "2024-03-01T00:00:01.250000Z  WARN lb_userspace::agent: backend health changed service=tcp-v4 backend=10.200.2.1:80 to=\"down\" reason=\"connection refused\" consecutive=2 detection_ms=101.5 apply_us=310";
    const PASSIVE: &str = "2024-03-01T00:00:01.000001Z  WARN lb_userspace::agent: backend health changed service=\"tcp-v4\" backend=[fd00:200:3::1]:80 to=\"down\" reason=\"refused a forwarded connection (TCP reset to a SYN)\" apply_us=12";

    #[test]
    fn fields_of_a_probe_change() {
        let c = Change::parse(PROBE).expect("a change");
        assert_eq!(c.get("service"), Some("tcp-v4"));
        assert_eq!(c.backend(), Some(2));
        assert!(c.is_down());
        assert_eq!(c.get("reason"), Some("connection refused"));
        assert_eq!(c.signal(), "probe", "a refused probe is still a probe");
        assert_eq!(c.at, Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_709_251_201_250)));
    }

    #[test]
    fn passive_change_without_a_signal_field() {
        let c = Change::parse(PASSIVE).expect("a change");
        assert_eq!(c.backend(), Some(3));
        assert_eq!(c.signal(), "passive");
    }

    #[test]
    fn signal_field_wins() {
        let line = PASSIVE.replace(" apply_us", " signal=unanswered apply_us");
        assert_eq!(Change::parse(&line).expect("a change").signal(), "unanswered");
    }

    #[test]
    fn quoted_values_unescape() {
        let f = fields(r#" a="x \"y\" \\ z" b=2"#);
        assert_eq!(f, [("a".into(), r#"x "y" \ z"#.into()), ("b".into(), "2".into())]);
    }

    #[test]
    fn timestamps() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00.000000Z"), Some(SystemTime::UNIX_EPOCH));
        let leap = parse_rfc3339("2000-02-29T23:59:59.5Z").expect("parses");
        assert_eq!(leap, SystemTime::UNIX_EPOCH + Duration::from_millis(951_868_799_500));
        assert_eq!(parse_rfc3339("not a time"), None);
    }
}
