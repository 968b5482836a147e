//! The ICMP errors the datapath sends itself, in place of a packet it
//! cannot forward: "fragmentation needed" / "packet too big" for a packet
//! larger than its path's MTU, and "time exceeded" for one whose TTL runs
//! out here. Pure functions over fixed-size arrays, so the eBPF program and
//! the host tests build the same bytes.
//!
//! An answer is the sender's own frame turned around: its IP header and the
//! first 8 bytes after it stay where they are as the quote, and the new IP
//! and ICMP headers are put in front of them. Only the quote's checksum sum
//! is needed here; the caller reads it from the packet.

use crate::{abi::Addr, iphdr};

/// TTL / hop limit of an answer.
pub const ANSWER_TTL: u8 = 64;

/// Time-exceeded errors each CPU answers a second at most, after a burst of
/// [`TIME_EXCEEDED_BURST`]: a router's limit (Linux's `icmp_msgs_per_sec`
/// is 1000). Past it, the packet is dropped unanswered
/// (`DropReason::TtlExpiredUnanswered`).
pub const TIME_EXCEEDED_PER_SEC: u32 = 1000;
/// The burst of time-exceeded errors each CPU may answer at once.
pub const TIME_EXCEEDED_BURST: u32 = 100;
/// Bytes of IPv4 + ICMP header in front of the quote.
pub const V4_HEADERS: usize = 28;
/// Bytes of IPv6 + ICMPv6 header in front of the quote.
pub const V6_HEADERS: usize = 48;
/// Bytes of a UDP packet quoted after its IP header (RFC 792's 64 bits:
/// the ports, all a receiver needs).
pub const QUOTED_L4: usize = 8;
/// Bytes of a TCP packet quoted after its IP header: its whole fixed
/// header. Receivers need only the ports and sequence number, but a TCP
/// skb with its checksum left to offload (CHECKSUM_PARTIAL) still points
/// at that checksum, 16 bytes in, once it has become the answer; the quote
/// must reach past it.
pub const QUOTED_TCP: usize = 20;
/// Longest quote (IP header, options or extension headers included, and
/// [`QUOTED_L4`]) an answer carries; packets with longer headers are
/// dropped unanswered.
pub const MAX_QUOTE: usize = 128;

/// Which error to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The packet does not fit the next hop's MTU, given here.
    TooBig {
        /// The MTU the sender must fit.
        mtu: u32,
    },
    /// The packet's TTL or hop limit ran out.
    TimeExceeded,
}

impl Answer {
    /// ICMPv4 type, code and the four type-specific bytes.
    const fn v4(self) -> [u8; 8] {
        match self {
            // Destination unreachable, fragmentation needed: unused, then
            // the next-hop MTU (RFC 1191).
            Answer::TooBig { mtu } => {
                let m = (if mtu > 0xffff { 0xffff } else { mtu } as u16).to_be_bytes();
                [3, 4, 0, 0, 0, 0, m[0], m[1]]
            }
            Answer::TimeExceeded => [11, 0, 0, 0, 0, 0, 0, 0],
        }
    }

    /// ICMPv6 type, code and the four type-specific bytes.
    const fn v6(self) -> [u8; 8] {
        match self {
            Answer::TooBig { mtu } => {
                let m = mtu.to_be_bytes();
                [2, 0, 0, 0, m[0], m[1], m[2], m[3]]
            }
            Answer::TimeExceeded => [3, 0, 0, 0, 0, 0, 0, 0],
        }
    }
}

/// The one's-complement sum of the 16-bit words of `data` (native-order
/// words of wire bytes, as loaded), folded to 16 bits; `N` is even.
#[inline(always)]
pub fn sum<const N: usize>(data: &[u8; N]) -> u32 {
    let mut s: u32 = 0;
    let mut i = 0;
    while i + 1 < N {
        s += u32::from(u16::from_ne_bytes([data[i], data[i + 1]]));
        i += 2;
    }
    fold(s)
}

#[inline(always)]
const fn fold(mut s: u32) -> u32 {
    s = (s & 0xffff) + (s >> 16);
    (s & 0xffff) + (s >> 16)
}

/// The checksum, as stored, of data whose word sum is `s`.
#[inline(always)]
pub const fn finish(s: u32) -> [u8; 2] {
    (!(fold(s) as u16)).to_ne_bytes()
}

