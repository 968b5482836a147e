//! IP-in-IP outer headers, for the decapsulating program (`lb decap`):
//! whether a frame is an IPv4 (protocol 4) or IPv6 (protocol 41) packet
//! carried in an outer IPv4 or IPv6 header, where that outer header ends,
//! and whether the inner header is what the protocol number says.
//!
//! Read through [`PacketView`] like [`super::parse`], so it cannot read out
//! of bounds, and with no loop at all.

use super::{
    ParseError,
    headers::{ETH_P_IP, ETH_P_IPV6, EthHdr, Ipv4Hdr, Ipv6Hdr},
    view::PacketView,
};
use crate::abi::{Addr, FAMILY_V4, FAMILY_V6};

/// IP protocol number of an IPv4 packet carried in IP (IPIP, RFC 2003).
pub const PROTO_IPIP: u8 = 4;
/// IP protocol number of an IPv6 packet carried in IP (RFC 2473, RFC 4213).
pub const PROTO_IPV6: u8 = 41;
/// Offset of the outer IP header: only untagged frames are stripped (at tc
/// a VLAN tag is out of line already; at XDP a tagged frame is passed).
pub const OUTER_OFF: usize = core::mem::size_of::<EthHdr>();

/// An IP-in-IP packet's outer header, as far as stripping it needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tunnel {
    /// Length of the outer header: IPv4's with its options, or IPv6's 40
    /// bytes (no extension headers: see [`tunnel`]).
    pub outer_len: usize,
    /// The outer destination.
    pub dst: Addr,
    /// The outer header's family (`FAMILY_V4` / `FAMILY_V6`).
    pub family: u8,
    /// The inner packet's family, from the protocol number.
    pub inner_family: u8,
    /// End of the outer datagram (the frame may run on: Ethernet padding).
    pub end: usize,
}

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

/// The IP-in-IP outer header of a frame, `Ok(None)` if the frame is not an
/// unfragmented IP-in-IP packet right behind an untagged Ethernet header
/// (a VLAN tag in line, an outer fragment or an IPv6 outer header with
/// extension headers are left to the kernel), an error if its Ethernet or
/// outer IP header is cut short or inconsistent (as [`super::parse`]
/// judges them).
#[inline(always)]
pub fn tunnel<P: PacketView + ?Sized>(pkt: &P) -> Result<Option<Tunnel>, ParseError> {
    let eth: &EthHdr = pkt.header(0).ok_or(ParseError::TruncatedEthernet)?;
    match be16(eth.ethertype) {
        ETH_P_IP => outer_v4(pkt),
        ETH_P_IPV6 => outer_v6(pkt),
        _ => Ok(None),
    }
}

#[inline(always)]
fn outer_v4<P: PacketView + ?Sized>(pkt: &P) -> Result<Option<Tunnel>, ParseError> {
    let ip: &Ipv4Hdr = pkt.header(OUTER_OFF).ok_or(ParseError::MalformedIp)?;
    let ihl = usize::from(ip.version_ihl & 0x0f) * 4;
    let total = usize::from(be16(ip.total_len));
    if ip.version_ihl >> 4 != 4 || ihl < 20 || total < ihl || !pkt.fits(OUTER_OFF + total) {
        return Err(ParseError::MalformedIp);
    }
    let Some(inner_family) = inner_family(ip.proto) else { return Ok(None) };
    // A fragment is reassembled by the kernel first: left to it.
    if be16(ip.frag) & (Ipv4Hdr::MF | Ipv4Hdr::OFFSET_MASK) != 0 {
        return Ok(None);
    }
    Ok(Some(Tunnel {
        outer_len: ihl,
        dst: Addr::from_v4_bytes(ip.dst),
        family: FAMILY_V4,
        inner_family,
        end: OUTER_OFF + total,
    }))
}

