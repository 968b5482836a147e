//! A UDP service in splice mode: one session per client address, each with
//! its own socket connected to the backend the XDP datapath would pick for
//! that flow. Replies go back to the client from the VIP socket, so the
//! client only ever sees the VIP. Sessions idle for `splice.udp_idle_timeout` are
//! dropped.
//!
//! I/O is batched both ways: the VIP socket is drained with recvmmsg and
//! each session's datagrams leave in one sendmmsg; replies likewise.

use std::{
    collections::HashMap,
    future::Future,
    io,
    net::SocketAddr,
    os::fd::AsFd,
    sync::{Arc, Mutex, atomic::Ordering::Relaxed},
    time::{Duration, Instant},
};

use lb_common::abi::PROTO_UDP;
use tokio::{io::Interest, net::UdpSocket};

use super::{
    budget,
    mmsg::{self, RecvBatch},
    tcp::{BackendStats, OpenGuard, Shared},
};

/// Datagrams taken from the VIP socket per call.
const BATCH: usize = 32;
/// Replies taken from a session's socket per call: smaller, since sessions
/// are many and each reply batch holds its buffers only while in use.
const REPLY_BATCH: usize = 8;

struct Session {
    backend: Arc<UdpSocket>,
    /// The socket's share of the descriptor budget, given back when the
    /// last of the session and its reply task lets go (with the socket).
    _held: Arc<budget::Held>,
    last: Instant,
    /// Its backend's counters, and their `cuts` when it opened: a session
    /// whose backend was taken out since (down or disabled) is over, and
    /// its client's next datagram opens a new one on a live backend, as
    /// XDP re-hashes such a flow.
    stats: Arc<BackendStats>,
    cuts: u64,
}

impl Session {
    fn cut(&self) -> bool {
        self.stats.cuts.load(Relaxed) != self.cuts
    }
}

type Sessions = Arc<Mutex<HashMap<SocketAddr, Session>>>;

/// Reply buffers, lent to a session's reply task for one batch at a time,
/// so idle sessions hold none.
type Pool = Arc<Mutex<Vec<RecvBatch>>>;

/// Serves `sock` (bound to the VIP) until `shutdown` completes.
pub async fn serve(sock: UdpSocket, shared: Arc<Shared>, shutdown: impl Future<Output = ()>) {
    let sock = Arc::new(sock);
    let sessions: Sessions = Arc::default();
    let pool: Pool = Arc::default();
    let idle = shared.limits.udp_idle_timeout;
    let mut batch = RecvBatch::new(BATCH);
    let mut reap = tokio::time::interval(idle.min(Duration::from_secs(1)));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => {
                // The reply tasks see their sessions gone within an idle
                // period, and end, closing their sockets.
                lock(&sessions).clear();
                return;
            }
            _ = reap.tick() => {
                let now = Instant::now();
                lock(&sessions).retain(|_, s| now - s.last < idle);
                continue;
            }
            ready = sock.readable() => {
                if let Err(e) = ready {
                    tracing::debug!(vip = %shared.vip, error = %e, "UDP socket failed");
                    continue;
                }
            }
        }
        match sock.try_io(Interest::READABLE, || batch.recv(sock.as_fd())) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                tracing::debug!(vip = %shared.vip, error = %e, "UDP receive failed");
                continue;
            }
        }
        forward(&batch, &sock, &shared, &sessions, &pool).await;
    }
}

