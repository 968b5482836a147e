//! The legitimate load: short connections (connect, a 64-byte request,
//! its 128-byte answer, close) from `SHORT` workers, and `KEEP` keep-alive
//! connections each asking every 20 ms, from the client namespace to the
//! bed's request/response service (lb-rr serve), every attempt recorded
//! against one clock.

use std::{
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// Workers making short connections.
pub const SHORT: usize = 20;
/// Keep-alive connections.
pub const KEEP: usize = 30;
/// How often a keep-alive connection asks.
pub const KEEP_EVERY: Duration = Duration::from_millis(20);
/// A short connection that has not completed within this failed (a lost
/// SYN is retransmitted after 1 s, so one loss still succeeds, late).
pub const SHORT_PATIENCE: Duration = Duration::from_secs(3);
/// A keep-alive connection that goes this long without its answer (or is
/// reset, or closed) is broken.
pub const KEEP_PATIENCE: Duration = Duration::from_secs(5);

const REQUEST: [u8; 64] = [b'q'; 64];
const RESPONSE: usize = 128;

/// One short connection: when it started (since the load's start), whether
/// it completed, and how long it took.
#[derive(Debug, Clone, Copy)]
pub struct Attempt {
    pub at: Duration,
    pub ok: bool,
    pub took: Duration,
}

/// What the load saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Every short connection.
    pub attempts: Vec<Attempt>,
    /// Keep-alive connections that broke, and when (since the start).
    pub broken: Vec<Duration>,
    /// Keep-alive connections that could not be opened at the start.
    pub not_opened: usize,
    /// Keep-alive exchanges that completed.
    pub keep_exchanges: u64,
}

/// The running load.
pub struct Load {
    stop: Arc<AtomicBool>,
    short: Vec<JoinHandle<Vec<Attempt>>>,
    keep: Vec<JoinHandle<(Option<Duration>, u64, bool)>>,
}

/// Starts the load from namespace `ns` against `to`; `start` is the clock.
pub fn start(ns: &str, to: SocketAddr, start: Instant) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let short = (0..SHORT)
        .map(|_| {
            let (ns, stop) = (ns.to_owned(), stop.clone());
            std::thread::spawn(move || {
                let _in = lb_tests::netns::enter(&ns);
                let mut out = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let ok = exchange_once(to).is_ok();
                    out.push(Attempt { at: t - start, ok, took: t.elapsed() });
                    if !ok {
                        // A refused or unreachable service fails at once:
                        // do not spin.
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
                out
            })
        })
        .collect();
    let keep = (0..KEEP)
        .map(|_| {
            let (ns, stop) = (ns.to_owned(), stop.clone());
            std::thread::spawn(move || {
                let _in = lb_tests::netns::enter(&ns);
                keep_alive(to, &stop, start)
            })
        })
        .collect();
    Load { stop, short, keep }
}

impl Load {
    /// Stops every worker and collects what they saw.
    pub fn stop(self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        let mut seen = Seen::default();
        for h in self.short {
            seen.attempts.extend(h.join().unwrap_or_default());
        }
        for h in self.keep {
            let (broken, n, opened) = h.join().unwrap_or((None, 0, false));
            seen.keep_exchanges += n;
            seen.not_opened += usize::from(!opened);
            seen.broken.extend(broken);
        }
        seen.attempts.sort_by_key(|a| a.at);
        seen
    }
}

/// Connect, one request, its answer, close, within [`SHORT_PATIENCE`].
fn exchange_once(to: SocketAddr) -> std::io::Result<()> {
    let deadline = Instant::now() + SHORT_PATIENCE;
    let mut s = TcpStream::connect_timeout(&to, SHORT_PATIENCE)?;
    s.set_nodelay(true)?;
    let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    s.set_read_timeout(Some(left))?;
    s.write_all(&REQUEST)?;
    let mut buf = [0u8; RESPONSE];
    s.read_exact(&mut buf)
}

/// One keep-alive connection asking every [`KEEP_EVERY`] until `stop`:
/// (when it broke, exchanges completed, whether it opened at all).
fn keep_alive(to: SocketAddr, stop: &AtomicBool, start: Instant) -> (Option<Duration>, u64, bool) {
    let Ok(mut s) = TcpStream::connect_timeout(&to, SHORT_PATIENCE) else {
        return (None, 0, false);
    };
    let _ = s.set_nodelay(true);
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let mut done = 0;
    while !stop.load(Ordering::Relaxed) {
        let asked = Instant::now();
        let mut buf = [0u8; RESPONSE];
        let mut got = 0;
        let ok = s.write_all(&REQUEST).is_ok()
            && loop {
                match s.read(&mut buf[got..]) {
                    Ok(0) => break false,
                    Ok(n) => {
                        got += n;
                        if got == RESPONSE {
                            break true;
                        }
                    }
                    Err(e)
                        if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
                            && asked.elapsed() < KEEP_PATIENCE => {}
                    Err(_) => break false,
                }
            };
        if !ok {
            return (Some(asked - start), done, true);
        }
        done += 1;
        std::thread::sleep(KEEP_EVERY);
    }
    (None, done, true)
}
