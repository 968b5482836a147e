//! Golden packets for the table of unanswered flows (`LB_PENDING`): new
//! flows wait there until they are two-way conversations (TCP: the
//! client's ACK of the SYN-ACK; UDP: the first reply, in flood mode the
//! client's next datagram after it), so a flood of flows never answered
//! (spoofed SYNs, single datagrams), even one the backend answers, cannot
//! evict an answered flow. Needs root (see `golden.rs`).

use aya::maps::{HashMap, MapData};
use lb_common::abi::{
    DropReason, FLOOD_ON, FLOW_ESTABLISHED, FLOW_OPENING, FlowKey, FlowTimeouts, FlowValue,
    MAP_FLOWS, MAP_PENDING, PROTO_TCP, PROTO_UDP, SynCounters,
};
use lb_tests::{
    fixture::{ACK, Golden, Prog, SYN, SYN_ACK, XDP_PASS, XDP_REDIRECT, sent_to},
    packet::{Frame, endpoint},
};

lb_tests::in_both_hooks!(
    unanswered_syns_beyond_the_pending_table_move_no_answered_flow,
    syn_acks_to_spoofed_syns_do_not_promote_them,
    spoofed_syns_followed_by_blind_acks_do_not_promote_them,
    a_flow_picked_up_mid_connection_is_promoted_by_its_backends_answer,
    in_flood_mode_a_udp_flow_waits_for_the_clients_next_datagram,
    in_flood_mode_a_syn_ack_whose_entry_was_pushed_out_is_adopted_if_maglev_sent_it,
    a_promoted_flow_survives_a_flood_and_a_table_change,
    a_retransmitted_syn_still_matches_its_pending_entry,
    a_udp_flow_waits_until_its_first_reply_and_single_datagrams_evict_nothing,
);

/// The "three" service of the fixture: 10.1.0.12-14:80 behind 10.100.0.3:80.
const THREE: usize = 5;
const VIP3: &str = "10.100.0.3:80";
const UDP_VIP: &str = "10.100.0.1:53";
const UDP_BACKEND: &str = "10.1.0.11:5300";
/// The backends' initial sequence number in these cases: the client's ACK
/// acknowledges it plus one.
const ISN: u32 = 0x1234_5678;
/// The flow table's capacity in these cases: the pending table is then
/// its minimum (1024), and both are split between the CPUs' LRU lists,
/// while a test run's packets all come from one CPU.
const CAPACITY: u32 = 1024;
/// Unanswered flows sent as a flood: several times both tables.
const FLOOD: u16 = 6000;

fn key(client: &str, vip: &str, proto: u8) -> FlowKey {
    FlowKey::between(endpoint(client), endpoint(vip), proto)
}

fn table<'a>(g: &'a Golden, name: &'static str) -> HashMap<&'a MapData, FlowKey, FlowValue> {
    g.dp.map(name).expect("flow map")
}

/// A connection from `client`, answered by its backend and acknowledged by
/// the client; that backend.
fn establish(g: &mut Golden, client: &str) -> String {
    let (action, out) = g.run(&Frame::tcp(client, VIP3).tcp_flags(SYN).bytes(), g.gin);
    assert_eq!(action, XDP_REDIRECT);
    let backend = sent_to(&out);
    let synack = Frame::tcp(&backend, client).tcp_flags(SYN_ACK).seq(ISN).bytes();
    assert_eq!(g.run(&synack, g.gout).0, XDP_REDIRECT, "SYN-ACK to {client}");
    let ack = Frame::tcp(client, VIP3).tcp_flags(ACK).ack(ISN + 1).bytes();
    assert_eq!(sent_to(&g.run(&ack, g.gin).1), backend, "ACK from {client}");
    backend
}

/// Turns the datapath's flood mode on, as the agent does.
fn flood_mode(g: &mut Golden) {
    let t = FlowTimeouts { flood: FLOOD_ON, ..FlowTimeouts::DEFAULT };
    g.dp.set_timeouts(t).expect("settings");
}

/// `n` spoofed SYNs to `vip`, none ever answered.
fn syn_flood(g: &mut Golden, vip: &str, n: u16) {
    for i in 0..n {
        let src = format!("10.0.{}.{}:{}", 100 + i / 250, 1 + i % 250, 1024 + i);
        g.run(&Frame::tcp(&src, vip).tcp_flags(SYN).bytes(), g.gin);
    }
}

