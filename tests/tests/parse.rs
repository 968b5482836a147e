//! Host-side tests of the shared header parser, `lb_common::parse::parse`,
//! on frames from the test packet builder.

use std::net::IpAddr;

use lb_common::abi::{Addr, FAMILY_V4, FAMILY_V6, FlowKey, PROTO_TCP, PROTO_UDP};
use lb_common::parse::{
    FRAG_FIRST, IcmpKind, L4Packet, MAX_IPV6_EXT_HEADERS, ParseError, Parsed, parse,
};
use lb_tests::packet::{
    DEFAULT_DST_MAC, DEFAULT_SRC_MAC, ETHERTYPE_ARP, ETHERTYPE_VLAN, EXT_DEST_OPTS, EXT_HOP_BY_HOP,
    EXT_ROUTING, Frame, PROTO_ICMP, PROTO_ICMPV6, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN,
    ethernet,
};

fn addr(s: &str) -> Addr {
    Addr::from(s.parse::<IpAddr>().expect("address literal"))
}

fn parsed(frame: &Frame) -> Result<Parsed, ParseError> {
    parse(frame.bytes().as_slice())
}

/// The L4 packet the parser reports for `frame`, failing otherwise.
fn l4(frame: &Frame) -> L4Packet {
    match parsed(frame) {
        Ok(Parsed::L4(p)) => p,
        other => panic!("expected L4, got {other:?} for {frame:?}"),
    }
}

/// The flow key `frame` describes, built field by field from its endpoints.
fn expected_key(frame: &Frame) -> FlowKey {
    FlowKey::between(frame.src, frame.dst, frame.proto)
}

/// Asserts that `frame` parses as L4 with the offsets and key it describes.
fn assert_describes(frame: &Frame) -> L4Packet {
    let p = l4(frame);
    assert_eq!(p.l3_off, frame.l3_offset(), "{frame:?}");
    assert_eq!(p.l4_off, frame.l4_offset(), "{frame:?}");
    assert_eq!(p.key, expected_key(frame), "{frame:?}");
    let flags = if frame.proto == PROTO_TCP { frame.tcp_flags } else { 0 };
    assert_eq!(p.tcp_flags, flags, "{frame:?}");
    p
}

/// Overwrites the IP length field so that the datagram ends where `bytes`
/// ends (IPv4 total length, IPv6 payload length), if the field is present.
fn fit_ip_length(bytes: &mut [u8], l3: usize, v4: bool) {
    let (field, base) = if v4 { (l3 + 2, 0) } else { (l3 + 4, 40) };
    if bytes.len() >= field + 2 {
        let len = bytes.len().saturating_sub(l3 + base);
        let len = u16::try_from(len).expect("test frames are small");
        bytes[field..field + 2].copy_from_slice(&len.to_be_bytes());
    }
}

#[test]
fn tcp_v4() {
    let frame = Frame::tcp("10.0.0.2:40000", "10.0.0.100:80");
    let p = assert_describes(&frame);
    assert_eq!((p.l3_off, p.l4_off), (14, 34));
    assert_eq!(p.key.src, addr("10.0.0.2"));
    assert_eq!(p.key.dst, addr("10.0.0.100"));
    // Addresses and ports are kept in wire order.
    assert_eq!(p.key.src.words, [u32::from_ne_bytes([10, 0, 0, 2]), 0, 0, 0]);
    assert_eq!(p.key.src_port_be, 40000u16.to_be());
    assert_eq!(p.key.dst_port_be, 80u16.to_be());
    assert_eq!(p.key.src_port_be.to_ne_bytes(), [0x9c, 0x40]);
    assert_eq!(p.key.proto, PROTO_TCP);
    assert_eq!(p.key.family, FAMILY_V4);
    assert_eq!(p.key._pad, [0, 0]);
    assert_eq!(p.tcp_flags, TCP_SYN);
}

