//! Traffic running through a failover, every outcome timed: established
//! connections each asking on a cadence of its own, and new connections
//! started at a fixed rate, each on a thread of its own so one waiting on
//! a lost path holds up no other (the last failure's start then says when
//! the path was gone). Stopped on [`UnderLoad::stop`] or on drop, as when
//! a test fails: every thread ends within its timeouts.

use std::{
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::client::Conn;

/// What one established connection saw.
#[derive(Debug, Default, Clone, Copy)]
pub struct Outcome {
    /// When it broke: a request failed, or another backend answered.
    pub broke: Option<Instant>,
    /// Its slowest request: how long, and when it started.
    pub slowest: (Duration, Option<Instant>),
    /// Requests made.
    pub requests: u64,
}

/// One new connection: when it started, and whether it was answered.
pub type Attempt = (Instant, bool);

/// The traffic, running.
#[derive(Debug)]
pub struct UnderLoad {
    stop: Arc<AtomicBool>,
    established: Vec<JoinHandle<Outcome>>,
    new: Option<JoinHandle<Vec<JoinHandle<()>>>>,
    attempts: Arc<Mutex<Vec<Attempt>>>,
}

impl UnderLoad {
    /// Starts it in namespace `ns`: each of `conns` (a connection and the
    /// backend that answered it) asks every 20-50 ms and must keep getting
    /// that backend; a new connection to `vip` starts every `every`, its
    /// connect and its answer each given `timeout`.
    pub fn start(
        ns: &str,
        conns: Vec<(Conn, String)>,
        vip: SocketAddr,
        every: Duration,
        timeout: Duration,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let established = conns
            .into_iter()
            .enumerate()
            .map(|(i, (c, name))| {
                let (stop, ns) = (stop.clone(), ns.to_owned());
                std::thread::spawn(move || ask_on(&ns, c, &name, i as u64, &stop))
            })
            .collect();
        let (stopped, all, ns) = (stop.clone(), attempts.clone(), ns.to_owned());
        let new = std::thread::spawn(move || {
            let mut threads = Vec::new();
            while !stopped.load(Relaxed) {
                let t = Instant::now();
                let (all, ns) = (all.clone(), ns.clone());
                threads.push(std::thread::spawn(move || {
                    let _in = crate::netns::enter(&ns);
                    let ok = answered(vip, timeout);
                    all.lock().expect("attempts").push((t, ok));
                }));
                std::thread::sleep(every);
            }
            threads
        });
        Self { stop, established, new: Some(new), attempts }
    }

    /// Stops it and waits for every thread: each established connection's
    /// outcome (in the order given) and every new connection, oldest first.
    pub fn stop(mut self) -> (Vec<Outcome>, Vec<Attempt>) {
        self.stop.store(true, Relaxed);
        let outcomes = std::mem::take(&mut self.established)
            .into_iter()
            .map(|t| t.join().expect("established connection thread"))
            .collect();
        for t in
            self.new.take().map(|t| t.join().expect("new connections thread")).unwrap_or_default()
        {
            t.join().expect("new connection thread");
        }
        let mut attempts = self.attempts.lock().expect("attempts").clone();
        attempts.sort_by_key(|a| a.0);
        (outcomes, attempts)
    }
}

impl Drop for UnderLoad {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
    }
}

/// Connection number `i` asking until stopped or broken.
fn ask_on(ns: &str, mut c: Conn, name: &str, i: u64, stop: &AtomicBool) -> Outcome {
    let _in = crate::netns::enter(ns);
    let mut o = Outcome::default();
    while !stop.load(Relaxed) && o.broke.is_none() {
        let t = Instant::now();
        if c.try_ask().as_deref() != Some(name) {
            o.broke = Some(t);
        }
        let took = t.elapsed();
        if took > o.slowest.0 {
            o.slowest = (took, Some(t));
        }
        o.requests += 1;
        // 20-50 ms, differing between connections and requests.
        std::thread::sleep(Duration::from_millis(20 + (i * 13 + o.requests * 7) % 31));
    }
    o
}

/// Connects (within `timeout`) and asks one line (answered within it).
pub fn answered(vip: SocketAddr, timeout: Duration) -> bool {
    let ask = || -> std::io::Result<bool> {
        let mut s = TcpStream::connect_timeout(&vip, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.write_all(b"hello\n")?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line)?;
        Ok(line.starts_with('b'))
    };
    ask().unwrap_or(false)
}