/// Another backend of "three" than `addr`.
fn other_than(g: &Golden, addr: &str) -> u32 {
    let ids = &g.plan.services[THREE].backend_ids;
    let i = ["10.1.0.12:80", "10.1.0.13:80", "10.1.0.14:80"]
        .iter()
        .position(|a| *a == addr)
        .expect("a backend of three");
    ids[(i + 1) % ids.len()]
}

/// Asserts the flow from `client`, pinned to `backend`, still goes there
/// and its replies still get the VIP back.
#[track_caller]
fn still_pinned(g: &mut Golden, client: &str, backend: &str) {
    let data = Frame::tcp(client, VIP3).tcp_flags(ACK).payload(b"more").bytes();
    let (action, out) = g.run(&data, g.gin);
    assert_eq!(action, XDP_REDIRECT, "{client}'s packet");
    assert_eq!(sent_to(&out), backend, "{client} moved");
    let (action, out) = g.run(&Frame::tcp(backend, client).tcp_flags(ACK).bytes(), g.gout);
    assert_eq!(action, XDP_REDIRECT, "the reply to {client}");
    assert_eq!(&out[26..30], &[10, 100, 0, 3], "the reply to {client} is from the VIP");
}

fn unanswered_syns_beyond_the_pending_table_move_no_answered_flow(prog: Prog) {
    let mut g = Golden::with_prog(CAPACITY, prog);
    // As many answered flows as one CPU's share of the flow table holds.
    let clients: Vec<String> = (0..200).map(|i| format!("10.0.0.2:{}", 30000 + i)).collect();
    let pinned: Vec<String> = clients.iter().map(|c| establish(&mut g, c)).collect();
    syn_flood(&mut g, VIP3, FLOOD);
    // The table changes: a flow re-hashed after an eviction would now go
    // to `target`; every answered flow keeps its own backend.
    let target = other_than(&g, &pinned[0]);
    g.fill_table(THREE, target);
    for (client, backend) in clients.iter().zip(&pinned) {
        still_pinned(&mut g, client, backend);
    }
    let pending = table(&g, MAP_PENDING).keys().count();
    assert!(pending <= 1024, "the pending table holds {pending}, more than its size");
    assert_eq!(table(&g, MAP_FLOWS).keys().count(), 200, "only answered flows in LB_FLOWS");
    assert_eq!(g.exceptions(DropReason::PendingTableFull), 0);
    assert_eq!(g.exceptions(DropReason::FlowTableFull), 0);
}

fn a_promoted_flow_survives_a_flood_and_a_table_change(prog: Prog) {
    let mut g = Golden::with_prog(CAPACITY, prog);
    let client = "10.0.0.2:47600";
    let k = key(client, VIP3, PROTO_TCP);
    let (_, out) = g.run(&Frame::tcp(client, VIP3).tcp_flags(SYN).bytes(), g.gin);
    let backend = sent_to(&out);
    let waiting = table(&g, MAP_PENDING).get(&k, 0).expect("the SYN waits in LB_PENDING");
    assert_eq!(waiting.state, FLOW_OPENING);
    assert!(table(&g, MAP_FLOWS).get(&k, 0).is_err(), "not answered yet");
    g.run(&Frame::tcp(&backend, client).tcp_flags(SYN_ACK).seq(ISN).bytes(), g.gout);
    let answered = table(&g, MAP_PENDING).get(&k, 0).expect("answered, still pending");
    assert_eq!(answered.state, FLOW_ESTABLISHED);
    assert!(table(&g, MAP_FLOWS).get(&k, 0).is_err(), "the SYN-ACK alone proves nothing");
    // An ACK that does not acknowledge the SYN-ACK (a spoofer's guess)
    // is forwarded, but proves nothing either.
    g.run(&Frame::tcp(client, VIP3).tcp_flags(ACK).ack(ISN ^ 0x8000_0000).bytes(), g.gin);
    assert!(table(&g, MAP_FLOWS).get(&k, 0).is_err(), "a blind ACK promotes nothing");
    g.run(&Frame::tcp(client, VIP3).tcp_flags(ACK).ack(ISN + 1).bytes(), g.gin);
    let answered = table(&g, MAP_FLOWS).get(&k, 0).expect("the client's ACK promoted it");
    assert_eq!(answered.state, FLOW_ESTABLISHED);
    assert!(table(&g, MAP_PENDING).get(&k, 0).is_err(), "promoted, not copied");
    syn_flood(&mut g, VIP3, FLOOD);
    let target = other_than(&g, &backend);
    g.fill_table(THREE, target);
    still_pinned(&mut g, client, &backend);
}

