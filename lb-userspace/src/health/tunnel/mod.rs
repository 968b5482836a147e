//! Health probes through the tunnel, for `dsr-ipip` services: the probe is
//! the packet a client would send to the VIP, wrapped for the backend as
//! the datapath wraps it. It only succeeds if the backend strips the tunnel
//! (`lb decap`), holds the VIP, and serves the service's port on it, so a
//! backend that answers on its own address but would drop the service's
//! traffic is taken out.
//!
//! The backend answers straight to this host, as it answers clients: from
//! the VIP (a UDP server bound to the wildcard address answers from its own
//! address instead, which is accepted too: the probe is about the tunnel
//! and the VIP, not the server's choice of source). Where the VIP is one of
//! this host's own addresses (the agent's VIP routes make it one), the
//! kernel drops an answer from it as a martian before any socket sees it.
//! So answers are read from a packet socket, which sees packets before
//! routing: one per family for all probes ([`answers`]), through a classic
//! BPF filter that lets only packets to the probes' ports be copied.

pub mod answers;
pub mod packet;

use std::{
    io,
    net::{IpAddr, SocketAddr, UdpSocket},
};

use lb_common::parse::{
    Parsed,
    headers::{ETH_P_IP, ETH_P_IPV6, TcpHdr},
    parse,
};
use nix::libc;
use socket2::{Domain, Protocol, Socket, Type};

use super::probe::ProbeError;
use crate::config::{HealthKind, Prefix};
use answers::Answers;
use packet::{Segment, wrapped};

/// Where a service's tunnel probes go, besides the backend.
#[derive(Debug, Clone, PartialEq)]
pub struct Tunnel {
    /// The service's VIP: the probe's destination inside the tunnel.
    pub vip: SocketAddr,
    /// The service's `tunnel_source`: the outer source, as the datapath's.
    pub source: Prefix,
}

/// What the backend answered, from the VIP.
#[derive(Debug, PartialEq)]
enum Answer {
    /// TCP: the SYN-ACK's acknowledgement number.
    Accepted(u32),
    /// TCP: an RST.
    Refused,
    /// UDP: the reply's payload.
    Reply(Vec<u8>),
}

/// Probes the backend at `backend` through the tunnel of `tunnel` once:
/// a SYN (kinds `tcp` and `http`; the HTTP exchange itself is the direct
/// probe's) or the `udp` kind's datagram, its answer read from `answers`.
/// Unbounded: the caller times it.
pub async fn probe(
    kind: &HealthKind,
    tunnel: &Tunnel,
    backend: SocketAddr,
    answers: &Answers,
) -> Result<(), ProbeError> {
    let tcp = !matches!(kind, HealthKind::Udp { .. });
    let local = local_address(backend)?;
    // A port of our own for the probe, held while it runs, so no other
    // probe and no connection of this host uses it meanwhile.
    // Dropped last (locals go in reverse): the port is freed only after
    // this probe's registration is gone, so a probe that takes it next
    // cannot have its registration removed by this one's.
    let (_reserved, port) = reserve(local.is_ipv6(), tcp).map_err(|e| match e.kind() {
        io::ErrorKind::AddrInUse => ProbeError::Busy(e.to_string()),
        _ => e.into(),
    })?;
    let from = SocketAddr::new(local, port);
    let proto = if tcp { lb_common::abi::PROTO_TCP } else { lb_common::abi::PROTO_UDP };
    let mut waiting = answers.register((local.is_ipv6(), proto, port));
    let send = |segment: Segment<'_>| -> io::Result<()> {
        let pkt = wrapped(from, tunnel.vip, backend.ip(), &tunnel.source, segment);
        let raw = Socket::new(
            Domain::for_address(backend),
            Type::RAW,
            Some(Protocol::from(libc::IPPROTO_RAW)),
        )?;
        raw.send_to(&pkt, &SocketAddr::new(backend.ip(), 0).into()).map(drop)
    };
    let isn = random_u32();
    match kind {
        HealthKind::Udp { send: payload, .. } => send(Segment::Udp(payload))?,
        _ => send(Segment::Tcp { flags: TcpHdr::SYN, seq: isn, ack: 0 })?,
    }
    // From the VIP's port: a UDP server bound to the wildcard address
    // answers from the backend's own address, but from that port still.
    let sources = [tunnel.vip, SocketAddr::new(backend.ip(), tunnel.vip.port())];
    let answer = loop {
        let Some(packet) = waiting.rx.recv().await else {
            return Err(ProbeError::Io(io::Error::other("the answers' reader stopped")));
        };
        if let Some(a) = classify(&packet, &sources, isn) {
            break a;
        }
    };
    match (answer, kind) {
        (Answer::Accepted(ack), _) => {
            // The backend holds a half-open connection: close it, so probes
            // cost it nothing after their answer.
            send(Segment::Tcp { flags: TcpHdr::RST, seq: ack, ack: 0 })?;
            Ok(())
        }
        (Answer::Refused, _) => Err(ProbeError::Refused),
        (Answer::Reply(got), HealthKind::Udp { expect: Some(want), .. }) if got != *want => {
            Err(ProbeError::Reply)
        }
        (Answer::Reply(_), _) => Ok(()),
    }
}

