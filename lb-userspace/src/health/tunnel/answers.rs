//! One packet socket per address family for every probe through the
//! tunnel, and the task that hands each answer to the probe waiting on its
//! port.
//!
//! One socket, not one per probe: closing a packet socket waits for an RCU
//! grace period (`synchronize_net` in `packet_release`), milliseconds in
//! which the closing thread, a runtime worker, would stand still, thousands
//! of times a second with many backends; and every open packet socket runs
//! its filter on every IP packet the host receives. Probes take their
//! ports from [`PORTS`], outside Linux's default ephemeral range, so the
//! one filter passes only their answers.

use std::{
    collections::HashMap,
    io::{self, Read},
    ops::RangeInclusive,
    sync::{Arc, Mutex},
};

use lb_common::parse::headers::{ETH_P_IP, ETH_P_IPV6};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::{io::unix::AsyncFd, sync::mpsc, task::JoinHandle};

use super::packet::answer_filter;

/// Ports the probes' answers come to: above `net.ipv4.ip_local_port_range`'s
/// default end (60999), so the host's own connections rarely hold them
/// (a probe takes the next free one).
pub const PORTS: RangeInclusive<u16> = 61000..=65535;

/// Which answers a probe waits for: IPv6 or not, the IP protocol, and the
/// port they come to. Probes hold their ports with sockets bound to the
/// wildcard address, so no two share one of a protocol and family.
pub type Key = (bool, u8, u16);

/// The probes waiting, by their [`Key`].
type Waiting = Mutex<HashMap<Key, mpsc::UnboundedSender<Vec<u8>>>>;

/// The sockets, their readers, and the probes waiting on them.
#[derive(Debug)]
pub struct Answers {
    waiting: Arc<Waiting>,
    readers: Vec<JoinHandle<()>>,
}

impl Drop for Answers {
    fn drop(&mut self) {
        for r in &self.readers {
            r.abort();
        }
    }
}

/// A probe's place in [`Answers`]: its answers arrive on `rx` until it is
/// dropped.
#[derive(Debug)]
pub struct Registration {
    key: Key,
    waiting: Arc<Waiting>,
    /// The IP packets to the probe's port (from any source: the probe
    /// tells its answer apart).
    pub rx: mpsc::UnboundedReceiver<Vec<u8>>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock(&self.waiting).remove(&self.key);
    }
}

fn lock(w: &Waiting) -> std::sync::MutexGuard<'_, HashMap<Key, mpsc::UnboundedSender<Vec<u8>>>> {
    w.lock().unwrap_or_else(|p| p.into_inner())
}

impl Answers {
    /// Opens the sockets (IPv4 if `v4`, IPv6 if `v6`) in the calling
    /// thread's network namespace and starts their readers on the current
    /// tokio runtime.
    pub fn start(v4: bool, v6: bool) -> io::Result<Self> {
        let waiting: Arc<Waiting> = Arc::default();
        let mut readers = Vec::new();
        for (on, ethertype) in [(v4, ETH_P_IP), (v6, ETH_P_IPV6)] {
            if on {
                let socket = open(ethertype)?;
                readers.push(tokio::spawn(read(socket, Arc::clone(&waiting))));
            }
        }
        Ok(Self { waiting, readers })
    }

    /// Waits for the packets of `key` (one probe at a time per key: the
    /// probe holds a socket bound to its port).
    pub fn register(&self, key: Key) -> Registration {
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.waiting).insert(key, tx);
        Registration { key, waiting: Arc::clone(&self.waiting), rx }
    }
}

/// A packet socket on every interface that receives only TCP and UDP
/// packets of the family to [`PORTS`].
fn open(ethertype: u16) -> io::Result<AsyncFd<Socket>> {
    // Bound to the family's EtherType at creation, the socket receives
    // from then on; packets taken before the filter is in place are read
    // and thrown away (no probe is waiting yet).
    let proto = Protocol::from(i32::from(ethertype.to_be()));
    let s = Socket::new(Domain::PACKET, Type::DGRAM, Some(proto))?;
    s.set_nonblocking(true)?;
    s.attach_filter(&answer_filter(ethertype == ETH_P_IPV6, *PORTS.start()))?;
    let mut buf = [0u8; 64];
    while (&s).read(&mut buf).is_ok() {}
    // SAFETY: the socket owns its fd, open and unchanged while it lives, and
    // the AsyncFd owns the socket.
    unsafe { AsyncFd::register_with_interest(s, tokio::io::Interest::READABLE) }
        .map_err(|e| io::Error::other(e.to_string()))
}

/// Hands each packet to the probe waiting on its destination port.
async fn read(socket: AsyncFd<Socket>, waiting: Arc<Waiting>) {
    let mut buf = vec![0u8; 2048];
    loop {
        let Ok(mut ready) = socket.readable().await else { return };
        match ready.try_io(|s| s.get_ref().read(&mut buf)) {
            Ok(Ok(n)) => {
                let packet = buf.get(..n).unwrap_or_default();
                if let Some(key) = key_of(packet)
                    && let Some(tx) = lock(&waiting).get(&key)
                {
                    let _ = tx.send(packet.to_vec());
                }
            }
            Ok(Err(e)) => {
                // Not fatal: stopping here would time out every tunnel
                // probe from now on, each blamed on its backend. A pause,
                // so an error that persists is not a busy loop.
                tracing::warn!("health probes through the tunnel: reading answers failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(_would_block) => {}
        }
    }
}

/// The [`Key`] of an IP packet: its family, protocol and TCP or UDP
/// destination port (IPv4 with any header length; IPv6 without extension
/// headers, as the filter passes them).
fn key_of(ip: &[u8]) -> Option<Key> {
    let (v6, proto, l4) = match ip.first()? >> 4 {
        4 => (false, *ip.get(9)?, usize::from(ip.first()? & 0x0f) * 4),
        6 => (true, *ip.get(6)?, 40),
        _ => return None,
    };
    let p = ip.get(l4 + 2..l4 + 4)?;
    Some((v6, proto, u16::from_be_bytes([p[0], p[1]])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_read_in_both_families() {
        let mut v4 = vec![0x46u8; 24];
        v4[9] = 6;
        v4.extend_from_slice(&[0, 80, 0xee, 0x48]);
        assert_eq!(key_of(&v4), Some((false, 6, 61000)));
        let mut v6 = vec![0x60u8; 40];
        v6[6] = 17;
        v6.extend_from_slice(&[0, 80, 0xff, 0xff]);
        assert_eq!(key_of(&v6), Some((true, 17, 65535)));
        assert_eq!(key_of(&[0x45; 10]), None);
        assert_eq!(key_of(&[]), None);
    }
}
