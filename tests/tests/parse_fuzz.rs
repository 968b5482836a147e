//! Property tests of the shared header parser: on arbitrary bytes and on
//! builder frames with random mutations it never panics, and whatever it
//! reports is consistent with the bytes. (The same invariants drive the
//! cargo-fuzz target in `fuzz/`.)

use lb_common::abi::{FAMILY_V4, FAMILY_V6, FlowKey, PROTO_TCP, PROTO_UDP};
use lb_common::parse::{
    FRAG_FIRST, FRAG_NONE, Fragment, IcmpError, IcmpKind, MAX_IPV6_EXT_HEADERS, ParseError, Parsed,
    parse,
};
use lb_tests::packet::{EXT_DEST_OPTS, EXT_HOP_BY_HOP, EXT_ROUTING, Frame, Ipv6Ext, PROTO_ICMP};
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Parses `bytes` and checks every invariant of the outcome; returns it.
fn check(bytes: &[u8]) -> Result<Parsed, ParseError> {
    let first = parse(bytes);
    assert_eq!(first, parse(bytes), "re-parsing is deterministic");
    if let Ok(Parsed::L4(p)) = first {
        assert!(p.l3_off == 14 || p.l3_off == 18, "l3_off {}", p.l3_off);
        let header = match p.key.proto {
            PROTO_TCP => 20,
            PROTO_UDP => 8,
            other => panic!("L4 with protocol {other}"),
        };
        assert!(p.l4_off + header <= bytes.len(), "{p:?} in {} bytes", bytes.len());
        let min_ip = match p.key.family {
            FAMILY_V4 => 20,
            FAMILY_V6 => 40,
            other => panic!("family {other}"),
        };
        assert!(p.l4_off >= p.l3_off + min_ip, "{p:?}");
        if p.key.proto == PROTO_UDP {
            assert_eq!(p.tcp_flags, 0);
        } else {
            assert_eq!(p.tcp_flags, bytes[p.l4_off + 13]);
        }
        let ports = &bytes[p.l4_off..p.l4_off + 4];
        assert_eq!(p.key.src_port_be.to_ne_bytes(), [ports[0], ports[1]]);
        assert_eq!(p.key.dst_port_be.to_ne_bytes(), [ports[2], ports[3]]);
        assert_eq!(p.key._pad, [0, 0]);
    }
    if let Ok(Parsed::IcmpError(q)) = first {
        assert!(q.key.proto == PROTO_TCP || q.key.proto == PROTO_UDP, "{q:?}");
        assert!(q.key.family == FAMILY_V4 || q.key.family == FAMILY_V6, "{q:?}");
        assert_eq!(q.key._pad, [0, 0]);
        // The datapath rewrites at these offsets: in order, and the quoted
        // ports inside the datagram.
        assert!(q.l3_off < q.icmp_off && q.icmp_off + 8 == q.inner_l3_off, "{q:?}");
        assert!(q.inner_l3_off < q.inner_l4_off && q.inner_l4_off + 4 <= q.end, "{q:?}");
        assert!(q.end <= bytes.len(), "{q:?}");
    }
    if let Ok(outcome) = first {
        // Every check is "does it fit": trailing bytes (Ethernet padding)
        // never change a classification.
        let mut padded = bytes.to_vec();
        padded.extend_from_slice(&[0xa5; 48]);
        assert_eq!(parse(padded.as_slice()), Ok(outcome), "padding changed the outcome");
    }
    first
}

/// A random frame description the builder can lay out.
fn frame() -> impl Strategy<Value = Frame> {
    let v4 = (any::<[u8; 4]>(), any::<[u8; 4]>(), proptest::collection::vec(any::<u8>(), 0..=40))
        .prop_map(|(s, d, opts)| {
            (IpAddr::V4(Ipv4Addr::from(s)), IpAddr::V4(Ipv4Addr::from(d)), opts, Vec::new())
        });
    let ext = (prop::sample::select(vec![EXT_HOP_BY_HOP, EXT_ROUTING, EXT_DEST_OPTS]), 0u8..4)
        .prop_map(|(kind, len_units)| Ipv6Ext::Generic { kind, len_units });
    let v6 = (any::<[u8; 16]>(), any::<[u8; 16]>(), proptest::collection::vec(ext, 0..=6))
        .prop_map(|(s, d, exts)| {
            (IpAddr::V6(Ipv6Addr::from(s)), IpAddr::V6(Ipv6Addr::from(d)), Vec::new(), exts)
        });
    (
        prop_oneof![v4, v6],
        prop::sample::select(vec![PROTO_TCP, PROTO_UDP, PROTO_ICMP]),
        (any::<u16>(), any::<u16>(), any::<u8>(), any::<u32>()),
        proptest::option::of(0u16..4096),
        proptest::option::weighted(0.3, (0u16..8192, any::<bool>())),
        proptest::collection::vec(any::<u8>(), 0..64),
        0usize..128,
    )
        .prop_map(
            |((src, dst, opts, exts), proto, (sp, dp, flags, seq), vlan, frag, payload, pad)| {
                let mut f = Frame::new(proto, SocketAddr::new(src, sp), SocketAddr::new(dst, dp))
                    .tcp_flags(flags)
                    .seq(seq)
                    .ip_options(&opts)
                    .payload(&payload)
                    .pad_to(pad);
                f.vlan = vlan;
                f.ipv6_ext = exts;
                if let Some((offset, more)) = frag {
                    f = f.fragment(offset, more);
                }
                f
            },
        )
}

