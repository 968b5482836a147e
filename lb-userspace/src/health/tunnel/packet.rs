//! The bytes of a probe through the tunnel: the packet a client would send
//! to the VIP, wrapped as the datapath wraps it for the backend
//! ([`lb_common::encap`]), and the socket filter that picks the backend's
//! answer out of everything the host receives.

use std::net::{IpAddr, SocketAddr};

use lb_common::{
    abi::{Addr, FAMILY_V4, FlowKey, PROTO_TCP, PROTO_UDP, family_of},
    csum, encap,
    hash::flow_hash,
    iphdr,
    parse::headers::TcpHdr,
};
use nix::libc::sock_filter;

use crate::config::Prefix;

const TCP_HEADER: usize = 20;
const UDP_HEADER: usize = 8;
/// TTL / hop limit of the inner packet, as a client's would have.
const INNER_TTL: u8 = 64;

/// What the probe says to the VIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment<'a> {
    /// A TCP segment with these flags and numbers, no payload.
    Tcp {
        /// `TcpHdr::SYN`, `TcpHdr::RST`, ...
        flags: u8,
        /// Sequence number.
        seq: u32,
        /// Acknowledgement number (0 without ACK).
        ack: u32,
    },
    /// A UDP datagram.
    Udp(&'a [u8]),
}

/// The wrapped packet from `from` (this host) to `vip`, for the backend at
/// `backend`, the outer source taken from `tunnel_source` by the flow's
/// hash exactly as the datapath takes it. All addresses are of one family.
pub fn wrapped(
    from: SocketAddr,
    vip: SocketAddr,
    backend: IpAddr,
    tunnel_source: &Prefix,
    segment: Segment<'_>,
) -> Vec<u8> {
    let proto = match segment {
        Segment::Tcp { .. } => PROTO_TCP,
        Segment::Udp(_) => PROTO_UDP,
    };
    let key = FlowKey::between(from, vip, proto);
    let inner = inner_packet(from, vip, segment);
    let family = family_of(vip.ip());
    let width = if family == FAMILY_V4 { 32 } else { 128 };
    let source = encap::tunnel_source(
        &Addr::from(tunnel_source.addr()),
        width - tunnel_source.bits(),
        family,
        flow_hash(&key),
    );
    let backend = Addr::from(backend);
    // Inner packets are a few dozen bytes to a UDP payload of at most 64 KB.
    let len = u16::try_from(inner.len()).unwrap_or(u16::MAX);
    let mut out = if family == FAMILY_V4 {
        encap::outer_v4(&source, &backend, len, 0).to_vec()
    } else {
        let first = [inner[0], inner[1], inner[2], inner[3]];
        encap::outer_v6(&source, &backend, len, first, flow_hash(&key)).to_vec()
    };
    out.extend_from_slice(&inner);
    out
}

