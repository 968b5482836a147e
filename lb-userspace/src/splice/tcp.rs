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

use lb_common::abi::{EVENT_REFUSED, EVENT_UNREACHABLE, FlowKey, PROTO_TCP, PassiveEvent};
use tokio::{
    io::AsyncWriteExt,
    net::{TcpListener, TcpStream},
    sync::{Semaphore, mpsc::UnboundedSender},
};

use super::{
    budget,
    inflight::Inflight,
    pick, proxy_v2,
    relay::{self, relay},
    sources::{Buckets, Policy},
};
use crate::{config::Splice, shortage};

/// One backend as a service's view holds it.
#[derive(Debug, Clone)]
pub struct Backend {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its counters, kept by the forwarder across view changes.
    pub stats: Arc<BackendStats>,
}

/// Counters of one backend: connections (TCP) or sessions (UDP) given to
/// it, and bytes both ways.
#[derive(Debug, Default)]
pub struct BackendStats {
    /// Connections or sessions opened to it.
    pub opened: AtomicU64,
    /// Bytes relayed to and from it.
    pub bytes: AtomicU64,
    /// Connections or sessions open now (see [`OpenGuard`]).
    pub open: AtomicU64,
    /// Times it was taken out (down or disabled): a TCP connection relayed
    /// to it ends, with a reset to its client, when this passes the value
    /// it started with, as XDP's re-hash resets it from the new backend.
    pub cuts: AtomicU64,
    /// Wakes the connections relayed to it when `cuts` rises.
    pub cut: tokio::sync::Notify,
}

impl BackendStats {
    /// Ends the TCP connections relayed to this backend now.
    pub fn cut_connections(&self) {
        self.cuts.fetch_add(1, Ordering::Relaxed);
        self.cut.notify_waiters();
    }

    /// Completes once the backend is cut after `seen` (a `cuts` value).
    async fn cut_after(&self, seen: u64) {
        loop {
            let woken = self.cut.notified();
            if self.cuts.load(Ordering::Relaxed) != seen {
                return;
            }
            woken.await;
        }
    }
}

/// Counts one connection or session as open for as long as it lives.
#[derive(Debug)]
pub struct OpenGuard(Arc<BackendStats>);

impl OpenGuard {
    /// Opens (counts opened and open) one connection or session to `stats`.
    pub fn new(stats: &Arc<BackendStats>) -> Self {
        stats.opened.fetch_add(1, Ordering::Relaxed);
        stats.open.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(stats))
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a service balances over; replaced whole when health or the config
/// changes (connections in flight keep their backend).
#[derive(Debug, Clone, Default)]
pub struct View {
    /// The Maglev table: backend ids.
    pub table: Vec<u32>,
    /// Distinct backends owning slots of `table`: no more candidates than
    /// that exist, and asking for more would scan the whole table.
    pub owners: usize,
    /// Each backend id's address and counters.
    pub backends: HashMap<u32, Backend>,
    /// Hash the client address only.
    pub client_affinity: bool,
    /// Start each backend connection with a PROXY protocol v2 header.
    pub proxy_protocol: bool,
    /// Who may reach the service, and how fast they may open flows.
    pub sources: Policy,
}

impl View {
    /// The backends to try for a flow, best first: the one XDP would pick,
    /// then the owners of the following slots, at most `tries` of them.
    pub fn candidates(
        &self,
        client: SocketAddr,
        vip: SocketAddr,
        proto: u8,
        tries: usize,
    ) -> Vec<(u32, Backend)> {
        let key = FlowKey::between(client, vip, proto);
        let budget = tries.min(self.owners);
        pick::candidates(&self.table, pick::hash(&key, self.client_affinity), budget)
            .into_iter()
            .filter_map(|id| Some((id, self.backends.get(&id)?.clone())))
            .collect()
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
    /// Connections (UDP: datagrams) from sources the lists refuse.
    pub acl_denied: AtomicU64,
    /// Connections (UDP: sessions) over their source's new-flow limit.
    pub rate_limited: AtomicU64,
}

/// Everything a served service's tasks share.
#[derive(Debug)]
pub struct Shared {
    /// The VIP.
    pub vip: SocketAddr,
    /// What it balances over.
    pub view: RwLock<View>,
    /// Its bounds (the config's `[splice]` table).
    pub limits: Splice,
    /// Connections it may relay at once (`limits.max_connections`): one
    /// count for the service, whichever thread's listener accepted them.
    pub permits: Arc<Semaphore>,
    /// Its counters.
    pub stats: Stats,
    /// Its new-flow buckets, kept across view changes.
    pub buckets: Buckets,
    /// Connections open across the whole proxy, for graceful shutdown.
    pub inflight: Arc<Inflight>,
    /// Passive failure signals (a backend refusing a connection) for the
    /// agent, which acts on them as on the XDP datapath's.
    pub events: Option<UnboundedSender<PassiveEvent>>,
}

impl Shared {
    /// The state of a service on `vip` with an empty view, counters at zero.
    pub fn new(
        vip: SocketAddr,
        limits: Splice,
        inflight: Arc<Inflight>,
        events: Option<UnboundedSender<PassiveEvent>>,
    ) -> Self {
        Self {
            vip,
            view: RwLock::default(),
            limits,
            permits: Arc::new(Semaphore::new(limits.max_connections as usize)),
            stats: Stats::default(),
            buckets: Buckets::default(),
            inflight,
            events,
        }
    }