#[test]
fn udp_v4() {
    let frame = Frame::udp("192.0.2.1:53", "198.51.100.7:65535").payload(b"query");
    let p = assert_describes(&frame);
    assert_eq!((p.l3_off, p.l4_off), (14, 34));
    assert_eq!(p.key.src_port_be, 53u16.to_be());
    assert_eq!(p.key.dst_port_be, 65535u16.to_be());
    assert_eq!(p.key.proto, PROTO_UDP);
    assert_eq!(p.tcp_flags, 0);
}

#[test]
fn udp_v4_without_checksum() {
    assert_describes(&Frame::udp("10.0.0.2:1", "10.0.0.3:2").udp_checksum_zero());
}

#[test]
fn tcp_v6() {
    let frame = Frame::tcp("[2001:db8::2]:40000", "[2001:db8::100]:443").tcp_flags(TCP_ACK);
    let p = assert_describes(&frame);
    assert_eq!((p.l3_off, p.l4_off), (14, 54));
    assert_eq!(p.key.src, addr("2001:db8::2"));
    assert_eq!(p.key.dst, addr("2001:db8::100"));
    assert_eq!(p.key.src.to_bytes()[..4], [0x20, 0x01, 0x0d, 0xb8]);
    assert_eq!(p.key.src_port_be, 40000u16.to_be());
    assert_eq!(p.key.dst_port_be, 443u16.to_be());
    assert_eq!(p.key.proto, PROTO_TCP);
    assert_eq!(p.key.family, FAMILY_V6);
    assert_eq!(p.tcp_flags, TCP_ACK);
}

#[test]
fn udp_v6() {
    let frame = Frame::udp("[fe80::1]:5353", "[ff02::fb]:5353").payload(&[7; 30]);
    let p = assert_describes(&frame);
    assert_eq!((p.l3_off, p.l4_off), (14, 54));
    assert_eq!(p.key.proto, PROTO_UDP);
    assert_eq!(p.key.family, FAMILY_V6);
    assert_eq!(p.tcp_flags, 0);
}

#[test]
fn tcp_flags_pass_through() {
    for flags in
        [0, TCP_SYN, TCP_SYN | TCP_ACK, TCP_FIN | TCP_ACK, TCP_RST, TCP_PSH | TCP_ACK, 0xff]
    {
        for (s, d) in [("10.0.0.1:1", "10.0.0.2:2"), ("[::1]:1", "[::2]:2")] {
            assert_eq!(l4(&Frame::tcp(s, d).tcp_flags(flags)).tcp_flags, flags);
        }
    }
}

#[test]
fn ports_at_the_extremes() {
    for (sp, dp) in [(0u16, 0u16), (1, 65535), (0x0102, 0x0201), (65535, 1)] {
        let v4 = Frame::udp(&format!("10.0.0.1:{sp}"), &format!("10.0.0.2:{dp}"));
        let v6 = Frame::tcp(&format!("[::1]:{sp}"), &format!("[::2]:{dp}"));
        for frame in [v4, v6] {
            let p = assert_describes(&frame);
            assert_eq!(u16::from_be(p.key.src_port_be), sp);
            assert_eq!(u16::from_be(p.key.dst_port_be), dp);
        }
    }
}

#[test]
fn vlan_tagged() {
    for frame in [
        Frame::tcp("10.0.0.2:40000", "10.0.0.100:80").vlan(100),
        Frame::udp("10.0.0.2:40000", "10.0.0.100:80").vlan(4095),
        Frame::tcp("[2001:db8::2]:40000", "[2001:db8::100]:80").vlan(1),
        Frame::udp("[2001:db8::2]:40000", "[2001:db8::100]:80").vlan(0),
    ] {
        let p = assert_describes(&frame);
        assert_eq!(p.l3_off, 18);
        assert_eq!(p.l4_off, if frame.is_ipv4() { 38 } else { 58 });
    }
}

