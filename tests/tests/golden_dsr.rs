//! Golden packets for direct server return (issue 13): `dsr-ipip` puts an
//! outer IPv4/IPv6 header in front of the client's packet (exact bytes,
//! checksum from scratch here, the outer source varying within the tunnel
//! prefix as the shared prediction says), `dsr-l2` changes nothing but the
//! MACs and the TTL, a packet too big once encapsulated is answered for the
//! MTU less the outer header, and a flow is established by the client's
//! ACK since the backend's answer never passes lb. Needs root (see
//! `golden.rs`).
//!
//! No GSO case here: BPF_PROG_TEST_RUN gives an skb a `gso_size` but no
//! `gso_type`, and `bpf_skb_adjust_room` refuses to grow a GSO skb that is
//! not TCP. A real GRO super-packet is wrapped in the namespace tests.

use std::collections::BTreeSet;

use lb_common::{
    abi::{
        DropReason, FAMILY_V4, FLOW_ESTABLISHED, FlowKey, FlowValue, MAP_FLOWS, PROTO_TCP,
        SynCounters,
    },
    encap::tunnel_source,
    hash::flow_hash,
};
use lb_tests::{
    fixture::{GOUT_MAC, Golden, Prog, XDP_DROP, XDP_PASS, XDP_REDIRECT, check},
    packet::{Frame, TCP_ACK, endpoint, ethernet, internet_checksum, mac},
};

lb_tests::in_both_hooks!(
    dsr_ipip_wraps_the_packet_unchanged_but_for_its_ttl,
    the_outer_source_varies_within_the_tunnel_prefix_as_predicted,
    dsr_l2_changes_only_the_macs_and_the_ttl,
    a_packet_too_big_once_wrapped_is_answered_for_the_mtu_less_the_outer_header,
    frames_that_cannot_be_wrapped_are_dropped_and_counted,
    a_dsr_flow_is_established_by_the_clients_ack,
    an_icmp_error_about_a_backends_reply_goes_to_it_unchanged,
);

const CONFIG: &str = r#"
[[service]]
name = "ipip4"
vip = "10.100.0.5:80"
forwarding = "dsr-ipip"
tunnel_source = "10.1.0.1"
[[service.backend]]
addr = "10.1.0.10:80"

[[service]]
name = "ipip4-spread"
vip = "10.100.0.6:80"
forwarding = "dsr-ipip"
tunnel_source = "10.9.0.0/24"
[[service.backend]]
addr = "10.1.0.12:80"

[[service]]
name = "ipip6"
vip = "[fd64::5]:443"
forwarding = "dsr-ipip"
tunnel_source = "fd01::1"
[[service.backend]]
addr = "[fd01::10]:443"

[[service]]
name = "ipip6-udp"
vip = "[fd64::5]:53"
protocol = "udp"
forwarding = "dsr-ipip"
tunnel_source = "fd01::1"
[[service.backend]]
addr = "[fd01::11]:53"

[[service]]
name = "l2"
vip = "10.100.0.7:80"
forwarding = "dsr-l2"
[[service.backend]]
addr = "10.1.0.11:80"

[[service]]
name = "l2-udp6"
vip = "[fd64::7]:53"
protocol = "udp"
forwarding = "dsr-l2"
[[service.backend]]
addr = "[fd01::11]:53"

[[service]]
name = "l2-unresolved"
vip = "10.100.0.8:80"
forwarding = "dsr-l2"
[[service.backend]]
addr = "10.1.0.99:80"
"#;

const B10: &str = "02:00:00:00:01:10";
const B11: &str = "02:00:00:00:01:11";
const B12: &str = "02:00:00:00:01:12";

fn golden(prog: Prog) -> Golden {
    Golden::with_config(CONFIG, 4096, prog)
}

/// The IP packet of `frame` (after its 14-byte Ethernet header).
fn ip_of(frame: &Frame) -> Vec<u8> {
    frame.bytes()[14..].to_vec()
}

/// An outer IPv4 header from `src` to `dst` before `inner` bytes, built
/// from the RFC here (not by the datapath's code).
fn outer4(src: [u8; 4], dst: [u8; 4], inner: usize) -> Vec<u8> {
    let len = ((inner + 20) as u16).to_be_bytes();
    let mut h = vec![0x45, 0, len[0], len[1], 0, 0, 0x40, 0, 64, 4, 0, 0];
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    let c = internet_checksum(&[&h]).to_be_bytes();
    h[10] = c[0];
    h[11] = c[1];
    h
}

