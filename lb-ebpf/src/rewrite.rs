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
        FRAG_LATER, IcmpError, L4Packet,
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
const IPV4_FRAG_OFF: usize = 6;
const TCP_DATA_OFF: usize = 12;
const UDP_HEADER: usize = 8;
/// "Don't fragment", in the first byte of the flags and offset.
const IPV4_DF: u8 = 0x40;

/// Whether forwarding would expire the packet whose IP header (of
/// `family`) is at `l3_off`.
#[inline(always)]
pub fn ttl_expires<H: Hook>(h: &H, l3_off: usize, family: u8) -> Result<bool, DropReason> {
    // Two-byte reads: the compiler turns the bounds check of a one-byte
    // read at a variable offset into a form the verifier cannot use.
    let ttl = if family == FAMILY_V4 {
        h.load::<2>(l3_off + IPV4_TTL_OFF).ok_or(DropReason::MalformedIp)?[0]
    } else {
        h.load::<2>(l3_off + IPV6_HOP_LIMIT_OFF - 1).ok_or(DropReason::MalformedIp)?[1]
    };
    Ok(ttl <= 1)
}

/// Fails with `Udp6ZeroChecksum` for IPv6 UDP without a checksum, which
/// IPv6 forbids: its receiver would drop it, after lb had counted it as
/// forwarded.
#[inline(always)]
pub fn check_udp6<H: Hook>(h: &H, pkt: &L4Packet) -> Result<(), DropReason> {
    if pkt.key.family == FAMILY_V4 || pkt.key.proto != PROTO_UDP || pkt.fragment == FRAG_LATER {
        return Ok(());
    }
    let check = h.load::<2>(pkt.l4_off + UdpHdr::CHECK_OFF).ok_or(DropReason::TruncatedL4)?;
    if check == [0, 0] { Err(DropReason::Udp6ZeroChecksum) } else { Ok(()) }
}

/// The bytes from `pkt`'s IP header to its payload (TCP options
/// included): what each segment of a GSO skb carries besides payload.
#[inline(always)]
pub fn headers<H: Hook>(h: &H, pkt: &L4Packet) -> Result<usize, DropReason> {
    let l4 = if pkt.fragment == FRAG_LATER {
        0
    } else if pkt.key.proto == PROTO_UDP {
        UDP_HEADER
    } else {
        // Data offset and flags, read together (see `ttl_expires`).
        let [off, _] = h.load::<2>(pkt.l4_off + TCP_DATA_OFF).ok_or(DropReason::TruncatedL4)?;
        usize::from(off >> 4) * 4
    };
    Ok(pkt.l4_off - pkt.l3_off + l4)
}

/// Whether `pkt`, too big for its path, may be fragmented on the way
/// (IPv4 without DF) rather than answered.
#[inline(always)]
pub fn may_fragment<H: Hook>(h: &H, pkt: &L4Packet) -> Result<bool, DropReason> {
    if pkt.key.family != FAMILY_V4 {
        return Ok(false);
    }
    let [flags, _] = h.load::<2>(pkt.l3_off + IPV4_FRAG_OFF).ok_or(DropReason::MalformedIp)?;
    Ok(flags & IPV4_DF == 0)
}

/// Replaces the `side` endpoint of `pkt` with `addr`:`port_be`, and takes
/// one off the TTL if `hop` (once per packet forwarded).
#[inline(always)]
pub fn endpoint<H: Hook>(
    h: &H,
    pkt: &L4Packet,
    side: Side,
    addr: &Addr,
    port_be: u16,
    hop: bool,
) -> Result<(), DropReason> {
    let (old_addr, old_port) = match side {
        Side::Src => (pkt.key.src, pkt.key.src_port_be),
        Side::Dst => (pkt.key.dst, pkt.key.dst_port_be),
    };
    let v4 = pkt.key.family == FAMILY_V4;
    let udp = pkt.key.proto == PROTO_UDP;
    ip_header(h, pkt.l3_off, pkt.key.family, side, &old_addr, addr, hop)?;
    if pkt.fragment == FRAG_LATER {
        // No TCP/UDP header here: the first fragment's checksum covered
        // this fragment's share of the change.
        return Ok(());
    }
    let port_off = pkt.l4_off
        + match side {
            Side::Src => L4_SRC_PORT_OFF,
            Side::Dst => L4_DST_PORT_OFF,
        };
    let check_off = pkt.l4_off + if udp { UdpHdr::CHECK_OFF } else { TcpHdr::CHECK_OFF };
    let addr_ok = old_addr == *addr
        || h.l4_csum(
            check_off,
            csum::diff_addr(&old_addr, addr, if v4 { 1 } else { 4 }),
            true,
            udp,
            !v4,
        );
    let port_ok = old_port == port_be || {
        store(h, port_off, port_be.to_ne_bytes())?;
        h.l4_csum(check_off, csum::diff16(old_port, port_be), false, udp, !v4)
    };
    if addr_ok && port_ok { Ok(()) } else { Err(DropReason::TruncatedL4) }
}

