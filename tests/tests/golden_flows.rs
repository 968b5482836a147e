//! Golden packets for the flow table's rules: a SYN is a new decision even
//! on a reused 5-tuple, replies find their flow through the backend's
//! endpoint, flows expire when idle, a full table breaks nothing, and the
//! passive signals (reset to a SYN, ICMP unreachable, SYN counters) are
//! raised from what passes. Needs root (see `golden.rs`).

use std::time::Duration;

use aya::maps::{HashMap, MapData};
use lb_common::abi::{
    EVENT_REFUSED, EVENT_UNREACHABLE, FlowKey, FlowTimeouts, FlowValue, MAP_PENDING, PROTO_UDP,
    PassiveEvent, REFRESH_TICKS, SynCounters, TICK_SHIFT,
};
use lb_tests::{
    fixture::{ACK, Golden, Prog, RST, SYN, SYN_ACK, XDP_PASS, XDP_REDIRECT, sent_to},
    packet::Frame,
};
use lb_userspace::datapath::flows::now_ticks;

lb_tests::in_both_hooks!(
    a_syn_on_a_reused_port_takes_the_current_table_and_re_pins_the_flow,
    syn_counters_count_connections_once_and_first_answers_once,
    a_reset_answering_a_syn_is_reported_on_reused_ports_too,
    icmp_unreachable_about_a_forwarded_flow_is_reported_and_translated,
    idle_flows_expire_and_closing_ones_sooner,
    a_flows_time_is_the_agents_clock_after_every_idle_period,
    flows_beyond_the_table_size_break_no_established_flow_nor_reused_port,
);

/// The "three" service of the fixture: 10.1.0.12-14:80 behind 10.100.0.3:80.
const THREE: usize = 5;
const VIP3: &str = "10.100.0.3:80";
const FIN_ACK: u8 = 0x11;

/// A frame from backend `backend` to the client `client`.
fn reply(backend: &str, client: &str, flags: u8) -> Vec<u8> {
    Frame::tcp(backend, client).tcp_flags(flags).bytes()
}

/// The backend id of address `addr` in service "three".
fn id_of(g: &Golden, addr: &str) -> u32 {
    let i = ["10.1.0.12:80", "10.1.0.13:80", "10.1.0.14:80"]
        .iter()
        .position(|a| *a == addr)
        .expect("a backend of three");
    g.plan.services[THREE].backend_ids[i]
}

/// Another backend of "three" than `addr`.
fn other_than(g: &Golden, addr: &str) -> u32 {
    let ids = &g.plan.services[THREE].backend_ids;
    let i = ids.iter().position(|&id| id == id_of(g, addr)).expect("id");
    ids[(i + 1) % ids.len()]
}

fn events(ring: &mut aya::maps::RingBuf<aya::maps::MapData>) -> Vec<PassiveEvent> {
    let mut out = Vec::new();
    while let Some(item) = ring.next() {
        out.extend(PassiveEvent::from_bytes(&item));
    }
    out
}

/// Longer than a flow's time may lag its last packet (the refresh period,
/// which expiry adds to every timeout).
fn past_refresh() -> Duration {
    Duration::from_nanos(u64::from(REFRESH_TICKS) << TICK_SHIFT) + Duration::from_millis(30)
}

fn a_syn_on_a_reused_port_takes_the_current_table_and_re_pins_the_flow(prog: Prog) {
    let mut g = Golden::with_prog(4096, prog);
    let client = "10.0.0.2:47000";
    let syn = Frame::tcp(client, VIP3).tcp_flags(SYN);
    let (action, out) = g.run(&syn.bytes(), g.gin);
    assert_eq!(action, XDP_REDIRECT);
    let first = sent_to(&out);
    assert_eq!(g.run(&reply(&first, client, SYN_ACK), g.gout).0, XDP_REDIRECT);

    // The table changes (a drain, a removal): the port is reused by a new
    // connection, which must follow the table, not the old pin.
    let other = other_than(&g, &first);
    g.fill_table(THREE, other);
    let (action, out) = g.run(&syn.bytes(), g.gin);
    assert_eq!(action, XDP_REDIRECT);
    let second = sent_to(&out);
    assert_ne!(second, first, "the new SYN went to the old pin");
    // The rest of the new connection follows the new pin...
    let ack = Frame::tcp(client, VIP3).tcp_flags(ACK).bytes();
    assert_eq!(sent_to(&g.run(&ack, g.gin).1), second);
    // ...its replies are translated, and the old backend's are not ours.
    assert_eq!(g.run(&reply(&second, client, SYN_ACK), g.gout).0, XDP_REDIRECT);
    let stale = reply(&first, client, ACK);
    assert_eq!(g.run(&stale, g.gout), (XDP_PASS, stale.clone()));
}

