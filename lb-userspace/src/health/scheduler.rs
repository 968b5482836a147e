//! Running every backend's probes concurrently: one task per backend, each
//! on its own jittered schedule, so thousands of backends never wait on each
//! other and never probe in lockstep.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::{sync::mpsc, task::JoinHandle};

use super::{
    probe::{ProbeError, probe},
    tunnel::{self, Tunnel, answers::Answers},
};
use crate::{
    config::HealthKind,
    throttle::{self, Throttle},
};

/// What to probe, and how often.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// The service's name.
    pub service: String,
    /// The backend.
    pub backend: SocketAddr,
    /// The probe.
    pub kind: HealthKind,
    /// Time between probe starts.
    pub interval: Duration,
    /// Time a probe may take.
    pub timeout: Duration,
    /// The backend expects a PROXY protocol v2 header first.
    pub proxy_protocol: bool,
    /// Also probe through the tunnel (`dsr-ipip` in a kernel mode).
    pub tunnel: Option<Tunnel>,
}

/// One probe's result.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The service's name.
    pub service: String,
    /// The backend.
    pub backend: SocketAddr,
    /// `Err` holds why it failed.
    pub result: Result<(), String>,
    /// How long the probe took.
    pub latency: Duration,
    /// When it finished.
    pub at: Instant,
}