/// An outer IPv6 header from `src` to `dst` before `inner` bytes with flow
/// label `label` (traffic class 0, as the test frames carry).
fn outer6(src: &str, dst: &str, inner: usize, label: u32) -> Vec<u8> {
    let l = label.to_be_bytes();
    let len = (inner as u16).to_be_bytes();
    let mut h = vec![0x60, l[1] & 0x0f, l[2], l[3], len[0], len[1], 41, 64];
    for a in [src, dst] {
        let ip: std::net::Ipv6Addr = a.parse().expect("IPv6");
        h.extend_from_slice(&ip.octets());
    }
    h
}

/// What `input` becomes, wrapped in `outer` and sent from the backend-facing
/// veth to `dmac`.
fn wrapped(input: Frame, outer: &[u8], dmac: &str, ethertype: u16) -> Vec<u8> {
    let mut body = outer.to_vec();
    body.extend_from_slice(&ip_of(&input.ttl(63)));
    ethernet(mac(GOUT_MAC), mac(dmac), ethertype, &body)
}

fn key(src: &str, dst: &str, proto: u8) -> FlowKey {
    FlowKey::between(endpoint(src), endpoint(dst), proto)
}

fn dsr_ipip_wraps_the_packet_unchanged_but_for_its_ttl(prog: Prog) {
    let mut g = golden(prog);
    let v4 = Frame::tcp("10.0.0.2:40000", "10.100.0.5:80").payload(b"GET /");
    let inner = ip_of(&v4).len();
    let want = wrapped(v4.clone(), &outer4([10, 1, 0, 1], [10, 1, 0, 10], inner), B10, 0x0800);
    check("tcp4 in ipv4", g.run(&v4.bytes(), g.gin), XDP_REDIRECT, &want);

    for (name, input, backend_mac) in [
        ("tcp6 in ipv6", Frame::tcp("[fd00::2]:40001", "[fd64::5]:443").payload(b"hi"), B10),
        ("udp6 in ipv6", Frame::udp("[fd00::2]:40002", "[fd64::5]:53").payload(b"q"), B11),
    ] {
        let proto = input.proto;
        let k = key(&input.src.to_string(), &input.dst.to_string(), proto);
        let backend = if proto == PROTO_TCP { "fd01::10" } else { "fd01::11" };
        let outer = outer6("fd01::1", backend, ip_of(&input).len(), flow_hash(&k) & 0xfffff);
        let want = wrapped(input.clone(), &outer, backend_mac, 0x86dd);
        check(name, g.run(&input.bytes(), g.gin), XDP_REDIRECT, &want);
    }
    // A later packet of the flow goes the same way (the flow is pinned).
    let again = Frame::tcp("10.0.0.2:40000", "10.100.0.5:80").tcp_flags(TCP_ACK).payload(b"x");
    let got = g.run(&again.bytes(), g.gin);
    assert_eq!(got.0, XDP_REDIRECT);
    assert_eq!(&got.1[30..34], &[10, 1, 0, 10], "outer destination: the backend");
    assert_eq!(&got.1[14 + 20 + 16..14 + 20 + 20], &[10, 100, 0, 5], "inner: still the VIP");
}

fn the_outer_source_varies_within_the_tunnel_prefix_as_predicted(prog: Prog) {
    let mut g = golden(prog);
    let prefix =
        lb_common::abi::Addr::from("10.9.0.0".parse::<std::net::IpAddr>().expect("an address"));
    let mut sources = BTreeSet::new();
    for port in 41000..41200u16 {
        let client = format!("10.0.0.2:{port}");
        let input = Frame::tcp(&client, "10.100.0.6:80");
        let (action, out) = g.run(&input.bytes(), g.gin);
        assert_eq!(action, XDP_REDIRECT, "{client}");
        assert_eq!(&out[0..6], &mac(B12), "{client}: to the backend's MAC");
        let src: [u8; 4] = out[26..30].try_into().expect("4 bytes");
        let predicted = tunnel_source(
            &prefix,
            8,
            FAMILY_V4,
            flow_hash(&key(&client, "10.100.0.6:80", PROTO_TCP)),
        );
        assert_eq!(src, predicted.to_bytes()[..4], "{client}: the predicted outer source");
        assert_eq!(&src[..3], &[10, 9, 0], "{client}: inside 10.9.0.0/24");
        sources.insert(src);
    }
    // 200 flows over 256 host values: about 137 distinct expected.
    assert!(sources.len() > 100, "only {} distinct outer sources", sources.len());
}