fn syn_counters_count_connections_once_and_first_answers_once(prog: Prog) {
    let mut g = Golden::with_prog(4096, prog);
    let view = g.dp.syn_view().expect("syn view");
    let client = "10.0.0.2:47100";
    let syn = Frame::tcp(client, VIP3).tcp_flags(SYN).bytes();
    let backend = sent_to(&g.run(&syn, g.gin).1);
    let id = id_of(&g, &backend);
    assert_eq!(view.get(id), SynCounters { opened: 1, answered: 0 });
    // A retransmitted SYN is the same connection...
    g.run(&syn, g.gin);
    assert_eq!(view.get(id), SynCounters { opened: 1, answered: 0 });
    // ...a new one from the same port (another sequence number) is not,
    // even while the first still waits.
    let other = Frame::tcp(client, VIP3).tcp_flags(SYN).seq(777).bytes();
    g.run(&other, g.gin);
    assert_eq!(view.get(id), SynCounters { opened: 2, answered: 0 });
    g.run(&syn, g.gin);
    assert_eq!(view.get(id).opened, 3, "the first again, now a new connection too");
    g.run(&reply(&backend, client, SYN_ACK), g.gout);
    g.run(&reply(&backend, client, SYN_ACK), g.gout);
    assert_eq!(view.get(id), SynCounters { opened: 3, answered: 1 });
    // The port reused by a new connection counts again.
    g.run(&Frame::tcp(client, VIP3).tcp_flags(RST).bytes(), g.gin);
    g.run(&syn, g.gin);
    assert_eq!(view.get(id).opened, 4);
}

fn a_reset_answering_a_syn_is_reported_on_reused_ports_too(prog: Prog) {
    let mut g = Golden::with_prog(4096, prog);
    let mut ring = g.dp.take_events().expect("events");
    let client = "10.0.0.2:47200";
    let syn = Frame::tcp(client, VIP3).tcp_flags(SYN).bytes();
    let backend = sent_to(&g.run(&syn, g.gin).1);
    let id = id_of(&g, &backend);
    g.run(&reply(&backend, client, SYN_ACK), g.gout);
    g.run(&Frame::tcp(client, VIP3).tcp_flags(FIN_ACK).bytes(), g.gin);
    g.run(&reply(&backend, client, FIN_ACK), g.gout);
    // A reset of an answered connection is no refusal.
    g.run(&reply(&backend, client, RST), g.gout);
    assert!(events(&mut ring).is_empty());
    // The backend crashes; the client reuses its port for a new connection.
    assert_eq!(sent_to(&g.run(&syn, g.gin).1), backend);
    assert_eq!(g.run(&reply(&backend, client, RST | ACK), g.gout).0, XDP_REDIRECT);
    assert_eq!(events(&mut ring), vec![PassiveEvent { backend_id: id, kind: EVENT_REFUSED }]);
}

fn icmp_unreachable_about_a_forwarded_flow_is_reported_and_translated(prog: Prog) {
    let mut g = Golden::with_prog(4096, prog);
    let mut ring = g.dp.take_events().expect("events");
    for (client, vip, backend, host) in [
        ("10.0.0.2:47300", "10.100.0.1:53", "10.1.0.11:5300", "10.1.0.11"),
        ("[fd00::2]:47301", "[fd64::1]:53", "[fd01::11]:5300", "fd01::11"),
    ] {
        let svc = g.plan.services.iter().find(|s| {
            s.key.proto == PROTO_UDP && {
                let v: std::net::SocketAddr = vip.parse().expect("golden case setup");
                s.key.port_be == v.port().to_be() && s.key.family == if v.is_ipv4() { 4 } else { 6 }
            }
        });
        let id = svc.expect("udp service").backend_ids[0];
        let request = Frame::udp(client, vip).payload(b"q");
        assert_eq!(g.run(&request.bytes(), g.gin).0, XDP_REDIRECT);
        // The datagram as forwarded, answered by "port unreachable".
        let forwarded = Frame::udp(client, backend).payload(b"q");
        let client_ip =
            client.rsplit_once(':').expect("golden case setup").0.trim_matches(['[', ']']);
        let icmp = Frame::icmp_port_unreachable(host, client_ip, &forwarded).bytes();
        // Translated for the client (the bytes: `golden_icmp.rs`).
        assert_eq!(g.run(&icmp, g.gout).0, XDP_REDIRECT, "{client}");
        assert_eq!(
            events(&mut ring),
            vec![PassiveEvent { backend_id: id, kind: EVENT_UNREACHABLE }],
            "{client}"
        );
        // About a flow the balancer never forwarded: nothing.
        let stray = Frame::udp("10.0.0.2:1", "10.1.0.11:5300");
        if client.starts_with("10.") {
            let icmp = Frame::icmp_port_unreachable(host, "10.0.0.2", &stray).bytes();
            g.run(&icmp, g.gout);
            assert!(events(&mut ring).is_empty(), "a stray error was reported");
        }
    }
}

