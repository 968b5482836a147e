//! Header parsing, the one implementation used by the XDP program, the host
//! tests and the fuzz target.
//!
//! [`parse`] classifies a frame and, for TCP/UDP over IPv4 or IPv6 that is
//! unfragmented or a first fragment (later fragments carry no ports),
//! returns its 5-tuple and header offsets. It reads through
//! [`PacketView`], so it cannot read out of bounds whatever the input, and it
//! has no loop of unbounded length (the eBPF verifier must see it terminate).
//!
//! What each outcome means to the datapath is documented with the datapath
//! (`lb-ebpf`); this module only says what the packet is.

pub mod headers;
pub mod tunnel;
mod view;

pub use view::{Header, PacketView};

use crate::abi::{Addr, DropReason, FAMILY_V4, FAMILY_V6, FlowKey, PROTO_TCP, PROTO_UDP};
use headers::*;

/// IPv6 next-header values of the extension headers lb skips.
const IPV6_HOP_BY_HOP: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_DEST_OPTS: u8 = 60;
/// Most IPv6 extension headers followed before giving up: real traffic has
/// one or two; the bound keeps the loop finite for the verifier.
pub const MAX_IPV6_EXT_HEADERS: usize = 4;

/// A TCP or UDP packet: unfragmented, the first fragment of a datagram
/// (which carries the ports), or a later fragment whose ports the datapath
/// looked up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L4Packet {
    /// Offset of the IP header (14, or 18 behind a VLAN tag).
    pub l3_off: usize,
    /// Offset of the TCP or UDP header.
    pub l4_off: usize,
    /// The 5-tuple as it appears in the packet.
    pub key: FlowKey,
    /// TCP flags; 0 for UDP (and for a later fragment).
    pub tcp_flags: u8,
    /// `FRAG_NONE`, `FRAG_FIRST` or `FRAG_LATER` (then `l4_off` is where
    /// the fragment's payload starts: it has no TCP/UDP header).
    pub fragment: u8,
    /// The datagram's identification (IPv4's 16 bits widened, or IPv6's
    /// 32), if a fragment.
    pub frag_id: u32,
}

/// `L4Packet::fragment`: not a fragment.
pub const FRAG_NONE: u8 = 0;
/// `L4Packet::fragment`: the first fragment (offset 0, more to come).
pub const FRAG_FIRST: u8 = 1;
/// `L4Packet::fragment`: a later fragment, without the TCP/UDP header.
pub const FRAG_LATER: u8 = 2;

/// A later fragment of a datagram (offset above 0): no ports in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fragment {
    /// Offset of the IP header.
    pub l3_off: usize,
    /// Offset of the fragment's payload.
    pub payload_off: usize,
    /// The datagram's source, destination, protocol and family (ports 0).
    pub key: FlowKey,
    /// The datagram's identification.
    pub id: u32,
}

impl L4Packet {
    /// This packet if its offsets are what the parser can produce: the IP
    /// header behind Ethernet and at most one VLAN tag, the L4 header after
    /// at least an IPv4 header and within 16 KiB. The eBPF datapath checks
    /// this where the packet reaches a function through the stack, which
    /// loses the verifier's knowledge of the bounds (and would let the
    /// compiler form packet offsets the verifier sees as negative).
    #[inline(always)]
    pub fn checked(&self) -> Option<&Self> {
        let ok = self.l3_off >= 14
            && self.l3_off <= 18
            && self.l4_off >= self.l3_off + 20
            && self.l4_off <= 0x3f00;
        ok.then_some(self)
    }
}

/// What a frame is, as far as the balancer cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// TCP or UDP over IPv4/IPv6, not fragmented.
    L4(L4Packet),
    /// Not IPv4 or IPv6 (ARP, LLDP, QinQ, ...).
    NotIp,
    /// IP carrying neither TCP nor UDP (ICMP, ESP, ...), or more IPv6
    /// extension headers than [`MAX_IPV6_EXT_HEADERS`].
    OtherProtocol,
    /// A later fragment of a larger datagram: only the first carries the
    /// ports (a first fragment is [`Parsed::L4`], marked `FRAG_FIRST`).
    Fragment(Fragment),
    /// An ICMP or ICMPv6 error quoting a TCP or UDP packet.
    IcmpError(IcmpError),
}

/// Which ICMP error a message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IcmpKind {
    /// Destination unreachable (other than IPv4's "fragmentation needed"):
    /// a failure signal about the quoted packet's destination.
    Unreachable,
    /// IPv4 "fragmentation needed" or ICMPv6 "packet too big": a path MTU
    /// signal, not a failure.
    TooBig,
    /// Time exceeded (TTL or hop limit, or reassembly).
    TimeExceeded,
    /// Parameter problem.
    ParameterProblem,
}