fn dsr_l2_changes_only_the_macs_and_the_ttl(prog: Prog) {
    let mut g = golden(prog);
    for (name, input, backend_mac) in [
        ("tcp4", Frame::tcp("10.0.0.2:40010", "10.100.0.7:80").payload(b"GET /"), B11),
        ("udp6", Frame::udp("[fd00::2]:40011", "[fd64::7]:53").payload(b"q"), B11),
    ] {
        let want = input.clone().ttl(63).macs(mac(GOUT_MAC), mac(backend_mac)).bytes();
        check(name, g.run(&input.bytes(), g.gin), XDP_REDIRECT, &want);
    }
    // The backend's MAC not known yet: XDP cannot hand the kernel a packet
    // still addressed to the VIP (it would take it as its own), so it is
    // dropped and counted; tc lets the kernel resolve it in place.
    let input = Frame::tcp("10.0.0.2:40012", "10.100.0.8:80");
    let before = g.exceptions(DropReason::NoNeighbour);
    let (action, _) = g.run(&input.bytes(), g.gin);
    match prog {
        Prog::Xdp => {
            assert_eq!(action, XDP_DROP);
            assert_eq!(g.exceptions(DropReason::NoNeighbour), before + 1);
        }
        Prog::Tc => assert_eq!(action, XDP_REDIRECT, "bpf_redirect_neigh"),
    }
}

fn a_packet_too_big_once_wrapped_is_answered_for_the_mtu_less_the_outer_header(prog: Prog) {
    let mut g = golden(prog);
    // 1480 bytes of IP fit a 1500-byte link wrapped in IPv4; one more not.
    let fits = Frame::tcp("10.0.0.2:40020", "10.100.0.5:80")
        .tcp_flags(TCP_ACK)
        .dont_fragment(true)
        .payload(&[0x5a; 1440]);
    assert_eq!(ip_of(&fits).len(), 1480);
    assert_eq!(g.run(&fits.bytes(), g.gin).0, XDP_REDIRECT, "1480 bytes of IP");
    let before = g.exceptions(DropReason::TooBig);
    for (name, input) in [
        (
            "IPv4 with DF",
            Frame::tcp("10.0.0.2:40021", "10.100.0.5:80").dont_fragment(true).payload(&[1; 1441]),
        ),
        // Without DF too: the kernel cannot fragment a packet for a VIP.
        ("IPv4 without DF", Frame::tcp("10.0.0.2:40022", "10.100.0.5:80").payload(&[1; 1441])),
    ] {
        let (action, out) = g.run(&input.bytes(), g.gin);
        assert_eq!(action, XDP_REDIRECT, "{name}: answered back out");
        assert_eq!((out[14 + 20], out[14 + 21]), (3, 4), "{name}: fragmentation needed");
        assert_eq!(&out[14 + 26..14 + 28], &1480u16.to_be_bytes(), "{name}: next-hop MTU");
        assert_eq!(&out[26..30], &[10, 100, 0, 5], "{name}: from the VIP");
    }
    // IPv6 in IPv6: 40 bytes less.
    let v6 = Frame::tcp("[fd00::2]:40023", "[fd64::5]:443").payload(&[1; 1421]);
    assert_eq!(ip_of(&v6).len(), 1481);
    let (action, out) = g.run(&v6.bytes(), g.gin);
    assert_eq!(action, XDP_REDIRECT);
    assert_eq!(out[14 + 40], 2, "packet too big");
    assert_eq!(&out[14 + 44..14 + 48], &1460u32.to_be_bytes());
    assert_eq!(g.exceptions(DropReason::TooBig), before + 3);
}