/// The IPv4 and ICMP headers of `answer` from `src` to `dst`, quoting
/// `quote_len` bytes whose word sum ([`sum`]) is `quote_sum`.
#[inline(always)]
pub fn headers_v4(
    answer: Answer,
    src: &Addr,
    dst: &Addr,
    quote_len: usize,
    quote_sum: u32,
) -> [u8; V4_HEADERS] {
    let total = (V4_HEADERS + quote_len) as u16;
    let mut out = [0u8; V4_HEADERS];
    let ip = iphdr::v4(0, total, false, ANSWER_TTL, 1, src, dst);
    let mut icmp = answer.v4();
    let icmp_check = finish(sum(&icmp) + quote_sum);
    icmp[2] = icmp_check[0];
    icmp[3] = icmp_check[1];
    let mut i = 0;
    while i < 20 {
        out[i] = ip[i];
        i += 1;
    }
    while i < V4_HEADERS {
        out[i] = icmp[i - 20];
        i += 1;
    }
    out
}

/// The IPv6 and ICMPv6 headers of `answer` from `src` to `dst`, quoting
/// `quote_len` bytes whose word sum is `quote_sum`.
#[inline(always)]
pub fn headers_v6(
    answer: Answer,
    src: &Addr,
    dst: &Addr,
    quote_len: usize,
    quote_sum: u32,
) -> [u8; V6_HEADERS] {
    let len = (8 + quote_len) as u16;
    let l = len.to_be_bytes();
    let (s, d) = (src.to_bytes(), dst.to_bytes());
    let ip = iphdr::v6([0x60, 0, 0, 0], len, 58, ANSWER_TTL, src, dst);
    let mut out = [0u8; V6_HEADERS];
    let mut i = 0;
    while i < 40 {
        out[i] = ip[i];
        i += 1;
    }
    // The pseudo-header: both addresses, the upper-layer length and the
    // next header (RFC 8200 §8.1).
    let pseudo = sum(&s)
        + sum(&d)
        + u32::from(u16::from_ne_bytes(l))
        + u32::from(u16::from_ne_bytes([0, 58]));
    let mut icmp = answer.v6();
    let check = finish(pseudo + sum(&icmp) + quote_sum);
    icmp[2] = check[0];
    icmp[3] = check[1];
    let mut i = 0;
    while i < 8 {
        out[40 + i] = icmp[i];
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::csum;
    use std::vec::Vec;

    fn v4(a: [u8; 4]) -> Addr {
        Addr::from_v4_bytes(a)
    }

    #[test]
    fn a_v4_answer_has_valid_checksums_and_the_mtu() {
        let quote =
            [0x45u8, 0, 0, 60, 1, 2, 0x40, 0, 63, 6, 0xab, 0xcd, 10, 0, 0, 2, 10, 100, 0, 1];
        let mut quote28 = [0u8; 28];
        quote28[..20].copy_from_slice(&quote);
        quote28[20..].copy_from_slice(&[0x9c, 0x40, 0, 80, 0, 0, 0, 1]);
        let h = headers_v4(
            Answer::TooBig { mtu: 1280 },
            &v4([10, 100, 0, 1]),
            &v4([10, 0, 0, 2]),
            28,
            sum(&quote28),
        );
        assert_eq!(csum::full(&h[..20]), 0, "IP header checksum");
        let mut icmp = h[20..].to_vec();
        icmp.extend_from_slice(&quote28);
        assert_eq!(csum::full(&icmp), 0, "ICMP checksum");
        assert_eq!(&h[20..22], &[3, 4]);
        assert_eq!(u16::from_be_bytes([h[26], h[27]]), 1280);
        assert_eq!(u16::from_be_bytes([h[2], h[3]]), 56, "total length");
        assert_eq!(&h[12..20], &[10, 100, 0, 1, 10, 0, 0, 2]);
    }

    #[test]
    fn a_v6_answer_has_a_valid_checksum_over_its_pseudo_header() {
        let src = Addr::from_v6_bytes([0xfd, 0x64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        let dst = Addr::from_v6_bytes([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        let mut quote = [0u8; 48];
        for (i, b) in quote.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(7);
        }
        let h = headers_v6(Answer::TimeExceeded, &src, &dst, 48, sum(&quote));
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&src.to_bytes());
        pseudo.extend_from_slice(&dst.to_bytes());
        pseudo.extend_from_slice(&(56u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, 58]);
        pseudo.extend_from_slice(&h[40..]);
        pseudo.extend_from_slice(&quote);
        assert_eq!(csum::full(&pseudo), 0, "ICMPv6 checksum");
        assert_eq!(&h[40..42], &[3, 0]);
        assert_eq!(u16::from_be_bytes([h[4], h[5]]), 56, "payload length");
        assert_eq!(h[6], 58);
    }

    #[test]
    fn a_v4_mtu_beyond_16_bits_is_capped() {
        let h = headers_v4(Answer::TooBig { mtu: 70_000 }, &v4([1; 4]), &v4([2; 4]), 28, 0);
        assert_eq!(u16::from_be_bytes([h[26], h[27]]), 0xffff);
    }
}
