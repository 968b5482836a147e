//! One active probe of one backend: TCP connect, HTTP GET or UDP
//! request/reply, bounded by the configured timeout. Probes start from the
//! balancer host with its own address, which the backend can answer.

use std::{io, net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
    time::timeout,
};

use crate::config::HealthKind;

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// No answer within the timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The backend refused (TCP RST, or ICMP port unreachable for UDP).
    #[error("connection refused")]
    Refused,
    /// Another I/O error.
    #[error("{0}")]
    Io(io::Error),
    /// The HTTP status was not the expected one.
    #[error("HTTP status {got}, expected {want}")]
    Status {
        /// Status received (0 if unparsable).
        got: u16,
        /// Status expected.
        want: u16,
    },
    /// The UDP reply was not the expected one.
    #[error("unexpected UDP reply")]
    Reply,
}

impl From<io::Error> for ProbeError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::ConnectionRefused {
            ProbeError::Refused
        } else {
            ProbeError::Io(e)
        }
    }
}

/// Probes `addr` once; `None` kind always succeeds.
pub async fn probe(kind: &HealthKind, addr: SocketAddr, limit: Duration) -> Result<(), ProbeError> {
    match timeout(limit, probe_inner(kind, addr)).await {
        Ok(r) => r,
        Err(_) => Err(ProbeError::Timeout(limit)),
    }
}

async fn probe_inner(kind: &HealthKind, addr: SocketAddr) -> Result<(), ProbeError> {
    match kind {
        HealthKind::None => Ok(()),
        HealthKind::Tcp => TcpStream::connect(addr).await.map(drop).map_err(ProbeError::from),
        HealthKind::Http { path, expect_status } => http(addr, path, *expect_status).await,
        HealthKind::Udp { send, expect } => udp(addr, send, expect.as_deref()).await,
    }
}

async fn http(addr: SocketAddr, path: &str, want: u16) -> Result<(), ProbeError> {
    let mut s = TcpStream::connect(addr).await?;
    let req = format!(
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: lb-health\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await?;
    // The status line is all we need: "HTTP/1.x NNN ...".
    let mut buf = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        let r = s.read(&mut buf[n..]).await?;
        if r == 0 {
            break;
        }
        n += r;
    }
    let got = std::str::from_utf8(&buf[..n])
        .ok()
        .filter(|l| l.starts_with("HTTP/"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    if got == want { Ok(()) } else { Err(ProbeError::Status { got, want }) }
}

async fn udp(addr: SocketAddr, send: &[u8], expect: Option<&[u8]>) -> Result<(), ProbeError> {
    let bind: SocketAddr =
        if addr.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let s = UdpSocket::bind(bind).await?;
    // Connected, so an ICMP port unreachable fails the receive at once.
    s.connect(addr).await?;
    s.send(send).await?;
    let mut buf = [0u8; 2048];
    let n = s.recv(&mut buf).await?;
    match expect {
        Some(e) if buf.get(..n) != Some(e) => Err(ProbeError::Reply),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    const LIMIT: Duration = Duration::from_millis(500);

    #[test]
    fn tcp_connect_succeeds_or_is_refused() {
        rt().block_on(async {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            probe(&HealthKind::Tcp, addr, LIMIT).await.unwrap();
            drop(l);
            assert!(matches!(probe(&HealthKind::Tcp, addr, LIMIT).await, Err(ProbeError::Refused)));
        });
    }

    #[test]
    fn http_checks_the_status() {
        rt().block_on(async {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            let server = tokio::spawn(async move {
                for status in ["200 OK", "503 Service Unavailable"] {
                    let (mut s, _) = l.accept().await.unwrap();
                    let mut buf = [0u8; 512];
                    let _ = s.read(&mut buf).await.unwrap();
                    s.write_all(format!("HTTP/1.1 {status}\r\n\r\n").as_bytes()).await.unwrap();
                }
            });
            let kind = HealthKind::Http { path: "/healthz".into(), expect_status: 200 };
            probe(&kind, addr, LIMIT).await.unwrap();
            let err = probe(&kind, addr, LIMIT).await.unwrap_err();
            assert!(matches!(err, ProbeError::Status { got: 503, want: 200 }), "{err}");
            server.await.unwrap();
        });
    }

    #[test]
    fn udp_expects_the_reply_and_fails_fast_on_a_closed_port() {
        rt().block_on(async {
            let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let addr = server.local_addr().unwrap();
            let echo = tokio::spawn(async move {
                let mut buf = [0u8; 64];
                for reply in [&b"pong"[..], b"nope"] {
                    let (_, from) = server.recv_from(&mut buf).await.unwrap();
                    server.send_to(reply, from).await.unwrap();
                }
            });
            let kind = HealthKind::Udp { send: b"ping".to_vec(), expect: Some(b"pong".to_vec()) };
            probe(&kind, addr, LIMIT).await.unwrap();
            assert!(matches!(probe(&kind, addr, LIMIT).await, Err(ProbeError::Reply)));
            echo.await.unwrap();
            // Nothing listens now: the ICMP error arrives well before the timeout.
            let t = std::time::Instant::now();
            assert!(matches!(probe(&kind, addr, LIMIT).await, Err(ProbeError::Refused)));
            assert!(t.elapsed() < LIMIT);
        });
    }

    #[test]
    fn silence_is_a_timeout() {
        rt().block_on(async {
            let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let kind = HealthKind::Udp { send: b"ping".to_vec(), expect: None };
            let err = probe(&kind, server.local_addr().unwrap(), Duration::from_millis(50)).await;
            assert!(matches!(err, Err(ProbeError::Timeout(_))));
        });
    }
}
