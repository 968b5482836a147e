//! A TCP service in splice mode: accept on the VIP, pick the backend the
//! XDP datapath would, connect (trying the next Maglev candidates if it
//! refuses, within a budget), relay with splice(2).

use std::{
    collections::HashMap,
    future::Future,
    io,
    net::SocketAddr,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use lb_common::abi::PROTO_TCP;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};

use super::{pick, relay::relay};

/// What a service balances over; replaced whole when health or the config
/// changes (connections in flight keep their backend).
#[derive(Debug, Clone, Default)]
pub struct View {
    /// The Maglev table: backend ids.
    pub table: Vec<u32>,
    /// Where each backend id is.
    pub backends: HashMap<u32, SocketAddr>,
    /// Hash the client address only.
    pub client_affinity: bool,
}

/// Bounds of one service.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections relayed at once; beyond, new ones are closed at once.
    pub max_connections: usize,
    /// Time to connect to one backend.
    pub connect_timeout: Duration,
    /// Backends tried per connection.
    pub tries: usize,
    /// Closes a connection idle this long.
    pub idle: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 65536,
            connect_timeout: Duration::from_secs(2),
            tries: 3,
            idle: Duration::from_secs(300),
        }
    }
}

/// Counters of one service.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections accepted and relayed to a backend.
    pub relayed: AtomicU64,
    /// Connections refused at the limit.
    pub refused_at_limit: AtomicU64,
    /// Connections no backend would take.
    pub no_backend: AtomicU64,
    /// Backend connects that failed (and moved on to the next candidate).
    pub connect_failures: AtomicU64,
    /// Bytes client to backend.
    pub bytes_up: AtomicU64,
    /// Bytes backend to client.
    pub bytes_down: AtomicU64,
}

/// Serves `listener` (bound to the VIP) until `shutdown` completes; then
/// stops accepting and returns (connections in flight finish on their own
/// tasks).
pub async fn serve(
    listener: TcpListener,
    vip: SocketAddr,
    view: Arc<RwLock<View>>,
    limits: Limits,
    stats: Arc<Stats>,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    tokio::pin!(shutdown);
    loop {
        let (client, peer) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(%vip, error = %e, "accept failed");
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            // Refuse cleanly: close at once instead of letting it hang.
            stats.refused_at_limit.fetch_add(1, Ordering::Relaxed);
            drop(client);
            continue;
        };
        let (view, stats) = (Arc::clone(&view), Arc::clone(&stats));
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = handle(client, peer, vip, &view, limits, &stats).await {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        });
    }
}

async fn handle(
    client: TcpStream,
    peer: SocketAddr,
    vip: SocketAddr,
    view: &RwLock<View>,
    limits: Limits,
    stats: &Stats,
) -> io::Result<()> {
    let targets: Vec<SocketAddr> = {
        let v = view.read().unwrap_or_else(|p| p.into_inner());
        let key = pick::flow_key(peer, vip, PROTO_TCP);
        // No more candidates than backends: asking for more made `candidates`
        // scan the whole table (65537 slots, ~150 µs) on every connection of
        // a service with fewer backends than `tries`.
        let budget = limits.tries.min(v.backends.len());
        pick::candidates(&v.table, pick::hash(&key, v.client_affinity), budget)
            .iter()
            .filter_map(|id| v.backends.get(id).copied())
            .collect()
    };
    for addr in targets {
        match tokio::time::timeout(limits.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(backend)) => {
                stats.relayed.fetch_add(1, Ordering::Relaxed);
                let moved = relay(&client, &backend, limits.idle).await?;
                stats.bytes_up.fetch_add(moved.up, Ordering::Relaxed);
                stats.bytes_down.fetch_add(moved.down, Ordering::Relaxed);
                return Ok(());
            }
            _ => {
                stats.connect_failures.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    stats.no_backend.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
    }

    /// A backend answering every connection with its name, then closing.
    async fn named(name: &'static str) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                let _ = s.write_all(name.as_bytes()).await;
            }
        });
        addr
    }

    async fn ask(vip: SocketAddr) -> String {
        let mut c = TcpStream::connect(vip).await.unwrap();
        let mut s = String::new();
        let _ = c.read_to_string(&mut s).await;
        s
    }

    #[test]
    fn a_refusing_backend_is_skipped_for_the_next_candidate() {
        rt().block_on(async {
            let up = named("up").await;
            let dead = {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap()
            };
            // Every slot but the last is the dead backend's.
            let mut table = vec![1u32; 101];
            table[100] = 2;
            let view = View {
                table,
                backends: HashMap::from([(1, dead), (2, up)]),
                client_affinity: false,
            };
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let vip = l.local_addr().unwrap();
            let stats = Arc::new(Stats::default());
            tokio::spawn(serve(
                l,
                vip,
                Arc::new(RwLock::new(view)),
                Limits::default(),
                Arc::clone(&stats),
                std::future::pending(),
            ));
            for _ in 0..5 {
                assert_eq!(ask(vip).await, "up");
            }
            assert!(stats.connect_failures.load(Ordering::Relaxed) >= 4);
            assert_eq!(stats.relayed.load(Ordering::Relaxed), 5);
        });
    }

    #[test]
    fn the_connection_limit_refuses_cleanly() {
        rt().block_on(async {
            // A backend that holds connections open.
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let slow = l.local_addr().unwrap();
            tokio::spawn(async move {
                let mut held = Vec::new();
                loop {
                    let (s, _) = l.accept().await.unwrap();
                    held.push(s);
                }
            });
            let view = View {
                table: vec![1; 7],
                backends: HashMap::from([(1, slow)]),
                client_affinity: false,
            };
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let vip = l.local_addr().unwrap();
            let stats = Arc::new(Stats::default());
            let limits = Limits { max_connections: 2, ..Limits::default() };
            tokio::spawn(serve(
                l,
                vip,
                Arc::new(RwLock::new(view)),
                limits,
                Arc::clone(&stats),
                std::future::pending(),
            ));
            let _a = TcpStream::connect(vip).await.unwrap();
            let _b = TcpStream::connect(vip).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
            // The third is closed at once: reading ends, it does not hang.
            let mut c = TcpStream::connect(vip).await.unwrap();
            let mut buf = [0u8; 8];
            let n = tokio::time::timeout(Duration::from_secs(2), c.read(&mut buf)).await;
            assert!(
                matches!(n, Ok(Ok(0)) | Ok(Err(_))),
                "refused cleanly, not left hanging: {n:?}"
            );
            assert_eq!(stats.refused_at_limit.load(Ordering::Relaxed), 1);
        });
    }
}