#[test]
fn ipv4_options_move_l4() {
    for n in 1..=40usize {
        let opts: Vec<u8> = (0..n).map(|i| if i + 1 == n { 0 } else { 1 }).collect(); // NOPs, EOL
        for vlan in [false, true] {
            let mut frame = Frame::tcp("10.0.0.2:40000", "10.0.0.100:80").ip_options(&opts);
            if vlan {
                frame = frame.vlan(3);
            }
            let bytes = frame.bytes();
            let l3 = frame.l3_offset();
            let ihl = usize::from(bytes[l3] & 0x0f);
            assert_eq!(ihl, 5 + n.div_ceil(4));
            let p = assert_describes(&frame);
            assert_eq!(p.l4_off, l3 + ihl * 4);
        }
    }
}

#[test]
fn ipv6_each_skippable_extension_header() {
    for kind in [EXT_HOP_BY_HOP, EXT_ROUTING, EXT_DEST_OPTS] {
        for len_units in [0u8, 1, 5, 255] {
            for frame in [
                Frame::tcp("[2001:db8::2]:40000", "[2001:db8::100]:80"),
                Frame::udp("[2001:db8::2]:40000", "[2001:db8::100]:53").vlan(9),
            ] {
                let frame = frame.ipv6_ext(kind, len_units);
                let p = assert_describes(&frame);
                let ext = (usize::from(len_units) + 1) * 8;
                assert_eq!(p.l4_off, p.l3_off + 40 + ext, "kind {kind}");
            }
        }
    }
}

#[test]
fn ipv6_two_chained_extension_headers() {
    let frame = Frame::udp("[2001:db8::2]:40000", "[2001:db8::100]:53")
        .ipv6_ext(EXT_HOP_BY_HOP, 0)
        .ipv6_ext(EXT_DEST_OPTS, 2);
    let p = assert_describes(&frame);
    assert_eq!(p.l4_off, 14 + 40 + 8 + 24);

    let frame = Frame::tcp("[2001:db8::2]:40000", "[2001:db8::100]:80")
        .ipv6_ext(EXT_DEST_OPTS, 1)
        .ipv6_ext(EXT_ROUTING, 0);
    assert_eq!(assert_describes(&frame).l4_off, 14 + 40 + 16 + 8);
}

#[test]
fn ipv6_atomic_fragment_is_still_l4() {
    // Offset 0 and no "more fragments": the whole datagram (RFC 6946).
    let frame = Frame::tcp("[2001:db8::2]:40000", "[2001:db8::100]:80").fragment(0, false);
    assert_eq!(assert_describes(&frame).l4_off, 14 + 40 + 8);
    let frame = Frame::udp("[2001:db8::2]:40000", "[2001:db8::100]:80")
        .ipv6_ext(EXT_HOP_BY_HOP, 0)
        .fragment(0, false)
        .ipv6_ext(EXT_DEST_OPTS, 0);
    assert_eq!(assert_describes(&frame).l4_off, 14 + 40 + 8 + 8 + 8);
}

#[test]
fn ipv6_fragment_reserved_bits_do_not_make_a_fragment() {
    // Bits 1-2 of the offset/flags word are reserved: an atomic fragment
    // with them set is still not a fragment.
    let frame = Frame::tcp("[2001:db8::2]:40000", "[2001:db8::100]:80").fragment(0, false);
    let mut bytes = frame.bytes();
    bytes[14 + 40 + 3] |= 0x06;
    assert!(matches!(parse(bytes.as_slice()), Ok(Parsed::L4(_))));
}

#[test]
fn ipv4_dont_fragment_is_not_a_fragment() {
    assert_describes(&Frame::tcp("10.0.0.2:40000", "10.0.0.100:80").dont_fragment(true));
}

