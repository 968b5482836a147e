//! ICMP as a test sees it: echo (a ping without `ping`, which the machine
//! lacks), the errors a namespace receives, read off a raw socket with the
//! header they quote, and the path-MTU socket options of a UDP socket.
//!
//! A raw ICMP socket receives a copy of every ICMP message its namespace
//! gets, whether or not a socket of the quoted flow takes it: so a test
//! sees errors the kernel ignored (their quote matched nothing) too.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use socket2::{Domain, Protocol, Socket, Type};

use crate::netns::NetNs;

/// ICMPv4 destination unreachable.
pub const V4_UNREACHABLE: u8 = 3;
/// Its code "fragmentation needed and DF set".
pub const V4_FRAG_NEEDED: u8 = 4;
/// Its code "port unreachable".
pub const V4_PORT_UNREACHABLE: u8 = 3;
/// ICMPv6 destination unreachable.
pub const V6_UNREACHABLE: u8 = 1;
/// Its code "port unreachable".
pub const V6_PORT_UNREACHABLE: u8 = 4;
/// ICMPv6 packet too big.
pub const V6_TOO_BIG: u8 = 2;

/// An ICMP error and the header it quotes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IcmpError {
    /// Who sent it (the outer source).
    pub from: IpAddr,
    /// ICMP type.
    pub kind: u8,
    /// ICMP code.
    pub code: u8,
    /// The next-hop MTU of a "fragmentation needed" or "packet too big"
    /// (0 otherwise).
    pub mtu: u32,
    /// Source of the quoted packet.
    pub inner_src: IpAddr,
    /// Destination of the quoted packet.
    pub inner_dst: IpAddr,
    /// The quoted packet's protocol (TCP 6, UDP 17).
    pub inner_proto: u8,
    /// The quoted ports (source, destination), if the quote holds them.
    pub inner_ports: (u16, u16),
}

impl IcmpError {
    /// Whether it says "too big": IPv4 fragmentation needed or IPv6 packet
    /// too big.
    pub fn too_big(&self) -> bool {
        match self.from {
            IpAddr::V4(_) => self.kind == V4_UNREACHABLE && self.code == V4_FRAG_NEEDED,
            IpAddr::V6(_) => self.kind == V6_TOO_BIG,
        }
    }

    /// Whether it says "port unreachable".
    pub fn port_unreachable(&self) -> bool {
        match self.from {
            IpAddr::V4(_) => self.kind == V4_UNREACHABLE && self.code == V4_PORT_UNREACHABLE,
            IpAddr::V6(_) => self.kind == V6_UNREACHABLE && self.code == V6_PORT_UNREACHABLE,
        }
    }

    /// Whether `addr` appears anywhere in it: as its sender or in its quote.
    pub fn mentions(&self, addr: IpAddr) -> bool {
        [self.from, self.inner_src, self.inner_dst].contains(&addr)
    }
}

/// A raw ICMP (IPv4) or ICMPv6 socket inside a namespace.
#[derive(Debug)]
pub struct Icmp {
    // A raw socket read and written with the datagram calls std has.
    sock: UdpSocket,
    v6: bool,
}

impl Icmp {
    /// A raw socket of the family of `v6` in `ns`; it sees ICMP from now on.
    pub fn open(ns: &NetNs, v6: bool) -> Self {
        let _inside = ns.enter();
        let (domain, proto) =
            if v6 { (Domain::IPV6, Protocol::ICMPV6) } else { (Domain::IPV4, Protocol::ICMPV4) };
        let sock = Socket::new(domain, Type::RAW, Some(proto)).expect("raw ICMP socket");
        Self { sock: sock.into(), v6 }
    }

    /// The next ICMP message before `deadline`: its sender and the ICMP
    /// message (the IPv4 header stripped).
    fn next(&self, deadline: Instant) -> Option<(IpAddr, Vec<u8>)> {
        let mut buf = [0u8; 4096];
        loop {
            let wait = deadline.checked_duration_since(Instant::now())?;
            self.sock.set_read_timeout(Some(wait.max(Duration::from_millis(1)))).ok()?;
            let Ok((n, from)) = self.sock.recv_from(&mut buf) else {
                if Instant::now() >= deadline {
                    return None;
                }
                continue;
            };
            let msg = &buf[..n];
            if self.v6 {
                return Some((from.ip(), msg.to_vec()));
            }
            // IPv4 raw sockets deliver the IP header too.
            let ihl = usize::from(msg.first()? & 0x0f) * 4;
            if msg.len() > ihl {
                return Some((from.ip(), msg[ihl..].to_vec()));
            }
        }
    }

    /// The ICMP errors received within `limit`, returning early once `done`
    /// holds of those seen so far.
    pub fn errors(&self, limit: Duration, done: impl Fn(&[IcmpError]) -> bool) -> Vec<IcmpError> {
        let deadline = Instant::now() + limit;
        let mut seen = Vec::new();
        while !done(&seen) {
            let Some((from, msg)) = self.next(deadline) else { break };
            seen.extend(parse_error(from, &msg));
        }
        seen
    }

