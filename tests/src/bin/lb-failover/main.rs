//! `cargo xtask bench failover`: how fast a dead backend stops getting new
//! flows, for three kinds of death, under load.
//!
//! Topology: client, lb (XDP, HTTP probes at the default 50 ms interval,
//! 40 ms timeout, fall 2, rise 3), three backends. Load during every trial:
//! new TCP connections at `RATE`/s (each asks one question, 1 s timeout), and
//! `LONG` long-lived connections spread over the backends, each asking every
//! 10 ms. Trial `i` fails backend `i % 3 + 1` `FAULT_AT` into the trial, and
//! the load goes on for `AFTER` more. Then it is repaired and the trial ends
//! when all backends are active again.
//!
//! The client reuses its ports the way a busy real client does: a narrow
//! ephemeral range (`PORT_RANGE`) with TIME_WAIT reuse, so a new connection
//! often has the 5-tuple of one the balancer saw a second ago. Fresh ports
//! every time hid a balancer that sent such a flow where its old twin went.
//!
//! Per trial: the failover time is from the fault to the start of the last
//! new connection that failed (a new flow the balancer still sent to the dead
//! backend; 0 if none failed); also counted are failed new connections,
//! long-lived connections to *surviving* backends that broke (must be 0),
//! connects the client's own port range refused (not failovers), and which
//! signal the agent's log says took the victim down, and when.

mod health_log;
mod report;

use std::{
    net::{SocketAddr, TcpStream},
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant, SystemTime},
};

use lb_tests::{
    agent::{TempDir, config_with_health, start_backend},
    client::{Conn, Setup, vip},
    netns::{NetNs, Proc},
    topology::{Topology, VIP4},
};

const TRIALS: usize = 50;
/// Trials per fault when LB_FAILOVER_TRIALS is not set.
fn trial_count() -> usize {
    std::env::var("LB_FAILOVER_TRIALS").ok().and_then(|v| v.parse().ok()).unwrap_or(TRIALS)
}
const BACKENDS: usize = 3;
const RATE: u64 = 1000;
const LONG: usize = 30;
const FAULT_AT: Duration = Duration::from_millis(300);
const AFTER: Duration = Duration::from_millis(1200);
const PROBES: &str = "kind = \"http\"\npath = \"/health\"";
/// The client's ephemeral ports: at `RATE` connections/s each is reused
/// about every 2 s. Half as many (each reused every second) ran out: about
/// 1% of connects failed with EADDRNOTAVAIL, as Linux reuses a TIME_WAIT
/// port only once it is `tcp_tw_reuse_delay` (1 s) old.
const PORT_RANGE: (u16, u16) = (50000, 51999);

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

/// What one trial measured.
struct Trial {
    /// The backend that failed (1-based).
    victim: usize,
    failover: Duration,
    failed: usize,
    /// New connections that left the client (port exhaustion excluded).
    attempted: usize,
    /// Connects refused locally for want of a free port (EADDRNOTAVAIL).
    port_exhausted: usize,
    broken_survivors: usize,
    /// Long-lived connections that could not be opened before the fault.
    long_unopened: usize,
    /// The signal of the first `to=down` line for the victim after the
    /// fault (None: the agent logged none).
    signal: Option<String>,
    /// From the fault to that line's timestamp.
    detected_after: Option<Duration>,
    /// Health changes of other backends during the trial.
    survivor_changes: Vec<String>,
}

/// How one new connection went.
#[derive(Clone, Copy, PartialEq)]
enum Outcome {
    Answered,
    Failed,
    /// The client had no free local port: the client's limit, not lb's.
    NoLocalPort,
}

