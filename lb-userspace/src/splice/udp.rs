//! A UDP service in splice mode: one session per client address, each with
//! its own socket connected to the backend the XDP datapath would pick for
//! that flow. Replies go back to the client from the VIP socket, so the
//! client only ever sees the VIP. Sessions idle for `idle` are dropped.

use std::{
    collections::HashMap,
    future::Future,
    net::SocketAddr,
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use lb_common::abi::PROTO_UDP;
use tokio::net::UdpSocket;

use super::{
    pick,
    tcp::{Stats, View},
};

/// Largest datagram relayed.
const MAX_DATAGRAM: usize = 65536;

struct Session {
    backend: Arc<UdpSocket>,
    last: Instant,
}

/// Serves `sock` (bound to the VIP) until `shutdown` completes.
pub async fn serve(
    sock: UdpSocket,
    vip: SocketAddr,
    view: Arc<RwLock<View>>,
    idle: Duration,
    stats: Arc<Stats>,
    shutdown: impl Future<Output = ()>,
) {
    let sock = Arc::new(sock);
    let sessions: Arc<Mutex<HashMap<SocketAddr, Session>>> = Arc::default();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut reap = tokio::time::interval(idle.min(Duration::from_secs(1)));
    tokio::pin!(shutdown);
    loop {
        let (n, client) = tokio::select! {
            _ = &mut shutdown => return,
            _ = reap.tick() => {
                let now = Instant::now();
                sessions.lock().unwrap_or_else(|p| p.into_inner()).retain(|_, s| now - s.last < idle);
                continue;
            }
            r = sock.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(%vip, error = %e, "UDP receive failed");
                    continue;
                }
            },
        };
        let backend = {
            let mut table = sessions.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(s) = table.get_mut(&client) {
                s.last = Instant::now();
                Some(Arc::clone(&s.backend))
            } else {
                None
            }
        };
        let backend = match backend {
            Some(b) => b,
            None => match open(client, vip, &view, &sock, &sessions, &stats, idle).await {
                Some(b) => b,
                None => {
                    stats.no_backend.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    continue;
                }
            },
        };
        if backend.send(&buf[..n]).await.is_ok() {
            stats.bytes_up.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// A new session: its backend socket, and a task relaying replies back.
async fn open(
    client: SocketAddr,
    vip: SocketAddr,
    view: &RwLock<View>,
    sock: &Arc<UdpSocket>,
    sessions: &Arc<Mutex<HashMap<SocketAddr, Session>>>,
    stats: &Arc<Stats>,
    idle: Duration,
) -> Option<Arc<UdpSocket>> {
    let target = {
        let v = view.read().unwrap_or_else(|p| p.into_inner());
        let key = pick::flow_key(client, vip, PROTO_UDP);
        let id = *pick::candidates(&v.table, pick::hash(&key, v.client_affinity), 1).first()?;
        *v.backends.get(&id)?
    };
    let bind: SocketAddr =
        if target.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let backend = Arc::new(UdpSocket::bind(bind).await.ok()?);
    backend.connect(target).await.ok()?;
    sessions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(client, Session { backend: Arc::clone(&backend), last: Instant::now() });
    stats.relayed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (reply_from, to_client, stats2, sessions2) =
        (Arc::clone(&backend), Arc::clone(sock), Arc::clone(stats), Arc::clone(sessions));
    tokio::spawn(async move {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        // Ends once the session is reaped (checked at least every `idle`)
        // or the backend socket fails.
        loop {
            let n = match tokio::time::timeout(idle, reply_from.recv(&mut buf)).await {
                Ok(Ok(n)) => n,
                Ok(Err(_)) => return,
                Err(_) => {
                    if sessions2.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&client) {
                        continue;
                    }
                    return;
                }
            };
            if to_client.send_to(&buf[..n], client).await.is_ok() {
                stats2.bytes_down.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
            }
            match sessions2.lock().unwrap_or_else(|p| p.into_inner()).get_mut(&client) {
                Some(s) => s.last = Instant::now(),
                None => return,
            }
        }
    });
    Some(backend)
}
