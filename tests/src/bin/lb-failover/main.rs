//! `cargo xtask bench failover`: how fast a dead backend stops getting new
//! flows, for three kinds of death, under load.
//!
//! Topology: client, lb (XDP, HTTP probes at the default 50 ms interval,
//! 40 ms timeout, fall 2, rise 3), three backends. Load during every trial:
//! new TCP connections at `RATE`/s (each asks one question, 1 s timeout), and
//! `LONG` long-lived connections spread over the backends, each asking every
//! 10 ms. Backend 1 fails `FAULT_AT` into the trial, and the load goes on for
//! `AFTER` more. Then it is repaired and the next trial waits until it is back.
//!
//! Per trial: the failover time is from the fault to the start of the last
//! new connection that failed (a new flow the balancer still sent to the dead
//! backend; 0 if none failed); also counted are failed new connections and
//! long-lived connections to *surviving* backends that broke (must be 0).

use std::{
    net::{SocketAddr, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use lb_tests::{
    agent::{TempDir, config_with_health, start_backend},
    client::{Conn, Setup, vip},
    topology::{Topology, VIP4},
};

const TRIALS: usize = 20;
/// Trials per fault when LB_FAILOVER_TRIALS is not set.
fn trial_count() -> usize {
    std::env::var("LB_FAILOVER_TRIALS").ok().and_then(|v| v.parse().ok()).unwrap_or(TRIALS)
}
const RATE: u64 = 1000;
const LONG: usize = 30;
const FAULT_AT: Duration = Duration::from_millis(300);
const AFTER: Duration = Duration::from_millis(1200);
const PROBES: &str = "kind = \"http\"\npath = \"/health\"";

#[derive(Clone, Copy, Debug)]
enum Fault {
    Killed,
    LinkDown,
    Hung,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::Killed => "killed (port closed)",
            Fault::LinkDown => "link down (blackholed)",
            Fault::Hung => "hung (accepts, never answers)",
        }
    }
}

struct Trial {
    failover: Duration,
    failed: usize,
    attempted: usize,
    broken_survivors: usize,
}