/// An ICMP(v6) error and where its parts lie in the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcmpError {
    /// Which error.
    pub kind: IcmpKind,
    /// Offset of the outer IP header.
    pub l3_off: usize,
    /// Offset of the ICMP header.
    pub icmp_off: usize,
    /// Offset of the quoted IP header.
    pub inner_l3_off: usize,
    /// Offset of the quoted TCP/UDP header (its ports are inside the
    /// message; the rest may be cut off).
    pub inner_l4_off: usize,
    /// End of the outer datagram: quoted bytes lie before it.
    pub end: usize,
    /// The quoted packet's 5-tuple, as it was sent (source: who sent it,
    /// destination: who could not be reached).
    pub key: FlowKey,
}

/// Frames too short or inconsistent to classify.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Shorter than its Ethernet (+ VLAN) header.
    TruncatedEthernet,
    /// IP header truncated, wrong version, IHL below 5, or lengths that
    /// disagree with the frame (the kernel's own input checks drop these).
    MalformedIp,
    /// TCP/UDP header cut short.
    TruncatedL4,
}

impl ParseError {
    /// The counter this error is accounted under.
    pub const fn reason(self) -> DropReason {
        match self {
            ParseError::TruncatedEthernet => DropReason::TruncatedEthernet,
            ParseError::MalformedIp => DropReason::MalformedIp,
            ParseError::TruncatedL4 => DropReason::TruncatedL4,
        }
    }
}

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

/// Classifies a frame starting at its Ethernet header.
#[inline(always)]
pub fn parse<P: PacketView + ?Sized>(pkt: &P) -> Result<Parsed, ParseError> {
    let eth: &EthHdr = pkt.header(0).ok_or(ParseError::TruncatedEthernet)?;
    let mut ethertype = be16(eth.ethertype);
    let mut l3_off = core::mem::size_of::<EthHdr>();
    if ethertype == ETH_P_8021Q {
        let vlan: &VlanHdr = pkt.header(l3_off).ok_or(ParseError::TruncatedEthernet)?;
        ethertype = be16(vlan.ethertype);
        l3_off += core::mem::size_of::<VlanHdr>();
    }
    match ethertype {
        ETH_P_IP => parse_ipv4(pkt, l3_off),
        ETH_P_IPV6 => parse_ipv6(pkt, l3_off),
        _ => Ok(Parsed::NotIp),
    }
}

#[inline(always)]
fn parse_ipv4<P: PacketView + ?Sized>(pkt: &P, l3_off: usize) -> Result<Parsed, ParseError> {
    let ip: &Ipv4Hdr = pkt.header(l3_off).ok_or(ParseError::MalformedIp)?;
    let ihl = usize::from(ip.version_ihl & 0x0f) * 4;
    let total = usize::from(be16(ip.total_len));
    // The frame may be longer than the datagram (Ethernet pads to 60 bytes),
    // never shorter.
    if ip.version_ihl >> 4 != 4 || ihl < 20 || total < ihl || !pkt.fits(l3_off + total) {
        return Err(ParseError::MalformedIp);
    }
    let ends = Bounds { l3_off, l4_off: l3_off + ihl, end: l3_off + total };
    let (src, dst) = (Addr::from_v4_bytes(ip.src), Addr::from_v4_bytes(ip.dst));
    let flags = be16(ip.frag);
    let id = u32::from(be16(ip.id));
    let frag = if flags & Ipv4Hdr::OFFSET_MASK != 0 {
        return Ok(later(ends, ip.proto, FAMILY_V4, src, dst, id));
    } else if flags & Ipv4Hdr::MF != 0 {
        (FRAG_FIRST, id)
    } else {
        (FRAG_NONE, 0)
    };
    parse_l4(pkt, ends, ip.proto, FAMILY_V4, src, dst, frag)
}

