//! Golden packets for the source lists and the new-flow limit (issue 14):
//! deny, allow, deny wins over a longer allow and under a shorter one, a
//! reload that denies an established flow's source, and a source over its
//! limit limited while others are not; IPv4 and IPv6, at both hooks.
//!
//! Each case reloads the fixture's config with lists or limits on "tcp4"
//! and "tcp6" (`replan` + `apply_change`, as the agent's reload does), so
//! the diff-apply of the tries and records is what puts them in place.
//! Needs root.

use lb_common::abi::DropReason;
use lb_tests::{
    fixture::{ACK, CONFIG, Golden, Prog, SYN, XDP_DROP, XDP_REDIRECT},
    packet::Frame,
};
use lb_userspace::datapath::stats;

lb_tests::in_both_hooks!(
    a_denied_source_is_dropped_and_counted,
    an_allow_list_admits_only_its_sources,
    deny_wins_whatever_the_lengths,
    a_reload_that_denies_a_source_stops_its_established_flows,
    ipv6_lists,
    a_source_over_its_limit_is_limited_and_others_are_not,
    ipv6_sources_share_a_bucket_per_prefix,
    a_service_id_given_again_starts_with_no_counts_and_full_buckets,
);

/// Service ids in the fixture's config.
const TCP4: usize = 0;
const TCP6: usize = 2;

/// Reloads the fixture's config with `tcp4` and `tcp6` keys added to those
/// services.
fn reload(g: &mut Golden, tcp4: &str, tcp6: &str) {
    let text = CONFIG
        .replace("vip = \"10.100.0.1:80\"\n", &format!("vip = \"10.100.0.1:80\"\n{tcp4}\n"))
        .replace("vip = \"[fd64::1]:443\"\n", &format!("vip = \"[fd64::1]:443\"\n{tcp6}\n"));
    g.reload(&text);
}

/// (acl_denied, rate_limited) of service `svc`.
fn refused(g: &Golden, svc: usize) -> (u64, u64) {
    let t = stats::read(&g.dp, &g.plan.service_ids(), 0).expect("counters");
    let c = t.services[g.plan.services[svc].record.id as usize];
    (c.acl_denied, c.rate_limited)
}

fn syn(src: &str, dst: &str) -> Vec<u8> {
    Frame::tcp(src, dst).tcp_flags(SYN).bytes()
}

fn a_denied_source_is_dropped_and_counted(prog: Prog) {
    let mut g = Golden::with_prog(4096, prog);
    reload(&mut g, "deny = [\"10.0.0.2\"]", "");
    let before = g.exceptions(DropReason::AclDenied);
    assert_eq!(g.run(&syn("10.0.0.2:40000", "10.100.0.1:80"), g.gin).0, XDP_DROP);
    let udp = Frame::udp("10.0.0.2:40000", "10.100.0.1:53").bytes();
    assert_eq!(g.run(&udp, g.gin).0, XDP_REDIRECT, "the list is the tcp4 service's only");
    assert_eq!(g.run(&syn("10.0.0.50:40000", "10.100.0.1:80"), g.gin).0, XDP_REDIRECT);
    assert_eq!(refused(&g, TCP4), (1, 0));
    assert_eq!(g.exceptions(DropReason::AclDenied), before + 1);
    // The list gone again: the source is back.
    reload(&mut g, "", "");
    assert_eq!(g.run(&syn("10.0.0.2:40001", "10.100.0.1:80"), g.gin).0, XDP_REDIRECT);
}

fn an_allow_list_admits_only_its_sources(prog: Prog) {
    let mut g = Golden::with_prog(4096, prog);
    reload(&mut g, "allow = [\"10.0.0.48/29\"]", "");
    assert_eq!(g.run(&syn("10.0.0.50:40000", "10.100.0.1:80"), g.gin).0, XDP_REDIRECT);
    assert_eq!(g.run(&syn("10.0.0.2:40000", "10.100.0.1:80"), g.gin).0, XDP_DROP);
    assert_eq!(refused(&g, TCP4), (1, 0));
    // Other services have no list: everyone.
    let v6 = syn("[fd00::2]:40000", "[fd64::1]:443");
    assert_eq!(g.run(&v6, g.gin).0, XDP_REDIRECT);
}

