//! Golden packets for the "maybe ours" prefilter (`LB_PREFILTER`): the map
//! holds exactly the bits of the plan's VIPs and backend endpoints after
//! each load and each reload, a service a reload adds is balanced and one
//! it removes passes, and traffic to neither passes untouched. At both
//! hooks. Needs root.

use lb_tests::{
    fixture::{CONFIG, Golden, Prog, SYN, XDP_PASS, XDP_REDIRECT},
    packet::Frame,
};
use lb_userspace::datapath::prefilter;

lb_tests::in_both_hooks!(
    the_map_follows_every_reload,
    traffic_to_neither_a_vip_nor_a_backend_passes_untouched,
    an_endpoint_that_shares_a_vips_bit_is_still_not_balanced,
);

/// A service the reloads add and remove; its backend (also "three"'s) has
/// a neighbour in the fixture, so the XDP hook can forward to it.
const ADDED: &str = "
[[service]]
name = \"added\"
vip = \"10.100.0.9:8080\"
[[service.backend]]
addr = \"10.1.0.12:80\"
";

fn the_map_follows_every_reload(prog: Prog) {
    let mut g = Golden::with_prog(4096, prog);
    let exact = |g: &Golden| {
        assert_eq!(prefilter::read(&g.dp).expect("read"), prefilter::words(&g.plan));
    };
    exact(&g);
    let syn = Frame::tcp("10.0.0.2:40000", "10.100.0.9:8080").tcp_flags(SYN).bytes();
    assert_eq!(g.run(&syn, g.gin).0, XDP_PASS, "no such service yet");
    g.reload(&format!("{CONFIG}{ADDED}"));
    exact(&g);
    assert_eq!(g.run(&syn, g.gin).0, XDP_REDIRECT, "added by the reload");
    g.reload(CONFIG);
    exact(&g);
    let again = Frame::tcp("10.0.0.2:40001", "10.100.0.9:8080").tcp_flags(SYN).bytes();
    assert_eq!(g.run(&again, g.gin).0, XDP_PASS, "removed by the reload");
}

fn traffic_to_neither_a_vip_nor_a_backend_passes_untouched(prog: Prog) {
    let mut g = Golden::with_prog(4096, prog);
    for (src, dst) in [
        ("10.0.0.2:40000", "10.100.0.1:9999"),
        ("10.0.0.2:40000", "192.0.2.1:80"),
        ("10.1.0.10:9999", "10.0.0.2:40000"),
        ("[fd00::2]:40000", "[fd64::1]:9999"),
    ] {
        let frame = Frame::tcp(src, dst).tcp_flags(SYN).bytes();
        let (action, out) = g.run(&frame, g.gin);
        assert_eq!((action, out), (XDP_PASS, frame), "{src} -> {dst}");
        let udp = Frame::udp(src, dst).bytes();
        assert_eq!(g.run(&udp, g.gin).0, XDP_PASS, "UDP {src} -> {dst}");
    }
}

/// A set bit only says "maybe": an endpoint that is no VIP but hashes to
/// the bit of one (found by search) takes the lookups and, as they say,
/// passes untouched.
fn an_endpoint_that_shares_a_vips_bit_is_still_not_balanced(prog: Prog) {
    use lb_common::{abi::Addr, prefilter as bits};
    let mut g = Golden::with_prog(4096, prog);
    let bit = |ip: std::net::Ipv4Addr, port: u16| {
        bits::bit(&Addr::from(std::net::IpAddr::V4(ip)), port.to_be(), 6)
    };
    let vip = bit([10, 100, 0, 1].into(), 80);
    let twin = (0..=255u8)
        .flat_map(|h| (1024..=65535u16).map(move |p| (std::net::Ipv4Addr::new(192, 0, 2, h), p)))
        .find(|&(ip, p)| bit(ip, p) == vip)
        .expect("an endpoint sharing the VIP's bit among 16 million");
    let (word, mask) = bits::word_and_mask(vip);
    assert_ne!(prefilter::read(&g.dp).expect("read")[word as usize] & mask, 0, "the bit is set");
    let frame =
        Frame::tcp("10.0.0.2:40000", &format!("{}:{}", twin.0, twin.1)).tcp_flags(SYN).bytes();
    assert_eq!(g.run(&frame, g.gin), (XDP_PASS, frame), "{twin:?} is no VIP");
}
