//! Golden packets through BPF_PROG_TEST_RUN (Katran's method): each case
//! gives an input frame, the action the program must return and the exact
//! bytes it must leave. Expected frames come from the test packet builder,
//! which computes every checksum from scratch, so the datapath's incremental
//! updates are checked against an independent computation.
//!
//! The program runs in `lb_tests::fixture`'s namespace, where
//! `bpf_fib_lookup` answers with fixed MACs. Needs root.

use lb_common::abi::{DropReason, NO_BACKEND};
use lb_tests::{
    fixture::{
        CLIENT_MAC, GIN_MAC, GOUT_MAC, Golden, Prog, XDP_DROP, XDP_PASS, XDP_REDIRECT, check,
    },
    packet::{Frame, mac},
};

lb_tests::in_both_hooks!(
    a_changed_neighbour_is_picked_up_within_a_second,
    vip_traffic_is_rewritten_to_its_backend,
    replies_get_the_vip_back,
    backend_on_the_ingress_link_is_reached_with_xdp_tx,
    traffic_not_for_a_vip_passes_untouched,
    malformed_and_unbalanceable_frames_get_their_documented_action,
    established_flow_keeps_its_backend_when_the_table_changes,
    a_plan_change_swaps_the_table_and_re_hashes_flows_of_a_down_backend,
);

/// A forwarded frame: same as `input` but for the new destination, one less
/// TTL, and the MACs of the egress hop.
fn forwarded(input: Frame, dst: &str, smac: &str, dmac: &str) -> Vec<u8> {
    input.dst(dst).ttl(63).macs(mac(smac), mac(dmac)).bytes()
}

fn vip_traffic_is_rewritten_to_its_backend(prog: Prog) {
    let mut g = Golden::with_prog(4096, prog);
    let cases = [
        (
            "tcp4",
            Frame::tcp("10.0.0.2:40000", "10.100.0.1:80").payload(b"GET /"),
            "10.1.0.10:8080",
            "02:00:00:00:01:10",
        ),
        (
            "udp4",
            Frame::udp("10.0.0.2:40001", "10.100.0.1:53").payload(b"query"),
            "10.1.0.11:5300",
            "02:00:00:00:01:11",
        ),
        (
            "tcp6",
            Frame::tcp("[fd00::2]:40002", "[fd64::1]:443").payload(b"hello"),
            "[fd01::10]:8443",
            "02:00:00:00:01:10",
        ),
        (
            "udp6",
            Frame::udp("[fd00::2]:40003", "[fd64::1]:53"),
            "[fd01::11]:5300",
            "02:00:00:00:01:11",
        ),
        (
            "tcp4 with IP options",
            Frame::tcp("10.0.0.2:40004", "10.100.0.1:80").ip_options(&[1, 1, 1, 0]),
            "10.1.0.10:8080",
            "02:00:00:00:01:10",
        ),
        (
            "tcp4 in VLAN 42",
            Frame::tcp("10.0.0.2:40005", "10.100.0.1:80").vlan(42),
            "10.1.0.10:8080",
            "02:00:00:00:01:10",
        ),
        (
            "udp4 without checksum",
            Frame::udp("10.0.0.2:40006", "10.100.0.1:53").udp_checksum_zero().payload(b"x"),
            "10.1.0.11:5300",
            "02:00:00:00:01:11",
        ),
        (
            "tcp6 behind a destination-options header",
            Frame::tcp("[fd00::2]:40007", "[fd64::1]:443").ipv6_ext(60, 0),
            "[fd01::10]:8443",
            "02:00:00:00:01:10",
        ),
        (
            "padded tcp4 (Ethernet minimum)",
            Frame::tcp("10.0.0.2:40008", "10.100.0.1:80").pad_to(60),
            "10.1.0.10:8080",
            "02:00:00:00:01:10",
        ),
    ];
    for (name, input, backend, backend_mac) in cases {
        let got = g.run(&input.bytes(), g.gin);
        check(name, got, XDP_REDIRECT, &forwarded(input, backend, GOUT_MAC, backend_mac));
    }
}