/// A later fragment (offset above 0) is a `Fragment` with its addresses,
/// protocol and payload offset; a first one is L4, marked as such.
fn assert_fragment(frame: &Frame, offset: u16, more: bool) {
    match parsed(frame) {
        Ok(Parsed::Fragment(f)) if offset > 0 => {
            assert_eq!(f.l3_off, frame.l3_offset(), "{offset} {more}");
            assert_eq!(
                (f.key.src, f.key.dst, f.key.proto),
                (expected_key(frame).src, expected_key(frame).dst, frame.proto)
            );
            assert_eq!((f.key.src_port_be, f.key.dst_port_be), (0, 0));
        }
        Ok(Parsed::L4(p)) if offset == 0 && more => {
            assert_eq!(p.fragment, FRAG_FIRST, "{offset} {more}");
            assert_eq!(p.key, expected_key(frame));
        }
        other => panic!("{offset} {more}: {other:?}"),
    }
}

#[test]
fn ipv4_fragments() {
    for (offset, more) in [(0, true), (1, false), (1, true), (185, false), (0x1fff, true)] {
        for frame in [
            Frame::udp("10.0.0.2:40000", "10.0.0.100:53"),
            Frame::tcp("10.0.0.2:40000", "10.0.0.100:80").vlan(2).dont_fragment(true),
        ] {
            assert_fragment(&frame.fragment(offset, more).payload(&[0x42; 16]), offset, more);
        }
    }
}

#[test]
fn ipv6_fragments() {
    for (offset, more) in [(0, true), (1, false), (1, true), (185, false), (0x1fff, true)] {
        for frame in [
            Frame::udp("[2001:db8::2]:40000", "[2001:db8::100]:53"),
            Frame::tcp("[2001:db8::2]:40000", "[2001:db8::100]:80").ipv6_ext(EXT_HOP_BY_HOP, 0),
        ] {
            assert_fragment(&frame.fragment(offset, more).payload(&[0x42; 16]), offset, more);
        }
    }
}

#[test]
fn not_ip() {
    let arp = ethernet(DEFAULT_SRC_MAC, DEFAULT_DST_MAC, ETHERTYPE_ARP, &[0; 28]);
    assert_eq!(parse(arp.as_slice()), Ok(Parsed::NotIp));
    // Just the Ethernet header is enough to know.
    assert_eq!(parse(&arp[..14]), Ok(Parsed::NotIp));
    // LLDP, QinQ outer tag, and ARP behind a VLAN tag.
    for ethertype in [0x88cc, 0x88a8, 0x0000, 0xffff] {
        let f = ethernet(DEFAULT_SRC_MAC, DEFAULT_DST_MAC, ethertype, &[0; 46]);
        assert_eq!(parse(f.as_slice()), Ok(Parsed::NotIp), "{ethertype:#06x}");
    }
    let mut tagged = vec![0x00, 0x05];
    tagged.extend_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    tagged.extend_from_slice(&[0; 28]);
    let f = ethernet(DEFAULT_SRC_MAC, DEFAULT_DST_MAC, ETHERTYPE_VLAN, &tagged);
    assert_eq!(parse(f.as_slice()), Ok(Parsed::NotIp));
}

/// An ICMP destination unreachable from `from` quoting `quoted`.
fn unreachable(from: &str, quoted: &Frame) -> Frame {
    let to = quoted.src.ip().to_string();
    Frame::icmp_port_unreachable(from, &to, quoted)
}

#[test]
fn icmp_unreachable_reports_the_quoted_flow() {
    for quoted in [
        Frame::udp("10.0.0.2:40000", "10.1.0.11:5300"),
        Frame::tcp("10.0.0.2:40001", "10.1.0.12:80").ip_options(&[1, 1, 1, 0]),
        Frame::udp("[fd00::2]:40002", "[fd01::11]:5300"),
        Frame::tcp("[fd00::2]:40003", "[fd01::12]:80"),
    ] {
        let from = if quoted.is_ipv4() { "10.1.0.11" } else { "fd01::11" };
        let frame = unreachable(from, &quoted);
        let want = expected_key(&quoted);
        // Ethernet padding after the datagram changes nothing.
        for f in [frame.clone(), frame.clone().pad_to(200)] {
            let Ok(Parsed::IcmpError(e)) = parsed(&f) else {
                panic!("{quoted:?}: {:?}", parsed(&f))
            };
            assert_eq!((e.key, e.kind), (want, IcmpKind::Unreachable), "{quoted:?}");
            assert_eq!(e.icmp_off, frame.l4_offset());
            assert_eq!(e.inner_l3_off, frame.l4_offset() + 8);
            assert_eq!(
                e.inner_l4_off,
                frame.l4_offset() + 8 + quoted.l4_offset() - quoted.l3_offset()
            );
            assert_eq!(e.end, frame.bytes().len());
        }
    }
}