fn a_retransmitted_syn_still_matches_its_pending_entry(prog: Prog) {
    let mut g = Golden::with_prog(CAPACITY, prog);
    let view = g.dp.syn_view().expect("syn view");
    let client = "10.0.0.2:47700";
    let syn = Frame::tcp(client, VIP3).tcp_flags(SYN).bytes();
    let backend = sent_to(&g.run(&syn, g.gin).1);
    let id = g.plan.services[THREE].backend_ids[["10.1.0.12:80", "10.1.0.13:80", "10.1.0.14:80"]
        .iter()
        .position(|a| *a == backend)
        .expect("three")];
    // Fewer other SYNs than the pending table holds: the entry stays.
    syn_flood(&mut g, VIP3, 100);
    let opened = view.get(id).opened;
    assert_eq!(sent_to(&g.run(&syn, g.gin).1), backend);
    assert_eq!(view.get(id).opened, opened, "a retransmission is no new connection");
    let waiting = table(&g, MAP_PENDING).get(&key(client, VIP3, PROTO_TCP), 0).ok();
    assert_eq!(waiting.map(|f| f.state), Some(FLOW_OPENING), "still its pending entry");
    let synack = Frame::tcp(&backend, client).tcp_flags(SYN_ACK).bytes();
    assert_eq!(g.run(&synack, g.gout).0, XDP_REDIRECT, "its SYN-ACK is translated");
    assert_eq!(view.get(id).answered, 1);
    assert_eq!(view.get(id), SynCounters { opened, answered: 1 });
}

fn a_udp_flow_waits_until_its_first_reply_and_single_datagrams_evict_nothing(prog: Prog) {
    let mut g = Golden::with_prog(CAPACITY, prog);
    let client = "10.0.0.2:47800";
    let k = key(client, UDP_VIP, PROTO_UDP);
    let query = Frame::udp(client, UDP_VIP).payload(b"q").bytes();
    let (action, out) = g.run(&query, g.gin);
    assert_eq!((action, sent_to(&out)), (XDP_REDIRECT, UDP_BACKEND.to_string()));
    assert!(table(&g, MAP_PENDING).get(&k, 0).is_ok(), "unanswered: pending");
    // A second datagram before any reply keeps it pending.
    g.run(&query, g.gin);
    assert!(table(&g, MAP_FLOWS).get(&k, 0).is_err());
    let answer = Frame::udp(UDP_BACKEND, client).payload(b"a").bytes();
    let (action, out) = g.run(&answer, g.gout);
    assert_eq!(action, XDP_REDIRECT);
    assert_eq!(&out[26..30], &[10, 100, 0, 1], "the reply is from the VIP");
    assert!(table(&g, MAP_FLOWS).get(&k, 0).is_ok(), "the reply promoted it");
    assert!(table(&g, MAP_PENDING).get(&k, 0).is_err());
    // Single datagrams from many sources churn only the pending table.
    for i in 0..FLOOD {
        let src = format!("10.0.{}.{}:{}", 100 + i / 250, 1 + i % 250, 1024 + i);
        g.run(&Frame::udp(&src, UDP_VIP).payload(b"x").bytes(), g.gin);
    }
    assert!(table(&g, MAP_FLOWS).get(&k, 0).is_ok(), "the answered flow is still pinned");
    let (action, out) = g.run(&answer, g.gout);
    assert_eq!(action, XDP_REDIRECT);
    assert_eq!(&out[26..30], &[10, 100, 0, 1]);
}

fn syn_acks_to_spoofed_syns_do_not_promote_them(prog: Prog) {
    // The backend answers every spoofed SYN (its listener, or its SYN
    // cookies, cannot tell them apart); the sources never acknowledge.
    survives_spoofed_syns(prog, 31000, |g, src, _| {
        let (_, out) = g.run(&Frame::tcp(src, VIP3).tcp_flags(SYN).bytes(), g.gin);
        g.run(&Frame::tcp(&sent_to(&out), src).tcp_flags(SYN_ACK).bytes(), g.gout);
    });
}

