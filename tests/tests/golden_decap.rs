//! Golden packets of the decapsulating program (`lb decap`, the backend side
//! of direct server return) at both hooks: an IP-in-IP packet to a listed
//! address comes out as exactly its inner packet behind the original
//! Ethernet header (the ethertype the inner family's), anything else passes
//! untouched or, malformed, is dropped; each counted once. Needs root.

use lb_common::abi::DecapCounters;
use lb_tests::{
    decap::{Loaded, ipip},
    fixture::{Prog, XDP_DROP, XDP_PASS, check},
    packet::Frame,
};

lb_tests::in_both_hooks!(
    ipv4_in_ipv4_to_a_listed_address_comes_out_as_the_inner_frame,
    ipv6_in_ipv6_to_a_listed_address_comes_out_as_the_inner_frame,
    mixed_families_get_the_inner_ethertype,
    an_unlisted_address_passes_untouched,
    a_packet_that_is_not_ip_in_ip_passes_untouched,
    a_truncated_outer_header_is_dropped_as_malformed,
    an_inner_header_of_the_wrong_family_is_dropped_as_malformed,
);

/// The backend's own addresses, as `lb decap` lists them.
const LISTED: [&str; 2] = ["10.1.0.2", "fd01::2"];

fn counted(decapsulated: u64, passed: u64, malformed: u64) -> DecapCounters {
    DecapCounters { decapsulated, passed, malformed, failed: 0 }
}

fn ipv4_in_ipv4_to_a_listed_address_comes_out_as_the_inner_frame(prog: Prog) {
    let mut d = Loaded::new(prog, &LISTED);
    let syn = Frame::tcp("10.0.0.2:40000", "10.100.0.1:80");
    let udp = Frame::udp("10.0.0.2:40001", "10.100.0.1:53").payload(b"query");
    for inner in [&syn, &udp] {
        let outer = ipip("10.9.0.1", "10.1.0.2", inner);
        check("4-in-4", d.run(&outer.bytes()), XDP_PASS, &inner.bytes());
    }
    assert_eq!(d.counters(), counted(2, 0, 0));
}

fn ipv6_in_ipv6_to_a_listed_address_comes_out_as_the_inner_frame(prog: Prog) {
    let mut d = Loaded::new(prog, &LISTED);
    let syn = Frame::tcp("[fd00::2]:40000", "[fd64::1]:443");
    let udp = Frame::udp("[fd00::2]:40001", "[fd64::1]:53").payload(b"query");
    for inner in [&syn, &udp] {
        let outer = ipip("fd09::1", "fd01::2", inner);
        check("6-in-6", d.run(&outer.bytes()), XDP_PASS, &inner.bytes());
    }
    assert_eq!(d.counters(), counted(2, 0, 0));
}

fn mixed_families_get_the_inner_ethertype(prog: Prog) {
    let mut d = Loaded::new(prog, &LISTED);
    let v4 = Frame::tcp("10.0.0.2:40000", "10.100.0.1:80");
    check("4-in-6", d.run(&ipip("fd09::1", "fd01::2", &v4).bytes()), XDP_PASS, &v4.bytes());
    let v6 = Frame::udp("[fd00::2]:40001", "[fd64::1]:53").payload(b"q");
    check("6-in-4", d.run(&ipip("10.9.0.1", "10.1.0.2", &v6).bytes()), XDP_PASS, &v6.bytes());
    assert_eq!(d.counters(), counted(2, 0, 0));
}

fn an_unlisted_address_passes_untouched(prog: Prog) {
    let mut d = Loaded::new(prog, &LISTED);
    let inner = Frame::tcp("10.0.0.2:40000", "10.100.0.1:80");
    for outer in [
        ipip("10.9.0.1", "10.1.0.3", &inner),
        ipip("fd09::1", "fd01::3", &inner),
        // The IPv4 address's bytes as the head of an IPv6 address: another
        // address, not a match.
        ipip("fd09::1", "a01:2::", &inner),
    ] {
        let bytes = outer.bytes();
        check("unlisted", d.run(&bytes), XDP_PASS, &bytes);
    }
    assert_eq!(d.counters(), counted(0, 3, 0));
}

fn a_packet_that_is_not_ip_in_ip_passes_untouched(prog: Prog) {
    let mut d = Loaded::new(prog, &LISTED);
    for frame in [
        Frame::tcp("10.0.0.2:40000", "10.1.0.2:80").bytes(),
        Frame::udp("[fd00::2]:40000", "[fd01::2]:53").payload(b"q").bytes(),
        lb_tests::packet::ethernet([2; 6], [4; 6], 0x0806, &[0; 28]),
    ] {
        check("not IP-in-IP", d.run(&frame), XDP_PASS, &frame);
    }
    assert_eq!(d.counters(), counted(0, 3, 0));
}

fn a_truncated_outer_header_is_dropped_as_malformed(prog: Prog) {
    let mut d = Loaded::new(prog, &LISTED);
    let inner = Frame::tcp("10.0.0.2:40000", "10.100.0.1:80");
    for outer in [ipip("10.9.0.1", "10.1.0.2", &inner), ipip("fd09::1", "fd01::2", &inner)] {
        let mut bytes = outer.bytes();
        // The outer header claims the whole inner packet; half is there.
        bytes.truncate(bytes.len() - 20);
        assert_eq!(d.run(&bytes).0, XDP_DROP, "truncated outer");
    }
    assert_eq!(d.counters(), counted(0, 0, 2));
}

fn an_inner_header_of_the_wrong_family_is_dropped_as_malformed(prog: Prog) {
    let mut d = Loaded::new(prog, &LISTED);
    let v6 = Frame::udp("[fd00::2]:40001", "[fd64::1]:53").payload(b"q");
    // Protocol 4 (IPv4 inside) with an IPv6 packet after the outer header.
    let bytes = v6.bytes();
    let outer = Frame::ip(4, "10.9.0.1", "10.1.0.2").payload(&bytes[14..]);
    assert_eq!(d.run(&outer.bytes()).0, XDP_DROP, "wrong inner family");
    assert_eq!(d.counters(), counted(0, 0, 1));
}