#[test]
fn every_icmp_error_kind_is_told_apart() {
    for (quoted, kind, code, want) in [
        (Frame::tcp("10.0.0.2:40000", "10.1.0.12:80"), 3, 4, IcmpKind::TooBig),
        (Frame::tcp("10.0.0.2:40000", "10.1.0.12:80"), 3, 1, IcmpKind::Unreachable),
        (Frame::udp("10.0.0.2:40000", "10.1.0.12:80"), 11, 0, IcmpKind::TimeExceeded),
        (Frame::udp("10.0.0.2:40000", "10.1.0.12:80"), 12, 0, IcmpKind::ParameterProblem),
        (Frame::tcp("[fd00::2]:40000", "[fd01::12]:80"), 1, 4, IcmpKind::Unreachable),
        (Frame::tcp("[fd00::2]:40000", "[fd01::12]:80"), 2, 0, IcmpKind::TooBig),
        (Frame::udp("[fd00::2]:40000", "[fd01::12]:80"), 3, 0, IcmpKind::TimeExceeded),
        (Frame::udp("[fd00::2]:40000", "[fd01::12]:80"), 4, 0, IcmpKind::ParameterProblem),
    ] {
        let (from, to) =
            if quoted.is_ipv4() { ("10.9.0.1", "10.0.0.2") } else { ("fd09::1", "fd00::2") };
        let frame = Frame::icmp_error(from, to, kind, code, [0; 4], &quoted.quote(8));
        let Ok(Parsed::IcmpError(e)) = parsed(&frame) else {
            panic!("{kind}/{code}: {:?}", parsed(&frame))
        };
        assert_eq!((e.kind, e.key), (want, expected_key(&quoted)), "{kind}/{code}");
    }
}

#[test]
fn icmp_messages_that_say_nothing_about_a_flow_are_other_protocols() {
    let udp = Frame::udp("10.0.0.2:40000", "10.1.0.11:5300");
    let quote = &udp.bytes()[udp.l3_offset()..udp.l4_offset() + 8];
    let with = |kind: u8, code: u8, body: &[u8]| {
        let mut msg = vec![kind, code, 0, 0, 0, 0, 0, 0];
        msg.extend_from_slice(body);
        Frame::ip(PROTO_ICMP, "10.1.0.11", "10.0.0.2").payload(&msg)
    };
    let mut later_fragment = quote.to_vec();
    later_fragment[6..8].copy_from_slice(&8u16.to_be_bytes());
    let mut icmp_quote = quote.to_vec();
    icmp_quote[9] = PROTO_ICMP;
    for (name, frame) in [
        ("echo reply", with(0, 0, quote)),
        ("redirect", with(5, 1, quote)),
        ("quote cut inside the ports", with(3, 3, &quote[..22])),
        ("quote of a later fragment", with(3, 3, &later_fragment)),
        ("quote of ICMP", with(3, 3, &icmp_quote)),
        ("quote cut by the datagram, padding after", with(3, 3, &quote[..20]).pad_to(200)),
        ("ICMPv6 number over IPv4", {
            let mut f = with(3, 3, quote);
            f.proto = PROTO_ICMPV6;
            f
        }),
    ] {
        assert_eq!(parsed(&frame), Ok(Parsed::OtherProtocol), "{name}");
    }
}