fn deny_wins_whatever_the_lengths(prog: Prog) {
    let mut g = Golden::with_prog(4096, prog);
    // A longer deny inside an allow.
    reload(&mut g, "allow = [\"10.0.0.0/24\"]\ndeny = [\"10.0.0.2\"]", "");
    assert_eq!(g.run(&syn("10.0.0.2:40000", "10.100.0.1:80"), g.gin).0, XDP_DROP);
    assert_eq!(g.run(&syn("10.0.0.50:40000", "10.100.0.1:80"), g.gin).0, XDP_REDIRECT);
    // A longer allow inside a deny: the deny still wins.
    reload(&mut g, "allow = [\"10.0.0.2\"]\ndeny = [\"10.0.0.0/24\"]", "");
    assert_eq!(g.run(&syn("10.0.0.2:40001", "10.100.0.1:80"), g.gin).0, XDP_DROP);
    assert_eq!(g.run(&syn("10.0.0.50:40001", "10.100.0.1:80"), g.gin).0, XDP_DROP);
    assert_eq!(refused(&g, TCP4), (3, 0));
}

fn a_reload_that_denies_a_source_stops_its_established_flows(prog: Prog) {
    let mut g = Golden::with_prog(4096, prog);
    let flow = Frame::tcp("10.0.0.2:41000", "10.100.0.1:80");
    assert_eq!(g.run(&flow.clone().tcp_flags(SYN).bytes(), g.gin).0, XDP_REDIRECT);
    assert_eq!(g.run(&flow.clone().tcp_flags(ACK).bytes(), g.gin).0, XDP_REDIRECT);
    reload(&mut g, "deny = [\"10.0.0.0/30\"]", "");
    assert_eq!(
        g.run(&flow.clone().tcp_flags(ACK).payload(b"more").bytes(), g.gin).0,
        XDP_DROP,
        "every packet from a denied source, not only new flows'"
    );
    reload(&mut g, "", "");
    assert_eq!(g.run(&flow.tcp_flags(ACK).bytes(), g.gin).0, XDP_REDIRECT, "allowed again");
}

fn ipv6_lists(prog: Prog) {
    let mut g = Golden::with_prog(4096, prog);
    reload(&mut g, "", "deny = [\"fd00::/64\"]");
    assert_eq!(g.run(&syn("[fd00::2]:40000", "[fd64::1]:443"), g.gin).0, XDP_DROP);
    assert_eq!(g.run(&syn("[fd00:0:0:1::2]:40000", "[fd64::1]:443"), g.gin).0, XDP_REDIRECT);
    reload(&mut g, "", "allow = [\"fd00::2\", \"10.0.0.0/8\"]");
    assert_eq!(g.run(&syn("[fd00::2]:40001", "[fd64::1]:443"), g.gin).0, XDP_REDIRECT);
    assert_eq!(g.run(&syn("[fd00::3]:40001", "[fd64::1]:443"), g.gin).0, XDP_DROP);
    assert_eq!(refused(&g, TCP6), (2, 0));
    assert_eq!(refused(&g, TCP4), (0, 0));
}