/// What the parser must say about an unmodified builder frame.
fn oracle(f: &Frame) -> Parsed {
    let no_ports = |proto: u8| {
        let key = FlowKey::between(f.src, f.dst, proto);
        FlowKey { src_port_be: 0, dst_port_be: 0, ..key }
    };
    let later = |payload_off: usize, proto: u8| {
        Parsed::Fragment(Fragment {
            l3_off: f.l3_offset(),
            payload_off,
            key: no_ports(proto),
            id: 0,
        })
    };
    // The builder gives every datagram identification 0.
    let mut fragment = FRAG_NONE;
    if f.is_ipv4() {
        match f.ipv4_fragment {
            Some((o, _)) if o > 0 => return later(f.l4_offset(), f.proto),
            Some((_, true)) => fragment = FRAG_FIRST,
            _ => {}
        }
    } else {
        let mut off = f.l3_offset() + 40;
        for (i, ext) in f.ipv6_ext.iter().enumerate().take(MAX_IPV6_EXT_HEADERS) {
            off += ext.len();
            if let Ipv6Ext::Fragment { offset_units, more } = *ext {
                let next = f.ipv6_ext.get(i + 1).map_or(f.proto, Ipv6Ext::kind);
                if offset_units > 0 {
                    return later(off, next);
                }
                if more {
                    fragment = FRAG_FIRST;
                }
            }
        }
        if f.ipv6_ext.len() > MAX_IPV6_EXT_HEADERS {
            return Parsed::OtherProtocol;
        }
    }
    if f.proto == PROTO_ICMP && f.is_ipv4() {
        return icmp_v4_oracle(f);
    }
    if f.proto != PROTO_TCP && f.proto != PROTO_UDP {
        return Parsed::OtherProtocol;
    }
    Parsed::L4(lb_common::parse::L4Packet {
        l3_off: f.l3_offset(),
        l4_off: f.l4_offset(),
        key: FlowKey::between(f.src, f.dst, f.proto),
        tcp_flags: if f.proto == PROTO_TCP { f.tcp_flags } else { 0 },
        fragment,
        frag_id: 0,
    })
}

/// What the ICMPv4 message of `f` (its whole IP payload) says, read by
/// hand from RFC 792's layout: an error (destination unreachable, time
/// exceeded, parameter problem) quoting an IPv4 header with offset 0 and
/// TCP or UDP ports inside the message names the quoted flow.
fn icmp_v4_oracle(f: &Frame) -> Parsed {
    let msg = &f.payload[..];
    let other = Parsed::OtherProtocol;
    let (Some(&[kind, code]), Some(q)) =
        (msg.get(..2).map(|h| [h[0], h[1]]).as_ref(), msg.get(8..))
    else {
        return other;
    };
    let kind = match (kind, code) {
        (3, 4) => IcmpKind::TooBig,
        (3, _) => IcmpKind::Unreachable,
        (11, _) => IcmpKind::TimeExceeded,
        (12, _) => IcmpKind::ParameterProblem,
        _ => return other,
    };
    if q.len() < 20 || q[0] >> 4 != 4 || q[0] & 0xf < 5 {
        return other;
    }
    let ihl = usize::from(q[0] & 0xf) * 4;
    let offset = u16::from_be_bytes([q[6], q[7]]) & 0x1fff;
    let proto = q[9];
    if offset != 0 || (proto != PROTO_TCP && proto != PROTO_UDP) || q.len() < ihl + 4 {
        return other;
    }
    let ip = |b: &[u8]| IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]));
    let port = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
    let src = SocketAddr::new(ip(&q[12..16]), port(&q[ihl..]));
    let dst = SocketAddr::new(ip(&q[16..20]), port(&q[ihl + 2..]));
    let icmp_off = f.l4_offset();
    Parsed::IcmpError(IcmpError {
        kind,
        l3_off: f.l3_offset(),
        icmp_off,
        inner_l3_off: icmp_off + 8,
        inner_l4_off: icmp_off + 8 + ihl,
        end: icmp_off + msg.len(),
        key: FlowKey::between(src, dst, proto),
    })
}