#[test]
fn other_protocols() {
    let echo = [8, 0, 0xf7, 0xff, 0, 0, 0, 0];
    let frames = [
        Frame::ip(PROTO_ICMP, "10.0.0.2", "10.0.0.100").payload(&echo),
        Frame::ip(PROTO_ICMP, "10.0.0.2", "10.0.0.100").payload(&echo).vlan(4),
        Frame::ip(PROTO_ICMPV6, "2001:db8::2", "2001:db8::100").payload(&echo),
        // ESP, and ICMPv6 behind a hop-by-hop header (as MLD is sent).
        Frame::ip(50, "2001:db8::2", "2001:db8::100").payload(&[0; 16]),
        Frame::ip(PROTO_ICMPV6, "fe80::1", "ff02::16").ipv6_ext(EXT_HOP_BY_HOP, 0),
        // GRE, SCTP, and a protocol without even a payload.
        Frame::ip(47, "10.0.0.2", "10.0.0.100").payload(&[0; 4]),
        Frame::ip(132, "10.0.0.2", "10.0.0.100").payload(&[0; 12]),
        Frame::ip(253, "10.0.0.2", "10.0.0.100"),
    ];
    for frame in frames {
        assert_eq!(parsed(&frame), Ok(Parsed::OtherProtocol), "{frame:?}");
    }
}

#[test]
fn ipv6_extension_header_limit() {
    let kinds = [EXT_HOP_BY_HOP, EXT_DEST_OPTS, EXT_ROUTING, EXT_DEST_OPTS, EXT_DEST_OPTS];
    for n in 0..=MAX_IPV6_EXT_HEADERS + 2 {
        let mut frame = Frame::tcp("[2001:db8::2]:40000", "[2001:db8::100]:80");
        for i in 0..n {
            frame = frame.ipv6_ext(kinds[i % kinds.len()], 0);
        }
        if n <= MAX_IPV6_EXT_HEADERS {
            assert_eq!(assert_describes(&frame).l4_off, 14 + 40 + 8 * n);
        } else {
            assert_eq!(parsed(&frame), Ok(Parsed::OtherProtocol), "{n} headers");
        }
    }
    // The fragment header counts towards the limit too.
    let mut frame = Frame::udp("[2001:db8::2]:1", "[2001:db8::100]:2");
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        frame = frame.ipv6_ext(EXT_DEST_OPTS, 0);
    }
    assert_eq!(parsed(&frame.fragment(0, false)), Ok(Parsed::OtherProtocol));
}

/// What the parser must report for `full` cut to `n` bytes, where the IP
/// header starts at `l3`, TCP/UDP (of `l4_len` bytes) at `l4`; `fitted` when
/// the IP length field was rewritten to end with the cut frame.
fn expected_cut(full: &Frame, n: usize, fitted: bool, l4_len: usize) -> Result<Parsed, ParseError> {
    let (l3, l4_off, total) = (full.l3_offset(), full.l4_offset(), full.bytes().len());
    if n < l3 {
        Err(ParseError::TruncatedEthernet)
    } else if n < l4_off || (!fitted && n < total) {
        Err(ParseError::MalformedIp)
    } else if n < l4_off + l4_len {
        Err(ParseError::TruncatedL4)
    } else {
        Ok(Parsed::L4(l4(full)))
    }
}

fn check_every_cut(full: &Frame, l4_len: usize) {
    let bytes = full.bytes();
    for n in 0..=bytes.len() {
        let cut = &bytes[..n];
        assert_eq!(
            parse(cut),
            expected_cut(full, n, false, l4_len),
            "{n} of {} bytes",
            bytes.len()
        );
        let mut fitted = cut.to_vec();
        fit_ip_length(&mut fitted, full.l3_offset(), full.is_ipv4());
        assert_eq!(
            parse(fitted.as_slice()),
            expected_cut(full, n, true, l4_len),
            "{n} of {} bytes, IP length fitted",
            bytes.len()
        );
    }
}