#[inline(always)]
fn outer_v6<P: PacketView + ?Sized>(pkt: &P) -> Result<Option<Tunnel>, ParseError> {
    let ip: &Ipv6Hdr = pkt.header(OUTER_OFF).ok_or(ParseError::MalformedIp)?;
    let len = core::mem::size_of::<Ipv6Hdr>();
    let end = OUTER_OFF + len + usize::from(be16(ip.payload_len));
    if ip.vtc_flow[0] >> 4 != 6 || !pkt.fits(end) {
        return Err(ParseError::MalformedIp);
    }
    let Some(inner_family) = inner_family(ip.next_header) else { return Ok(None) };
    Ok(Some(Tunnel {
        outer_len: len,
        dst: Addr::from_v6_bytes(ip.dst),
        family: FAMILY_V6,
        inner_family,
        end,
    }))
}

#[inline(always)]
const fn inner_family(proto: u8) -> Option<u8> {
    match proto {
        PROTO_IPIP => Some(FAMILY_V4),
        PROTO_IPV6 => Some(FAMILY_V6),
        _ => None,
    }
}

/// Whether the inner header of `t` is of the family its protocol number
/// says, at least its minimum length, and its datagram inside the outer
/// one. The kernel's IP input checks the rest once it is stripped.
#[inline(always)]
pub fn inner_fits<P: PacketView + ?Sized>(pkt: &P, t: &Tunnel) -> bool {
    let off = OUTER_OFF + t.outer_len;
    if t.inner_family == FAMILY_V4 {
        let Some(ip) = pkt.header::<Ipv4Hdr>(off) else { return false };
        let ihl = usize::from(ip.version_ihl & 0x0f) * 4;
        let total = usize::from(be16(ip.total_len));
        ip.version_ihl >> 4 == 4 && ihl >= 20 && total >= ihl && off + total <= t.end
    } else {
        let Some(ip) = pkt.header::<Ipv6Hdr>(off) else { return false };
        let total = core::mem::size_of::<Ipv6Hdr>() + usize::from(be16(ip.payload_len));
        ip.vtc_flow[0] >> 4 == 6 && off + total <= t.end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ethernet header of `ethertype` (MACs zero).
    fn eth(ethertype: u16) -> [u8; 14] {
        let mut e = [0u8; 14];
        e[12..].copy_from_slice(&ethertype.to_be_bytes());
        e
    }

    /// An IPv4 header (no options) of `proto`, `payload` bytes after it.
    fn v4(proto: u8, dst: [u8; 4], payload: usize) -> [u8; 20] {
        let mut h = [0u8; 20];
        h[0] = 0x45;
        h[2..4].copy_from_slice(&((20 + payload) as u16).to_be_bytes());
        h[8] = 64;
        h[9] = proto;
        h[16..20].copy_from_slice(&dst);
        h
    }

    /// An IPv6 header of next header `next`, `payload` bytes after it.
    fn v6(next: u8, dst_last: u8, payload: usize) -> [u8; 40] {
        let mut h = [0u8; 40];
        h[0] = 0x60;
        h[4..6].copy_from_slice(&(payload as u16).to_be_bytes());
        h[6] = next;
        h[7] = 64;
        h[24] = 0xfd;
        h[39] = dst_last;
        h
    }

    fn frame(parts: &[&[u8]]) -> [u8; 256] {
        let mut out = [0u8; 256];
        let mut at = 0;
        for p in parts {
            out[at..at + p.len()].copy_from_slice(p);
            at += p.len();
        }
        out
    }

    fn len(parts: &[&[u8]]) -> usize {
        parts.iter().map(|p| p.len()).sum()
    }

    #[test]
    fn four_in_four() {
        let inner = v4(17, [10, 0, 0, 9], 8);
        let parts: [&[u8]; 4] = [&eth(ETH_P_IP), &v4(4, [10, 1, 0, 2], 28), &inner, &[0; 8]];
        let f = frame(&parts);
        let pkt = &f[..len(&parts)];
        let t = tunnel(pkt).unwrap().unwrap();
        assert_eq!(t.outer_len, 20);
        assert_eq!(t.dst, Addr::from_v4_bytes([10, 1, 0, 2]));
        assert_eq!((t.family, t.inner_family), (FAMILY_V4, FAMILY_V4));
        assert_eq!(t.end, 14 + 48);
        assert!(inner_fits(pkt, &t));
    }

    #[test]
    fn six_in_six_and_mixed_families() {
        let parts: [&[u8]; 3] = [&eth(ETH_P_IPV6), &v6(41, 2, 40), &v6(59, 9, 0)];
        let f = frame(&parts);
        let t = tunnel(&f[..len(&parts)]).unwrap().unwrap();
        assert_eq!((t.outer_len, t.family, t.inner_family), (40, FAMILY_V6, FAMILY_V6));
        assert!(inner_fits(&f[..len(&parts)], &t));

        let parts: [&[u8]; 3] = [&eth(ETH_P_IPV6), &v6(4, 2, 20), &v4(6, [1, 2, 3, 4], 0)];
        let f = frame(&parts);
        let t = tunnel(&f[..len(&parts)]).unwrap().unwrap();
        assert_eq!((t.family, t.inner_family), (FAMILY_V6, FAMILY_V4));
        assert!(inner_fits(&f[..len(&parts)], &t));
    }

    #[test]
    fn other_protocols_and_fragments_are_not_tunnels() {
        let parts: [&[u8]; 2] = [&eth(ETH_P_IP), &v4(6, [10, 1, 0, 2], 0)];
        assert_eq!(tunnel(&frame(&parts)[..len(&parts)]), Ok(None));
        let mut frag = v4(4, [10, 1, 0, 2], 20);
        frag[6] = 0x20; // more fragments
        let parts: [&[u8]; 3] = [&eth(ETH_P_IP), &frag, &v4(6, [1, 1, 1, 1], 0)];
        assert_eq!(tunnel(&frame(&parts)[..len(&parts)]), Ok(None));
        let parts: [&[u8]; 1] = [&eth(0x0806)];
        assert_eq!(tunnel(&frame(&parts)[..len(&parts)]), Ok(None));
    }

    #[test]
    fn truncated_outer_is_malformed() {
        // The outer header claims 28 bytes of payload; 10 are there.
        let parts: [&[u8]; 3] = [&eth(ETH_P_IP), &v4(4, [10, 1, 0, 2], 28), &[0x45; 10]];
        assert_eq!(tunnel(&frame(&parts)[..len(&parts)]), Err(ParseError::MalformedIp));
        let parts: [&[u8]; 2] = [&eth(ETH_P_IPV6), &[0x60; 12]];
        assert_eq!(tunnel(&frame(&parts)[..len(&parts)]), Err(ParseError::MalformedIp));
        assert_eq!(tunnel(&[0u8; 10][..]), Err(ParseError::TruncatedEthernet));
    }

    #[test]
    fn inner_of_the_wrong_family_or_too_long_does_not_fit() {
        // Protocol 4 with an IPv6 header inside.
        let parts: [&[u8]; 3] = [&eth(ETH_P_IP), &v4(4, [10, 1, 0, 2], 40), &v6(59, 1, 0)];
        let f = frame(&parts);
        let t = tunnel(&f[..len(&parts)]).unwrap().unwrap();
        assert!(!inner_fits(&f[..len(&parts)], &t));
        // An inner datagram longer than the outer one carries.
        let parts: [&[u8]; 3] = [&eth(ETH_P_IP), &v4(4, [10, 1, 0, 2], 20), &v4(6, [1; 4], 8)];
        let f = frame(&parts);
        let t = tunnel(&f[..len(&parts)]).unwrap().unwrap();
        assert!(!inner_fits(&f[..len(&parts)], &t));
    }
}