fn a_source_over_its_limit_is_limited_and_others_are_not(prog: Prog) {
    let mut g = Golden::with_prog(4096, prog);
    // One new flow a second after a burst of 3: the case runs well within
    // the second.
    reload(&mut g, "new_flow_limit = { rate = 1, burst = 3 }", "");
    let before = g.exceptions(DropReason::RateLimited);
    for port in 42000..42003 {
        let s = syn(&format!("10.0.0.2:{port}"), "10.100.0.1:80");
        assert_eq!(g.run(&s, g.gin).0, XDP_REDIRECT, "flow {port} of the burst");
    }
    let over = syn("10.0.0.2:42003", "10.100.0.1:80");
    assert_eq!(g.run(&over, g.gin).0, XDP_DROP, "the fourth new flow at once");
    assert_eq!(g.run(&syn("10.0.0.50:42003", "10.100.0.1:80"), g.gin).0, XDP_REDIRECT);
    // Established flows are never limited.
    for _ in 0..10 {
        let ack = Frame::tcp("10.0.0.2:42000", "10.100.0.1:80").tcp_flags(ACK).bytes();
        assert_eq!(g.run(&ack, g.gin).0, XDP_REDIRECT);
    }
    // A retransmitted SYN of an admitted connection is not a new flow.
    let again = syn("10.0.0.2:42001", "10.100.0.1:80");
    assert_eq!(g.run(&again, g.gin).0, XDP_REDIRECT, "a retransmitted SYN");
    assert_eq!(refused(&g, TCP4), (0, 1));
    assert_eq!(g.exceptions(DropReason::RateLimited), before + 1);
}

fn ipv6_sources_share_a_bucket_per_prefix(prog: Prog) {
    let mut g = Golden::with_prog(4096, prog);
    reload(&mut g, "", "new_flow_limit = { rate = 1, burst = 2, prefix_v6 = 64 }");
    assert_eq!(g.run(&syn("[fd00::2]:43000", "[fd64::1]:443"), g.gin).0, XDP_REDIRECT);
    assert_eq!(g.run(&syn("[fd00::3]:43000", "[fd64::1]:443"), g.gin).0, XDP_REDIRECT);
    assert_eq!(g.run(&syn("[fd00::4]:43000", "[fd64::1]:443"), g.gin).0, XDP_DROP, "same /64");
    let other = syn("[fd00:0:0:1::2]:43000", "[fd64::1]:443");
    assert_eq!(g.run(&other, g.gin).0, XDP_REDIRECT, "another /64");
    assert_eq!(refused(&g, TCP6), (0, 1));
}

/// Once a long-lived agent has handed out every service id, a re-created
/// service takes one freed in an earlier change: it must not inherit that
/// id's counters, nor its sources' emptied buckets. Before, no id was ever
/// given again and such a reload was refused until `lb stop`.
fn a_service_id_given_again_starts_with_no_counts_and_full_buckets(prog: Prog) {
    let mut g = Golden::with_prog(4096, prog);
    let limit = "new_flow_limit = { rate = 1, burst = 1 }";
    reload(&mut g, limit, "");
    let first = g.plan.services[TCP4].record.id;
    for port in 43000..43003 {
        g.run(&syn(&format!("10.0.0.2:{port}"), "10.100.0.1:80"), g.gin);
    }
    assert_eq!(refused(&g, TCP4), (0, 2), "one admitted, two over the limit");
    // As if every id had been handed out: renaming "tcp4" away and back
    // re-creates it twice, the second time on its own first id, freed by
    // the first change.
    g.plan.next_service_id = lb_common::abi::MAX_SERVICES;
    for name in ["tcp4b", "tcp4"] {
        let text = CONFIG
            .replace("name = \"tcp4\"", &format!("name = \"{name}\""))
            .replace("vip = \"10.100.0.1:80\"\n", &format!("vip = \"10.100.0.1:80\"\n{limit}\n"));
        g.reload(&text);
    }
    assert_eq!(g.plan.services[TCP4].record.id, first, "the freed id is given again");
    assert_eq!(refused(&g, TCP4), (0, 0), "with no counts of the service that had it");
    let s = syn("10.0.0.2:43003", "10.100.0.1:80");
    assert_eq!(g.run(&s, g.gin).0, XDP_REDIRECT, "and its sources' buckets full again");
}