/// The running probe tasks; dropping it stops them.
#[derive(Debug, Default)]
pub struct Probes {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Probes {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts one probe loop per target (kind `none` needs none). Must be called
/// inside a tokio runtime.
pub fn spawn(targets: Vec<Target>, tx: mpsc::UnboundedSender<Outcome>) -> Probes {
    let tunnelled = |v6: bool| {
        targets.iter().any(|t| {
            t.kind != HealthKind::None && t.tunnel.as_ref().is_some_and(|u| u.vip.is_ipv6() == v6)
        })
    };
    // The sockets for answers through the tunnel, if any probe goes there;
    // without them those probes fail, saying why.
    let answers = match (tunnelled(false), tunnelled(true)) {
        (false, false) => None,
        (v4, v6) => Some(Answers::start(v4, v6).map(Arc::new).map_err(|e| {
            tracing::error!("health probes through the tunnel cannot read answers: {e}");
            e.to_string()
        })),
    };
    let tasks = targets
        .into_iter()
        .filter(|t| t.kind != HealthKind::None)
        .map(|t| tokio::spawn(run(t, answers.clone(), tx.clone())))
        .collect();
    // The answers' sockets live as long as the tasks holding them.
    Probes { tasks }
}

async fn run(
    t: Target,
    answers: Option<Result<Arc<Answers>, String>>,
    tx: mpsc::UnboundedSender<Outcome>,
) {
    let mut rng = Jitter::seeded(&t.backend);
    // Start somewhere in the first interval, so probes spread out.
    tokio::time::sleep(rng.fraction_of(t.interval)).await;
    loop {
        let start = Instant::now();
        // Boxed: the probe's state (a connect, buffers, a timeout) is about
        // 3 KB, and held inline it would stay in every task's future for the
        // whole interval between probes: 30 MB at 10 000 backends. Boxed, it
        // exists only while a probe runs.
        let round = Box::pin(probe_once(&t, answers.as_ref())).await;
        let at = Instant::now();
        // A round this host could not probe reports nothing: the backend
        // keeps its state until a probe can run.
        if let Some(result) = round {
            let outcome = Outcome {
                service: t.service.clone(),
                backend: t.backend,
                result,
                latency: at - start,
                at,
            };
            if tx.send(outcome).is_err() {
                return;
            }
        }
        // interval ± 10%.
        let next = t.interval.mul_f64(0.9) + rng.fraction_of(t.interval / 5);
        tokio::time::sleep((start + next).saturating_duration_since(Instant::now())).await;
    }
}

/// One probe of `t`: the direct one and, for a tunnelled service, the one
/// through the tunnel, side by side, so together they take no longer than
/// the timeout. Both must succeed. `None` when this host could not make
/// the direct probe (`ProbeError::Busy`: out of descriptors, say).
async fn probe_once(
    t: &Target,
    answers: Option<&Result<Arc<Answers>, String>>,
) -> Option<Result<(), String>> {
    let direct = probe(&t.kind, t.backend, t.proxy_protocol, t.timeout);
    let through = async {
        let Some(tunnel) = &t.tunnel else { return Ok(()) };
        let answers = match answers {
            Some(Ok(a)) => a,
            Some(Err(e)) => return Err(format!("through the tunnel: cannot read answers: {e}")),
            None => return Err("through the tunnel: no reader of answers".to_owned()),
        };
        let once = tunnel::probe(&t.kind, tunnel, t.backend, answers);
        let result = match tokio::time::timeout(t.timeout, once).await {
            Ok(Err(ProbeError::Busy(why))) => {
                // Thousands of backends timing out at once hold every probe
                // port: their own probes fail anyway, and a healthy
                // backend must not be taken out for a port of ours. This
                // round counts on the direct probe alone.
                static EVERY: Throttle = Throttle::new(Duration::from_secs(10));
                busy_warning(
                    &EVERY,
                    &format!(
                        "health probes through the tunnel skipped a round ({why}); the direct \
                         probes still run"
                    ),
                );
                Ok(())
            }
            Ok(r) => r,
            Err(_) => Err(ProbeError::Timeout(t.timeout)),
        };
        result.map_err(|e| {
            let hint = match e {
                ProbeError::Timeout(_) => {
                    " (does the backend hold the VIP on lo, and run lb decap on the interface \
                     the tunnel reaches?)"
                }
                ProbeError::Refused => " (nothing serves the port on the VIP there)",
                _ => "",
            };
            format!("through the tunnel to {}: {e}{hint}", tunnel.vip)
        })
    };
    let (direct, through) = tokio::join!(direct, through);
    round(direct, through)
}

/// Rounds skipped because this host could not probe, since the agent
/// started (all backends together).
static SKIPPED: AtomicU64 = AtomicU64::new(0);

/// Rounds skipped because this host could not probe (`lb status`, the
/// metrics): while it grows, backends keep the health they had.
pub fn skipped() -> u64 {
    SKIPPED.load(Ordering::Relaxed)
}

/// A round's outcome from its direct probe and the one through the tunnel
/// (`Ok` when there is none): `None` when this host could not make the
/// direct probe (`ProbeError::Busy`), which says nothing of the backend.
fn round(
    direct: Result<(), ProbeError>,
    through: Result<(), String>,
) -> Option<Result<(), String>> {
    match direct {
        Err(ProbeError::Busy(why)) => {
            SKIPPED.fetch_add(1, Ordering::Relaxed);
            static EVERY: Throttle = Throttle::new(Duration::from_secs(10));
            busy_warning(
                &EVERY,
                &format!(
                    "health probes skipped a round: this host could not probe ({why}); backends \
                     keep their state until probes can run again (raise lb's open-file limit if \
                     it is the cause)"
                ),
            );
            None
        }
        Err(e) => Some(Err(e.to_string())),
        Ok(()) => Some(through),
    }
}

/// Logs `warning` (probes skipped) through `every` (one each 10 s): a
/// shortage lasts, and every probe of every backend meets it.
fn busy_warning(every: &Throttle, warning: &str) {
    if let Some(skipped) = every.allow() {
        tracing::warn!("{warning}{}", throttle::more(skipped));
    }
}

/// A small xorshift generator: jitter needs spread, not quality, and not a
/// dependency.
struct Jitter(u64);

impl Jitter {
    fn seeded(addr: &SocketAddr) -> Self {
        let mut h = std::hash::DefaultHasher::new();
        std::hash::Hash::hash(addr, &mut h);
        std::hash::Hash::hash(&Instant::now(), &mut h);
        Self(std::hash::Hasher::finish(&h) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A uniformly random part of `d`.
    fn fraction_of(&mut self, d: Duration) -> Duration {
        d.mul_f64((self.next() >> 11) as f64 / (1u64 << 53) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(backend: SocketAddr, kind: HealthKind, interval: u64, timeout: u64) -> Target {
        Target {
            service: "s".into(),
            backend,
            kind,
            interval: Duration::from_millis(interval),
            timeout: Duration::from_millis(timeout),
            proxy_protocol: false,
            tunnel: None,
        }
    }

    /// A probe this host could not make (out of descriptors) reports
    /// nothing, whatever the tunnel's probe said; any other failure of
    /// either probe fails the round.
    #[test]
    fn a_round_this_host_could_not_probe_reports_nothing() {
        let busy = || Err(ProbeError::Busy("Too many open files".into()));
        let before = skipped();
        assert_eq!(round(busy(), Ok(())), None);
        assert!(skipped() > before, "counted where status and the metrics show it");
        assert_eq!(round(busy(), Err("through the tunnel: refused".into())), None);
        assert_eq!(round(Ok(()), Ok(())), Some(Ok(())));
        assert_eq!(round(Ok(()), Err("tunnel".into())), Some(Err("tunnel".into())));
        assert_eq!(round(Err(ProbeError::Refused), Ok(())), Some(Err("connection refused".into())));
    }

    /// Every backend's task holds its future between probes: 10 000 of
    /// them must not cost tens of MB (they did, at 3.2 KB each, before the
    /// probe was boxed).
    #[test]
    fn a_probe_task_between_probes_is_small() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let task =
            run(target("127.0.0.1:1".parse().unwrap(), HealthKind::Tcp, 1000, 500), None, tx);
        let size = size_of_val(&task);
        assert!(size <= 1024, "a probe task's future is {size} bytes");
    }

    #[test]
    fn probes_report_up_and_down() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let up = listener.local_addr().unwrap();
            let down = {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap()
            };
            let (tx, mut rx) = mpsc::unbounded_channel();
            let targets =
                vec![target(up, HealthKind::Tcp, 20, 15), target(down, HealthKind::Tcp, 20, 15)];
            let _probes = spawn(targets, tx);
            let (mut ok, mut failed) = (0, 0);
            let counted = async {
                while ok < 3 || failed < 3 {
                    let o = rx.recv().await.expect("probes report");
                    match (o.backend == up, o.result.is_ok()) {
                        (true, true) => ok += 1,
                        (false, false) => failed += 1,
                        other => panic!("unexpected {other:?}: {o:?}"),
                    }
                }
            };
            tokio::time::timeout(Duration::from_secs(10), counted)
                .await
                .expect("three results of each within 10 s");
        });
    }