/// An ICMP(v6) port unreachable quoting a random TCP or UDP packet.
fn unreachable_frame() -> impl Strategy<Value = (Frame, FlowKey)> {
    (frame(), any::<bool>()).prop_map(|(quoted, tcp)| {
        // Quotes are of unfragmented packets without extension headers.
        let quoted = Frame {
            proto: if tcp { PROTO_TCP } else { PROTO_UDP },
            ipv4_fragment: None,
            ipv6_ext: Vec::new(),
            ..quoted
        };
        let from = quoted.dst.ip().to_string();
        let to = quoted.src.ip().to_string();
        let key = FlowKey::between(quoted.src, quoted.dst, quoted.proto);
        (Frame::icmp_port_unreachable(&from, &to, &quoted), key)
    })
}

/// One random change to a frame's bytes.
#[derive(Clone, Debug)]
enum Mutation {
    /// Flip one bit of the byte at this index (modulo the length).
    Flip(usize, u8),
    /// Overwrite the byte at this index (modulo the length).
    Set(usize, u8),
    /// Cut the frame to this length (modulo the length + 1).
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), 0u8..8).prop_map(|(i, bit)| Mutation::Flip(i, bit)),
        4 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    if bytes.is_empty() {
        return;
    }
    let len = bytes.len();
    match *m {
        Mutation::Flip(i, bit) => bytes[i % len] ^= 1 << bit,
        Mutation::Set(i, b) => bytes[i % len] = b,
        Mutation::Truncate(n) => bytes.truncate(n % (len + 1)),
    }
}

/// Ethernet header bytes with an IP or VLAN EtherType, then anything: gets
/// random bytes past the EtherType switch far more often than pure noise.
fn ip_ish_bytes() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<[u8; 12]>(),
        prop::sample::select(vec![0x0800u16, 0x86dd, 0x8100]),
        proptest::option::of(prop::sample::select(vec![0x0800u16, 0x86dd])),
        any::<u8>(),
        proptest::collection::vec(any::<u8>(), 0..200),
    )
        .prop_map(|(macs, ethertype, inner, version, tail)| {
            let mut b = macs.to_vec();
            b.extend_from_slice(&ethertype.to_be_bytes());
            if let (0x8100, Some(inner)) = (ethertype, inner) {
                b.extend_from_slice(&[0, 1]);
                b.extend_from_slice(&inner.to_be_bytes());
            }
            // A plausible version nibble half the time.
            let version = if version & 1 == 0 { 0x45 } else { version };
            b.push(version);
            b.extend_from_slice(&tail);
            b
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = check(&bytes);
    }

    #[test]
    fn ip_looking_bytes_never_panic(bytes in ip_ish_bytes()) {
        let _ = check(&bytes);
    }

    #[test]
    fn builder_frames_parse_as_described(f in frame()) {
        let bytes = f.bytes();
        prop_assert_eq!(check(&bytes), Ok(oracle(&f)), "{:?}", f);
    }

    #[test]
    fn icmp_unreachables_name_the_quoted_flow((f, key) in unreachable_frame()) {
        let got = check(&f.bytes());
        prop_assert!(
            matches!(got, Ok(Parsed::IcmpError(e)) if e.key == key && e.kind == IcmpKind::Unreachable),
            "{:?}: {:?}", f, got
        );
    }

    #[test]
    fn mutated_frames_never_panic(
        f in frame(),
        mutations in proptest::collection::vec(mutation(), 1..8),
    ) {
        let mut bytes = f.bytes();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        let _ = check(&bytes);
    }

    #[test]
    fn every_prefix_of_a_frame_is_consistent(f in frame()) {
        let bytes = f.bytes();
        let full = check(&bytes);
        for n in 0..bytes.len() {
            let prefix = check(&bytes[..n]);
            // Shorter never makes a frame parse where the whole did not, and a
            // prefix that parses at all parses like the whole frame.
            if let Ok(outcome) = prefix {
                prop_assert_eq!(Ok(outcome), full, "{} of {} bytes", n, bytes.len());
            }
            if n < f.l3_offset() {
                prop_assert_eq!(prefix, Err(ParseError::TruncatedEthernet));
            }
        }
    }
}