/// The client's packet itself: IP header, then the segment with its
/// checksum over the pseudo-header.
fn inner_packet(from: SocketAddr, vip: SocketAddr, segment: Segment<'_>) -> Vec<u8> {
    let (proto, mut l4) = match segment {
        Segment::Tcp { flags, seq, ack } => {
            let mut h = vec![0u8; TCP_HEADER];
            h[0..2].copy_from_slice(&from.port().to_be_bytes());
            h[2..4].copy_from_slice(&vip.port().to_be_bytes());
            h[4..8].copy_from_slice(&seq.to_be_bytes());
            h[8..12].copy_from_slice(&ack.to_be_bytes());
            h[12] = ((TCP_HEADER / 4) as u8) << 4;
            h[13] = flags;
            h[14..16].copy_from_slice(&64240u16.to_be_bytes());
            (PROTO_TCP, h)
        }
        Segment::Udp(payload) => {
            let mut h = vec![0u8; UDP_HEADER];
            h[0..2].copy_from_slice(&from.port().to_be_bytes());
            h[2..4].copy_from_slice(&vip.port().to_be_bytes());
            let len = u16::try_from(UDP_HEADER + payload.len()).unwrap_or(u16::MAX);
            h[4..6].copy_from_slice(&len.to_be_bytes());
            h.extend_from_slice(payload);
            (PROTO_UDP, h)
        }
    };
    let check_at = if proto == PROTO_TCP { TcpHdr::CHECK_OFF } else { 6 };
    let mut pseudo = Vec::with_capacity(40 + l4.len());
    pseudo.extend_from_slice(&addr_bytes(from.ip()));
    pseudo.extend_from_slice(&addr_bytes(vip.ip()));
    pseudo.extend_from_slice(&u32::try_from(l4.len()).unwrap_or(0).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, proto]);
    pseudo.extend_from_slice(&l4);
    let mut check = csum::full(&pseudo).to_ne_bytes();
    // UDP sends an all-zero sum as all ones (zero means "none").
    if proto == PROTO_UDP && check == [0, 0] {
        check = [0xff, 0xff];
    }
    l4[check_at..check_at + 2].copy_from_slice(&check);

    let len = u16::try_from(l4.len()).unwrap_or(u16::MAX);
    let (src, dst) = (Addr::from(from.ip()), Addr::from(vip.ip()));
    let mut ip = if vip.is_ipv4() {
        let total = len.saturating_add(iphdr::V4_LEN as u16);
        iphdr::v4(0, total, true, INNER_TTL, proto, &src, &dst).to_vec()
    } else {
        iphdr::v6([0x60, 0, 0, 0], len, proto, INNER_TTL, &src, &dst).to_vec()
    };
    ip.extend_from_slice(&l4);
    ip
}

/// An address's wire bytes: 4 for IPv4, 16 for IPv6.
fn addr_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

const LD_H_ABS: u16 = 0x28;
const LD_B_ABS: u16 = 0x30;
const LDX_B_MSH: u16 = 0xb1;
const LD_H_IND: u16 = 0x48;
const JEQ_K: u16 = 0x15;
const JGE_K: u16 = 0x35;
const JSET_K: u16 = 0x45;
const RET_K: u16 = 0x06;

fn op(code: u16, jt: u8, jf: u8, k: u32) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// A classic BPF filter for a packet socket of type `SOCK_DGRAM` bound to
/// one family (packets start at the IP header) that accepts only TCP and
/// UDP packets to port `lowest` or above (whole packets and first
/// fragments; IPv6 without extension headers, as a backend's answers are),
/// and drops everything else before it is copied. Which probe a packet
/// answers, if any, is the reader's business: the filter only has to be
/// narrow.
pub fn answer_filter(v6: bool, lowest: u16) -> Vec<sock_filter> {
    let mut f = Filter::default();
    if v6 {
        f.code.push(op(LD_B_ABS, 0, 0, 6));
        f.transport();
        f.at_least(op(LD_H_ABS, 0, 0, iphdr::V6_LEN as u32 + 2), u32::from(lowest));
    } else {
        f.code.push(op(LD_B_ABS, 0, 0, 9));
        f.transport();
        // A later fragment has no ports where they would be read.
        f.code.push(op(LD_H_ABS, 0, 0, 6));
        f.drop_if_set(0x1fff);
        f.code.push(op(LDX_B_MSH, 0, 0, 0));
        f.at_least(op(LD_H_IND, 0, 0, 2), u32::from(lowest));
    }
    f.finish()
}

/// A filter under construction: a run of tests, each of which jumps to
/// the final "drop" when it fails; the distances are filled in once the
/// program's length is known.
#[derive(Default)]
struct Filter {
    code: Vec<sock_filter>,
    /// Jumps to the drop: the instruction, and whether it jumps when true.
    to_drop: Vec<(usize, bool)>,
}

impl Filter {
    /// Go on only if the loaded protocol is TCP or UDP.
    fn transport(&mut self) {
        // TCP: jump over the UDP test.
        self.code.push(op(JEQ_K, 1, 0, u32::from(PROTO_TCP)));
        self.to_drop.push((self.code.len(), false));
        self.code.push(op(JEQ_K, 0, 0, u32::from(PROTO_UDP)));
    }