#[test]
fn every_truncation_tcp_v4() {
    let frame = Frame::tcp("10.0.0.2:40000", "10.0.0.100:80").payload(b"hello");
    check_every_cut(&frame, 20);
    let frame = Frame::tcp("10.0.0.2:40000", "10.0.0.100:80").ip_options(&[1; 8]);
    check_every_cut(&frame, 20);
}

#[test]
fn every_truncation_udp_v6() {
    let frame = Frame::udp("[2001:db8::2]:40000", "[2001:db8::100]:53").payload(b"abc");
    check_every_cut(&frame, 8);
}

#[test]
fn every_truncation_vlan() {
    check_every_cut(&Frame::tcp("10.0.0.2:40000", "10.0.0.100:80").vlan(7), 20);
    check_every_cut(&Frame::udp("[2001:db8::2]:1", "[2001:db8::100]:2").vlan(7), 8);
}

#[test]
fn every_truncation_behind_extension_headers_never_panics() {
    // Cutting inside an extension header: always an error, never L4.
    let frame = Frame::tcp("[2001:db8::2]:40000", "[2001:db8::100]:80")
        .ipv6_ext(EXT_HOP_BY_HOP, 1)
        .fragment(0, false);
    let bytes = frame.bytes();
    for n in 0..bytes.len() {
        let mut cut = bytes[..n].to_vec();
        assert!(parse(cut.as_slice()).is_err(), "{n}");
        fit_ip_length(&mut cut, 14, false);
        assert!(parse(cut.as_slice()).is_err(), "{n}, fitted");
    }
    assert_describes(&frame);
}

#[test]
fn ihl_below_five_is_malformed() {
    for ihl in 0..5u8 {
        let mut bytes = Frame::tcp("10.0.0.2:40000", "10.0.0.100:80").bytes();
        bytes[14] = 0x40 | ihl;
        assert_eq!(parse(bytes.as_slice()), Err(ParseError::MalformedIp), "IHL {ihl}");
    }
}

#[test]
fn ihl_beyond_the_datagram_is_malformed() {
    // IHL 15 (60 bytes) but a 40-byte datagram.
    let mut bytes = Frame::tcp("10.0.0.2:40000", "10.0.0.100:80").bytes();
    bytes[14] = 0x4f;
    assert_eq!(parse(bytes.as_slice()), Err(ParseError::MalformedIp));
}

#[test]
fn wrong_ip_version_is_malformed() {
    for version in [0u8, 1, 5, 6, 7, 15] {
        let mut v4 = Frame::tcp("10.0.0.2:40000", "10.0.0.100:80").bytes();
        v4[14] = (version << 4) | 5;
        assert_eq!(parse(v4.as_slice()), Err(ParseError::MalformedIp), "v{version} as IPv4");
    }
    for version in [0u8, 4, 5, 7, 15] {
        let mut v6 = Frame::tcp("[::1]:1", "[::2]:2").bytes();
        v6[14] = version << 4;
        assert_eq!(parse(v6.as_slice()), Err(ParseError::MalformedIp), "v{version} as IPv6");
    }
}

#[test]
fn ip_length_beyond_the_frame_is_malformed() {
    let mut v4 = Frame::udp("10.0.0.2:40000", "10.0.0.100:53").payload(b"x").bytes();
    v4[17] += 1; // total length one byte past the frame
    assert_eq!(parse(v4.as_slice()), Err(ParseError::MalformedIp));
    v4[16..18].copy_from_slice(&0xffffu16.to_be_bytes());
    assert_eq!(parse(v4.as_slice()), Err(ParseError::MalformedIp));

    let mut v6 = Frame::udp("[::1]:1", "[::2]:2").payload(b"x").bytes();
    v6[19] += 1;
    assert_eq!(parse(v6.as_slice()), Err(ParseError::MalformedIp));
}

