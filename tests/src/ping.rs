//! ICMP echo from the calling thread's namespace through a ping socket
//! (`SOCK_DGRAM`, `IPPROTO_ICMP`/`ICMPV6`: the kernel fills in the id and
//! checksums and hands back only the replies to this socket), counting
//! every reply, duplicates included, as `ping` would.

use std::{
    collections::BTreeMap,
    mem::MaybeUninit,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use socket2::{Domain, Protocol, Socket, Type};

use crate::netns::NetNs;

/// What one run of echoes got back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pinged {
    /// Echo requests sent.
    pub sent: u16,
    /// Echo replies received per sequence number (more than 1 is a
    /// duplicate: a loop).
    pub replies: BTreeMap<u16, usize>,
}

impl Pinged {
    /// Requests that got exactly one reply.
    pub fn answered_once(&self) -> usize {
        self.replies.values().filter(|&&n| n == 1).count()
    }

    /// Replies in all.
    pub fn total(&self) -> usize {
        self.replies.values().sum()
    }
}

/// Lets root open ping sockets in `ns` (`net.ipv4.ping_group_range`, which
/// also governs ICMPv6 ping sockets; the default range admits no group).
pub fn allow(ns: &NetNs) {
    ns.sysctl("net.ipv4.ping_group_range", "0 2147483647");
}

/// Sends `count` echo requests to `to`, `gap` apart, then listens `linger`
/// more for late replies and duplicates. Run inside the sending namespace
/// (after [`allow`]).
pub fn ping(to: IpAddr, count: u16, gap: Duration, linger: Duration) -> Pinged {
    let (domain, proto, request, reply) = match to {
        IpAddr::V4(_) => (Domain::IPV4, Protocol::ICMPV4, 8u8, 0u8),
        IpAddr::V6(_) => (Domain::IPV6, Protocol::ICMPV6, 128, 129),
    };
    let sock = Socket::new(domain, Type::DGRAM, Some(proto))
        .unwrap_or_else(|e| panic!("ping socket for {to}: {e} (ping::allow the namespace first)"));
    sock.connect(&SocketAddr::new(to, 0).into()).expect("connect the ping socket");
    let mut replies = BTreeMap::new();
    let read_until = |end: Instant, replies: &mut BTreeMap<u16, usize>| {
        while let Some(left) = end.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
            sock.set_read_timeout(Some(left)).expect("read timeout");
            let mut buf = [MaybeUninit::<u8>::uninit(); 512];
            let Ok(n) = sock.recv(&mut buf) else { continue };
            // SAFETY: recv initialised the first n bytes.
            let got: Vec<u8> = buf[..n].iter().map(|b| unsafe { b.assume_init() }).collect();
            if got.len() >= 8 && got[0] == reply {
                *replies.entry(u16::from_be_bytes([got[6], got[7]])).or_insert(0) += 1;
            }
        }
    };
    for seq in 1..=count {
        let mut msg = vec![request, 0, 0, 0, 0, 0];
        msg.extend_from_slice(&seq.to_be_bytes());
        msg.extend_from_slice(b"lb vip route ping");
        sock.send(&msg).expect("send an echo request");
        read_until(Instant::now() + gap, &mut replies);
    }
    read_until(Instant::now() + linger, &mut replies);
    Pinged { sent: count, replies }
}