/// A socket bound to the wildcard address of the family and a free port
/// of [`answers::PORTS`] (TCP or UDP as the probe), starting at a random
/// one: bound to every address, so no other probe, whatever its source
/// address, and no connection of this host takes the port meanwhile; the
/// port.
fn reserve(v6: bool, tcp: bool) -> io::Result<(Socket, u16)> {
    reserve_in(answers::PORTS, v6, tcp)
}

/// [`reserve`] from `ports`; every one taken is an `AddrInUse` error.
fn reserve_in(
    ports: std::ops::RangeInclusive<u16>,
    v6: bool,
    tcp: bool,
) -> io::Result<(Socket, u16)> {
    let span = u32::from(ports.end() - ports.start()) + 1;
    let first = random_u32() % span;
    let ty = if tcp { Type::STREAM } else { Type::DGRAM };
    let any: IpAddr = if v6 { [0u16; 8].into() } else { [0u8; 4].into() };
    let mut last = io::Error::other("no port");
    for i in 0..span {
        let port = *ports.start() + ((first + i) % span) as u16;
        let addr = SocketAddr::new(any, port);
        let s = Socket::new(Domain::for_address(addr), ty, None)?;
        match s.bind(&addr.into()) {
            Ok(()) => return Ok((s, port)),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(last.kind(), format!("every port of {ports:?} is in use: {last}")))
}

/// This host's address towards `backend`, the one the backend answers:
/// the kernel's own choice for a datagram to it.
fn local_address(backend: SocketAddr) -> io::Result<IpAddr> {
    let any: SocketAddr =
        if backend.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let s = UdpSocket::bind(any)?;
    s.connect(backend)?;
    Ok(s.local_addr()?.ip())
}

/// What an IP packet from the packet socket says, if it answers the probe
/// whose first sequence number was `isn` from one of `sources` (address
/// and port: another port of the VIP is another service's, whose late
/// answer must not pass for this one's; a TCP answer acknowledging another
/// number is a stale answer to an earlier probe, and ignored).
fn classify(ip: &[u8], sources: &[SocketAddr], isn: u32) -> Option<Answer> {
    // The one parser reads frames: give the packet an Ethernet header.
    let ethertype: [u8; 2] = match ip.first()? >> 4 {
        4 => ETH_P_IP.to_be_bytes(),
        6 => ETH_P_IPV6.to_be_bytes(),
        _ => return None,
    };
    let mut frame = vec![0u8; 12];
    frame.extend_from_slice(&ethertype);
    frame.extend_from_slice(ip);
    let Ok(Parsed::L4(l4)) = parse(&frame[..]) else { return None };
    let src = SocketAddr::new(l4.key.src.to_ip(l4.key.family), u16::from_be(l4.key.src_port_be));
    if !sources.contains(&src) {
        return None;
    }
    let field = |at: usize| -> Option<u32> {
        let b = frame.get(l4.l4_off + at..l4.l4_off + at + 4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    if l4.key.proto == lb_common::abi::PROTO_UDP {
        // By the UDP length: a short frame may carry Ethernet padding.
        let len = frame.get(l4.l4_off + 4..l4.l4_off + 6)?;
        let end = l4.l4_off + usize::from(u16::from_be_bytes([len[0], len[1]]));
        return Some(Answer::Reply(frame.get(l4.l4_off + 8..end)?.to_vec()));
    }
    let ack = field(8)?;
    if ack != isn.wrapping_add(1) {
        return None;
    }
    if l4.tcp_flags & TcpHdr::RST != 0 {
        Some(Answer::Refused)
    } else if l4.tcp_flags & (TcpHdr::SYN | TcpHdr::ACK) == TcpHdr::SYN | TcpHdr::ACK {
        Some(Answer::Accepted(ack))
    } else {
        None
    }
}

/// A sequence number no one can guess from the last one (no dependency
/// for it: the standard library's hasher keys are random per process).
fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIP: &str = "10.0.0.10:80";
    const HERE: &str = "10.0.2.1:40000";

    /// The backend's answer to a probe from HERE, from `src`.
    fn answer(src: &str, segment: Segment<'_>) -> Vec<u8> {
        let src: SocketAddr = src.parse().unwrap();
        // The probe's own builder, addresses swapped; the outer header cut.
        let pkt =
            wrapped(src, HERE.parse().unwrap(), src.ip(), &"10.9.0.0/28".parse().unwrap(), segment);
        pkt[20..].to_vec()
    }

    fn sources() -> [SocketAddr; 2] {
        [VIP.parse().unwrap(), "10.0.2.2:80".parse().unwrap()]
    }

    #[test]
    fn probe_ports_are_held_on_every_address_until_none_is_left() {
        // A free port (the kernel's pick), then the same range again.
        let probe = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        let (held, got) = reserve_in(port..=port, false, true).unwrap();
        assert_eq!(got, port);
        // Held on the wildcard address: no other address can take it.
        assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_err());
        let err = reserve_in(port..=port, false, true).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
        // UDP is another port space.
        assert!(reserve_in(port..=port, false, false).is_ok());
        drop(held);
        assert!(reserve_in(port..=port, false, true).is_ok());
    }

    #[test]
    fn answers_are_told_apart() {
        let synack = |ack| Segment::Tcp { flags: TcpHdr::SYN | TcpHdr::ACK, seq: 9, ack };
        let s = sources();
        assert_eq!(classify(&answer(VIP, synack(8)), &s, 7), Some(Answer::Accepted(8)));
        let rst = Segment::Tcp { flags: TcpHdr::RST | TcpHdr::ACK, seq: 0, ack: 8 };
        assert_eq!(classify(&answer(VIP, rst), &s, 7), Some(Answer::Refused));
        // A stale answer to an earlier probe, or a stranger's, is not one.
        assert_eq!(classify(&answer(VIP, synack(5)), &s, 7), None);
        assert_eq!(classify(&answer("10.0.0.11:80", synack(8)), &s, 7), None);
        // UDP from the VIP or the backend's own address; padding cut.
        let mut padded = answer("10.0.2.2:80", Segment::Udp(b"pong"));
        padded.extend_from_slice(&[0; 14]);
        assert_eq!(classify(&padded, &s, 0), Some(Answer::Reply(b"pong".to_vec())));
        // A late answer from another port of the VIP (another service's).
        assert_eq!(classify(&answer("10.0.0.10:53", Segment::Udp(b"pong")), &s, 0), None);
        assert_eq!(classify(&answer("10.0.0.10:81", synack(8)), &s, 7), None);
        assert_eq!(classify(b"\x45garbage", &s, 0), None);
        assert_eq!(classify(&[], &s, 0), None);
    }
}
