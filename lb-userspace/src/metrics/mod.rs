//! Prometheus metrics over HTTP (`agent.metrics_addr`): `GET /metrics`.
//!
//! A deliberately small HTTP/1.1 responder: one request per connection,
//! `Connection: close`, nothing but the metrics page, bounded reads. A
//! scrape takes the agent's lock once, like `lb status`.

pub mod histogram;
pub mod render;

use std::{future::Future, sync::Arc};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// What the metrics page is made of.
pub trait Source: Send + Sync + 'static {
    /// The page, or why it cannot be made.
    fn metrics(&self) -> Result<String, String>;
}

/// Serves `GET /metrics` on `listener` until `shutdown` completes.
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
    let (status, ctype, body) = match (parts.next(), parts.next()) {
        (Some("GET"), Some("/metrics")) => match source.metrics() {
            Ok(body) => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", body),
            Err(e) => ("500 Internal Server Error", "text/plain", format!("{e}\n")),
        },
        (Some("GET"), Some(_)) => {
            ("404 Not Found", "text/plain", "only /metrics is served\n".into())
        }
        _ => ("400 Bad Request", "text/plain", "GET /metrics\n".into()),
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(resp.as_bytes()).await?;
    stream.shutdown().await
}