    /// The current view (cheap: the table is shared until replaced).
    pub fn view(&self) -> std::sync::RwLockReadGuard<'_, View> {
        self.view.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Tells the agent `id` refused a connection.
    pub fn refused(&self, id: u32) {
        self.report(id, EVENT_REFUSED);
    }

    /// Reports that backend `id` answered with an ICMP port unreachable
    /// (a UDP session's socket saw ECONNREFUSED).
    pub fn unreachable(&self, id: u32) {
        self.report(id, EVENT_UNREACHABLE);
    }

    fn report(&self, id: u32, kind: u32) {
        if let Some(tx) = &self.events {
            let _ = tx.send(PassiveEvent { backend_id: id, kind });
        }
    }
}

/// Serves `listener` (bound to the VIP) until `shutdown` completes; then
/// stops accepting and returns (connections in flight finish on their own
/// tasks, counted in `shared.inflight`).
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, shutdown: impl Future<Output = ()>) {
    let what = format!("splice {}", shared.vip);
    // A connection is accepted only while the budget has room for its two
    // sockets: at the budget, it waits in the listen queue, and neither it
    // nor the operator's status finds lb out of descriptors (`budget`).
    // Counted once accepted: an idle accept holds nothing.
    let accept = || async {
        budget::wait_for_room(2, &what, relay::release_pooled_pipes).await;
        let (client, peer) = listener.accept().await?;
        Ok((client, peer, budget::count(2)))
    };
    let each = |(client, peer, held): (TcpStream, SocketAddr, budget::Held)| {
        if let Some(counter) = refusal(&shared, peer) {
            counter.fetch_add(1, Ordering::Relaxed);
            // A reset: the client learns at once, and no FIN it might
            // take for the server's orderly end of a reply.
            let _ = socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO));
            return drop(client);
        }
        let Ok(permit) = Arc::clone(&shared.permits).try_acquire_owned() else {
            // Refuse cleanly: close at once instead of letting it hang.
            shared.stats.refused_at_limit.fetch_add(1, Ordering::Relaxed);
            return drop(client);
        };
        let shared = Arc::clone(&shared);
        let open = shared.inflight.enter();
        tokio::spawn(async move {
            let _held = (permit, open, held);
            if let Err(e) = handle(client, peer, &shared).await {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        });
    };
    crate::accept::each(&what, accept, shutdown, each).await;
}

/// The counter of the rule that refuses a connection from `peer`, if one
/// does: its source lists, then its new-flow limit.
fn refusal(shared: &Shared, peer: SocketAddr) -> Option<&AtomicU64> {
    let view = shared.view();
    if !view.sources.admits(peer.ip()) {
        Some(&shared.stats.acl_denied)
    } else if !view.sources.within_limit(peer.ip(), &shared.buckets) {
        Some(&shared.stats.rate_limited)
    } else {
        None
    }
}

