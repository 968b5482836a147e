//! Running every backend's probes concurrently: one task per backend, each
//! on its own jittered schedule, so thousands of backends never wait on each
//! other and never probe in lockstep.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use tokio::{sync::mpsc, task::JoinHandle};

use super::probe::probe;
use crate::config::HealthKind;

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
    let tasks = targets
        .into_iter()
        .filter(|t| t.kind != HealthKind::None)
        .map(|t| tokio::spawn(run(t, tx.clone())))
        .collect();
    Probes { tasks }
}

async fn run(t: Target, tx: mpsc::UnboundedSender<Outcome>) {
    let mut rng = Jitter::seeded(&t.backend);
    // Start somewhere in the first interval, so probes spread out.
    tokio::time::sleep(rng.fraction_of(t.interval)).await;
    loop {
        let start = Instant::now();
        let result =
            probe(&t.kind, t.backend, t.proxy_protocol, t.timeout).await.map_err(|e| e.to_string());
        let at = Instant::now();
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
        // interval ± 10%.
        let next = t.interval.mul_f64(0.9) + rng.fraction_of(t.interval / 5);
        tokio::time::sleep((start + next).saturating_duration_since(Instant::now())).await;
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

    #[test]
    fn probes_run_concurrently_and_report() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let up = listener.local_addr().unwrap();
            let down = {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap()
            };
            let target = |backend| Target {
                service: "s".into(),
                backend,
                kind: HealthKind::Tcp,
                interval: Duration::from_millis(20),
                timeout: Duration::from_millis(15),
                proxy_protocol: false,
            };
            let (tx, mut rx) = mpsc::unbounded_channel();
            let _probes = spawn(vec![target(up), target(down)], tx);
            let (mut ok, mut failed) = (0, 0);
            while ok < 3 || failed < 3 {
                let o = rx.recv().await.unwrap();
                match (o.backend == up, o.result.is_ok()) {
                    (true, true) => ok += 1,
                    (false, false) => failed += 1,
                    other => panic!("unexpected {other:?}: {o:?}"),
                }
            }
        });
    }

    #[test]
    fn jitter_stays_within_its_span() {
        let mut j = Jitter::seeded(&"10.0.0.1:80".parse().unwrap());
        for _ in 0..1000 {
            assert!(j.fraction_of(Duration::from_millis(100)) < Duration::from_millis(100));
        }
    }
}