fn idle_flows_expire_and_closing_ones_sooner(prog: Prog) {
    let mut g = Golden::with_prog(4096, prog);
    // Every idle limit one tick (~1 ms), then the defaults for TCP.
    let tiny = FlowTimeouts { tcp: 1, tcp_closing: 1, udp: 1, flood: 0 };
    g.dp.set_timeouts(tiny).expect("timeouts");
    let udp = Frame::udp("10.0.0.2:47400", "10.100.0.1:53");
    assert_eq!(g.run(&udp.bytes(), g.gin).0, XDP_REDIRECT);
    std::thread::sleep(past_refresh());
    let late = Frame::udp("10.1.0.11:5300", "10.0.0.2:47400").bytes();
    assert_eq!(g.run(&late, g.gout), (XDP_PASS, late.clone()), "a reply to an expired flow");

    // Established TCP keeps its pin for the default idle time; after a FIN
    // the closing timeout applies.
    g.dp.set_timeouts(FlowTimeouts { tcp_closing: 1, ..FlowTimeouts::DEFAULT }).expect("set");
    let client = "10.0.0.2:47401";
    let first = sent_to(&g.run(&Frame::tcp(client, VIP3).tcp_flags(SYN).bytes(), g.gin).1);
    g.run(&reply(&first, client, SYN_ACK), g.gout);
    g.fill_table(THREE, other_than(&g, &first));
    std::thread::sleep(past_refresh());
    let ack = Frame::tcp(client, VIP3).tcp_flags(ACK).bytes();
    assert_eq!(sent_to(&g.run(&ack, g.gin).1), first, "established and not idle long");
    g.run(&Frame::tcp(client, VIP3).tcp_flags(FIN_ACK).bytes(), g.gin);
    std::thread::sleep(past_refresh());
    assert_ne!(sent_to(&g.run(&ack, g.gin).1), first, "closed, idle, expired: a new flow");
}

/// The datapath reads its clock once per jiffy and keeps the reading (see
/// `clock::now`): a kept reading that outlived its jiffy would age every
/// flow wrongly, and the agent (which counts live flows, and `lb flow`,
/// which shows their idle time) reads the same clock on its own.
fn a_flows_time_is_the_agents_clock_after_every_idle_period(prog: Prog) {
    let mut g = Golden::with_prog(4096, prog);
    // Unanswered, so it stays in the pending table and is refreshed by
    // each datagram once the refresh period has passed.
    let udp = Frame::udp("10.0.0.2:47500", "10.100.0.1:53").bytes();
    for round in 0..3 {
        let before = now_ticks();
        assert_eq!(g.run(&udp, g.gin).0, XDP_REDIRECT);
        let after = now_ticks();
        let pending: HashMap<&MapData, FlowKey, FlowValue> =
            g.dp.map(MAP_PENDING).expect("pending map");
        let seen: Vec<u32> = pending.iter().map(|e| e.expect("entry").1.last_seen).collect();
        assert_eq!(seen.len(), 1, "round {round}: one flow");
        // A reading taken as the jiffy moved, before the timekeeper did, is
        // one timer tick late (at most 10 ms, at HZ 100).
        let late = seen[0].wrapping_sub(before.wrapping_sub(10)) as i32;
        assert!(
            late >= 0 && seen[0].wrapping_sub(after) as i32 <= 0,
            "round {round}: the flow was seen at {}, between {before} and {after} by the agent",
            seen[0]
        );
        std::thread::sleep(past_refresh());
    }
}

fn flows_beyond_the_table_size_break_no_established_flow_nor_reused_port(prog: Prog) {
    // 64 entries, 2 000 other flows.
    let mut g = Golden::with_prog(64, prog);
    let client = "10.0.0.2:47500";
    let first = sent_to(&g.run(&Frame::tcp(client, VIP3).tcp_flags(SYN).bytes(), g.gin).1);
    g.run(&reply(&first, client, SYN_ACK), g.gout);
    for port in 0..2000u16 {
        let src = format!("10.0.0.2:{}", 20000 + port);
        g.run(&Frame::tcp(&src, VIP3).tcp_flags(SYN).bytes(), g.gin);
    }
    // The established flow, evicted or not, still reaches its backend and
    // its replies still get the VIP back.
    let ack = Frame::tcp(client, VIP3).tcp_flags(ACK).payload(b"more").bytes();
    assert_eq!(sent_to(&g.run(&ack, g.gin).1), first);
    let (action, out) = g.run(&reply(&first, client, ACK), g.gout);
    assert_eq!(action, XDP_REDIRECT, "the reply of an established flow");
    assert_eq!(&out[26..30], &[10, 100, 0, 3], "from the VIP");
    // Every flooded port, reused by a new connection, works end to end.
    for port in (0..2000u16).step_by(97) {
        let src = format!("10.0.0.2:{}", 20000 + port);
        let to = sent_to(&g.run(&Frame::tcp(&src, VIP3).tcp_flags(SYN).bytes(), g.gin).1);
        let (action, out) = g.run(&reply(&to, &src, SYN_ACK), g.gout);
        assert_eq!(action, XDP_REDIRECT, "reply to reused port {src}");
        assert_eq!(&out[26..30], &[10, 100, 0, 3]);
    }
}