async fn handle(mut client: TcpStream, peer: SocketAddr, shared: &Shared) -> io::Result<()> {
    let (targets, proxy_protocol) = {
        let v = shared.view();
        (
            v.candidates(peer, shared.vip, PROTO_TCP, shared.limits.connect_tries as usize),
            v.proxy_protocol,
        )
    };
    let stats = &shared.stats;
    // Out of descriptors, the connection waits for others to close (up to
    // the idle timeout) rather than being dropped unanswered.
    let patience = shared.limits.idle_timeout;
    for (id, target) in targets {
        let limit = shared.limits.connect_timeout;
        let connect = || async move {
            tokio::time::timeout(limit, TcpStream::connect(target.addr))
                .await
                .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
        };
        let mut backend = match for_descriptors(patience, connect).await {
            Ok(b) => b,
            Err(e) if shortage::ours(&e) => return Err(e),
            Err(e) => {
                stats.connect_failures.fetch_add(1, Ordering::Relaxed);
                if e.kind() == io::ErrorKind::ConnectionRefused {
                    shared.refused(id);
                }
                continue;
            }
        };
        stats.relayed.fetch_add(1, Ordering::Relaxed);
        let _open = OpenGuard::new(&target.stats);
        let cuts = target.stats.cuts.load(Ordering::Relaxed);
        // Bytes leave as they arrive: the endpoints already chose their
        // segment sizes, and Nagle here would add latency to every request.
        // (The client's socket has it from the listener: accepted sockets
        // inherit TCP_NODELAY, one setsockopt a connection saved.)
        let _ = backend.set_nodelay(true);
        if proxy_protocol {
            backend.write_all(&proxy_v2::header(peer, shared.vip)).await?;
        }
        let tally = |up: u64, down: u64| {
            stats.bytes_up.fetch_add(up, Ordering::Relaxed);
            stats.bytes_down.fetch_add(down, Ordering::Relaxed);
            target.stats.bytes.fetch_add(up + down, Ordering::Relaxed);
        };
        let cut = {
            let relayed = relay(&mut client, &mut backend, shared.limits.idle_timeout, &tally);
            tokio::select! {
                moved = relayed => {
                    moved?;
                    false
                }
                () = target.stats.cut_after(cuts) => true,
            }
        };
        if cut {
            // A reset, not a FIN: the client must not take the cut for the
            // server's orderly end of the stream.
            let _ = socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO));
        }
        return Ok(());
    }
    stats.no_backend.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Runs `op` until it stops failing for this host's shortage (out of