/// Sends each received datagram on its client's session (opening those that
/// are new), one sendmmsg per session.
async fn forward(
    batch: &RecvBatch,
    sock: &Arc<UdpSocket>,
    shared: &Arc<Shared>,
    sessions: &Sessions,
    pool: &Pool,
) {
    let mut groups: Vec<(SocketAddr, Vec<&[u8]>)> = Vec::new();
    for i in 0..batch.len() {
        let Some((data, Some(client))) = batch.get(i) else { continue };
        match groups.iter_mut().find(|(c, _)| *c == client) {
            Some((_, g)) => g.push(data),
            None => groups.push((client, vec![data])),
        }
    }
    for (client, datagrams) in groups {
        // Every datagram, as the datapath checks every packet: a source a
        // reload denies loses its sessions too.
        if !shared.view().sources.admits(client.ip()) {
            shared.stats.acl_denied.fetch_add(datagrams.len() as u64, Relaxed);
            continue;
        }
        let existing = {
            let mut open = lock(sessions);
            match open.get_mut(&client) {
                Some(s) if s.cut() => {
                    open.remove(&client);
                    None
                }
                Some(s) => {
                    s.last = Instant::now();
                    Some(Arc::clone(&s.backend))
                }
                None => None,
            }
        };
        let backend = match existing {
            Some(b) => b,
            None => match open(client, sock, shared, sessions, pool).await {
                Some(b) => b,
                // Counted where it failed: at the limit, or no backend.
                None => continue,
            },
        };
        let mut rest = datagrams.as_slice();
        while !rest.is_empty() {
            match backend
                .async_io(Interest::WRITABLE, || mmsg::send(backend.as_fd(), rest, None))
                .await
            {
                Ok(n) => {
                    let bytes: usize = rest.iter().take(n).map(|d| d.len()).sum();
                    shared.stats.bytes_up.fetch_add(bytes as u64, Relaxed);
                    rest = rest.get(n.max(1)..).unwrap_or_default();
                }
                // ICMP errors from the backend surface here and on receive;
                // the datagram is lost, as it would be on the wire.
                Err(_) => rest = rest.get(1..).unwrap_or_default(),
            }
        }
    }
}

/// A new session: its backend socket, and a task relaying replies back.
async fn open(
    client: SocketAddr,
    sock: &Arc<UdpSocket>,
    shared: &Arc<Shared>,
    sessions: &Sessions,
    pool: &Pool,
) -> Option<Arc<UdpSocket>> {
    // Sessions are bounded like TCP connections: a flood of new source
    // addresses must not take every descriptor.
    if lock(sessions).len() >= shared.limits.max_connections as usize {
        shared.stats.refused_at_limit.fetch_add(1, Relaxed);
        return None;
    }
    if !shared.view().sources.within_limit(client.ip(), &shared.buckets) {
        shared.stats.rate_limited.fetch_add(1, Relaxed);
        return None;
    }
    let Some((id, target)) = shared.view().candidates(client, shared.vip, PROTO_UDP, 1).pop()
    else {
        shared.stats.no_backend.fetch_add(1, Relaxed);
        return None;
    };
    // The session's socket comes out of the descriptor budget: at the
    // budget, the datagram is refused like one over `max_connections`.
    let Some(held) = budget::take(1) else {
        shared.stats.refused_at_limit.fetch_add(1, Relaxed);
        return None;
    };
    let bind: SocketAddr =
        if target.addr.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let backend = match UdpSocket::bind(bind).await {
        Ok(s) => Arc::new(s),
        Err(e) => {
            // Out of descriptors system-wide, say: the datagram is lost,
            // counted as a refusal at a limit when the shortage is ours.
            let counter = if crate::shortage::ours(&e) {
                &shared.stats.refused_at_limit
            } else {
                &shared.stats.connect_failures
            };
            counter.fetch_add(1, Relaxed);
            tracing::debug!(vip = %shared.vip, error = %e, "UDP session socket failed");
            return None;
        }
    };
    if backend.connect(target.addr).await.is_err() {
        shared.stats.connect_failures.fetch_add(1, Relaxed);
        return None;
    }
    let held = Arc::new(held);
    let session = Session {
        backend: Arc::clone(&backend),
        _held: Arc::clone(&held),
        last: Instant::now(),
        stats: Arc::clone(&target.stats),
        cuts: target.stats.cuts.load(Relaxed),
    };
    lock(sessions).insert(client, session);
    shared.stats.relayed.fetch_add(1, Relaxed);
    let open = OpenGuard::new(&target.stats);
    let replies = Replies {
        client,
        id,
        from: Arc::clone(&backend),
        to: Arc::clone(sock),
        shared: Arc::clone(shared),
        sessions: Arc::clone(sessions),
        pool: Arc::clone(pool),
        stats: target.stats,
        _open: open,
        _held: held,
    };
    tokio::spawn(replies.run());
    Some(backend)
}

