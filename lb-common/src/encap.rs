//! Direct server return by IP-in-IP (`forwarding = "dsr-ipip"`): the outer
//! header the datapath puts in front of a client's packet, and the outer
//! source a flow gets. Written once, for the datapath and for the tests
//! and tools that predict its bytes.
//!
//! IPv4 goes in IPv4 (protocol 4) and IPv6 in IPv6 (next header 41), so the
//! Ethernet type of the frame stays as it was. The outer source is the
//! service's tunnel prefix with its host bits taken from the flow's hash:
//! a backend's NIC spreads tunnelled flows over its queues (RSS) by the
//! outer addresses only, and one fixed source would put them all on one.

use crate::{
    abi::{Addr, FAMILY_V4},
    iphdr,
};

/// Bytes an outer IPv4 header adds.
pub const V4_OVERHEAD: usize = iphdr::V4_LEN;
/// Bytes an outer IPv6 header adds.
pub const V6_OVERHEAD: usize = iphdr::V6_LEN;
/// The IP protocol of IPv4 carried in IP ("IPIP").
pub const PROTO_IPIP: u8 = 4;
/// The IP protocol of IPv6 carried in IP.
pub const PROTO_IPV6: u8 = 41;
/// The outer header's TTL / hop limit.
pub const OUTER_TTL: u8 = 64;
/// Most host bits of a tunnel prefix taken from the flow hash: 65 536
/// outer sources are far more than any NIC has queues.
pub const MAX_SOURCE_HOST_BITS: u8 = 16;

/// The outer source of a flow whose hash is `hash`: `prefix` (of `family`)
/// with its low `host_bits` bits (at most [`MAX_SOURCE_HOST_BITS`]) taken
/// from the hash. With 0 host bits, the prefix itself.
#[inline(always)]
pub fn tunnel_source(prefix: &Addr, host_bits: u8, family: u8, hash: u32) -> Addr {
    let bits = if host_bits > MAX_SOURCE_HOST_BITS { MAX_SOURCE_HOST_BITS } else { host_bits };
    let mask: u32 = (1u32 << bits) - 1;
    // The hash's high half: its low bits also pick the Maglev slot, and
    // the sources one backend sees should not follow its slots.
    let host = hash.rotate_right(16) & mask;
    let mut out = *prefix;
    // The host bits live in the last word of the family's address (words
    // hold wire bytes, so the number is read big-endian).
    if family == FAMILY_V4 {
        out.words[0] = ((u32::from_be(out.words[0]) & !mask) | host).to_be();
    } else {
        out.words[3] = ((u32::from_be(out.words[3]) & !mask) | host).to_be();
    }
    out
}

/// The outer IPv4 header from `src` to `dst` in front of an IPv4 packet of
/// `inner_len` bytes whose TOS byte is `tos`: DF set (the datapath answers
/// a packet too big for the tunnel itself), identification 0, TTL
/// [`OUTER_TTL`], checksum filled in.
#[inline(always)]
pub fn outer_v4(src: &Addr, dst: &Addr, inner_len: u16, tos: u8) -> [u8; V4_OVERHEAD] {
    let total = inner_len.saturating_add(V4_OVERHEAD as u16);
    iphdr::v4(tos, total, true, OUTER_TTL, PROTO_IPIP, src, dst)
}

/// The outer IPv6 header from `src` to `dst` in front of an IPv6 packet of
/// `inner_len` bytes (its whole length, header included) whose first four
/// bytes are `inner_first`: the inner traffic class kept, the flow label
/// taken from `hash` (routers on the way spread tunnelled flows by it),
/// hop limit [`OUTER_TTL`].
#[inline(always)]
pub fn outer_v6(
    src: &Addr,
    dst: &Addr,
    inner_len: u16,
    inner_first: [u8; 4],
    hash: u32,
) -> [u8; V6_OVERHEAD] {
    let label = (hash & 0x000f_ffff).to_be_bytes();
    let first =
        [0x60 | (inner_first[0] & 0x0f), (inner_first[1] & 0xf0) | label[1], label[2], label[3]];
    iphdr::v6(first, inner_len, PROTO_IPV6, OUTER_TTL, src, dst)
}

#[cfg(test)]
mod tests {
    extern crate std;

    use core::net::IpAddr;

    use super::*;
    use crate::{abi::FAMILY_V6, csum};

    fn addr(s: &str) -> Addr {
        Addr::from(s.parse::<IpAddr>().unwrap())
    }

    #[test]
    fn the_source_keeps_the_prefix_and_takes_host_bits_from_the_hash() {
        let p = addr("10.9.0.0");
        let mut seen = std::collections::BTreeSet::new();
        for hash in 0..5000u32 {
            let s = tunnel_source(&p, 8, FAMILY_V4, hash.wrapping_mul(0x9e37_79b9));
            let b = s.to_bytes();
            assert_eq!(&b[..3], &[10, 9, 0], "{hash}");
            seen.insert(b[3]);
        }
        assert_eq!(seen.len(), 256, "every host value is used");
        // A /32 (no host bits) is one fixed source, whatever the hash.
        let one = addr("10.9.0.7");
        assert_eq!(tunnel_source(&one, 0, FAMILY_V4, 0xdead_beef), one);
        // More host bits than the cap take only the cap.
        let s = tunnel_source(&addr("10.0.0.0"), 24, FAMILY_V4, u32::MAX);
        assert_eq!(s.to_bytes()[..4], [10, 0, 255, 255]);
    }

    #[test]
    fn an_ipv6_source_varies_only_its_last_bits() {
        let p = addr("fd00:9::");
        let s = tunnel_source(&p, 16, FAMILY_V6, 0x1234_5678);
        let want: IpAddr = "fd00:9::1234".parse().unwrap();
        assert_eq!(s.to_ip(FAMILY_V6), want);
    }

    #[test]
    fn the_outer_ipv4_header_is_valid_and_carries_the_inner_length() {
        let h = outer_v4(&addr("10.9.0.5"), &addr("10.0.1.2"), 60, 0x10);
        assert_eq!(h[0], 0x45);
        assert_eq!(h[1], 0x10);
        assert_eq!(u16::from_be_bytes([h[2], h[3]]), 80);
        assert_eq!(h[6], 0x40, "DF");
        assert_eq!((h[8], h[9]), (OUTER_TTL, PROTO_IPIP));
        assert_eq!(&h[12..16], &[10, 9, 0, 5]);
        assert_eq!(&h[16..20], &[10, 0, 1, 2]);
        assert_eq!(csum::full(&h), 0, "a valid header sums to zero");
    }

    #[test]
    fn the_outer_ipv6_header_keeps_the_traffic_class() {
        // Version 6, traffic class 0xb8 (EF), flow label 0x12345.
        let inner = [0x6b, 0x81, 0x23, 0x45];
        let h = outer_v6(&addr("fd00:9::1"), &addr("fd00:1::2"), 100, inner, 0xabcde);
        assert_eq!(h[0], 0x6b);
        assert_eq!(h[1] & 0xf0, 0x80);
        assert_eq!(u32::from_be_bytes([0, h[1] & 0x0f, h[2], h[3]]), 0xabcde);
        assert_eq!(u16::from_be_bytes([h[4], h[5]]), 100);
        assert_eq!((h[6], h[7]), (PROTO_IPV6, OUTER_TTL));
        assert_eq!(&h[8..24], &addr("fd00:9::1").to_bytes());
        assert_eq!(&h[24..40], &addr("fd00:1::2").to_bytes());
    }
}