fn main() {
    let server = std::env::current_exe().expect("exe").with_file_name("lbt-server");
    let server = server.to_str().expect("utf-8").to_owned();
    let mut s = Setup::with_config(&server, Topology::new(BACKENDS), TempDir::new(), |t, d| {
        config_with_health(t, d, "maglev", BACKENDS, PROBES)
    });
    reuse_ports(&s.topo.client);
    print_header(&s.topo.client);
    let mut rows = Vec::new();
    wait_all_up(&s);
    for fault in [Fault::Killed, Fault::LinkDown, Fault::Hung] {
        let mut trials = Vec::new();
        for i in 0..trial_count() {
            trials.push(trial(&mut s, &server, fault, i % BACKENDS + 1));
            eprint!("\r{} trial {}/{}   ", fault.name(), i + 1, trial_count());
        }
        eprintln!();
        rows.push((fault, trials));
    }
    print_notes(&rows);
    report::print(&rows);
}

/// Narrows the client's ephemeral range and lets it reuse TIME_WAIT ports,
/// as a client opening connections at this rate would.
fn reuse_ports(client: &NetNs) {
    client.sysctl("net.ipv4.ip_local_port_range", &format!("{} {}", PORT_RANGE.0, PORT_RANGE.1));
    client.sysctl("net.ipv4.tcp_tw_reuse", "1");
}

fn print_header(client: &NetNs) {
    println!(
        "failover benchmark: {BACKENDS} backends, HTTP probes every 50 ms (timeout 40 ms, fall 2, rise 3), \
         {RATE} new connections/s + {LONG} long-lived connections, {} trials per fault; \
         trial i fails backend i % {BACKENDS} + 1 (b1, b2, b3, b1, ...)",
        trial_count()
    );
    let ports = usize::from(PORT_RANGE.1 - PORT_RANGE.0) + 1;
    // Read back, so the header shows what the kernel applied.
    println!(
        "client namespace: net.ipv4.ip_local_port_range = {} ({ports} ports, each reused about every {:.1} s), \
         net.ipv4.tcp_tw_reuse = {}, net.ipv4.tcp_tw_reuse_delay = {} ms",
        sysctl(client, "net.ipv4.ip_local_port_range"),
        ports as f64 / RATE as f64,
        sysctl(client, "net.ipv4.tcp_tw_reuse"),
        sysctl(client, "net.ipv4.tcp_tw_reuse_delay"),
    );
}

/// A sysctl's value inside `ns`, or why it could not be read.
fn sysctl(ns: &NetNs, key: &str) -> String {
    match ns.command(&["sysctl", "-n", key]).output() {
        Ok(o) if o.status.success() => {
            String::from_utf8_lossy(&o.stdout).split_whitespace().collect::<Vec<_>>().join(" ")
        }
        Ok(o) => format!("unreadable ({})", String::from_utf8_lossy(&o.stderr).trim()),
        Err(e) => format!("unreadable ({e})"),
    }
}

/// What the table does not show: health changes of backends that were not
/// failing, and long-lived connections that never opened (a trial's load
/// was lighter than its header says).
fn print_notes(rows: &[(Fault, Vec<Trial>)]) {
    let trials = || rows.iter().flat_map(|(_, trials)| trials);
    let mut seen: std::collections::BTreeMap<&str, usize> = Default::default();
    for c in trials().flat_map(|t| &t.survivor_changes) {
        *seen.entry(c).or_default() += 1;
    }
    if seen.is_empty() {
        println!("health changes of surviving backends during trials: none");
    }
    for (change, n) in seen {
        println!("  survivors: {n} x {change}");
    }
    let unopened: usize = trials().map(|t| t.long_unopened).sum();
    println!(
        "long-lived connections that failed to open: {unopened} of {}",
        LONG * trials().count()
    );
}

