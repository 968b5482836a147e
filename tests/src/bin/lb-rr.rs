//! Request/response traffic for `cargo xtask bench peers`: a 64-byte
//! request answered by a 128-byte response.
//!
//! - `lb-rr serve PORT`: the backend; one thread, an async task per
//!   connection (a thread per connection would make the backend, not the
//!   balancer, the bound on the connection rate). It answers every request
//!   on a connection until the client closes.
//! - `lb-rr run ADDR SECS CONCURRENCY`: short connections (connect, one
//!   request, its response, close); CONCURRENCY threads, each one
//!   connection at a time, for SECS seconds.
//! - `lb-rr many ADDR SECS CONCURRENCY`: the same exchange from CONCURRENCY
//!   tasks on one thread (as `ab -c`): a thread each would spend the
//!   client's CPU on switching between 1000 threads.
//! - `lb-rr keep ADDR SECS CONCURRENCY`: netperf TCP_RR style: CONCURRENCY
//!   connections opened first, each then sending a request and awaiting
//!   its response, again and again, for SECS seconds (one thread).
//!
//! Each prints one JSON line: `{"ok":N,"errors":N,"secs":S,"p50_us":X,
//! "p99_us":Y}`, ok counting exchanges and the latency that of one exchange
//! (with the connect and close for short connections).

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const REQUEST: usize = 64;
const RESPONSE: usize = 128;
/// A connect or an answer slower than this counts as an error.
const PATIENCE: Duration = Duration::from_secs(1);

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["serve", port] => serve(port.parse().context("port")?),
        [mode @ ("run" | "many" | "keep"), addr, secs, conc] => {
            let (addr, secs, conc) =
                (addr.parse().context("address")?, secs.parse()?, conc.parse()?);
            match *mode {
                "run" => run(addr, secs, conc),
                "many" => many(addr, secs, conc, false),
                _ => many(addr, secs, conc, true),
            }
        }
        _ => bail!("usage: lb-rr serve PORT | lb-rr run|many|keep ADDR SECS CONCURRENCY"),
    }
}

fn serve(port: u16) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
    rt.block_on(async {
        // A deep accept queue: at 1000 clients one thread accepting lags
        // behind bursts, and tokio's default backlog (1024) overflowed,
        // dropping the proxies' SYNs (TcpExtListenOverflows in this
        // namespace, a 1 s retransmission each: the p99 of every proxy).
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind(SocketAddr::from(([0, 0, 0, 0], port)))?;
        let listener = socket.listen(4096)?;
        loop {
            let (mut s, _) = listener.accept().await?;
            tokio::spawn(async move {
                let mut req = [0u8; REQUEST];
                // Until the client's close, so the client closes first
                // (its TIME_WAIT, as with real short-lived clients).
                while s.read_exact(&mut req).await.is_ok() {
                    if s.write_all(&[b'r'; RESPONSE]).await.is_err() {
                        break;
                    }
                }
            });
        }
    })
}

/// Exchange latencies (ns) and failures of one client or of all.
#[derive(Default)]
struct Tally {
    lat: Vec<u64>,
    errors: u64,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.lat.extend(other.lat);
        self.errors += other.errors;
    }

    fn print(mut self, elapsed: f64) {
        self.lat.sort_unstable();
        let lat = &self.lat;
        let pct = |p: f64| {
            lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
                .map_or(0.0, |&ns| ns as f64 / 1000.0)
        };
        println!(
            "{{\"ok\":{},\"errors\":{},\"secs\":{elapsed:.3},\"p50_us\":{:.1},\"p99_us\":{:.1}}}",
            lat.len(),
            self.errors,
            pct(0.50),
            pct(0.99)
        );
    }
}

fn run(addr: SocketAddr, secs: f64, conc: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let workers: Vec<_> = (0..conc)
        .map(|_| {
            std::thread::spawn(move || {
                let mut t = Tally::default();
                while Instant::now() < deadline {
                    let at = Instant::now();
                    match exchange(addr) {
                        Ok(()) => t.lat.push(at.elapsed().as_nanos() as u64),
                        Err(_) => t.errors += 1,
                    }
                }
                t
            })
        })
        .collect();
    let mut all = Tally::default();
    for w in workers {
        all.add(w.join().map_err(|_| anyhow::anyhow!("a client thread panicked"))?);
    }
    all.print(start.elapsed().as_secs_f64());
    Ok(())
}

fn exchange(addr: SocketAddr) -> std::io::Result<()> {
    let mut s = TcpStream::connect_timeout(&addr, PATIENCE)?;
    s.set_read_timeout(Some(PATIENCE))?;
    s.set_nodelay(true)?;
    s.write_all(&[b'q'; REQUEST])?;
    let mut buf = [0u8; RESPONSE];
    s.read_exact(&mut buf)
}

/// `conc` async clients on one thread: short connections, or (`keep`)
/// requests on connections opened once.
fn many(addr: SocketAddr, secs: f64, conc: usize, keep: bool) -> Result<()> {
    // A soft limit of 1024 descriptors (a common default) would fail
    // 1000 clients' connects.
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let mut conns = Vec::new();
        if keep {
            // All open before the clock starts: TCP_RR times requests only.
            for _ in 0..conc {
                let s = tokio::time::timeout(PATIENCE * 5, tokio::net::TcpStream::connect(addr))
                    .await
                    .context("connecting (timed out)")?
                    .context("connecting")?;
                s.set_nodelay(true)?;
                conns.push(Some(s));
            }
        } else {
            conns.resize_with(conc, || None);
        }
        let start = Instant::now();
        let deadline = start + Duration::from_secs_f64(secs);
        let tasks: Vec<_> = conns
            .into_iter()
            .map(|mut conn| {
                tokio::spawn(async move {
                    let mut t = Tally::default();
                    while Instant::now() < deadline {
                        let at = Instant::now();
                        let done = match conn.as_mut() {
                            Some(s) => tokio::time::timeout(PATIENCE, request(s)).await,
                            None => tokio::time::timeout(PATIENCE * 2, short(addr)).await,
                        };
                        match done {
                            Ok(Ok(())) => t.lat.push(at.elapsed().as_nanos() as u64),
                            _ if keep => {
                                // A persistent connection that failed is gone.
                                t.errors += 1;
                                break;
                            }
                            _ => t.errors += 1,
                        }
                    }
                    t
                })
            })
            .collect();
        let mut all = Tally::default();
        for task in tasks {
            all.add(task.await.context("a client task panicked")?);
        }
        all.print(start.elapsed().as_secs_f64());
        Ok(())
    })
}

async fn short(addr: SocketAddr) -> std::io::Result<()> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    request(&mut s).await
}

async fn request(s: &mut tokio::net::TcpStream) -> std::io::Result<()> {
    s.write_all(&[b'q'; REQUEST]).await?;
    let mut buf = [0u8; RESPONSE];
    s.read_exact(&mut buf).await.map(drop)
}