/// Rewrites the `side` address of the IP header at `l3_off` from `old` to
/// `new` (nothing if they are equal) and takes one off its TTL / hop limit
/// if `hop`, keeping an IPv4 header checksum right.
#[inline(always)]
pub fn ip_header<H: Hook>(
    h: &H,
    l3: usize,
    family: u8,
    side: Side,
    old: &Addr,
    new: &Addr,
    hop: bool,
) -> Result<(), DropReason> {
    let v4 = family == FAMILY_V4;
    let addr_off = l3
        + match (side, v4) {
            (Side::Src, true) => Ipv4Hdr::SRC_OFF,
            (Side::Dst, true) => Ipv4Hdr::DST_OFF,
            (Side::Src, false) => Ipv6Hdr::SRC_OFF,
            (Side::Dst, false) => Ipv6Hdr::DST_OFF,
        };
    let changed = old != new;
    if !v4 {
        if changed {
            store(h, addr_off, new.to_bytes())?;
        }
        if hop {
            // Next header and hop limit, read together (see `ttl_expires`).
            let off = l3 + IPV6_HOP_LIMIT_OFF - 1;
            let [next, limit] = h.load::<2>(off).ok_or(DropReason::MalformedIp)?;
            store(h, off, [next, limit.wrapping_sub(1)])?;
        }
        return Ok(());
    }
    let mut diff = 0;
    if changed {
        store(h, addr_off, new.words[0].to_ne_bytes())?;
        diff += csum::diff32(old.words[0], new.words[0]);
    }
    if hop {
        let [ttl, proto] = h.load::<2>(l3 + IPV4_TTL_OFF).ok_or(DropReason::MalformedIp)?;
        let new_ttl = [ttl.wrapping_sub(1), proto];
        store(h, l3 + IPV4_TTL_OFF, new_ttl)?;
        diff += csum::diff16(u16::from_ne_bytes([ttl, proto]), u16::from_ne_bytes(new_ttl));
    }
    if diff == 0 || h.l3_csum(l3 + Ipv4Hdr::CHECK_OFF, diff) {
        Ok(())
    } else {
        Err(DropReason::MalformedIp)
    }
}

/// Rewrites the `side` endpoint of the packet an ICMP error quotes to
/// `addr`:`port_be`: its address, its port, its IPv4 header checksum and
/// its TCP/UDP checksum where the quote reaches that far. These bytes are
/// payload of the ICMP message, so they are written plainly; the returned
/// difference is what the ICMP checksum must take for them.
#[inline(always)]
pub fn quoted<H: Hook>(
    h: &H,
    e: &IcmpError,
    side: Side,
    addr: &Addr,
    port_be: u16,
) -> Result<u32, DropReason> {
    let q = &e.key;
    let v4 = q.family == FAMILY_V4;
    let (old_addr, old_port, addr_off, port_off) = match (side, v4) {
        (Side::Src, true) => (q.src, q.src_port_be, Ipv4Hdr::SRC_OFF, L4_SRC_PORT_OFF),
        (Side::Dst, true) => (q.dst, q.dst_port_be, Ipv4Hdr::DST_OFF, L4_DST_PORT_OFF),
        (Side::Src, false) => (q.src, q.src_port_be, Ipv6Hdr::SRC_OFF, L4_SRC_PORT_OFF),
        (Side::Dst, false) => (q.dst, q.dst_port_be, Ipv6Hdr::DST_OFF, L4_DST_PORT_OFF),
    };
    let words = if v4 { 1 } else { 4 };
    let addr_diff = csum::diff_addr(&old_addr, addr, words);
    let port_diff = csum::diff16(old_port, port_be);
    // Every changed word counts once towards the ICMP checksum.
    let mut icmp_diff = addr_diff + port_diff;
    if v4 {
        store(h, e.inner_l3_off + addr_off, addr.words[0].to_ne_bytes())?;
        icmp_diff += replace_check(h, e.inner_l3_off + Ipv4Hdr::CHECK_OFF, addr_diff, false)?;
    } else {
        store(h, e.inner_l3_off + addr_off, addr.to_bytes())?;
    }
    store(h, e.inner_l4_off + port_off, port_be.to_ne_bytes())?;
    let udp = q.proto == PROTO_UDP;
    let check_off = e.inner_l4_off + if udp { UdpHdr::CHECK_OFF } else { TcpHdr::CHECK_OFF };
    // A quote of only 8 bytes holds UDP's checksum but not TCP's.
    if check_off + 2 <= e.end {
        icmp_diff += replace_check(h, check_off, addr_diff + port_diff, udp)?;
    }
    Ok(icmp_diff)
}

/// Applies `diff` to the plain checksum at `off` (a UDP checksum of 0, "none",
/// stays so) and returns the difference the write made to the bytes.
#[inline(always)]
fn replace_check<H: Hook>(h: &H, off: usize, diff: u32, udp: bool) -> Result<u32, DropReason> {
    let Some(bytes) = h.load::<2>(off) else { return Ok(0) };
    let old = u16::from_ne_bytes(bytes);
    if udp && old == 0 {
        return Ok(0);
    }
    let mut new = csum::apply(old, diff);
    if udp && new == 0 {
        new = 0xffff;
    }
    store(h, off, new.to_ne_bytes())?;
    Ok(csum::diff16(old, new))
}

#[inline(always)]
fn store<H: Hook, const N: usize>(h: &H, off: usize, bytes: [u8; N]) -> Result<(), DropReason> {
    // Every offset written was read by the parser first, so this only fails
    // if the parser and the rewrite disagree: count it rather than crash.
    if h.store(off, bytes) { Ok(()) } else { Err(DropReason::MalformedIp) }
}