fn main() {
    let server = std::env::current_exe().expect("exe").with_file_name("lbt-server");
    let server = server.to_str().expect("utf-8").to_owned();
    let mut s = Setup::with_config(&server, Topology::new(3), TempDir::new(), |t, d| {
        config_with_health(t, d, "maglev", 3, PROBES)
    });
    println!(
        "failover benchmark: 3 backends, HTTP probes every 50 ms (timeout 40 ms, fall 2, rise 3), \
         {RATE} new connections/s + {LONG} long-lived connections, {TRIALS} trials per fault"
    );
    let mut rows = Vec::new();
    for fault in [Fault::Killed, Fault::LinkDown, Fault::Hung] {
        let mut trials = Vec::new();
        for t in 0..trial_count() {
            wait_all_up(&s);
            trials.push(trial(&mut s, &server, fault));
            eprint!("\r{} trial {}/{}   ", fault.name(), t + 1, trial_count());
        }
        eprintln!();
        rows.push((fault, trials));
    }
    let log = std::fs::read_to_string(s.dir.0.join("lb.log")).unwrap_or_default();
    let changes =
        |b: &str| log.lines().filter(|l| l.contains("health changed") && l.contains(b)).count();
    println!(
        "health changes seen by the agent: b1 {}, b2 {}, b3 {} (b2 and b3 never fail)",
        changes("10.200.1.1:80"),
        changes("10.200.2.1:80"),
        changes("10.200.3.1:80")
    );
    let mut reasons: std::collections::BTreeMap<String, usize> = Default::default();
    for l in log.lines().filter(|l| l.contains("health changed") && !l.contains("10.200.1.1")) {
        let reason = l.split("reason=").nth(1).unwrap_or(l);
        let reason = reason.split(" consecutive").next().unwrap_or(reason);
        let reason = reason.split(" apply_us").next().unwrap_or(reason);
        let backend = l.split("backend=").nth(1).and_then(|b| b.split(' ').next()).unwrap_or("?");
        *reasons.entry(format!("{backend} {reason}")).or_default() += 1;
    }
    for (reason, n) in reasons {
        println!("  survivors: {n} x {reason}");
    }
    println!(
        "\n| fault | failover p50 | p99 | max | failed new conns (total / attempted) | broken flows to survivors |"
    );
    println!("|---|---|---|---|---|---|");
    for (fault, trials) in &rows {
        let mut f: Vec<Duration> = trials.iter().map(|t| t.failover).collect();
        f.sort();
        let p = |q: f64| f[((f.len() as f64 * q).ceil() as usize).clamp(1, f.len()) - 1];
        let failed: usize = trials.iter().map(|t| t.failed).sum();
        let attempted: usize = trials.iter().map(|t| t.attempted).sum();
        let broken: usize = trials.iter().map(|t| t.broken_survivors).sum();
        println!(
            "| {} | {:.1} ms | {:.1} ms | {:.1} ms | {failed} / {attempted} | {broken} |",
            fault.name(),
            ms(p(0.5)),
            ms(p(0.99)),
            ms(*f.last().unwrap_or(&Duration::ZERO)),
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Waits until every backend of the TCP v4 service is active again.
fn wait_all_up(s: &Setup) {
    let start = Instant::now();
    loop {
        let st = s.lb.status();
        let rows: Vec<&str> = st
            .lines()
            .filter(|l| l.trim_start().starts_with("10.200.") && l.contains(":80 "))
            .collect();
        if rows.len() == 3 && rows.iter().all(|r| r.contains("active")) {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "backends did not come back:\n{st}");
        thread::sleep(Duration::from_millis(10));
    }
}

fn trial(s: &mut Setup, server: &str, fault: Fault) -> Trial {
    let target = vip(VIP4, 80);
    let stop = Arc::new(AtomicBool::new(false));
    let inside = s.topo.client.enter();
    // Long-lived connections, each remembering its backend.
    let long: Vec<(Conn, String)> = (0..LONG)
        .filter_map(|_| {
            let mut c = Conn::from_stream(
                TcpStream::connect_timeout(&target, Duration::from_secs(1)).ok()?,
            );
            let name = c.try_ask()?;
            Some((c, name))
        })
        .collect();
    drop(inside);
    let ns = s.topo.client.name().to_owned();
    let long_stop = stop.clone();
    let pinger = thread::spawn(move || {
        let _inside = lb_tests::netns::enter(&ns);
        let mut long = long;
        let mut broken = vec![false; long.len()];
        while !long_stop.load(Ordering::Relaxed) {
            for (i, (c, name)) in long.iter_mut().enumerate() {
                if !broken[i] && c.try_ask().as_deref() != Some(name.as_str()) {
                    broken[i] = true;
                }
            }
            thread::sleep(Duration::from_millis(10));
        }
        long.iter().zip(broken).filter(|((_, name), b)| *b && name != "b1").count()
    });
    // New connections at RATE/s: one async task each, on one thread inside
    // the client namespace, so a hung connection slows nothing and the
    // generator itself does not starve the 2-core machine.
    let results: Arc<Mutex<Vec<(Instant, bool)>>> = Arc::default();
    let ns = s.topo.client.name().to_owned();
    let gen_stop = stop.clone();
    let gen_results = results.clone();
    let generator = thread::spawn(move || {
        let _inside = lb_tests::netns::enter(&ns);
        let rt =
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async move {
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut tasks = tokio::task::JoinSet::new();
            while !gen_stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let results = gen_results.clone();
                tasks.spawn(async move {
                    let began = Instant::now();
                    let ok = one_connection(target).await;
                    results.lock().unwrap_or_else(|p| p.into_inner()).push((began, ok));
                });
            }
            while tasks.join_next().await.is_some() {}
        });
    });

    thread::sleep(FAULT_AT);
    let fault_time = Instant::now();
    let mut victim = Some(s.backends.remove(0));
    match fault {
        Fault::Killed => victim = None,
        Fault::LinkDown => s.topo.backends[0].ip("link set b0 down"),
        Fault::Hung => signal(victim.as_ref(), nix::sys::signal::SIGSTOP),
    }
    thread::sleep(AFTER);
    stop.store(true, Ordering::Relaxed);
    let _ = generator.join();
    let broken_survivors = pinger.join().unwrap_or(usize::MAX);

    // Repair.
    match fault {
        Fault::Killed => {}
        Fault::LinkDown => s.topo.backends[0].ip("link set b0 up"),
        Fault::Hung => signal(victim.as_ref(), nix::sys::signal::SIGCONT),
    }
    let proc = victim.unwrap_or_else(|| start_backend(&s.topo.backends[0], server.as_ref(), 1));
    s.backends.insert(0, proc);

    let results = results.lock().unwrap_or_else(|p| p.into_inner());
    let failed: Vec<Instant> = results.iter().filter(|(_, ok)| !ok).map(|(t, _)| *t).collect();
    let last = failed.iter().max().copied();
    Trial {
        failover: last.map_or(Duration::ZERO, |t| t.saturating_duration_since(fault_time)),
        failed: failed.len(),
        attempted: results.len(),
        broken_survivors,
    }
}

fn signal(p: Option<&lb_tests::netns::Proc>, sig: nix::sys::signal::Signal) {
    if let Some(p) = p {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p.0.id() as i32), sig);
    }
}

/// One short connection: connect, ask, read the answer (1 s each at most).
async fn one_connection(target: SocketAddr) -> bool {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let limit = Duration::from_secs(1);
    let exchange = async {
        let mut c = tokio::net::TcpStream::connect(target).await.ok()?;
        c.write_all(b"hello\n").await.ok()?;
        let mut line = String::new();
        tokio::io::BufReader::new(&mut c).read_line(&mut line).await.ok()?;
        (!line.is_empty()).then_some(())
    };
    matches!(tokio::time::timeout(limit, exchange).await, Ok(Some(())))
}
