//! Short TCP connections for `cargo xtask bench peers`: connect, a 64-byte
//! request, a 128-byte response, close.
//!
//! - `lb-rr serve PORT`: the backend; one thread, an async task per
//!   connection (a thread per connection would make the backend, not the
//!   balancer, the bound on the connection rate).
//! - `lb-rr run ADDR SECS CONCURRENCY`: the client; CONCURRENCY threads, each
//!   one connection at a time, for SECS seconds. Prints one JSON line:
//!   `{"ok":N,"errors":N,"secs":S,"p50_us":X,"p99_us":Y}` (latency of the
//!   whole connect-request-response-close exchange).

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const REQUEST: usize = 64;
const RESPONSE: usize = 128;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["serve", port] => serve(port.parse().context("port")?),
        ["run", addr, secs, conc] => {
            run(addr.parse().context("address")?, secs.parse()?, conc.parse()?)
        }
        _ => bail!("usage: lb-rr serve PORT | lb-rr run ADDR SECS CONCURRENCY"),
    }
}

fn serve(port: u16) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(("0.0.0.0", port)).await?;
        loop {
            let (mut s, _) = listener.accept().await?;
            tokio::spawn(async move {
                let mut req = [0u8; REQUEST];
                if s.read_exact(&mut req).await.is_ok() {
                    let _ = s.write_all(&[b'r'; RESPONSE]).await;
                    // Wait for the client's close, so the client closes first
                    // (its TIME_WAIT, as with real short-lived clients).
                    let _ = s.read(&mut req).await;
                }
            });
        }
    })
}

fn run(addr: SocketAddr, secs: f64, conc: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let workers: Vec<_> = (0..conc)
        .map(|_| {
            std::thread::spawn(move || {
                let (mut lat, mut errors) = (Vec::new(), 0u64);
                while Instant::now() < deadline {
                    let t = Instant::now();
                    match exchange(addr) {
                        Ok(()) => lat.push(t.elapsed().as_nanos() as u64),
                        Err(_) => errors += 1,
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let (mut lat, mut errors) = (Vec::new(), 0);
    for w in workers {
        let (l, e) = w.join().map_err(|_| anyhow::anyhow!("a client thread panicked"))?;
        lat.extend(l);
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map_or(0.0, |&ns| ns as f64 / 1000.0)
    };
    println!(
        "{{\"ok\":{},\"errors\":{errors},\"secs\":{elapsed:.3},\"p50_us\":{:.1},\"p99_us\":{:.1}}}",
        lat.len(),
        pct(0.50),
        pct(0.99)
    );
    Ok(())
}

fn exchange(addr: SocketAddr) -> std::io::Result<()> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(1)))?;
    s.set_nodelay(true)?;
    s.write_all(&[b'q'; REQUEST])?;
    let mut buf = [0u8; RESPONSE];
    s.read_exact(&mut buf)
}