#[inline(always)]
fn parse_ipv6<P: PacketView + ?Sized>(pkt: &P, l3_off: usize) -> Result<Parsed, ParseError> {
    let ip: &Ipv6Hdr = pkt.header(l3_off).ok_or(ParseError::MalformedIp)?;
    let payload = usize::from(be16(ip.payload_len));
    let mut off = l3_off + core::mem::size_of::<Ipv6Hdr>();
    let end = off + payload;
    if ip.vtc_flow[0] >> 4 != 6 || !pkt.fits(end) {
        return Err(ParseError::MalformedIp);
    }
    let mut next = ip.next_header;
    let mut frag = (FRAG_NONE, 0);
    let (src, dst) = (Addr::from_v6_bytes(ip.src), Addr::from_v6_bytes(ip.dst));
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        match next {
            IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS => {
                let ext: &Ipv6ExtHdr = pkt.header(off).ok_or(ParseError::MalformedIp)?;
                next = ext.next_header;
                off += (usize::from(ext.len) + 1) * 8;
                // An extension header running past the datagram is
                // malformed IP, not a short TCP/UDP header.
                if off > end {
                    return Err(ParseError::MalformedIp);
                }
            }
            IPV6_FRAGMENT => {
                let hdr: &Ipv6FragHdr = pkt.header(off).ok_or(ParseError::MalformedIp)?;
                let flags = be16(hdr.offset_flags);
                let id = u32::from_be_bytes(hdr.id);
                next = hdr.next_header;
                off += core::mem::size_of::<Ipv6FragHdr>();
                // Offset (high 13 bits) set: a later fragment; only "more
                // fragments" (bit 0): the first; neither: an atomic
                // fragment, parsed on as a whole packet.
                if flags & 0xfff8 != 0 {
                    let at = Bounds { l3_off, l4_off: off, end };
                    return Ok(later(at, next, FAMILY_V6, src, dst, id));
                }
                if flags & 1 != 0 {
                    frag = (FRAG_FIRST, id);
                }
            }
            _ => break,
        }
    }
    parse_l4(pkt, Bounds { l3_off, l4_off: off, end }, next, FAMILY_V6, src, dst, frag)
}

/// A later fragment at `at` of a datagram of `proto` between `src` and `dst`.
#[inline(always)]
fn later(at: Bounds, proto: u8, family: u8, src: Addr, dst: Addr, id: u32) -> Parsed {
    let key = FlowKey { src, dst, src_port_be: 0, dst_port_be: 0, proto, family, _pad: [0; 2] };
    Parsed::Fragment(Fragment { l3_off: at.l3_off, payload_off: at.l4_off, key, id })
}

/// Where the IP header, the L4 header and the IP datagram start and end.
#[derive(Clone, Copy)]
struct Bounds {
    l3_off: usize,
    l4_off: usize,
    /// End of the IP datagram: the frame may run on (Ethernet padding),
    /// and bytes past here are not part of the packet.
    end: usize,
}

#[inline(always)]
fn parse_l4<P: PacketView + ?Sized>(
    pkt: &P,
    at: Bounds,
    proto: u8,
    family: u8,
    src: Addr,
    dst: Addr,
    (fragment, frag_id): (u8, u32),
) -> Result<Parsed, ParseError> {
    let Bounds { l3_off, l4_off, end } = at;
    // The packet bounds check comes first and the datagram check second:
    // the other way round the compiler proves the packet check redundant
    // (the datagram lies inside the packet) and drops it, and the verifier,
    // which cannot follow that proof, rejects the read.
    let (tcp_flags, hdr_len) = match proto {
        PROTO_TCP => {
            let tcp: &TcpHdr = pkt.header(l4_off).ok_or(ParseError::TruncatedL4)?;
            (tcp.flags, core::mem::size_of::<TcpHdr>())
        }
        PROTO_UDP => {
            pkt.header::<UdpHdr>(l4_off).ok_or(ParseError::TruncatedL4)?;
            (0, core::mem::size_of::<UdpHdr>())
        }
        PROTO_ICMP if family == FAMILY_V4 => {
            return Ok(parse_icmp(pkt, l3_off, l4_off, end, family));
        }
        PROTO_ICMPV6 if family == FAMILY_V6 => {
            return Ok(parse_icmp(pkt, l3_off, l4_off, end, family));
        }
        _ => return Ok(Parsed::OtherProtocol),
    };
    if l4_off + hdr_len > end {
        return Err(ParseError::TruncatedL4);
    }
    let ports: &PortsHdr = pkt.header(l4_off).ok_or(ParseError::TruncatedL4)?;
    Ok(Parsed::L4(L4Packet {
        l3_off,
        l4_off,
        key: key_of(ports, src, dst, proto, family),
        tcp_flags,
        fragment,
        frag_id,
    }))
}

/// The 5-tuple of a TCP or UDP header's `ports` between `src` and `dst`.
#[inline(always)]
fn key_of(ports: &PortsHdr, src: Addr, dst: Addr, proto: u8, family: u8) -> FlowKey {
    FlowKey {
        src,
        dst,
        src_port_be: u16::from_ne_bytes(ports.src),
        dst_port_be: u16::from_ne_bytes(ports.dst),
        proto,
        family,
        _pad: [0; 2],
    }
}

