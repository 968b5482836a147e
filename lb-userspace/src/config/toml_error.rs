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
    let place = place(text, offset).map_or_else(String::new, |p| format!("{p}: "));
    // Deserializing stops at the first problem: say so, or a file with three
    // would seem to have one.
    let message = format!(
        "{place}{}; this is the first problem found: fix it and check again",
        with_hint(error.message())
    );
    ConfigError::Parse { path: path.to_owned(), line, column, message }
}

/// Where `offset` is, in the words of the file: the key on its line and the
/// table it is in (`service "web": key `table_size``). `None` outside any key.
fn place(text: &str, offset: usize) -> Option<String> {
    let (_, line_start) = line_of(text, offset);
    let line = text[line_start..].lines().next().unwrap_or("");
    let key = line.split_once('=').map(|(k, _)| k.trim()).filter(|k| !k.is_empty())?;
    let table = table_of(&text[..line_start]);
    Some(match table {
        Some(table) => format!("{table}, key `{key}`"),
        None => format!("key `{key}`"),
    })
}

/// The table the text after `before` is in: its header, and for an array
/// of tables which one (1-based) and its `name` when it has one.
fn table_of(before: &str) -> Option<String> {
    // A header may carry a comment: `[[service]] # web`.
    let header = before
        .lines()
        .rev()
        .map(|l| l.split_once('#').map_or(l, |(h, _)| h).trim())
        .find(|l| l.starts_with('['))?;
    let name = header.trim_matches(|c| c == '[' || c == ']').trim();
    if !header.starts_with("[[") {
        return Some(format!("[{name}]"));
    }
    let nth = before
        .lines()
        .filter(|l| l.split_once('#').map_or(*l, |(h, _)| h).trim() == header)
        .count();
    // The array's element: its own lines after its header, up to the next.
    let own = before.rsplit(header).next().unwrap_or("");
    let label = own
        .lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == "name" || k.trim() == "addr")
        .map(|(k, v)| format!(" {} {}", k.trim(), v.trim()));
    // A nested array's count would run over its parents: its label says
    // which one.
    let nth = if name.contains('.') { String::new() } else { format!(" #{nth}") };
    Some(format!("[[{name}]]{nth}{}", label.unwrap_or_default()))
}

/// toml's type names in the words of the file.
fn plain_types(message: &str) -> String {
    [
        ("expected i64", "expected a whole number"),
        ("expected u64", "expected a whole number"),
        ("expected u32", "expected a whole number"),
        ("expected u16", "expected a whole number"),
        ("expected u8", "expected a whole number"),
        ("expected f64", "expected a number"),
        ("expected a sequence", "expected a list in brackets"),
        ("expected a map", "expected a table"),
    ]
    .iter()
    .fold(message.to_owned(), |m, (from, to)| m.replace(from, to))
}

/// 1-based line and character column of byte `offset` in `text`.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let (end, line_start) = line_of(text, offset);
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// `offset` clamped into `text` on a character boundary, and the start of
/// its line. toml spans fall on character boundaries; clamping keeps a
/// stray one from panicking the error path.
fn line_of(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (end, text[..end].rfind('\n').map_or(0, |newline| newline + 1))
}

/// Joins toml's message onto one line and appends how to fix it.
fn with_hint(message: &str) -> String {
    let message = message.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>();
    let message = plain_types(&message.join(": "));
    let expects = |what: &str| message.contains(&format!("expected {what}"));
    let hint = if message.starts_with("unknown field") {
        format!("remove it or check its spelling; {REFERENCE}")
    } else if message.starts_with("invalid type") && expects("a boolean") {
        "write true or false, without quotes".to_owned()
    } else if message.starts_with("invalid type") && expects("a whole number") {
        "write the number without quotes, e.g. table_size = 65537".to_owned()
    } else if message.starts_with("invalid type") && expects("a list") {
        format!(
            "write a list, e.g. [\"10.0.0.0/8\"]; a service's backends are \
             [[service.backend]] tables; {REFERENCE}"
        )
    } else if message.starts_with("invalid type") && expects("a string") {
        format!("quote it: addresses, durations and names are strings; {REFERENCE}")
    } else if message.starts_with("invalid type") {
        format!("{REFERENCE} shows each key's type")
    } else if message.contains("too large") || message.contains("too small") {
        format!("the number is out of range for this key; {REFERENCE}")
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
        assert!(message.starts_with("lb.toml:5:1: [[service.backend]] addr \"10.0.1.1:80\", key `wieght`: unknown field `wieght`"), "{message}");
        assert!(message.contains("check its spelling"), "{message}");
        assert!(message.contains("config/example.toml"), "{message}");
    }

    #[test]
    fn a_header_with_a_comment_is_named_without_it() {
        let text = "[[service]] # the web tier\nname = \"web\"\nwieght = 2\n";
        let message = error_for(text);
        assert!(message.contains("[[service]] #1 name \"web\", key `wieght`"), "{message}");
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
        assert!(message.contains("quote it"), "{message}");
    }

    #[test]
    fn a_type_error_names_the_key_its_table_and_the_type_in_plain_words() {
        let text = "[agent]\nmode = \"xdp\"\n[[service]]\nname = \"a\"\n\
                    [[service]]\nname = \"web\"\ntable_size = \"big\"\n";
        let message = error_for(text);
        assert!(message.contains("[[service]] #2 name \"web\", key `table_size`"), "{message}");
        assert!(message.contains("expected a whole number"), "{message}");
        assert!(!message.contains("i64"), "{message}");
        assert!(message.contains("without quotes"), "{message}");
        assert!(message.contains("first problem found"), "{message}");
        let message = error_for("[flows]\nsyn_challenge = \"no\"\n");
        assert!(message.contains("[flows], key `syn_challenge`"), "{message}");
        assert!(message.contains("true or false"), "{message}");
        let message = error_for("[[service]]\nname = \"w\"\nbackend = \"10.0.1.1:80\"\n");
        assert!(message.contains("[[service.backend]] tables"), "{message}");
        assert!(!message.contains("sequence"), "{message}");
    }

    #[test]
    fn a_number_out_of_range_is_not_called_a_syntax_error() {
        let text = "[[service]]\nname = \"w\"\ntable_size = 99999999999999999999\n";
        let message = error_for(text);
        assert!(message.contains("out of range"), "{message}");
        assert!(!message.contains("syntax"), "{message}");
    }

    #[test]
    fn duplicate_key_says_keep_one() {
        let message = error_for("[[service]]\nname = \"a\"\nname = \"b\"\n");
        assert!(message.contains("duplicate key `name`"), "{message}");
        assert!(message.contains("keep one"), "{message}");
    }
}
