//! Golden packets for the "maybe ours" prefilter (`LB_PREFILTER`): the map
//! holds exactly the bits of the plan's VIPs and backend endpoints after
//! each load and each reload, a service a reload adds is balanced and one
//! it removes passes, and traffic to neither passes untouched. At both
//! hooks. Needs root.

use lb_tests::{
    fixture::{CONFIG, Golden, Prog, XDP_PASS, XDP_REDIRECT},
    packet::Frame,
};
use lb_userspace::{
    config,
    datapath::{
        plan::{Effective, replan},
        prefilter,
    },
};

lb_tests::in_both_hooks!(
    the_map_follows_every_reload,
    traffic_to_neither_a_vip_nor_a_backend_passes_untouched,
);

const SYN: u8 = 0x02;

/// A service the reloads add and remove; its backend (also "three"'s) has
/// a neighbour in the fixture, so the XDP hook can forward to it.
const ADDED: &str = "
[[service]]
name = \"added\"
vip = \"10.100.0.9:8080\"
[[service.backend]]
addr = \"10.1.0.12:80\"
";

fn reload(g: &mut Golden, text: &str) {
    let cfg = config::parse(text, "golden.toml".as_ref()).expect("golden case config");
    let new = replan(&g.plan, &cfg, &|_, b| Effective::configured(b)).expect("replan");
    g.dp.apply_change(&g.plan, &new).expect("apply_change");
    g.plan = new;
}

fn the_map_follows_every_reload(prog: Prog) {
    let mut g = Golden::with_prog(4096, prog);
    let exact = |g: &Golden| {
        assert_eq!(prefilter::read(&g.dp).expect("read"), prefilter::words(&g.plan));
    };
    exact(&g);
    let syn = Frame::tcp("10.0.0.2:40000", "10.100.0.9:8080").tcp_flags(SYN).bytes();
    assert_eq!(g.run(&syn, g.gin).0, XDP_PASS, "no such service yet");
    reload(&mut g, &format!("{CONFIG}{ADDED}"));
    exact(&g);
    assert_eq!(g.run(&syn, g.gin).0, XDP_REDIRECT, "added by the reload");
    reload(&mut g, CONFIG);
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