#[test]
fn ipv4_total_length_below_ihl_is_malformed() {
    for total in [0u16, 19] {
        let mut v4 = Frame::udp("10.0.0.2:40000", "10.0.0.100:53").bytes();
        v4[16..18].copy_from_slice(&total.to_be_bytes());
        assert_eq!(parse(v4.as_slice()), Err(ParseError::MalformedIp), "{total}");
    }
    let mut v4 = Frame::udp("10.0.0.2:1", "10.0.0.100:53").ip_options(&[1; 4]).bytes();
    v4[16..18].copy_from_slice(&22u16.to_be_bytes());
    assert_eq!(parse(v4.as_slice()), Err(ParseError::MalformedIp));
}

#[test]
fn ethernet_padding_still_parses() {
    for frame in [
        // 42 bytes of UDP/IPv4, padded to the 60-byte minimum.
        Frame::udp("10.0.0.2:40000", "10.0.0.100:53").pad_to(60),
        Frame::tcp("10.0.0.2:40000", "10.0.0.100:80").vlan(5).pad_to(64),
        Frame::udp("[2001:db8::2]:1", "[2001:db8::100]:2").pad_to(100),
        Frame::tcp("[2001:db8::2]:1", "[2001:db8::100]:2").ipv6_ext(EXT_ROUTING, 0).pad_to(200),
    ] {
        assert!(frame.bytes().len() > frame.l4_offset() + 8);
        assert_describes(&frame);
    }
    // Padding bytes that are not zero do not matter either.
    let mut bytes = Frame::udp("10.0.0.2:40000", "10.0.0.100:53").bytes();
    bytes.extend_from_slice(&[0xff; 18]);
    assert!(matches!(parse(bytes.as_slice()), Ok(Parsed::L4(_))));
}

#[test]
fn fragments_and_others_need_only_the_ip_header() {
    // A later IPv4 fragment with no payload at all is still a fragment, not
    // a truncated L4 header.
    let frame = Frame::udp("10.0.0.2:40000", "10.0.0.100:53").fragment(10, false);
    assert_eq!(frame.bytes().len(), 34);
    assert!(matches!(parsed(&frame), Ok(Parsed::Fragment(_))), "{:?}", parsed(&frame));
    assert_eq!(parsed(&Frame::ip(PROTO_ICMP, "10.0.0.1", "10.0.0.2")), Ok(Parsed::OtherProtocol));
}

/// An L4 header that lies outside the IP datagram (in Ethernet padding) is
/// not the packet's: the datagram is truncated. The parser checks only the
/// frame length, so today it reports the padding as the TCP header.
#[test]
fn l4_header_in_padding_is_truncated() {
    // IPv4: total length 20 (header only), proto TCP, frame padded to 60.
    let mut v4 = Frame::tcp("10.0.0.2:40000", "10.0.0.100:80").bytes();
    v4[16..18].copy_from_slice(&20u16.to_be_bytes());
    assert_eq!(parse(v4.as_slice()), Err(ParseError::TruncatedL4));
    // IPv6: payload length 0, next header UDP, 8 trailing bytes.
    let mut v6 = Frame::udp("[::1]:1", "[::2]:2").bytes();
    v6[18..20].copy_from_slice(&0u16.to_be_bytes());
    assert_eq!(parse(v6.as_slice()), Err(ParseError::TruncatedL4));
}

/// An IPv6 extension header cut short (its length byte present, its body
/// not) is a malformed IP header, like one cut before its length byte.
#[test]
fn cut_extension_header_body_is_malformed_ip() {
    let frame = Frame::tcp("[2001:db8::2]:40000", "[2001:db8::100]:80").ipv6_ext(EXT_ROUTING, 1);
    let bytes = frame.bytes();
    for n in 14 + 40 + 2..14 + 40 + 16 {
        let mut cut = bytes[..n].to_vec();
        fit_ip_length(&mut cut, 14, false);
        assert_eq!(parse(cut.as_slice()), Err(ParseError::MalformedIp), "{n}");
    }
}