/// Waits until every backend of both TCP services is active again: the
/// IPv6 service too, though no load uses it, so that no health change left
/// over from one trial shows up in the next.
fn wait_all_up(s: &Setup) {
    let start = Instant::now();
    loop {
        let report = s.lb.report();
        let tcp = report.services.iter().filter(|svc| svc.protocol == "tcp");
        let states: Vec<&str> =
            tcp.flat_map(|svc| &svc.backends).map(|b| b.state.as_str()).collect();
        if states.len() == 2 * BACKENDS && states.iter().all(|&st| st == "active") {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "backends did not come back:\n{}",
            s.lb.status()
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// One trial: load, backend `victim` (1-based) fails, load goes on; then
/// it is repaired and all backends are back.
fn trial(s: &mut Setup, server: &str, fault: Fault, victim: usize) -> Trial {
    let stop = Arc::new(AtomicBool::new(false));
    let long = start_long_lived(s.topo.client.name(), &stop);
    let results: Arc<Mutex<Vec<(Instant, Outcome)>>> = Arc::default();
    let generator = start_generator(s.topo.client.name(), results.clone(), stop.clone());

    thread::sleep(FAULT_AT);
    let log = s.dir.0.join("lb.log");
    let log_from = log_len(&log);
    let fault_wall = SystemTime::now();
    let fault_time = Instant::now();
    let alive = inject(s, fault, victim);
    thread::sleep(AFTER);
    stop.store(true, Ordering::Relaxed);
    let _ = generator.join();
    let held: Vec<Option<Held>> =
        long.into_iter().map(|t| t.join().expect("long-lived connection thread")).collect();

    repair(s, server, fault, victim, alive);
    wait_all_up(s);

    let results = results.lock().unwrap_or_else(|p| p.into_inner());
    let changes: Vec<health_log::Change> =
        health_log::changes(&log_since(&log, log_from)).collect();
    let detection = first_down(&changes, victim);
    let count = |o: Outcome| results.iter().filter(|(_, r)| *r == o).count();
    Trial {
        victim,
        failover: failover(&results, fault_time),
        failed: count(Outcome::Failed),
        attempted: results.len() - count(Outcome::NoLocalPort),
        port_exhausted: count(Outcome::NoLocalPort),
        broken_survivors: held
            .iter()
            .flatten()
            .filter(|h| h.broke && h.backend != format!("b{victim}"))
            .count(),
        long_unopened: held.iter().filter(|h| h.is_none()).count(),
        signal: detection.map(|c| c.signal().to_owned()),
        detected_after: detection.and_then(|c| c.at?.duration_since(fault_wall).ok()),
        survivor_changes: changes
            .iter()
            .filter(|c| c.backend() != Some(victim))
            .map(health_log::Change::describe)
            .collect(),
    }
}

/// From the fault to the start of the last new connection that failed
/// (zero if none did).
fn failover(results: &[(Instant, Outcome)], fault: Instant) -> Duration {
    let last = results.iter().filter(|(_, o)| *o == Outcome::Failed).map(|(t, _)| *t).max();
    last.map_or(Duration::ZERO, |t| t.saturating_duration_since(fault))
}

/// The agent taking the victim out of the loaded service (tcp-v4): the
/// first such line after the fault is the signal that detected it.
fn first_down(changes: &[health_log::Change], victim: usize) -> Option<&health_log::Change> {
    changes
        .iter()
        .find(|c| c.backend() == Some(victim) && c.is_down() && c.get("service") == Some("tcp-v4"))
}

/// One long-lived connection's fate.
struct Held {
    /// The backend that answered it.
    backend: String,
    /// Whether it stopped answering (or another backend answered).
    broke: bool,
}

/// Opens `LONG` connections, each on its own thread and asking every 10 ms
/// until `stop`, so one whose backend hangs (its read waits 2 s) delays
/// neither the others nor the end of the trial. Returns once every one is
/// open or has failed to open (those threads return None).
fn start_long_lived(ns: &str, stop: &Arc<AtomicBool>) -> Vec<thread::JoinHandle<Option<Held>>> {
    let (ready, opened) = std::sync::mpsc::channel::<()>();
    let threads = (0..LONG)
        .map(|_| {
            let (ns, stop, ready) = (ns.to_owned(), stop.clone(), ready.clone());
            thread::spawn(move || {
                let conn = open_long_lived(&ns);
                let _ = ready.send(());
                drop(ready);
                let (mut c, backend) = conn?;
                while !stop.load(Ordering::Relaxed) {
                    if c.try_ask().as_deref() != Some(backend.as_str()) {
                        return Some(Held { backend, broke: true });
                    }
                    thread::sleep(Duration::from_millis(10));
                }
                Some(Held { backend, broke: false })
            })
        })
        .collect();
    drop(ready);
    // Ends when every thread has sent or dropped its sender.
    for () in opened.iter() {}
    threads
}

/// A connection from the client namespace and the backend that answered it.
fn open_long_lived(ns: &str) -> Option<(Conn, String)> {
    let _inside = lb_tests::netns::enter(ns);
    let stream = TcpStream::connect_timeout(&vip(VIP4, 80), Duration::from_secs(1)).ok()?;
    let mut c = Conn::from_stream(stream);
    let backend = c.try_ask()?;
    Some((c, backend))
}

/// New connections at RATE/s until `stop`: one async task each, on one
/// thread inside the client namespace, so a hung connection slows nothing
/// and the generator itself does not starve the 2-core machine.
fn start_generator(
    ns: &str,
    results: Arc<Mutex<Vec<(Instant, Outcome)>>>,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<()> {
    let target = vip(VIP4, 80);
    let ns = ns.to_owned();
    thread::spawn(move || {
        let _inside = lb_tests::netns::enter(&ns);
        let rt =
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async move {
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut tasks = tokio::task::JoinSet::new();
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let results = results.clone();
                tasks.spawn(async move {
                    let began = Instant::now();
                    let outcome = one_connection(target).await;
                    results.lock().unwrap_or_else(|p| p.into_inner()).push((began, outcome));
                });
            }
            while tasks.join_next().await.is_some() {}
        });
    })
}

/// Fails backend `victim`; returns its server unless the fault killed it.
fn inject(s: &mut Setup, fault: Fault, victim: usize) -> Option<Proc> {
    let server = s.backends.remove(victim - 1);
    match fault {
        Fault::Killed => {
            drop(server);
            return None;
        }
        Fault::LinkDown => s.topo.backend_link_down(victim),
        Fault::Hung => signal(&server, nix::sys::signal::SIGSTOP),
    }
    Some(server)
}

/// Undoes [`inject`]: the link up, the server resumed or restarted.
fn repair(s: &mut Setup, server: &str, fault: Fault, victim: usize, alive: Option<Proc>) {
    match fault {
        Fault::Killed => {}
        Fault::LinkDown => s.topo.backend_link_up(victim),
        Fault::Hung => {
            if let Some(p) = &alive {
                signal(p, nix::sys::signal::SIGCONT);
            }
        }
    }
    let proc = alive
        .unwrap_or_else(|| start_backend(&s.topo.backends[victim - 1], server.as_ref(), victim));
    s.backends.insert(victim - 1, proc);
}

fn signal(p: &Proc, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p.0.id() as i32), sig);
}

/// The agent log's length now: where this trial's lines start.
fn log_len(log: &Path) -> usize {
    let len = std::fs::metadata(log).unwrap_or_else(|e| panic!("{}: {e}", log.display())).len();
    usize::try_from(len).expect("log size fits in memory")
}

/// What the agent logged from byte `from` on.
fn log_since(log: &Path, from: usize) -> String {
    let all = std::fs::read(log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    String::from_utf8_lossy(all.get(from..).unwrap_or_default()).into_owned()
}

/// One short connection: connect, ask, read the answer (1 s each at most).
async fn one_connection(target: SocketAddr) -> Outcome {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let limit = Duration::from_secs(1);
    let exchange = async {
        let mut c = match tokio::net::TcpStream::connect(target).await {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => {
                return Outcome::NoLocalPort;
            }
            Err(_) => return Outcome::Failed,
        };
        let mut line = String::new();
        let asked = async {
            c.write_all(b"hello\n").await?;
            tokio::io::BufReader::new(&mut c).read_line(&mut line).await
        };
        match asked.await {
            Ok(n) if n > 0 => Outcome::Answered,
            _ => Outcome::Failed,
        }
    };
    tokio::time::timeout(limit, exchange).await.unwrap_or(Outcome::Failed)
}
