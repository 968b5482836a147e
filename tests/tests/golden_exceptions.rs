//! Golden packets for the exception rows that need the datapath's state or
//! the kernel's routes bent: a table slot naming no usable backend, a
//! backend with no route, a flow table smaller than the flows, and the UDP
//! checksum that must not come out as 0. Needs root (see `golden.rs`).

use lb_common::abi::DropReason;
use lb_tests::{
    fixture::{GOUT_MAC, Golden, XDP_DROP, XDP_REDIRECT},
    packet::{Frame, mac},
};

/// Service "tcp4" of the fixture: 10.1.0.10:8080 behind 10.100.0.1:80.
const TCP4: usize = 0;

/// Runs `cmd` (an `ip` command line) in the fixture's namespace, which
/// the calling thread is in (children inherit it).
fn ip(cmd: &str) {
    let args: Vec<&str> = cmd.split_whitespace().collect();
    lb_tests::netns::run(std::process::Command::new("ip").args(&args));
}

#[test]
fn a_slot_naming_no_backend_of_its_family_is_a_bad_table_entry() {
    let mut g = Golden::new(4096);
    // The agent never writes such slots; a corrupted or half-written map
    // (another tool, a bug) would. Two kinds: an id past the backend map,
    // and a backend of the other family (tcp6's, for an IPv4 service).
    let v6 = g.plan.services.iter().find(|s| s.name == "tcp6").expect("tcp6").backend_ids[0];
    for (what, id) in [("an id past every backend", u32::MAX - 1), ("an IPv6 backend", v6)] {
        g.fill_table(TCP4, id);
        let before = g.exceptions(DropReason::BadTableEntry);
        let input = Frame::tcp("10.0.0.2:45000", "10.100.0.1:80").tcp_flags(0x02).bytes();
        assert_eq!(g.run(&input, g.gin).0, XDP_DROP, "{what}: dropped");
        assert_eq!(g.exceptions(DropReason::BadTableEntry), before + 1, "{what}: counted");
    }
}

#[test]
fn a_backend_without_a_route_is_dropped_and_counted_as_no_route() {
    let mut g = Golden::new(4096);
    let tcp = Frame::tcp("10.0.0.2:45100", "10.100.0.1:80").payload(b"x").bytes();
    assert_eq!(g.run(&tcp, g.gin).0, XDP_REDIRECT, "routed at first");
    ip("route add blackhole 10.1.0.10/32");
    // The backend's next hop is cached: a route change is seen once the
    // entry is asked of the FIB again, within the refresh period.
    let refresh = std::time::Duration::from_nanos(
        u64::from(lb_common::abi::REFRESH_TICKS) << lb_common::abi::TICK_SHIFT,
    );
    std::thread::sleep(refresh + std::time::Duration::from_millis(50));
    let before = g.exceptions(DropReason::NoRoute);
    for _ in 0..3 {
        assert_eq!(g.run(&tcp, g.gin).0, XDP_DROP, "no route to 10.1.0.10: dropped");
    }
    assert_eq!(g.exceptions(DropReason::NoRoute), before + 3, "each one counted");
    ip("route del blackhole 10.1.0.10/32");
    // A drop caches nothing: the next packet asks the FIB again.
    assert_eq!(g.run(&tcp, g.gin).0, XDP_REDIRECT, "routed again once the route is back");
}

#[test]
fn a_udp_checksum_that_rewrites_to_zero_is_sent_as_0xffff() {
    let mut g = Golden::new(4096);
    // The payload word that makes the forwarded datagram's checksum compute
    // to 0, which RFC 768 sends as 0xffff (0 would mean "no checksum"); the
    // packet builder computes it from scratch, so the incremental update in
    // the datapath is checked against an independent sum.
    const CHECK: usize = 14 + 20 + 6;
    let frame = |w: u16| Frame::udp("10.0.0.2:45200", "10.100.0.1:53").payload(&w.to_be_bytes());
    let expected = |w: u16| {
        frame(w).dst("10.1.0.11:5300").ttl(63).macs(mac(GOUT_MAC), mac("02:00:00:00:01:11")).bytes()
    };
    let w = (0..=u16::MAX)
        .find(|&w| expected(w)[CHECK..CHECK + 2] == [0xff, 0xff])
        .expect("a payload whose forwarded checksum is 0");
    let input = frame(w).bytes();
    assert_ne!(&input[CHECK..CHECK + 2], &[0, 0], "the input carries a checksum");
    let (action, out) = g.run(&input, g.gin);
    assert_eq!(action, XDP_REDIRECT);
    assert_eq!(&out[CHECK..CHECK + 2], &[0xff, 0xff], "the checksum field");
    assert_eq!(out, expected(w), "the whole frame");
}

#[test]
fn a_full_flow_table_evicts_and_forwards_rather_than_refusing() {
    // The smallest table the kernel keeps (it rounds up to one entry per
    // possible CPU), and 500 flows. `flow_table_full` counts an insert the
    // map refuses; an LRU map evicts its least recent entry instead, so the
    // row stays 0 here and every frame is forwarded and pinned in turn.
    let mut g = Golden::new(1);
    for port in 0..500u16 {
        let src = format!("10.0.0.2:{}", 30000 + port);
        let input = Frame::tcp(&src, "10.100.0.1:80").tcp_flags(0x02).bytes();
        assert_eq!(g.run(&input, g.gin).0, XDP_REDIRECT, "flow {src} forwarded");
    }
    assert_eq!(g.exceptions(DropReason::FlowTableFull), 0, "the LRU table evicted instead");
}
