//! The threads that serve splice TCP: one current-thread runtime per CPU,
//! each accepting from the VIP's listener ([`super::bind::listeners`]:
//! whichever thread is awake takes a new connection) and running the
//! connections it accepted, start to end.
//!
//! Why not one work-stealing runtime: at 1000 concurrent short connections
//! its cross-worker wakeups and shared queues cost more than they balance
//! (issue 18: per-core runtimes made 0.92–1.08× HAProxy's connections/s
//! where the shared runtime made 0.85–0.97×).

use std::{io, thread::JoinHandle};

use tokio::{runtime::Handle, sync::oneshot};

/// One serving thread.
#[derive(Debug)]
struct Core {
    handle: Handle,
    /// Dropped to stop the thread (its runtime, with what still runs on it).
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// The serving threads; dropping them stops each and waits for it, so the
/// sockets they hold are closed when the drop returns.
#[derive(Debug)]
pub struct Cores(Vec<Core>);

impl Cores {
    /// One thread per CPU this process may use.
    pub fn per_cpu() -> io::Result<Self> {
        Self::start(std::thread::available_parallelism().map_or(1, usize::from))
    }

    /// `n` threads (at least one).
    pub fn start(n: usize) -> io::Result<Self> {
        (0..n.max(1))
            .map(|i| {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                let handle = rt.handle().clone();
                let (stop, stopped) = oneshot::channel::<()>();
                let thread = std::thread::Builder::new().name(format!("lb-splice-{i}")).spawn(
                    move || {
                        // Until the sender is dropped (or used); dropping the
                        // runtime then cancels what is left and closes its
                        // sockets.
                        let _ = rt.block_on(stopped);
                    },
                )?;
                Ok(Core { handle, stop: Some(stop), thread: Some(thread) })
            })
            .collect::<io::Result<_>>()
            .map(Self)
    }

    /// How many threads serve.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether none does (never: [`Cores::start`] makes at least one).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Each thread's runtime.
    pub fn handles(&self) -> impl Iterator<Item = &Handle> {
        self.0.iter().map(|c| &c.handle)
    }
}

impl Drop for Cores {
    fn drop(&mut self) {
        for core in &mut self.0 {
            core.stop.take();
        }
        for core in &mut self.0 {
            if let Some(t) = core.thread.take() {
                let _ = t.join();
            }
        }
    }
}
