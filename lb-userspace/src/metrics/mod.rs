//! The agent over HTTP (`agent.metrics_addr`), read-only:
//!
//! - `GET /metrics`: the Prometheus exposition ([`render`]);
//! - `GET /status.json`: the status report, as `lb status --json` prints it;
//! - `GET /`: a status page that shows that report and refreshes itself
//!   from `/status.json` ([`page`]).
//!
//! A deliberately small HTTP/1.1 responder: one request per connection,
//! `Connection: close`, bounded reads. Each answer takes the agent's lock
//! once, like `lb status`.

pub mod histogram;
pub mod page;
pub mod render;

use std::{collections::BTreeMap, future::Future, sync::Arc, sync::OnceLock, time::Instant};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use crate::control::protocol::StatusReport;

/// What every page is made of, taken at one instant.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The status report, as `lb status --json` has it.
    pub report: StatusReport,
    /// Probe durations per service.
    pub probes: BTreeMap<String, histogram::Histogram>,
}

/// Where the pages' data comes from.
pub trait Source: Send + Sync + 'static {
    /// A snapshot, or why none can be taken.
    fn snapshot(&self) -> Result<Snapshot, String>;
}

/// The header giving when a `/status.json` report was taken, in ms of a
/// monotonic clock: the page's rates divide by the agent's time between two
/// reports, not the browser's between two answers.
pub const SAMPLED_HEADER: &str = "X-Lb-Sampled-Ms";

/// Milliseconds on the agent's monotonic clock (from its first use).
fn now_ms() -> u128 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis()
}

/// Serves the pages on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    source: Arc<dyn Source>,
    shutdown: impl Future<Output = ()>,
) {
    let handle = |(stream, _)| {
        let source = Arc::clone(&source);
        tokio::spawn(async move {
            if let Err(e) = answer(stream, source).await {
                tracing::debug!(error = %e, "metrics connection failed");
            }
        });
    };
    crate::accept::each("metrics", || listener.accept(), shutdown, handle).await;
}