    /// Load with `load`, go on only if the value is `k` or more.
    fn at_least(&mut self, load: sock_filter, k: u32) {
        self.code.push(load);
        self.to_drop.push((self.code.len(), false));
        self.code.push(op(JGE_K, 0, 0, k));
    }

    /// Drop if the loaded value has any bit of `mask`.
    fn drop_if_set(&mut self, mask: u32) {
        self.to_drop.push((self.code.len(), true));
        self.code.push(op(JSET_K, 0, 0, mask));
    }

    fn finish(mut self) -> Vec<sock_filter> {
        self.code.push(op(RET_K, 0, 0, 0xffff));
        let drop = self.code.len();
        self.code.push(op(RET_K, 0, 0, 0));
        for (at, when_true) in self.to_drop {
            // Programs here are a few dozen instructions: the distance fits.
            let distance = u8::try_from(drop - at - 1).unwrap_or(u8::MAX);
            if when_true {
                self.code[at].jt = distance;
            } else {
                self.code[at].jf = distance;
            }
        }
        self.code
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_common::parse::{Parsed, parse};

    fn prefix(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    /// Behind a made-up Ethernet header, as the one parser reads frames.
    fn framed(ip: &[u8]) -> Vec<u8> {
        let ethertype: [u8; 2] = if ip[0] >> 4 == 4 { [8, 0] } else { [0x86, 0xdd] };
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&ethertype);
        f.extend_from_slice(ip);
        f
    }

    #[test]
    fn a_wrapped_syn_is_what_the_datapath_would_send() {
        let from: SocketAddr = "10.0.2.1:40000".parse().unwrap();
        let vip: SocketAddr = "10.0.0.10:80".parse().unwrap();
        let backend: IpAddr = "10.0.2.2".parse().unwrap();
        let src = prefix("10.9.0.0/28");
        let seg = Segment::Tcp { flags: TcpHdr::SYN, seq: 7, ack: 0 };
        let pkt = wrapped(from, vip, backend, &src, seg);
        assert_eq!(pkt.len(), 20 + 20 + 20);
        // The outer header is the shared builder's, for the flow's hash.
        let key = FlowKey::between(from, vip, PROTO_TCP);
        let outer_src =
            encap::tunnel_source(&Addr::from(src.addr()), 4, FAMILY_V4, flow_hash(&key));
        let outer = encap::outer_v4(&outer_src, &Addr::from(backend), 40, 0);
        assert_eq!(pkt[..20], outer);
        assert!(src.contains(IpAddr::from([pkt[12], pkt[13], pkt[14], pkt[15]])));
        // The inner packet parses as the client's SYN, checksums valid.
        let inner = &pkt[20..];
        assert_eq!(csum::full(&inner[..20]), 0, "inner IPv4 header checksum");
        let Ok(Parsed::L4(l4)) = parse(&framed(inner)[..]) else { panic!("not L4") };
        assert_eq!(l4.key, key);
        assert_eq!(l4.tcp_flags, TcpHdr::SYN);
        let mut pseudo = inner[12..20].to_vec();
        pseudo.extend_from_slice(&[0, 0, 0, 20, 0, 0, 0, PROTO_TCP]);
        pseudo.extend_from_slice(&inner[20..]);
        assert_eq!(csum::full(&pseudo), 0, "TCP checksum");
    }

    #[test]
    fn a_wrapped_v6_datagram_keeps_its_payload_and_checksum() {
        let from: SocketAddr = "[fd00:2::1]:40000".parse().unwrap();
        let vip: SocketAddr = "[fd00::10]:53".parse().unwrap();
        let backend: IpAddr = "fd00:2::2".parse().unwrap();
        let pkt = wrapped(from, vip, backend, &prefix("fd00:9::/120"), Segment::Udp(b"ping"));
        assert_eq!(pkt.len(), 40 + 40 + 8 + 4);
        assert_eq!(pkt[6], encap::PROTO_IPV6);
        assert_eq!(pkt[24..40], backend_bytes(backend));
        let inner = &pkt[40..];
        let Ok(Parsed::L4(l4)) = parse(&framed(inner)[..]) else { panic!("not L4") };
        assert_eq!(l4.key, FlowKey::between(from, vip, PROTO_UDP));
        assert_eq!(&inner[48..], b"ping");
        let mut pseudo = inner[8..40].to_vec();
        pseudo.extend_from_slice(&[0, 0, 0, 12, 0, 0, 0, PROTO_UDP]);
        pseudo.extend_from_slice(&inner[40..]);
        assert_eq!(csum::full(&pseudo), 0, "UDP checksum");
    }

    fn backend_bytes(ip: IpAddr) -> Vec<u8> {
        addr_bytes(ip)
    }

    /// Runs a classic BPF program over `pkt` the way the kernel does, for
    /// the few instructions the filter uses.
    fn run(prog: &[sock_filter], pkt: &[u8]) -> u32 {
        let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
        let byte = |i: usize| u32::from(*pkt.get(i).unwrap_or(&0));
        let half = |i: usize| (byte(i) << 8) | byte(i + 1);
        loop {
            let i = prog[pc];
            let k = i.k as usize;
            pc += 1;
            match i.code {
                LD_B_ABS => a = byte(k),
                LD_H_ABS => a = half(k),
                LD_H_IND => a = half(x as usize + k),
                LDX_B_MSH => x = 4 * (byte(k) & 0xf),
                JEQ_K => pc += usize::from(if a == i.k { i.jt } else { i.jf }),
                JGE_K => pc += usize::from(if a >= i.k { i.jt } else { i.jf }),
                JSET_K => pc += usize::from(if a & i.k != 0 { i.jt } else { i.jf }),
                RET_K => return i.k,
                other => panic!("unexpected op {other:#x}"),
            }
        }
    }

    /// The answer the backend sends to a probe from `from`: the probe's
    /// inner packet with addresses and ports swapped.
    fn answer(from: SocketAddr, vip: SocketAddr, seg: Segment<'_>) -> Vec<u8> {
        inner_packet(vip, from, seg)
    }

    #[test]
    fn the_filter_takes_answers_to_the_probe_ports_and_nothing_else() {
        for (from, vip) in
            [("10.0.2.1:61000", "10.0.0.10:80"), ("[fd00:2::1]:65535", "[fd00::10]:80")]
        {
            let from: SocketAddr = from.parse().unwrap();
            let vip: SocketAddr = vip.parse().unwrap();
            let prog = answer_filter(vip.is_ipv6(), 61000);
            assert!(prog.len() < 14);
            let synack = Segment::Tcp { flags: TcpHdr::SYN | TcpHdr::ACK, seq: 1, ack: 8 };
            assert_eq!(run(&prog, &answer(from, vip, synack)), 0xffff, "{vip}");
            assert_eq!(run(&prog, &answer(from, vip, Segment::Udp(b"x"))), 0xffff, "UDP");
            let below = SocketAddr::new(from.ip(), 60999);
            assert_eq!(run(&prog, &answer(below, vip, synack)), 0, "below the probe ports");
        }
        // IPv4 with options: the ports are found behind them.
        let from: SocketAddr = "10.0.2.1:62000".parse().unwrap();
        let vip: SocketAddr = "10.0.0.10:80".parse().unwrap();
        let mut pkt = answer(from, vip, Segment::Tcp { flags: TcpHdr::RST, seq: 0, ack: 1 });
        pkt[0] = 0x46;
        pkt.splice(20..20, [1, 1, 1, 1]);
        assert_eq!(run(&answer_filter(false, 61000), &pkt), 0xffff);
        // A later fragment, and a protocol other than TCP and UDP, are dropped.
        let mut frag = answer(from, vip, Segment::Udp(b"x"));
        frag[7] = 1;
        assert_eq!(run(&answer_filter(false, 61000), &frag), 0);
        let mut icmp = answer(from, vip, Segment::Udp(b"x"));
        icmp[9] = 1;
        assert_eq!(run(&answer_filter(false, 61000), &icmp), 0);
    }
}