fn frames_that_cannot_be_wrapped_are_dropped_and_counted(prog: Prog) {
    let mut g = golden(prog);
    let before = g.exceptions(DropReason::EncapFailed);
    let tagged = Frame::tcp("10.0.0.2:40030", "10.100.0.5:80").vlan(42);
    assert_eq!(g.run(&tagged.bytes(), g.gin).0, XDP_DROP);
    assert_eq!(g.exceptions(DropReason::EncapFailed), before + 1);
    // Traffic to no VIP is still passed untouched.
    let other = Frame::tcp("10.0.0.2:40031", "10.1.0.10:80");
    check("not a VIP", g.run(&other.bytes(), g.gin), XDP_PASS, &other.bytes());
}

fn a_dsr_flow_is_established_by_the_clients_ack(prog: Prog) {
    let mut g = golden(prog);
    let view = g.dp.syn_view().expect("syn view");
    let id = g
        .plan
        .services
        .iter()
        .find(|s| s.name == "ipip4")
        .and_then(|s| s.backend_ids.first().copied())
        .expect("ipip4's backend");
    let client = "10.0.0.2:40040";
    let syn = Frame::tcp(client, "10.100.0.5:80");
    g.run(&syn.bytes(), g.gin);
    g.run(&syn.bytes(), g.gin);
    assert_eq!(view.get(id), SynCounters { opened: 1, answered: 0 }, "SYN, retransmitted");
    // The backend's SYN-ACK went straight to the client; its ACK shows it.
    let ack = Frame::tcp(client, "10.100.0.5:80").tcp_flags(TCP_ACK).seq(1);
    g.run(&ack.bytes(), g.gin);
    g.run(&ack.bytes(), g.gin);
    assert_eq!(view.get(id), SynCounters { opened: 1, answered: 1 }, "answered once");
    let flows: aya::maps::HashMap<&aya::maps::MapData, FlowKey, FlowValue> =
        g.dp.map(MAP_FLOWS).expect("flow map");
    let entry = flows.get(&key(client, "10.100.0.5:80", PROTO_TCP), 0).expect("the flow is pinned");
    assert_eq!(entry.state, FLOW_ESTABLISHED);
}

/// A router beyond lb cannot pass a reply the backend sent from the VIP:
/// its "fragmentation needed" is addressed to the VIP, reaches lb, and goes
/// on to the flow's backend exactly as sent (one less TTL), wrapped as the
/// flow's packets are, so the backend's kernel lowers that connection's
/// path MTU. An error about no flow passes to the kernel.
fn an_icmp_error_about_a_backends_reply_goes_to_it_unchanged(prog: Prog) {
    let mut g = golden(prog);
    let (client, vip) = ("10.0.0.2:40060", "10.100.0.5:80");
    assert_eq!(g.run(&Frame::tcp(client, vip).bytes(), g.gin).0, XDP_REDIRECT, "the SYN");
    let reply = Frame::tcp(vip, client).tcp_flags(0x12);
    let error =
        Frame::icmp_error("10.0.0.50", "10.100.0.5", 3, 4, [0, 0, 0x05, 0x00], &reply.quote(20));
    let inner = ip_of(&error).len();
    let want = wrapped(error.clone(), &outer4([10, 1, 0, 1], [10, 1, 0, 10], inner), B10, 0x0800);
    check("frag needed, dsr-ipip", g.run(&error.bytes(), g.gin), XDP_REDIRECT, &want);

    // dsr-l2: the same error to the backend's MAC.
    let (client, vip) = ("10.0.0.2:40061", "10.100.0.7:80");
    assert_eq!(g.run(&Frame::tcp(client, vip).bytes(), g.gin).0, XDP_REDIRECT, "the SYN");
    let reply = Frame::tcp(vip, client).tcp_flags(0x12);
    let error =
        Frame::icmp_error("10.0.0.50", "10.100.0.7", 3, 4, [0, 0, 0x05, 0x00], &reply.quote(20));
    let want = error.clone().ttl(63).macs(mac(GOUT_MAC), mac(B11)).bytes();
    check("frag needed, dsr-l2", g.run(&error.bytes(), g.gin), XDP_REDIRECT, &want);

    // About a flow lb never saw: passed.
    let stray = Frame::tcp(vip, "10.0.0.2:40062").tcp_flags(0x12);
    let error =
        Frame::icmp_error("10.0.0.50", "10.100.0.7", 3, 4, [0, 0, 0x05, 0x00], &stray.quote(20));
    check("no flow", g.run(&error.bytes(), g.gin), XDP_PASS, &error.bytes());
}