/// A GRO/GSO super-packet (3 000 bytes of payload, segments of 1 448; the
/// test runner takes no skb over a page) is
/// balanced whole at the tc hook, as it arrives from a veth with default
/// offloads: addresses, ports and checksums rewritten once for all its
/// segments, and redirected although it is larger than the egress MTU.
#[test]
fn a_gso_super_packet_is_rewritten_whole_at_the_tc_hook() {
    let mut g = Golden::with_prog(4096, Prog::Tc);
    // Segments that fit the 1500-byte egress: 1448 + 40 and 1440 + 60
    // bytes of IP (one byte more is answered "too big", see golden_icmp).
    for (name, input, backend, gso) in [
        (
            "tcp4",
            Frame::tcp("10.0.0.2:40100", "10.100.0.1:80").payload(&[0x5a; 3000]),
            "10.1.0.10:8080",
            1448,
        ),
        (
            "tcp6",
            Frame::tcp("[fd00::2]:40101", "[fd64::1]:443").payload(&[0xa5; 3000]),
            "[fd01::10]:8443",
            1440,
        ),
    ] {
        g.gso_size = gso;
        let got = g.run(&input.clone().bytes(), g.gin);
        check(name, got, XDP_REDIRECT, &forwarded(input, backend, GOUT_MAC, "02:00:00:00:01:10"));
    }
}

/// A backend's next hop is cached: a changed neighbour is not seen at once
/// (no FIB lookup per packet), but within the refresh period (about a
/// second), after which packets carry the new MAC.
fn a_changed_neighbour_is_picked_up_within_a_second(prog: Prog) {
    let mut g = Golden::with_prog(4096, prog);
    let flow = Frame::tcp("10.0.0.2:40200", "10.100.0.1:80").payload(b"x");
    let dmac = |out: &[u8]| out[..6].to_vec();
    let (action, first) = g.run(&flow.clone().bytes(), g.gin);
    assert_eq!(action, XDP_REDIRECT);
    assert_eq!(dmac(&first), mac("02:00:00:00:01:10").to_vec());
    // The fixture's thread is inside its namespace; so is this child.
    let moved = std::process::Command::new("ip")
        .args(["neigh", "replace", "10.1.0.10", "lladdr", "02:00:00:00:01:99"])
        .args(["dev", "gout", "nud", "permanent"])
        .status()
        .expect("ip neigh");
    assert!(moved.success());
    let (_, cached) = g.run(&flow.clone().bytes(), g.gin);
    assert_eq!(dmac(&cached), mac("02:00:00:00:01:10").to_vec(), "cached, no FIB lookup");
    let refresh = u64::from(lb_common::abi::REFRESH_TICKS) << lb_common::abi::TICK_SHIFT;
    std::thread::sleep(
        std::time::Duration::from_nanos(refresh) + std::time::Duration::from_millis(50),
    );
    let (action, later) = g.run(&flow.bytes(), g.gin);
    assert_eq!(action, XDP_REDIRECT);
    assert_eq!(dmac(&later), mac("02:00:00:00:01:99").to_vec(), "asked again after the refresh");
}

fn replies_get_the_vip_back(prog: Prog) {
    let mut g = Golden::with_prog(4096, prog);
    for (name, req, reply, vip) in [
        (
            "tcp4",
            Frame::tcp("10.0.0.2:41000", "10.100.0.1:80"),
            Frame::tcp("10.1.0.10:8080", "10.0.0.2:41000").tcp_flags(0x12),
            "10.100.0.1:80",
        ),
        (
            "udp6",
            Frame::udp("[fd00::2]:41001", "[fd64::1]:53"),
            Frame::udp("[fd01::11]:5300", "[fd00::2]:41001"),
            "[fd64::1]:53",
        ),
    ] {
        assert_eq!(g.run(&req.bytes(), g.gin).0, XDP_REDIRECT, "{name}: request");
        let got = g.run(&reply.clone().payload(b"answer").bytes(), g.gout);
        let expected =
            reply.payload(b"answer").src(vip).ttl(63).macs(mac(GIN_MAC), mac(CLIENT_MAC)).bytes();
        check(&format!("{name} reply"), got, XDP_REDIRECT, &expected);
    }
    // A "reply" of a flow the balancer never saw is not ours.
    let stray = Frame::tcp("10.1.0.10:8080", "10.0.0.2:49999").tcp_flags(0x12).bytes();
    check("stray reply", g.run(&stray, g.gout), XDP_PASS, &stray);
}