/// 100 connections established from ports `base`.., then [`FLOOD`]
/// spoofed sources each sent through `spoof`: no spoofed flow reaches
/// LB_FLOWS, and every established one stays on its backend after the
/// Maglev table changed.
fn survives_spoofed_syns(prog: Prog, base: u16, mut spoof: impl FnMut(&mut Golden, &str, u16)) {
    let mut g = Golden::with_prog(CAPACITY, prog);
    let clients: Vec<String> = (0..100).map(|i| format!("10.0.0.2:{}", base + i)).collect();
    let pinned: Vec<String> = clients.iter().map(|c| establish(&mut g, c)).collect();
    for i in 0..FLOOD {
        let src = format!("10.0.{}.{}:{}", 100 + i / 250, 1 + i % 250, 1024 + i);
        spoof(&mut g, &src, i);
    }
    assert_eq!(table(&g, MAP_FLOWS).keys().count(), 100, "no spoofed flow in LB_FLOWS");
    let target = other_than(&g, &pinned[0]);
    g.fill_table(THREE, target);
    for (client, backend) in clients.iter().zip(&pinned) {
        still_pinned(&mut g, client, backend);
    }
}

fn in_flood_mode_a_udp_flow_waits_for_the_clients_next_datagram(prog: Prog) {
    let mut g = Golden::with_prog(CAPACITY, prog);
    flood_mode(&mut g);
    let client = "10.0.0.2:47900";
    let k = key(client, UDP_VIP, PROTO_UDP);
    let query = Frame::udp(client, UDP_VIP).payload(b"q").bytes();
    g.run(&query, g.gin);
    let answer = Frame::udp(UDP_BACKEND, client).payload(b"a").bytes();
    let (action, out) = g.run(&answer, g.gout);
    assert_eq!(action, XDP_REDIRECT);
    assert_eq!(&out[26..30], &[10, 100, 0, 1], "the reply is from the VIP");
    let waiting = table(&g, MAP_PENDING).get(&k, 0).expect("answered, still pending");
    assert_eq!(waiting.state, FLOW_ESTABLISHED);
    assert!(table(&g, MAP_FLOWS).get(&k, 0).is_err(), "a reply alone proves nothing in flood mode");
    g.run(&query, g.gin);
    assert!(table(&g, MAP_FLOWS).get(&k, 0).is_ok(), "the client's next datagram promoted it");
    assert!(table(&g, MAP_PENDING).get(&k, 0).is_err());
}

fn in_flood_mode_a_syn_ack_whose_entry_was_pushed_out_is_adopted_if_maglev_sent_it(prog: Prog) {
    let mut g = Golden::with_prog(CAPACITY, prog);
    let client = "10.0.0.2:48000";
    let k = key(client, VIP3, PROTO_TCP);
    let (_, out) = g.run(&Frame::tcp(client, VIP3).tcp_flags(SYN).bytes(), g.gin);
    let backend = sent_to(&out);
    // The flood pushed the waiting entry out before the answer came.
    let forget = |g: &mut Golden| {
        let mut pending: HashMap<&mut MapData, FlowKey, FlowValue> =
            g.dp.map_mut(MAP_PENDING).expect("pending map");
        pending.remove(&k).expect("the waiting entry");
    };
    forget(&mut g);
    let synack = Frame::tcp(&backend, client).tcp_flags(SYN_ACK).seq(ISN).bytes();
    assert_eq!(g.run(&synack, g.gout), (XDP_PASS, synack.clone()), "not in flood mode: no flow");
    g.run(&Frame::tcp(client, VIP3).tcp_flags(SYN).bytes(), g.gin);
    forget(&mut g);
    flood_mode(&mut g);
    let (action, out) = g.run(&synack, g.gout);
    assert_eq!(action, XDP_REDIRECT, "adopted: Maglev sent the SYN there");
    assert_eq!(&out[26..30], &[10, 100, 0, 3], "from the VIP");
    let adopted = table(&g, MAP_PENDING).get(&k, 0).expect("pinned again, pending");
    assert_eq!(adopted.state, FLOW_ESTABLISHED);
    g.run(&Frame::tcp(client, VIP3).tcp_flags(ACK).ack(ISN + 1).bytes(), g.gin);
    assert!(table(&g, MAP_FLOWS).get(&k, 0).is_ok(), "the client's ACK promoted it");
    // A SYN-ACK from a backend Maglev would not have chosen is not ours.
    let stray_client = "10.0.0.2:48001";
    let syn = Frame::tcp(stray_client, VIP3).tcp_flags(SYN).bytes();
    let chosen = sent_to(&g.run(&syn, g.gin).1);
    {
        let mut pending: HashMap<&mut MapData, FlowKey, FlowValue> =
            g.dp.map_mut(MAP_PENDING).expect("pending map");
        pending.remove(&key(stray_client, VIP3, PROTO_TCP)).expect("its entry");
    }
    let ids = &g.plan.services[THREE].backend_ids;
    let other = other_than(&g, &chosen);
    let other = ["10.1.0.12:80", "10.1.0.13:80", "10.1.0.14:80"]
        [ids.iter().position(|&id| id == other).expect("a backend of three")];
    let stray = Frame::tcp(other, stray_client).tcp_flags(SYN_ACK).bytes();
    assert_eq!(g.run(&stray, g.gout), (XDP_PASS, stray.clone()), "not Maglev's choice");
}