/// One session's way back: backend socket -> VIP socket -> client.
struct Replies {
    client: SocketAddr,
    id: u32,
    from: Arc<UdpSocket>,
    to: Arc<UdpSocket>,
    shared: Arc<Shared>,
    sessions: Sessions,
    pool: Pool,
    stats: Arc<BackendStats>,
    /// The session counts as open until its reply task ends.
    _open: OpenGuard,
    /// The session socket's share of the descriptor budget.
    _held: Arc<budget::Held>,
}

impl Replies {
    /// Ends once the session is reaped (checked at least every idle period)
    /// or the backend socket fails; then the session is forgotten, so its
    /// client's next datagram opens a new one rather than going to a
    /// socket whose replies no one relays.
    async fn run(self) {
        self.relay_until_over().await;
        let mut sessions = lock(&self.sessions);
        if sessions.get(&self.client).is_some_and(|s| Arc::ptr_eq(&s.backend, &self.from)) {
            sessions.remove(&self.client);
        }
    }

    async fn relay_until_over(&self) {
        let idle = self.shared.limits.udp_idle_timeout;
        loop {
            // ERROR too: an ICMP port unreachable leaves the socket with a
            // pending error and no datagram, which epoll reports as EPOLLERR
            // alone, never as readable.
            let ready = match tokio::time::timeout(
                idle,
                self.from.ready(Interest::READABLE | Interest::ERROR),
            )
            .await
            {
                Ok(Ok(ready)) => ready,
                Ok(Err(_)) => return,
                Err(_) if self.alive() => continue,
                Err(_) => return,
            };
            let result = if ready.is_readable() {
                self.relay_replies().await
            } else {
                // Taken with SO_ERROR, which clears it. (try_io takes one
                // interest at a time: given two it sees no readiness.)
                let taken = self.from.try_io(Interest::ERROR, || {
                    self.from.take_error()?.map_or(Err(io::ErrorKind::WouldBlock.into()), Err)
                });
                match taken {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
                    other => other,
                }
            };
            match result {
                Ok(()) if self.touch() => {}
                Ok(()) => return,
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    // ICMP port unreachable: the backend's port is closed,
                    // the same signal as a TCP reset to a SYN.
                    self.shared.unreachable(self.id);
                }
                Err(_) => return,
            }
        }
    }

    /// Sends back what the backend socket has (nothing if it has nothing).
    async fn relay_replies(&self) -> io::Result<()> {
        let mut batch = lock(&self.pool).pop().unwrap_or_else(|| RecvBatch::new(REPLY_BATCH));
        let got = self.from.try_io(Interest::READABLE, || batch.recv(self.from.as_fd()));
        let result = match got {
            Ok(_) => self.send_back(&batch).await,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e),
        };
        lock(&self.pool).push(batch);
        result
    }

    async fn send_back(&self, batch: &RecvBatch) -> io::Result<()> {
        let datagrams: Vec<&[u8]> =
            (0..batch.len()).filter_map(|i| Some(batch.get(i)?.0)).collect();
        let mut rest = datagrams.as_slice();
        while !rest.is_empty() {
            let n = self
                .to
                .async_io(Interest::WRITABLE, || {
                    mmsg::send(self.to.as_fd(), rest, Some(self.client))
                })
                .await
                .unwrap_or(1);
            let bytes: u64 = rest.iter().take(n).map(|d| d.len() as u64).sum();
            self.shared.stats.bytes_down.fetch_add(bytes, Relaxed);
            self.stats.bytes.fetch_add(bytes, Relaxed);
            rest = rest.get(n.max(1)..).unwrap_or_default();
        }
        Ok(())
    }

    /// Whether this session is still its client's (not reaped, not
    /// replaced by a new one after a cut).
    fn alive(&self) -> bool {
        lock(&self.sessions).get(&self.client).is_some_and(|s| Arc::ptr_eq(&s.backend, &self.from))
    }

    /// Marks the session used; false once it was reaped or replaced.
    fn touch(&self) -> bool {
        match lock(&self.sessions).get_mut(&self.client) {
            Some(s) if Arc::ptr_eq(&s.backend, &self.from) => {
                s.last = Instant::now();
                true
            }
            _ => false,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::Splice,
        splice::tcp::{Backend, View},
    };

    /// A VIP socket on the loopback serving `backend` (id 1) with
    /// `max_connections` sessions, reporting passive signals to `events`.
    async fn serving(
        backend: SocketAddr,
        max_connections: u32,
        events: Option<tokio::sync::mpsc::UnboundedSender<lb_common::abi::PassiveEvent>>,
    ) -> (SocketAddr, Arc<Shared>) {
        let vip_sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let vip = vip_sock.local_addr().unwrap();
        let view = View {
            table: vec![1; 7],
            owners: 1,
            backends: HashMap::from([(1, Backend { addr: backend, stats: Arc::default() })]),
            ..View::default()
        };
        let limits = Splice { max_connections, ..Splice::default() };
        let shared = Arc::new(Shared::new(vip, limits, Arc::default(), events));
        *shared.view.write().unwrap() = view;
        tokio::spawn(serve(vip_sock, Arc::clone(&shared), std::future::pending()));
        (vip, shared)
    }

    #[test]
    fn sessions_are_bounded_like_connections() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            // A backend echoing every datagram.
            let echo = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let backend = echo.local_addr().unwrap();
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                while let Ok((n, from)) = echo.recv_from(&mut buf).await {
                    let _ = echo.send_to(&buf[..n], from).await;
                }
            });
            let (vip, shared) = serving(backend, 2, None).await;
            let mut answered = 0;
            for _ in 0..3 {
                let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
                c.send_to(b"hi", vip).await.unwrap();
                let mut buf = [0u8; 8];
                let got = tokio::time::timeout(Duration::from_millis(300), c.recv_from(&mut buf));
                if let Ok(Ok((n, from))) = got.await {
                    assert_eq!((&buf[..n], from), (&b"hi"[..], vip), "echoed, from the VIP");
                    answered += 1;
                }
            }
            assert_eq!(answered, 2, "the third client is over the limit");
            assert_eq!(shared.stats.refused_at_limit.load(Relaxed), 1);
            assert_eq!(shared.stats.relayed.load(Relaxed), 2);
        });
    }

    /// A backend answering every datagram with `name`.
    async fn named(name: &'static [u8]) -> SocketAddr {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            while let Ok((_, from)) = sock.recv_from(&mut buf).await {
                let _ = sock.send_to(name, from).await;
            }
        });
        addr
    }

    #[test]
    fn a_session_whose_backend_is_taken_out_moves_to_a_live_one() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let (one, two) = (named(b"one").await, named(b"two").await);
            let (vip, shared) = serving(one, 4, None).await;
            let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let ask = || async {
                c.send_to(b"hi", vip).await.unwrap();
                let mut buf = [0u8; 8];
                let got = tokio::time::timeout(Duration::from_secs(2), c.recv_from(&mut buf));
                let (n, _) = got.await.expect("an answer").unwrap();
                buf[..n].to_vec()
            };
            assert_eq!(ask().await, b"one");
            // Backend 1 disabled: the table gives every flow to backend 2,
            // and backend 1 is cut, as the forwarder does.
            let cut = {
                let mut view = shared.view.write().unwrap();
                view.table = vec![2; 7];
                view.backends.insert(2, Backend { addr: two, stats: Arc::default() });
                Arc::clone(&view.backends[&1].stats)
            };
            cut.cut_connections();
            assert_eq!(ask().await, b"two", "the session moved to the live backend");
            assert_eq!(ask().await, b"two", "and stays there");
        });
    }

    #[test]
    fn a_port_unreachable_from_the_backend_is_reported() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            // A port nothing listens on: the loopback answers with ICMP port
            // unreachable, which leaves the session socket with an error and
            // no datagram.
            let closed = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let backend = closed.local_addr().unwrap();
            drop(closed);
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let (vip, _shared) = serving(backend, 4, Some(tx)).await;
            let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            c.send_to(b"hi", vip).await.unwrap();
            let event = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await;
            let event = event.expect("reported within 2 s").expect("an event");
            assert_eq!((event.backend_id, event.kind), (1, lb_common::abi::EVENT_UNREACHABLE));
        });
    }
}