fn backend_on_the_ingress_link_is_reached_with_xdp_tx(prog: Prog) {
    let mut g = Golden::with_prog(4096, prog);
    let input = Frame::tcp("10.0.0.2:42000", "10.100.0.2:80");
    let got = g.run(&input.bytes(), g.gin);
    check(
        "near",
        got,
        g.back_out(),
        &forwarded(input, "10.0.0.50:80", GIN_MAC, "02:00:00:00:00:50"),
    );
}

fn traffic_not_for_a_vip_passes_untouched(prog: Prog) {
    let mut g = Golden::with_prog(4096, prog);
    let mut arp = Frame::tcp("10.0.0.2:1", "10.0.0.1:1").bytes();
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    arp.truncate(42);
    let cases = [
        ("other address", Frame::tcp("10.0.0.2:43000", "10.0.0.99:80").bytes()),
        ("VIP, other port", Frame::tcp("10.0.0.2:43001", "10.100.0.1:81").bytes()),
        ("VIP, other protocol", Frame::udp("10.0.0.2:43002", "10.100.0.1:80").bytes()),
        ("ICMP to the VIP", Frame::ip(1, "10.0.0.2", "10.100.0.1").bytes()),
        ("ARP", arp),
    ];
    for (name, input) in cases {
        check(name, g.run(&input, g.gin), XDP_PASS, &input);
    }
}

fn malformed_and_unbalanceable_frames_get_their_documented_action(prog: Prog) {
    let mut g = Golden::with_prog(4096, prog);
    let full = Frame::tcp("10.0.0.2:44000", "10.100.0.1:80").bytes();
    let vlan = Frame::tcp("10.0.0.2:44000", "10.100.0.1:80").vlan(7).bytes();
    // Each: frame, action, counter. Passed frames leave untouched.
    let cases: [(&str, Vec<u8>, u32, DropReason); 4] = [
        // (BPF_PROG_TEST_RUN refuses frames under 14 bytes; the parser
        // tests cover those.)
        ("VLAN tag cut", vlan[..16].to_vec(), XDP_DROP, DropReason::TruncatedEthernet),
        ("IP header cut", full[..14 + 12].to_vec(), XDP_DROP, DropReason::MalformedIp),
        (
            "later fragment to a VIP, its first never seen",
            Frame::tcp("10.0.0.2:44001", "10.100.0.1:80")
                .fragment(2, false)
                .payload(&[0; 16])
                .bytes(),
            XDP_PASS,
            DropReason::Fragment,
        ),
        (
            "IPv6 fragment",
            Frame::udp("[fd00::2]:44003", "[fd64::1]:53").fragment(8, false).bytes(),
            XDP_PASS,
            DropReason::Fragment,
        ),
    ];
    for (name, input, action, reason) in cases {
        // BPF_PROG_TEST_RUN refuses an skb whose IPv4 header is cut
        // (EINVAL), so that case runs at the XDP hook only; the shared
        // parser gives both hooks the same answer.
        if prog == Prog::Tc && name == "IP header cut" {
            continue;
        }
        let before = g.exceptions(reason);
        let got = g.run(&input, g.gin);
        assert_eq!(got.0, action, "{name}: action");
        if action == XDP_PASS {
            assert_eq!(got.1, input, "{name}: passed frames are untouched");
        }
        assert_eq!(g.exceptions(reason), before + 1, "{name}: counter {}", reason.name());
    }
    // A TCP header cut short: the IP length says so, ports unknown.
    let mut cut = Frame::tcp("10.0.0.2:44004", "10.100.0.1:80").bytes();
    cut.truncate(14 + 20 + 10);
    let total = (20u16 + 10).to_be_bytes();
    cut[16..18].copy_from_slice(&total);
    let before = g.exceptions(DropReason::TruncatedL4);
    assert_eq!(g.run(&cut, g.gin).0, XDP_PASS, "truncated TCP");
    assert_eq!(g.exceptions(DropReason::TruncatedL4), before + 1);
}

