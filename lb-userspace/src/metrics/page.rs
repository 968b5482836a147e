//! The status page at `/`: one self-contained HTML file (`page.html`, its
//! style and script inline) with the current status report embedded, which
//! its script renders and then refreshes from `/status.json`. The report is
//! the one `lb status --json` prints; the page keeps no data of its own.

use crate::control::protocol::StatusReport;

/// The page, with `{{SAMPLED_MS}}` and `{{STATUS_JSON}}` to fill.
const TEMPLATE: &str = include_str!("page.html");

/// The page's Content-Security-Policy: its own inline script and style,
/// fetches to where it came from, nothing else from anywhere.
pub const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; \
    style-src 'unsafe-inline'; connect-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// The page showing `report`, taken at `sampled_ms` (see
/// [`super::SAMPLED_HEADER`]).
pub fn html(report: &StatusReport, sampled_ms: u128) -> String {
    // The JSON goes last: nothing in it is read as a placeholder.
    TEMPLATE.replacen("{{SAMPLED_MS}}", &sampled_ms.to_string(), 1).replacen(
        "{{STATUS_JSON}}",
        &script_safe_json(report),
        1,
    )
}

/// `report` as JSON that cannot end its `<script>` element: `<`, `>` and
/// `&` occur only inside JSON strings, where their `\u` escapes mean the
/// same.
fn script_safe_json(report: &StatusReport) -> String {
    serde_json::to_string(report)
        .expect("reports always serialise")
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::protocol::{ExceptionStatus, InterfaceStatus};

    fn report(mode_reason: &str) -> StatusReport {
        StatusReport {
            mode: "splice".into(),
            mode_reason: Some(mode_reason.into()),
            interfaces: vec![InterfaceStatus {
                name: "eth0".into(),
                attach: "native".into(),
                why: String::new(),
                lost: Default::default(),
            }],
            services: Vec::new(),
            exceptions: vec![ExceptionStatus {
                reason: "no_backend".into(),
                action: "drop".into(),
                packets: 3,
            }],
            flows_age_ms: 0,
            vip_routes: Default::default(),
            announce: None,
            trace: None,
            flood: Default::default(),
            probes_skipped: 0,
            descriptors: None,
        }
    }

    /// The JSON embedded in `page`.
    fn embedded(page: &str) -> &str {
        let start = page.find("type=\"application/json\"").expect("the data element");
        let open = start + page[start..].find('>').expect("tag end") + 1;
        let len = page[open..].find("</script>").expect("element end");
        &page[open..open + len]
    }

    #[test]
    fn the_report_is_embedded_whole_and_cannot_break_out_of_its_element() {
        let r = report("</script><script>alert(1)</script> & more");
        let page = html(&r, 42);
        let json = embedded(&page);
        assert!(!json.contains('<'), "{json}");
        let back: StatusReport = serde_json::from_str(json).expect("valid JSON");
        assert_eq!(back, r, "the same report, escapes and all");
        assert!(page.contains("data-sampled-ms=\"42\""));
        assert!(!page.contains("{{"), "every placeholder filled");
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for needle in ["src=", "href=", "url(", "@import", "http:", "https:", "//cdn"] {
            assert!(!TEMPLATE.contains(needle), "page.html contains {needle:?}");
        }
        assert!(CSP.starts_with("default-src 'none'"), "{CSP}");
    }

    #[test]
    fn the_script_reads_the_header_the_server_sends() {
        assert!(TEMPLATE.contains(&format!("\"{}\"", super::super::SAMPLED_HEADER)));
        assert!(TEMPLATE.contains("fetch(\"status.json\""));
    }
}
