//! NAT rewrite of one endpoint (address and port) of a parsed packet, with
//! incremental checksum updates and the TTL / hop-limit decrement a router
//! owes every packet it forwards.
//!
//! Bytes are written here; checksums are updated by the hook from the
//! differences computed here, since only the tc hook's helpers know
//! whether an skb's L4 checksum is complete or partial.

use lb_common::{
    abi::{Addr, DropReason, FAMILY_V4, PROTO_UDP},
    csum,
    parse::{
        L4Packet,
        headers::{Ipv4Hdr, Ipv6Hdr, L4_DST_PORT_OFF, L4_SRC_PORT_OFF, TcpHdr, UdpHdr},
    },
};

use crate::hook::Hook;

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
pub fn check_ttl<H: Hook>(h: &H, pkt: &L4Packet) -> Result<(), DropReason> {
    let off = if pkt.key.family == FAMILY_V4 { IPV4_TTL_OFF } else { IPV6_HOP_LIMIT_OFF };
    let [ttl] = h.load::<1>(pkt.l3_off + off).ok_or(DropReason::MalformedIp)?;
    if ttl <= 1 { Err(DropReason::TtlExpired) } else { Ok(()) }
}

/// Replaces the `side` endpoint of `pkt` with `addr`:`port_be`.
#[inline(always)]
pub fn endpoint<H: Hook>(
    h: &H,
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
    let udp = pkt.key.proto == PROTO_UDP;
    if v4 {
        ipv4(h, pkt.l3_off, side, &old_addr, addr)?
    } else {
        ipv6(h, pkt.l3_off, side, addr)?
    }
    let port_off = pkt.l4_off
        + match side {
            Side::Src => L4_SRC_PORT_OFF,
            Side::Dst => L4_DST_PORT_OFF,
        };
    store(h, port_off, port_be.to_ne_bytes())?;

    let check_off = pkt.l4_off + if udp { UdpHdr::CHECK_OFF } else { TcpHdr::CHECK_OFF };
    let addr_diff = csum::diff_addr(&old_addr, addr, if v4 { 1 } else { 4 });
    let port_diff = csum::diff16(old_port, port_be);
    if h.l4_csum(check_off, addr_diff, true, udp, !v4)
        && h.l4_csum(check_off, port_diff, false, udp, !v4)
    {
        Ok(())
    } else {
        Err(DropReason::TruncatedL4)
    }
}

#[inline(always)]
fn ipv4<H: Hook>(h: &H, l3: usize, side: Side, old: &Addr, new: &Addr) -> Result<(), DropReason> {
    let addr_off = l3
        + match side {
            Side::Src => Ipv4Hdr::SRC_OFF,
            Side::Dst => Ipv4Hdr::DST_OFF,
        };
    let [ttl, proto] = h.load::<2>(l3 + IPV4_TTL_OFF).ok_or(DropReason::MalformedIp)?;
    let new_ttl = [ttl.wrapping_sub(1), proto];
    store(h, addr_off, new.words[0].to_ne_bytes())?;
    store(h, l3 + IPV4_TTL_OFF, new_ttl)?;
    let diff = csum::diff32(old.words[0], new.words[0])
        + csum::diff16(u16::from_ne_bytes([ttl, proto]), u16::from_ne_bytes(new_ttl));
    if h.l3_csum(l3 + Ipv4Hdr::CHECK_OFF, diff) { Ok(()) } else { Err(DropReason::MalformedIp) }
}

#[inline(always)]
fn ipv6<H: Hook>(h: &H, l3: usize, side: Side, new: &Addr) -> Result<(), DropReason> {
    let addr_off = l3
        + match side {
            Side::Src => Ipv6Hdr::SRC_OFF,
            Side::Dst => Ipv6Hdr::DST_OFF,
        };
    let [hop] = h.load::<1>(l3 + IPV6_HOP_LIMIT_OFF).ok_or(DropReason::MalformedIp)?;
    store(h, addr_off, new.to_bytes())?;
    store(h, l3 + IPV6_HOP_LIMIT_OFF, [hop.wrapping_sub(1)])
}

#[inline(always)]
fn store<H: Hook, const N: usize>(h: &H, off: usize, bytes: [u8; N]) -> Result<(), DropReason> {
    // Every offset written was read by the parser first, so this only fails
    // if the parser and the rewrite disagree: count it rather than crash.
    if h.store(off, bytes) { Ok(()) } else { Err(DropReason::MalformedIp) }
}