fn established_flow_keeps_its_backend_when_the_table_changes(prog: Prog) {
    let mut g = Golden::with_prog(4096, prog);
    let svc = 5; // "three"
    let ids = g.plan.services[svc].backend_ids.clone();
    let flow = Frame::tcp("10.0.0.2:45000", "10.100.0.3:80");
    let (action, out) = g.run(&flow.bytes(), g.gin);
    assert_eq!(action, XDP_REDIRECT);
    let first: [u8; 4] = out[30..34].try_into().expect("golden case setup");
    let pinned = ids
        .iter()
        .position(|&id| [10, 1, 0, 12 + id as u8 - ids[0] as u8] == first)
        .expect("a backend of the service");

    // Every slot now points at another backend: new flows go there, the
    // established one stays.
    let other = ids[(pinned + 1) % ids.len()];
    g.fill_table(svc, other);
    let again = g.run(&flow.clone().tcp_flags(0x10).bytes(), g.gin);
    assert_eq!(again.0, XDP_REDIRECT);
    assert_eq!(again.1[30..34], first, "an established flow keeps its backend");
    let new = g.run(&Frame::tcp("10.0.0.2:45001", "10.100.0.3:80").bytes(), g.gin);
    let other_addr = [10, 1, 0, 12 + (other - ids[0]) as u8];
    assert_eq!(new.1[30..34], other_addr, "a new flow follows the new table");

    // No backend at all: new flows are dropped and counted.
    g.fill_table(svc, NO_BACKEND);
    let before = g.exceptions(DropReason::NoBackend);
    let none = g.run(&Frame::tcp("10.0.0.2:45002", "10.100.0.3:80").bytes(), g.gin);
    assert_eq!(none.0, XDP_DROP);
    assert_eq!(g.exceptions(DropReason::NoBackend), before + 1);
    let ack = flow.clone().tcp_flags(0x10).bytes();
    assert_eq!(g.run(&ack, g.gin).1[30..34], first, "still pinned");
    // A SYN on the same 5-tuple is a new connection: no backend takes it.
    assert_eq!(g.run(&flow.bytes(), g.gin).0, XDP_DROP, "a reused port's SYN follows the table");
    assert_eq!(g.exceptions(DropReason::NoBackend), before + 2);
}

fn a_plan_change_swaps_the_table_and_re_hashes_flows_of_a_down_backend(prog: Prog) {
    use lb_common::abi::{BACKEND_ACTIVE, BACKEND_DOWN};
    use lb_userspace::datapath::plan::{Effective, replan};
    let mut g = Golden::with_prog(4096, prog);
    let cfg = lb_userspace::config::parse(lb_tests::fixture::CONFIG, "golden.toml".as_ref())
        .expect("golden case setup");
    let svc = 5; // "three": 10.1.0.12, .13, .14
    let flow = Frame::tcp("10.0.0.2:46000", "10.100.0.3:80");
    let (_, out) = g.run(&flow.bytes(), g.gin);
    let pinned = out[30..34].to_vec();
    // Take the pinned backend down.
    let down = replan(&g.plan, &cfg, &|_, b| {
        if b.addr.ip().to_string().as_bytes().ends_with(format!(".{}", pinned[3]).as_bytes()) {
            Effective { state: BACKEND_DOWN, weight: 0 }
        } else {
            Effective { state: BACKEND_ACTIVE, weight: b.weight }
        }
    })
    .expect("golden case setup");
    assert_ne!(down.services[svc].record.table_base, g.plan.services[svc].record.table_base);
    g.dp.apply_change(&g.plan, &down).expect("golden case setup");
    g.plan = down;
    for port in 46001..46050 {
        let (_, out) =
            g.run(&Frame::tcp(&format!("10.0.0.2:{port}"), "10.100.0.3:80").bytes(), g.gin);
        assert_ne!(out[30..34], pinned[..], "a new flow must not reach the down backend");
    }
    // The pinned flow's next packet: forwarded (not dropped or passed), to a
    // surviving backend of the service, and counted as a new flow there.
    let svc_id = g.plan.services[svc].record.id;
    let new_flows = |g: &Golden| {
        let t =
            lb_userspace::datapath::stats::read(&g.dp, &g.plan.service_ids(), 0).expect("counters");
        t.services[svc_id as usize].new_flows
    };
    let before = new_flows(&g);
    let (action, out) = g.run(&flow.clone().tcp_flags(0x10).bytes(), g.gin);
    assert_eq!(action, XDP_REDIRECT, "a flow pinned to a down backend is re-hashed, not dropped");
    let survivors: Vec<[u8; 4]> =
        (12..=14).map(|last| [10, 1, 0, last]).filter(|a| a[..] != pinned[..]).collect();
    assert!(
        survivors.iter().any(|a| out[30..34] == a[..]),
        "re-hashed to {:?}, not a surviving backend of the service",
        &out[30..34]
    );
    assert_eq!(new_flows(&g), before + 1, "the re-hash is counted as a new flow");
}