/// descriptors, say: `shortage`), retrying every
/// 10 ms for up to `patience`.
async fn for_descriptors<T, F: Future<Output = io::Result<T>>>(
    patience: Duration,
    mut op: impl FnMut() -> F,
) -> io::Result<T> {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        match op().await {
            Err(e) if shortage::ours(&e) && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            done => return done,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{super::cores::Cores, *};
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

    fn backend(addr: SocketAddr) -> Backend {
        Backend { addr, stats: Arc::default() }
    }

    /// Serves `view` on a fresh loopback port; returns the VIP and the
    /// service's shared state.
    async fn start(
        view: View,
        limits: Splice,
        events: Option<UnboundedSender<PassiveEvent>>,
    ) -> (SocketAddr, Arc<Shared>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let vip = l.local_addr().unwrap();
        let shared = Arc::new(Shared::new(vip, limits, Arc::default(), events));
        *shared.view.write().unwrap() = view;
        tokio::spawn(serve(l, Arc::clone(&shared), std::future::pending()));
        (vip, shared)
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
                owners: pick::owners(&table),
                table,
                backends: HashMap::from([(1, backend(dead)), (2, backend(up))]),
                ..View::default()
            };
            let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
            let (vip, shared) = start(view, Splice::default(), Some(tx)).await;
            let stats = &shared.stats;
            for _ in 0..5 {
                assert_eq!(ask(vip).await, "up");
            }
            assert!(stats.connect_failures.load(Ordering::Relaxed) >= 4);
            assert_eq!(stats.relayed.load(Ordering::Relaxed), 5);
            let ev = events.try_recv().expect("the refusal reaches the agent");
            assert_eq!(ev, PassiveEvent { backend_id: 1, kind: EVENT_REFUSED });
            let up_stats = &shared.view().backends[&2].stats;
            assert_eq!(up_stats.opened.load(Ordering::Relaxed), 5, "counted per backend");
            assert_eq!(up_stats.bytes.load(Ordering::Relaxed), 10);
        });
    }

    /// A view whose one backend holds every connection open.
    async fn held_open() -> View {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let slow = l.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let (s, _) = l.accept().await.unwrap();
                held.push(s);
            }
        });
        View {
            table: vec![1; 7],
            owners: 1,
            backends: HashMap::from([(1, backend(slow))]),
            ..View::default()
        }
    }

    /// Asserts a connection to `vip` is closed at once: reading ends, it
    /// does not hang.
    async fn closed_at_once(vip: SocketAddr) {
        let mut c = TcpStream::connect(vip).await.unwrap();
        let mut buf = [0u8; 8];
        let n = tokio::time::timeout(Duration::from_secs(2), c.read(&mut buf)).await;
        assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "refused cleanly, not left hanging: {n:?}");
    }

    #[test]
    fn the_connection_limit_refuses_cleanly() {
        rt().block_on(async {
            let limits = Splice { max_connections: 2, ..Splice::default() };
            let (vip, shared) = start(held_open().await, limits, None).await;
            let _a = TcpStream::connect(vip).await.unwrap();
            let _b = TcpStream::connect(vip).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
            closed_at_once(vip).await;
            assert_eq!(shared.stats.refused_at_limit.load(Ordering::Relaxed), 1);
        });
    }

    #[test]
    fn the_connection_limit_is_one_count_across_the_serving_threads() {
        // lb serves a TCP service from one thread per CPU, each accepting
        // on its own: here two threads, each with a listener of its own,
        // so which thread took a connection is known. The limit is the
        // service's, not each thread's.
        let cores = Cores::start(2).unwrap();
        rt().block_on(async {
            let limits = Splice { max_connections: 2, ..Splice::default() };
            let vip = SocketAddr::from(([127, 0, 0, 1], 1));
            let shared = Arc::new(Shared::new(vip, limits, Arc::default(), None));
            *shared.view.write().unwrap() = held_open().await;
            let mut vips = Vec::new();
            for core in cores.handles() {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.set_nonblocking(true).unwrap();
                vips.push(l.local_addr().unwrap());
                let _ctx = core.enter();
                let l = TcpListener::from_std(l).unwrap();
                core.spawn(serve(l, Arc::clone(&shared), std::future::pending()));
            }
            let _a = TcpStream::connect(vips[0]).await.unwrap();
            let _b = TcpStream::connect(vips[0]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
            closed_at_once(vips[1]).await;
            assert_eq!(shared.stats.refused_at_limit.load(Ordering::Relaxed), 1);
            assert_eq!(shared.stats.relayed.load(Ordering::Relaxed), 2);
        });
    }

    #[test]
    fn backends_get_a_proxy_v2_header_naming_the_client() {
        rt().block_on(async {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            let got = tokio::spawn(async move {
                let (mut s, peer) = l.accept().await.unwrap();
                let mut buf = Vec::new();
                s.read_to_end(&mut buf).await.unwrap();
                (peer, buf)
            });
            let view = View {
                table: vec![1; 7],
                owners: 1,
                backends: HashMap::from([(1, backend(addr))]),
                proxy_protocol: true,
                ..View::default()
            };
            let (vip, _shared) = start(view, Splice::default(), None).await;
            let mut c = TcpStream::connect(vip).await.unwrap();
            let me = c.local_addr().unwrap();
            c.write_all(b"payload").await.unwrap();
            c.shutdown().await.unwrap();
            let (_, buf) = got.await.unwrap();
            let (client, to, len) = proxy_v2::parse(&buf).expect("a v2 header first");
            assert_eq!((client, to), (me, vip));
            assert_eq!(&buf[len..], b"payload", "then the client's bytes, untouched");
        });
    }

    #[test]
    fn inflight_counts_open_connections_until_they_end() {
        rt().block_on(async {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            // Echoes until the client closes.
            tokio::spawn(async move {
                loop {
                    let (mut s, _) = l.accept().await.unwrap();
                    tokio::spawn(async move {
                        let (mut r, mut w) = s.split();
                        let _ = tokio::io::copy(&mut r, &mut w).await;
                    });
                }
            });
            let view = View {
                table: vec![1; 7],
                owners: 1,
                backends: HashMap::from([(1, backend(addr))]),
                ..View::default()
            };
            let (vip, shared) = start(view, Splice::default(), None).await;
            let mut c = TcpStream::connect(vip).await.unwrap();
            c.write_all(b"x").await.unwrap();
            let mut one = [0u8; 1];
            c.read_exact(&mut one).await.unwrap();
            assert_eq!(shared.inflight.count(), 1);
            let idle = tokio::spawn({
                let i = Arc::clone(&shared.inflight);
                async move { i.idle().await }
            });
            drop(c);
            tokio::time::timeout(Duration::from_secs(2), idle).await.unwrap().unwrap();
        });
    }
}
