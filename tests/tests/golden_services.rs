//! Golden packets for the per-CPU cache of service records in front of
//! `LB_SERVICES` (`lb-ebpf`'s `services`): three VIPs that share a cache
//! set (of two slots) each get their own service, and a record a reload changes or
//! removes is seen from the next packet, with the old record cached. At
//! both hooks. Needs root.

use lb_common::{
    abi::{Addr, DropReason, SERVICE_CACHE_SLOTS},
    prefilter,
};
use lb_tests::{
    fixture::{CONFIG, Golden, Prog, SYN, XDP_DROP, XDP_PASS, XDP_REDIRECT, sent_to},
    packet::Frame,
};

lb_tests::in_both_hooks!(
    three_vips_sharing_a_cache_set_each_get_their_own_service,
    a_record_a_reload_changes_or_removes_is_seen_from_the_next_packet,
);

/// The cache set (two slots) of a TCP VIP.
fn set(ip: [u8; 4], port: u16) -> u32 {
    let addr = Addr::from(std::net::IpAddr::V4(ip.into()));
    prefilter::bit(&addr, port.to_be(), 6) & (SERVICE_CACHE_SLOTS / 2 - 1)
}

fn syn(client: &str, vip: &str) -> Vec<u8> {
    Frame::tcp(client, vip).tcp_flags(SYN).bytes()
}

fn three_vips_sharing_a_cache_set_each_get_their_own_service(prog: Prog) {
    let mut g = Golden::with_prog(4096, prog);
    // Two VIPs in the set of "tcp4" (10.100.0.1:80), found by search, served
    // by backends of "three" (the fixture has their neighbours): one more
    // than the set has slots, so they take turns in one.
    let mut ports =
        (1024..=65535u16).filter(|&p| set([10, 100, 0, 9], p) == set([10, 100, 0, 1], 80));
    let twins: Vec<String> = ports.by_ref().take(2).map(|p| format!("10.100.0.9:{p}")).collect();
    assert_eq!(twins.len(), 2, "two ports in the same set among 64 511");
    let mut added = CONFIG.to_owned();
    for (i, (vip, backend)) in twins.iter().zip(["10.1.0.12:80", "10.1.0.13:80"]).enumerate() {
        added += &format!(
            "\n[[service]]\nname = \"twin{i}\"\nvip = \"{vip}\"\n[[service.backend]]\naddr = \"{backend}\"\n"
        );
    }
    g.reload(&added);
    let expected = [
        ("10.100.0.1:80", "10.1.0.10:8080"),
        (twins[0].as_str(), "10.1.0.12:80"),
        (twins[1].as_str(), "10.1.0.13:80"),
    ];
    for round in 0..3u16 {
        let client = format!("10.0.0.2:{}", 41000 + round);
        for (vip, backend) in expected {
            let (action, out) = g.run(&syn(&client, vip), g.gin);
            assert_eq!(action, XDP_REDIRECT, "round {round}: {vip}");
            assert_eq!(sent_to(&out), backend, "round {round}: {vip}");
        }
    }
}

fn a_record_a_reload_changes_or_removes_is_seen_from_the_next_packet(prog: Prog) {
    let mut g = Golden::with_prog(4096, prog);
    let vip = "10.100.0.1:80";
    // Cached on this CPU (a test run's packets all run on one).
    assert_eq!(g.run(&syn("10.0.0.2:42000", vip), g.gin).0, XDP_REDIRECT);
    assert_eq!(g.run(&syn("10.0.0.2:42001", vip), g.gin).0, XDP_REDIRECT);

    // The record gains a deny list: the very next packet meets it.
    let denied = CONFIG.replace(
        "vip = \"10.100.0.1:80\"\n",
        "vip = \"10.100.0.1:80\"\ndeny = [\"10.0.0.0/24\"]\n",
    );
    g.reload(&denied);
    let before = g.exceptions(DropReason::AclDenied);
    assert_eq!(g.run(&syn("10.0.0.2:42002", vip), g.gin).0, XDP_DROP, "denied after the reload");
    assert_eq!(g.exceptions(DropReason::AclDenied), before + 1);

    // And loses it again.
    g.reload(CONFIG);
    assert_eq!(g.run(&syn("10.0.0.2:42003", vip), g.gin).0, XDP_REDIRECT, "served again");

    // Removed: the next packet passes to the kernel untouched.
    let without = CONFIG.replacen(
        "[[service]]\nname = \"tcp4\"\nvip = \"10.100.0.1:80\"\n[[service.backend]]\naddr = \"10.1.0.10:8080\"\n",
        "",
        1,
    );
    assert_ne!(without, CONFIG, "the fixture's tcp4 service is where this test expects it");
    g.reload(&without);
    let frame = syn("10.0.0.2:42004", vip);
    assert_eq!(g.run(&frame, g.gin), (XDP_PASS, frame), "removed by the reload");
}