    /// A probe waiting on a backend that never answers holds up no other.
    #[test]
    fn a_hanging_probe_does_not_delay_the_others() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let fast = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            // Accepts (the kernel does), never answers the HTTP request.
            let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let http = HealthKind::Http { path: "/".into(), expect_status: 200 };
            let (tx, mut rx) = mpsc::unbounded_channel();
            let _probes = spawn(
                vec![
                    // Starts within 100 ms (its jitter), then waits 4 s.
                    target(silent.local_addr().unwrap(), http, 100, 4000),
                    target(fast.local_addr().unwrap(), HealthKind::Tcp, 20, 15),
                ],
                tx,
            );
            // Meanwhile the fast backend is probed every 20 ms.
            let mut fast_results = 0;
            let window = tokio::time::sleep(Duration::from_millis(1500));
            tokio::pin!(window);
            loop {
                tokio::select! {
                    _ = &mut window => break,
                    o = rx.recv() => {
                        let o = o.expect("probes report");
                        assert_eq!(o.backend, fast.local_addr().unwrap(), "the silent one cannot report yet");
                        fast_results += 1;
                    }
                }
            }
            assert!(fast_results >= 10, "{fast_results} fast results in 1.5 s");
        });
    }

    #[test]
    fn jitter_spreads_over_its_whole_span() {
        let span = Duration::from_millis(100);
        let mut j = Jitter::seeded(&"10.0.0.1:80".parse().unwrap());
        let draws: Vec<Duration> = (0..1000).map(|_| j.fraction_of(span)).collect();
        assert!(draws.iter().all(|&d| d < span));
        // Uniform over the span: 1000 draws reach both ends and every tenth.
        let mut tenths = [0; 10];
        for d in &draws {
            tenths[(d.as_secs_f64() / span.as_secs_f64() * 10.0) as usize] += 1;
        }
        assert!(tenths.iter().all(|&n| n > 40), "uneven: {tenths:?}");
        // Two backends do not start in step.
        let mut other = Jitter::seeded(&"10.0.0.2:80".parse().unwrap());
        let theirs: Vec<Duration> = (0..10).map(|_| other.fraction_of(span)).collect();
        assert_ne!(theirs, draws[..10]);
    }
}
