//! Durations as written in the config: an integer and a unit, e.g. `"50ms"`.
//!
//! Deliberately stricter than general-purpose parsers (no fractions, no
//! compound values like `1m30s`, no spaces): health timings are short and a
//! single form keeps files uniform and typos loud.

use std::fmt;
use std::time::Duration;

/// Units accepted after the number, with their length in nanoseconds.
const UNITS: [(&str, u64); 5] =
    [("ns", 1), ("us", 1_000), ("ms", 1_000_000), ("s", 1_000_000_000), ("m", 60_000_000_000)];

/// Why a duration string was refused; rendered inside a `Problem`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DurationError {
    /// Nothing before the unit (also covers an empty string).
    #[error("it does not start with a whole number")]
    NoNumber,
    /// A number with nothing after it: `"50"` is ambiguous.
    #[error("it has no unit")]
    NoUnit,
    /// Anything after the digits that is not one of [`UNITS`], which also
    /// catches fractions (`"1.5s"`) and signs.
    #[error("`{0}` is not a unit")]
    BadUnit(String),
    /// More than `u64` nanoseconds.
    #[error("it is too large")]
    TooLarge,
}

/// Parses a duration given on the command line, as the config writes them.
pub fn parse_arg(text: &str) -> Result<Duration, String> {
    parse(text)
        .map_err(|e| format!("{text:?} is not a duration ({e}); write e.g. \"30s\" or \"5m\""))
}

/// Parses `<integer><unit>` with unit one of ns, us, ms, s, m.
pub(crate) fn parse(text: &str) -> Result<Duration, DurationError> {
    let digits_end = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    if digits.is_empty() {
        return Err(DurationError::NoNumber);
    }
    if unit.is_empty() {
        return Err(DurationError::NoUnit);
    }
    let scale = UNITS
        .iter()
        .find(|(name, _)| *name == unit)
        .map(|&(_, nanos)| nanos)
        .ok_or_else(|| DurationError::BadUnit(unit.to_owned()))?;
    // Only digits are left, so the sole parse failure is overflow.
    let count: u64 = digits.parse().map_err(|_| DurationError::TooLarge)?;
    let nanos = count.checked_mul(scale).ok_or(DurationError::TooLarge)?;
    Ok(Duration::from_nanos(nanos))
}

/// Displays a duration in the largest unit that represents it exactly, so the
/// summary shows what the user wrote (`50ms`, not `0.05s`) and the output
/// parses back to the same value.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Written(pub(crate) Duration);

impl fmt::Display for Written {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.as_nanos();
        let (name, scale) = UNITS
            .iter()
            .rev()
            .find(|&&(_, scale)| nanos != 0 && nanos.is_multiple_of(u128::from(scale)))
            .map_or(("ms", 1_000_000), |&(name, scale)| (name, scale));
        write!(f, "{}{name}", nanos / u128::from(scale))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_every_unit() {
        assert_eq!(parse("7ns"), Ok(Duration::from_nanos(7)));
        assert_eq!(parse("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse("50ms"), Ok(Duration::from_millis(50)));
        assert_eq!(parse("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("0ms"), Ok(Duration::ZERO));
    }

    #[test]
    fn refuses_everything_else() {
        assert_eq!(parse(""), Err(DurationError::NoNumber));
        assert_eq!(parse("ms"), Err(DurationError::NoNumber));
        assert_eq!(parse("-1s"), Err(DurationError::NoNumber));
        assert_eq!(parse(" 5ms"), Err(DurationError::NoNumber));
        assert_eq!(parse("50"), Err(DurationError::NoUnit));
        assert_eq!(parse("1.5s"), Err(DurationError::BadUnit(".5s".into())));
        assert_eq!(parse("5 ms"), Err(DurationError::BadUnit(" ms".into())));
        assert_eq!(parse("1h"), Err(DurationError::BadUnit("h".into())));
        assert_eq!(parse("1m30s"), Err(DurationError::BadUnit("m30s".into())));
        assert_eq!(parse("50MS"), Err(DurationError::BadUnit("MS".into())));
        assert_eq!(parse("99999999999999999999ns"), Err(DurationError::TooLarge));
        assert_eq!(parse("999999999999m"), Err(DurationError::TooLarge));
    }

    #[test]
    fn every_error_has_a_message() {
        for error in [
            DurationError::NoNumber,
            DurationError::NoUnit,
            DurationError::BadUnit("h".into()),
            DurationError::TooLarge,
        ] {
            assert!(!error.to_string().is_empty(), "{error:?}");
        }
    }

    #[test]
    fn display_uses_the_largest_exact_unit_and_round_trips() {
        for text in ["7ns", "250us", "50ms", "1500ms", "1s", "2m", "90s"] {
            let parsed = parse(text).expect("valid");
            assert_eq!(Written(parsed).to_string(), text);
        }
        assert_eq!(Written(Duration::ZERO).to_string(), "0ms");
        assert_eq!(Written(Duration::from_millis(1000)).to_string(), "1s");
    }
}