/// One response.
struct Reply {
    status: &'static str,
    ctype: &'static str,
    headers: Vec<(&'static str, String)>,
    body: String,
}

impl Reply {
    fn text(status: &'static str, body: impl Into<String>) -> Self {
        Self { status, ctype: "text/plain; charset=utf-8", headers: Vec::new(), body: body.into() }
    }
}

/// What the server says to `method path` (path without its query).
fn route(method: Option<&str>, path: Option<&str>, source: &dyn Source) -> Reply {
    let path = path.map(|p| p.split('?').next().unwrap_or(p));
    let wanted = match (method, path) {
        (Some("GET"), Some(p @ ("/" | "/status.json" | "/metrics"))) => p,
        (Some("GET"), Some(_)) => {
            return Reply::text("404 Not Found", "served: /, /status.json, /metrics\n");
        }
        (Some(_), Some(_)) => {
            let mut r = Reply::text("405 Method Not Allowed", "read-only: GET only\n");
            r.headers.push(("Allow", "GET".into()));
            return r;
        }
        _ => return Reply::text("400 Bad Request", "GET /metrics\n"),
    };
    let snap = match source.snapshot() {
        Ok(s) => s,
        Err(e) => return Reply::text("500 Internal Server Error", format!("{e}\n")),
    };
    let sampled = now_ms();
    let no_store = ("Cache-Control", "no-store".to_owned());
    match wanted {
        "/metrics" => Reply {
            status: "200 OK",
            ctype: "text/plain; version=0.0.4; charset=utf-8",
            headers: Vec::new(),
            body: render::render(&snap.report, &snap.probes),
        },
        "/status.json" => Reply {
            status: "200 OK",
            ctype: "application/json",
            headers: vec![no_store, (SAMPLED_HEADER, sampled.to_string())],
            body: serde_json::to_string(&snap.report).expect("reports always serialise"),
        },
        _ => Reply {
            status: "200 OK",
            ctype: "text/html; charset=utf-8",
            // The browser enforces what the page promises: nothing loaded
            // from elsewhere, only its own inline script and style, and
            // fetches back to this address.
            headers: vec![no_store, ("Content-Security-Policy", page::CSP.into())],
            body: page::html(&snap.report, sampled),
        },
    }
}

async fn answer(mut stream: TcpStream, source: Arc<dyn Source>) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    // Read the request head, at most 8 KiB.
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let mut parts = line.split_whitespace();
    let reply = route(parts.next(), parts.next(), source.as_ref());
    let mut resp = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        reply.status,
        reply.ctype,
        reply.body.len()
    );
    for (name, value) in &reply.headers {
        resp += &format!("{name}: {value}\r\n");
    }
    resp += "\r\n";
    resp += &reply.body;
    stream.write_all(resp.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::protocol::{ServiceStatus, Traffic};

    struct Fixed(Result<StatusReport, String>);

    impl Source for Fixed {
        fn snapshot(&self) -> Result<Snapshot, String> {
            self.0.clone().map(|report| Snapshot { report, probes: BTreeMap::new() })
        }
    }

    fn report() -> StatusReport {
        StatusReport {
            mode: "xdp".into(),
            mode_reason: None,
            interfaces: Vec::new(),
            services: vec![ServiceStatus {
                name: "web".into(),
                vip: "10.0.0.1:80".into(),
                protocol: "tcp".into(),
                scheduler: "maglev".into(),
                traffic: Traffic { packets: 7, bytes: 700, new_flows: 1 },
                sources: "deny 10.9.0.0/16".into(),
                acl_denied: 3,
                rate_limited: 2,
                backends: Vec::new(),
                dns: None,
            }],
            exceptions: Vec::new(),
            flows_age_ms: 5,
            vip_routes: Default::default(),
            announce: None,
            trace: None,
            flood: Default::default(),
            probes_skipped: 0,
            descriptors: None,
        }
    }

    fn header<'a>(r: &'a Reply, name: &str) -> Option<&'a str> {
        r.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn each_path_gets_its_page() {
        let src = Fixed(Ok(report()));
        let json = route(Some("GET"), Some("/status.json?t=1"), &src);
        assert_eq!(json.status, "200 OK");
        assert_eq!(json.ctype, "application/json");
        let back: StatusReport = serde_json::from_str(&json.body).expect("a status report");
        assert_eq!(back, report(), "the report as lb status --json has it");
        let sampled: u128 = header(&json, SAMPLED_HEADER).expect("sampled").parse().expect("ms");
        let page = route(Some("GET"), Some("/"), &src);
        assert!(page.ctype.starts_with("text/html"));
        assert!(page.body.contains("\"name\":\"web\""), "the page embeds the report");
        assert_eq!(header(&page, "Content-Security-Policy"), Some(page::CSP));
        let attr = page.body.split("data-sampled-ms=\"").nth(1).expect("the page's sample time");
        let page_ms: u128 = attr.split('"').next().unwrap_or_default().parse().expect("ms");
        assert!(page_ms >= sampled, "a later sample, on the same clock");
        let metrics = route(Some("GET"), Some("/metrics"), &src);
        assert!(metrics.body.contains("lb_service_packets_total{service=\"web\""));
    }

    #[test]
    fn everything_else_is_refused() {
        let src = Fixed(Ok(report()));
        assert_eq!(route(Some("GET"), Some("/admin"), &src).status, "404 Not Found");
        let post = route(Some("POST"), Some("/"), &src);
        assert_eq!(post.status, "405 Method Not Allowed");
        assert_eq!(header(&post, "Allow"), Some("GET"));
        assert_eq!(route(None, None, &src).status, "400 Bad Request");
        let broken = Fixed(Err("datapath gone".into()));
        let r = route(Some("GET"), Some("/"), &broken);
        assert_eq!(r.status, "500 Internal Server Error");
        assert!(r.body.contains("datapath gone"));
    }
}
