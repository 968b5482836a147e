//! NAT rewrite of one endpoint (address and port) of a parsed packet, with
//! incremental checksum updates and the TTL / hop-limit decrement a router
//! owes every packet it forwards.

use lb_common::{
    abi::{Addr, DropReason, FAMILY_V4, PROTO_UDP},
    csum,
    parse::{
        L4Packet,
        headers::{Ipv4Hdr, Ipv6Hdr, L4_DST_PORT_OFF, L4_SRC_PORT_OFF, TcpHdr, UdpHdr},
    },
};

use crate::frame::Frame;

/// Which endpoint to rewrite.
#[derive(Clone, Copy)]
pub enum Side {
    /// The source: replies from a backend get the VIP back.
    Src,
    /// The destination: requests to a VIP go to the backend.
    Dst,
}

const IPV4_TTL_OFF: usize = 8;
const IPV6_HOP_LIMIT_OFF: usize = 7;

/// Fails with `TtlExpired` when forwarding would expire the packet; the
/// kernel then answers it with ICMP time exceeded.
#[inline(always)]
pub fn check_ttl(frame: &Frame, pkt: &L4Packet) -> Result<(), DropReason> {
    let off = if pkt.key.family == FAMILY_V4 { IPV4_TTL_OFF } else { IPV6_HOP_LIMIT_OFF };
    let [ttl] = frame.load::<1>(pkt.l3_off + off).ok_or(DropReason::MalformedIp)?;
    if ttl <= 1 { Err(DropReason::TtlExpired) } else { Ok(()) }
}

/// Replaces the `side` endpoint of `pkt` with `addr`:`port_be`.
#[inline(always)]
pub fn endpoint(
    frame: &Frame,
    pkt: &L4Packet,
    side: Side,
    addr: &Addr,
    port_be: u16,
) -> Result<(), DropReason> {
    let (old_addr, old_port) = match side {
        Side::Src => (pkt.key.src, pkt.key.src_port_be),
        Side::Dst => (pkt.key.dst, pkt.key.dst_port_be),
    };
    let v4 = pkt.key.family == FAMILY_V4;
    let words = if v4 { 1 } else { 4 };
    if v4 {
        ipv4(frame, pkt.l3_off, side, &old_addr, addr)?
    } else {
        ipv6(frame, pkt.l3_off, side, addr)?
    }

    let check_off =
        pkt.l4_off + if pkt.key.proto == PROTO_UDP { UdpHdr::CHECK_OFF } else { TcpHdr::CHECK_OFF };
    let check = u16::from_ne_bytes(frame.load::<2>(check_off).ok_or(DropReason::TruncatedL4)?);
    // An IPv4 UDP checksum of 0 means "none": leave it so.
    if !(v4 && pkt.key.proto == PROTO_UDP && check == 0) {
        let mut c = csum::replace_addr(check, &old_addr, addr, words);
        c = csum::replace16(c, old_port, port_be);
        if pkt.key.proto == PROTO_UDP && c == 0 {
            c = 0xffff;
        }
        store(frame, check_off, c.to_ne_bytes())?;
    }
    let port_off = pkt.l4_off
        + match side {
            Side::Src => L4_SRC_PORT_OFF,
            Side::Dst => L4_DST_PORT_OFF,
        };
    store(frame, port_off, port_be.to_ne_bytes())
}

#[inline(always)]
fn ipv4(frame: &Frame, l3: usize, side: Side, old: &Addr, new: &Addr) -> Result<(), DropReason> {
    let addr_off = l3
        + match side {
            Side::Src => Ipv4Hdr::SRC_OFF,
            Side::Dst => Ipv4Hdr::DST_OFF,
        };
    let check_off = l3 + Ipv4Hdr::CHECK_OFF;
    let check = u16::from_ne_bytes(frame.load::<2>(check_off).ok_or(DropReason::MalformedIp)?);
    let [ttl, proto] = frame.load::<2>(l3 + IPV4_TTL_OFF).ok_or(DropReason::MalformedIp)?;
    let new_ttl = [ttl.wrapping_sub(1), proto];
    let mut c = csum::replace32(check, old.words[0], new.words[0]);
    c = csum::replace16(c, u16::from_ne_bytes([ttl, proto]), u16::from_ne_bytes(new_ttl));
    store(frame, addr_off, new.words[0].to_ne_bytes())?;
    store(frame, l3 + IPV4_TTL_OFF, new_ttl)?;
    store(frame, check_off, c.to_ne_bytes())
}

#[inline(always)]
fn ipv6(frame: &Frame, l3: usize, side: Side, new: &Addr) -> Result<(), DropReason> {
    let addr_off = l3
        + match side {
            Side::Src => Ipv6Hdr::SRC_OFF,
            Side::Dst => Ipv6Hdr::DST_OFF,
        };
    let [hop] = frame.load::<1>(l3 + IPV6_HOP_LIMIT_OFF).ok_or(DropReason::MalformedIp)?;
    store(frame, addr_off, new.to_bytes())?;
    store(frame, l3 + IPV6_HOP_LIMIT_OFF, [hop.wrapping_sub(1)])
}

#[inline(always)]
fn store<const N: usize>(frame: &Frame, off: usize, bytes: [u8; N]) -> Result<(), DropReason> {
    // Every offset written was read by the parser first, so this only fails
    // if the parser and the rewrite disagree: count it rather than crash.
    if frame.store(off, bytes) { Ok(()) } else { Err(DropReason::MalformedIp) }
}