    /// Sends `count` echo requests to `target`, one at a time, each waiting
    /// `each` for its reply; how many were answered by `target` itself.
    pub fn ping(&self, target: IpAddr, count: u16, each: Duration) -> u16 {
        let id = std::process::id() as u16;
        let (request, reply) = if self.v6 { (128, 129) } else { (8, 0) };
        let mut answered = 0;
        for seq in 0..count {
            let mut msg = vec![request, 0, 0, 0];
            msg.extend(id.to_be_bytes());
            msg.extend(seq.to_be_bytes());
            msg.extend(b"lbt ping");
            // The kernel fills in ICMPv6 checksums itself (it covers a
            // pseudo-header the socket does not write).
            if !self.v6 {
                let sum = crate::packet::internet_checksum(&[&msg]);
                msg[2..4].copy_from_slice(&sum.to_be_bytes());
            }
            self.sock.send_to(&msg, SocketAddr::new(target, 0)).expect("send an echo request");
            let deadline = Instant::now() + each;
            while let Some((from, got)) = self.next(deadline) {
                let ours = got.len() >= 8
                    && got[0] == reply
                    && got[4..6] == id.to_be_bytes()
                    && got[6..8] == seq.to_be_bytes();
                if ours && from == target {
                    answered += 1;
                    break;
                }
            }
        }
        answered
    }
}

/// An ICMP error message (from its type on) sent by `from`; `None` for
/// other ICMP (echo, neighbour discovery) or a quote too short to read.
pub fn parse_error(from: IpAddr, msg: &[u8]) -> Option<IcmpError> {
    let (kind, code) = (*msg.first()?, *msg.get(1)?);
    let word = u32::from_be_bytes(msg.get(4..8)?.try_into().ok()?);
    let inner = msg.get(8..)?;
    let (mtu, inner_src, inner_dst, inner_proto, l4) = if from.is_ipv4() {
        if ![3, 11, 12].contains(&kind) {
            return None;
        }
        let ihl = usize::from(inner.first()? & 0x0f) * 4;
        let addr = |at: usize| -> Option<IpAddr> {
            let b: [u8; 4] = inner.get(at..at + 4)?.try_into().ok()?;
            Some(Ipv4Addr::from(b).into())
        };
        let mtu = if kind == V4_UNREACHABLE && code == V4_FRAG_NEEDED { word & 0xffff } else { 0 };
        (mtu, addr(12)?, addr(16)?, *inner.get(9)?, inner.get(ihl..))
    } else {
        if !(1..=4).contains(&kind) {
            return None;
        }
        let addr = |at: usize| -> Option<IpAddr> {
            let b: [u8; 16] = inner.get(at..at + 16)?.try_into().ok()?;
            Some(Ipv6Addr::from(b).into())
        };
        let mtu = if kind == V6_TOO_BIG { word } else { 0 };
        (mtu, addr(8)?, addr(24)?, *inner.get(6)?, inner.get(40..))
    };
    let port =
        |at: usize| l4.and_then(|l| l.get(at..at + 2)).map(|b| u16::from_be_bytes([b[0], b[1]]));
    let inner_ports = (port(0).unwrap_or(0), port(2).unwrap_or(0));
    Some(IcmpError { from, kind, code, mtu, inner_src, inner_dst, inner_proto, inner_ports })
}

/// Sets IP_PMTUDISC_DO (IPv4) or IPV6_PMTUDISC_DO (IPv6) on `sock`:
/// datagrams go out unfragmented, with DF in IPv4, and one larger than the
/// path MTU the socket knows fails with EMSGSIZE.
pub fn set_pmtudisc_do(sock: &UdpSocket) {
    use nix::libc;
    let v6 = sock.local_addr().expect("local address").is_ipv6();
    let (level, name, value) = if v6 {
        (libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER, libc::IPV6_PMTUDISC_DO)
    } else {
        (libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, libc::IP_PMTUDISC_DO)
    };
    // SAFETY: a valid socket, and a c_int option value of the right size.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "setting PMTUDISC_DO: {}", std::io::Error::last_os_error());
}

/// The path MTU a connected UDP socket knows (IP_MTU / IPV6_MTU).
pub fn path_mtu(sock: &UdpSocket) -> std::io::Result<u32> {
    use nix::libc;
    let v6 = sock.local_addr()?.is_ipv6();
    let (level, name) =
        if v6 { (libc::IPPROTO_IPV6, libc::IPV6_MTU) } else { (libc::IPPROTO_IP, libc::IP_MTU) };
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: a valid socket, and room for the c_int the kernel writes.
    let r = unsafe {
        libc::getsockopt(sock.as_raw_fd(), level, name, (&raw mut value).cast(), &raw mut len)
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(value as u32)
}