/// An ICMP(v6) message at `off` of a datagram at `l3_off` ending at `end`:
/// an error quoting TCP or UDP becomes [`Parsed::IcmpError`], anything else
/// (echo, an error quoting something else or cut short) is just another
/// protocol. The quote is read only as far as the ports, and only inside the
/// datagram (never Ethernet padding); its own length fields describe the
/// original packet, not what the error carries, so they are not checked.
#[inline(always)]
fn parse_icmp<P: PacketView + ?Sized>(
    pkt: &P,
    l3_off: usize,
    off: usize,
    end: usize,
    family: u8,
) -> Parsed {
    let Some(icmp) = pkt.header::<IcmpHdr>(off) else { return Parsed::OtherProtocol };
    let Some(kind) = icmp_kind(icmp.kind, icmp.code, family) else {
        return Parsed::OtherProtocol;
    };
    let inner = off + core::mem::size_of::<IcmpHdr>();
    let quoted =
        if family == FAMILY_V4 { quoted_v4(pkt, inner, end) } else { quoted_v6(pkt, inner, end) };
    quoted.map_or(Parsed::OtherProtocol, |(inner_l4_off, key)| {
        Parsed::IcmpError(IcmpError {
            kind,
            l3_off,
            icmp_off: off,
            inner_l3_off: inner,
            inner_l4_off,
            end,
            key,
        })
    })
}

/// The error an ICMP (`FAMILY_V4`) or ICMPv6 type and code make, if any.
#[inline(always)]
const fn icmp_kind(kind: u8, code: u8, family: u8) -> Option<IcmpKind> {
    if family == FAMILY_V4 {
        match kind {
            ICMP_DEST_UNREACH if code == ICMP_FRAG_NEEDED => Some(IcmpKind::TooBig),
            ICMP_DEST_UNREACH => Some(IcmpKind::Unreachable),
            ICMP_TIME_EXCEEDED => Some(IcmpKind::TimeExceeded),
            ICMP_PARAMETER_PROBLEM => Some(IcmpKind::ParameterProblem),
            _ => None,
        }
    } else {
        match kind {
            ICMPV6_DEST_UNREACH => Some(IcmpKind::Unreachable),
            ICMPV6_PACKET_TOO_BIG => Some(IcmpKind::TooBig),
            ICMPV6_TIME_EXCEEDED => Some(IcmpKind::TimeExceeded),
            ICMPV6_PARAMETER_PROBLEM => Some(IcmpKind::ParameterProblem),
            _ => None,
        }
    }
}

#[inline(always)]
fn quoted_v4<P: PacketView + ?Sized>(pkt: &P, off: usize, end: usize) -> Option<(usize, FlowKey)> {
    let ip: &Ipv4Hdr = pkt.header(off)?;
    let ihl = usize::from(ip.version_ihl & 0x0f) * 4;
    // Only a first fragment (offset 0) quotes the ports.
    if ip.version_ihl >> 4 != 4 || ihl < 20 || be16(ip.frag) & Ipv4Hdr::OFFSET_MASK != 0 {
        return None;
    }
    let (src, dst) = (Addr::from_v4_bytes(ip.src), Addr::from_v4_bytes(ip.dst));
    let l4 = off + ihl;
    quoted_ports(pkt, l4, end, ip.proto, FAMILY_V4, src, dst).map(|k| (l4, k))
}

#[inline(always)]
fn quoted_v6<P: PacketView + ?Sized>(pkt: &P, off: usize, end: usize) -> Option<(usize, FlowKey)> {
    let ip: &Ipv6Hdr = pkt.header(off)?;
    if ip.vtc_flow[0] >> 4 != 6 {
        return None;
    }
    let (src, dst) = (Addr::from_v6_bytes(ip.src), Addr::from_v6_bytes(ip.dst));
    // Quotes with extension headers are left alone: balanced traffic has none.
    let l4 = off + core::mem::size_of::<Ipv6Hdr>();
    quoted_ports(pkt, l4, end, ip.next_header, FAMILY_V6, src, dst).map(|k| (l4, k))
}

#[inline(always)]
fn quoted_ports<P: PacketView + ?Sized>(
    pkt: &P,
    off: usize,
    end: usize,
    proto: u8,
    family: u8,
    src: Addr,
    dst: Addr,
) -> Option<FlowKey> {
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return None;
    }
    // Packet bounds first, datagram second (see `parse_l4`).
    let ports: &PortsHdr = pkt.header(off)?;
    if off + core::mem::size_of::<PortsHdr>() > end {
        return None;
    }
    Some(key_of(ports, src, dst, proto, family))
}