/// A smarter flood: each spoofed SYN followed by an ACK from the same
/// source, as a tool that never sees the SYN-ACK can send (acknowledging
/// its own SYN, or a guess). None promotes a flow: only an ACK of the
/// backend's SYN-ACK does.
fn spoofed_syns_followed_by_blind_acks_do_not_promote_them(prog: Prog) {
    survives_spoofed_syns(prog, 32000, |g, src, i| {
        let seq = u32::from(i);
        let syn = Frame::tcp(src, VIP3).tcp_flags(SYN).seq(seq).bytes();
        let (_, out) = g.run(&syn, g.gin);
        let synack = Frame::tcp(&sent_to(&out), src).tcp_flags(SYN_ACK).seq(ISN).ack(seq + 1);
        g.run(&synack.bytes(), g.gout);
        let guess = if i % 2 == 0 { seq + 1 } else { 1 };
        g.run(&Frame::tcp(src, VIP3).tcp_flags(ACK).seq(seq + 1).ack(guess).bytes(), g.gin);
    });
}

/// A flow whose first packet is no SYN (after a restart without takeover,
/// or a spoofer's ACKs) waits in LB_PENDING however many packets the
/// client sends; the backend's answer (not a reset, not a SYN-ACK)
/// promotes it, since only a backend that holds the connection sends one.
fn a_flow_picked_up_mid_connection_is_promoted_by_its_backends_answer(prog: Prog) {
    let mut g = Golden::with_prog(CAPACITY, prog);
    let client = "10.0.0.2:47950";
    let k = key(client, VIP3, PROTO_TCP);
    let data = Frame::tcp(client, VIP3).tcp_flags(ACK).seq(500).ack(900).payload(b"more");
    let (action, out) = g.run(&data.clone().bytes(), g.gin);
    assert_eq!(action, XDP_REDIRECT, "picked up: forwarded");
    let backend = sent_to(&out);
    for _ in 0..3 {
        g.run(&data.clone().bytes(), g.gin);
    }
    assert!(table(&g, MAP_FLOWS).get(&k, 0).is_err(), "the client alone proves nothing");
    assert!(table(&g, MAP_PENDING).get(&k, 0).is_ok());
    let rst_client = "10.0.0.2:47951";
    let (_, out) = g.run(&Frame::tcp(rst_client, VIP3).tcp_flags(ACK).bytes(), g.gin);
    let reset = Frame::tcp(&sent_to(&out), rst_client).tcp_flags(0x04).bytes();
    g.run(&reset, g.gout);
    let rk = key(rst_client, VIP3, PROTO_TCP);
    assert!(table(&g, MAP_FLOWS).get(&rk, 0).is_err(), "a reset promotes nothing");
    let answer = Frame::tcp(&backend, client).tcp_flags(ACK).seq(900).ack(504).payload(b"ok");
    assert_eq!(g.run(&answer.bytes(), g.gout).0, XDP_REDIRECT);
    assert!(table(&g, MAP_FLOWS).get(&k, 0).is_ok(), "its backend's answer promoted it");
    assert!(table(&g, MAP_PENDING).get(&k, 0).is_err());
}
