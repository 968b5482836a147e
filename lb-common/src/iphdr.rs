//! IPv4 and IPv6 headers built from their fields: one builder for every
//! header lb writes (the `dsr-ipip` outer header, the ICMP errors it
//! answers with, and the tunnel health probes' inner packets). Fixed-size
//! arrays and bounded loops, for the eBPF verifier.

use crate::{
    abi::Addr,
    icmp::{finish, sum},
};

/// Bytes of an IPv4 header without options.
pub const V4_LEN: usize = 20;
/// Bytes of an IPv6 header.
pub const V6_LEN: usize = 40;

/// An IPv4 header without options from `src` to `dst` (IPv4 addresses):
/// identification 0, DF as `dont_fragment` says, checksum filled in.
/// `total_len` counts the header.
#[inline(always)]
pub fn v4(
    tos: u8,
    total_len: u16,
    dont_fragment: bool,
    ttl: u8,
    proto: u8,
    src: &Addr,
    dst: &Addr,
) -> [u8; V4_LEN] {
    let len = total_len.to_be_bytes();
    let (s, d) = (src.words[0].to_ne_bytes(), dst.words[0].to_ne_bytes());
    let df = if dont_fragment { 0x40 } else { 0 };
    let mut h = [
        0x45, tos, len[0], len[1], 0, 0, df, 0, ttl, proto, 0, 0, s[0], s[1], s[2], s[3], d[0],
        d[1], d[2], d[3],
    ];
    let check = finish(sum(&h));
    h[10] = check[0];
    h[11] = check[1];
    h
}

/// An IPv6 header from `src` to `dst` whose first four bytes (version,
/// traffic class, flow label) are `first`, of a payload of `payload_len`
/// bytes of protocol `next`.
#[inline(always)]
pub fn v6(
    first: [u8; 4],
    payload_len: u16,
    next: u8,
    hops: u8,
    src: &Addr,
    dst: &Addr,
) -> [u8; V6_LEN] {
    let len = payload_len.to_be_bytes();
    let (s, d) = (src.to_bytes(), dst.to_bytes());
    let mut h = [0u8; V6_LEN];
    h[0] = first[0];
    h[1] = first[1];
    h[2] = first[2];
    h[3] = first[3];
    h[4] = len[0];
    h[5] = len[1];
    h[6] = next;
    h[7] = hops;
    let mut i = 0;
    while i < 16 {
        h[8 + i] = s[i];
        h[24 + i] = d[i];
        i += 1;
    }
    h
}

#[cfg(test)]
mod tests {
    use core::net::IpAddr;

    use super::*;
    use crate::csum;

    fn addr(s: &str) -> Addr {
        Addr::from(s.parse::<IpAddr>().unwrap())
    }

    #[test]
    fn a_v4_header_has_its_fields_and_a_valid_checksum() {
        let h = v4(0x10, 60, true, 64, 6, &addr("10.0.0.1"), &addr("10.0.0.2"));
        assert_eq!(h[..12], [0x45, 0x10, 0, 60, 0, 0, 0x40, 0, 64, 6, h[10], h[11]]);
        assert_eq!(h[12..], [10, 0, 0, 1, 10, 0, 0, 2]);
        assert_eq!(csum::full(&h), 0);
        assert_eq!(v4(0, 20, false, 1, 17, &addr("1.2.3.4"), &addr("5.6.7.8"))[6], 0);
    }

    #[test]
    fn a_v6_header_has_its_fields() {
        let h = v6([0x61, 0x23, 0x45, 0x67], 100, 41, 9, &addr("fd00::1"), &addr("fd00::2"));
        assert_eq!(h[..8], [0x61, 0x23, 0x45, 0x67, 0, 100, 41, 9]);
        assert_eq!(h[23], 1);
        assert_eq!(h[39], 2);
    }
}
