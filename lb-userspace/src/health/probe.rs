//! One active probe of one backend: TCP connect, HTTP GET or UDP
//! request/reply, bounded by the configured timeout. Probes start from the
//! balancer host with its own address, which the backend can answer.

use crate::splice::proxy_v2::LOCAL_HEADER;
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
    /// This host could not probe (it ran out of something of its own):
    /// says nothing about the backend.
    #[error("cannot probe now: {0}")]
    Busy(String),
}

impl From<io::Error> for ProbeError {
    fn from(e: io::Error) -> Self {
        // Counted as a failure, a shortage of this host's would take every
        // backend out at once, just when lb is busiest (splice mode at its
        // open-file limit).
        if crate::shortage::ours(&e) {
            ProbeError::Busy(e.to_string())
        } else if e.kind() == io::ErrorKind::ConnectionRefused {
            ProbeError::Refused
        } else {
            ProbeError::Io(e)
        }
    }
}

/// Probes `addr` once; `None` kind always succeeds. A backend that expects
/// a PROXY protocol v2 header on every connection (`proxy_protocol`) gets
/// one: TCP and HTTP probes then
/// start with the header's LOCAL form (a connection of the balancer's own),
/// which such backends accept.
pub async fn probe(
    kind: &HealthKind,
    addr: SocketAddr,
    proxy_protocol: bool,
    limit: Duration,
) -> Result<(), ProbeError> {
    let preamble: &[u8] = if proxy_protocol { &LOCAL_HEADER } else { &[] };
    match timeout(limit, probe_inner(kind, addr, preamble)).await {
        Ok(r) => r,
        Err(_) => Err(ProbeError::Timeout(limit)),
    }
}

async fn probe_inner(
    kind: &HealthKind,
    addr: SocketAddr,
    preamble: &[u8],
) -> Result<(), ProbeError> {
    match kind {
        HealthKind::None => Ok(()),
        HealthKind::Tcp => {
            let mut s = TcpStream::connect(addr).await?;
            if !preamble.is_empty() {
                s.write_all(preamble).await?;
            }
            Ok(())
        }
        HealthKind::Http { path, expect_status } => {
            http(addr, preamble, path, *expect_status).await
        }
        HealthKind::Udp { send, expect } => udp(addr, send, expect.as_deref()).await,
    }
}

async fn http(addr: SocketAddr, preamble: &[u8], path: &str, want: u16) -> Result<(), ProbeError> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(preamble).await?;
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

    /// Out of descriptors, a probe says nothing of its backend
    /// (`scheduler` skips the round); a refusal or an unreachable host do.
    #[test]
    fn this_hosts_shortages_are_busy_not_failures() {
        use nix::libc;
        let of = |errno| ProbeError::from(io::Error::from_raw_os_error(errno));
        assert!(matches!(of(libc::EMFILE), ProbeError::Busy(_)));
        assert!(matches!(of(libc::ENFILE), ProbeError::Busy(_)));
        assert!(matches!(of(libc::ECONNREFUSED), ProbeError::Refused));
        assert!(matches!(of(libc::EHOSTUNREACH), ProbeError::Io(_)));
    }

    #[test]
    fn tcp_connect_succeeds_or_is_refused() {
        rt().block_on(async {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            probe(&HealthKind::Tcp, addr, false, LIMIT).await.unwrap();
            drop(l);
            assert!(matches!(
                probe(&HealthKind::Tcp, addr, false, LIMIT).await,
                Err(ProbeError::Refused)
            ));
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
            probe(&kind, addr, false, LIMIT).await.unwrap();
            let err = probe(&kind, addr, false, LIMIT).await.unwrap_err();
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
            probe(&kind, addr, false, LIMIT).await.unwrap();
            assert!(matches!(probe(&kind, addr, false, LIMIT).await, Err(ProbeError::Reply)));
            echo.await.unwrap();
            // Nothing listens now: the ICMP error arrives well before the timeout.
            let t = std::time::Instant::now();
            assert!(matches!(probe(&kind, addr, false, LIMIT).await, Err(ProbeError::Refused)));
            assert!(t.elapsed() < LIMIT);
        });
    }

    #[test]
    fn silence_is_a_timeout() {
        rt().block_on(async {
            let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let kind = HealthKind::Udp { send: b"ping".to_vec(), expect: None };
            let err =
                probe(&kind, server.local_addr().unwrap(), false, Duration::from_millis(50)).await;
            assert!(matches!(err, Err(ProbeError::Timeout(_))));
        });
    }

    #[test]
    fn probes_of_a_proxy_protocol_backend_start_with_the_local_header() {
        rt().block_on(async {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            let seen = tokio::spawn(async move {
                let mut firsts = Vec::new();
                for _ in 0..2 {
                    let (mut s, _) = l.accept().await.unwrap();
                    let mut head = [0u8; 16];
                    s.read_exact(&mut head).await.unwrap();
                    firsts.push(head);
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await;
                }
                firsts
            });
            let http = HealthKind::Http { path: "/".into(), expect_status: 200 };
            probe(&HealthKind::Tcp, addr, true, LIMIT).await.unwrap();
            probe(&http, addr, true, LIMIT).await.unwrap();
            let firsts = seen.await.unwrap();
            assert!(firsts.iter().all(|h| *h == LOCAL_HEADER), "{firsts:?}");
        });
    }
}
