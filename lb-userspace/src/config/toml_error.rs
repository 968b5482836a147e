//! Turns a TOML or serde error into a [`ConfigError::Parse`]: a 1-based
//! position and a one-line message with a hint, instead of toml's multi-line
//! report.

use std::path::Path;

use super::error::ConfigError;

/// Where to look for the accepted keys and their types.
const REFERENCE: &str = "see config/example.toml";

/// Builds the parse error for `error`, raised while parsing `text` from `path`.
pub(super) fn parse_error(path: &Path, text: &str, error: &toml::de::Error) -> ConfigError {
    // toml attaches a span to practically every error; the start of the file is
    // the honest fallback when it does not.
    let offset = error.span().map_or(0, |span| span.start);
    let (line, column) = position(text, offset);
    ConfigError::Parse { path: path.to_owned(), line, column, message: with_hint(error.message()) }
}

/// 1-based line and character column of byte `offset` in `text`.
fn position(text: &str, offset: usize) -> (usize, usize) {
    // toml spans fall on character boundaries; clamping keeps a stray one from
    // panicking the error path.
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    let line = before.matches('\n').count() + 1;
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Joins toml's message onto one line and appends how to fix it.
fn with_hint(message: &str) -> String {
    let message = message.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>();
    let message = message.join(": ");
    let hint = if message.starts_with("unknown field") {
        format!("remove it or check its spelling; {REFERENCE}")
    } else if message.starts_with("invalid type") {
        format!("addresses, durations and names are quoted strings, numbers are not; {REFERENCE}")
    } else if message.starts_with("duplicate key") {
        "keep one of them".to_owned()
    } else if message.starts_with("missing field") {
        format!("add it; {REFERENCE}")
    } else {
        format!("fix the TOML syntax here; {REFERENCE}")
    };
    format!("{message}; {hint}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::raw::RawConfig;

    fn error_for(text: &str) -> String {
        match toml::from_str::<RawConfig>(text) {
            Ok(_) => panic!("expected a parse error for {text:?}"),
            Err(error) => parse_error(Path::new("lb.toml"), text, &error).to_string(),
        }
    }

    #[test]
    fn position_is_one_based_in_characters() {
        assert_eq!(position("abc", 0), (1, 1));
        assert_eq!(position("ab\ncd", 3), (2, 1));
        assert_eq!(position("ab\n\u{e9}d", 5), (2, 2));
        assert_eq!(position("ab", 99), (1, 3));
    }

    #[test]
    fn unknown_field_names_the_field_and_suggests_a_fix() {
        let text = "[[service]]\nname = \"web\"\n[[service.backend]]\naddr = \"10.0.1.1:80\"\n\
                    wieght = 2\n";
        let message = error_for(text);
        assert!(message.starts_with("lb.toml:5:1: unknown field `wieght`"), "{message}");
        assert!(message.contains("check its spelling"), "{message}");
        assert!(message.contains("config/example.toml"), "{message}");
    }

    #[test]
    fn misspelt_table_is_an_unknown_field() {
        let message = error_for("[[services]]\nname = \"web\"\n");
        assert!(message.contains("unknown field `services`"), "{message}");
    }

    #[test]
    fn syntax_error_is_one_line_with_a_hint() {
        let message = error_for("[agent\n");
        assert!(message.starts_with("lb.toml:1:7: invalid table header"), "{message}");
        assert_eq!(message.lines().count(), 1, "{message}");
        assert!(message.contains("TOML syntax"), "{message}");
    }

    #[test]
    fn wrong_type_says_what_is_quoted() {
        let message = error_for("[[service]]\nvip = 80\n");
        assert!(message.contains("invalid type"), "{message}");
        assert!(message.contains("quoted strings"), "{message}");
    }

    #[test]
    fn duplicate_key_says_keep_one() {
        let message = error_for("[[service]]\nname = \"a\"\nname = \"b\"\n");
        assert!(message.contains("duplicate key `name`"), "{message}");
        assert!(message.contains("keep one"), "{message}");
    }
}
