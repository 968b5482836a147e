//! Golden packets for flood mode's SYN challenge (`lb_common::challenge`):
//! a SYN from a source not known to receive what is sent to it is answered
//! by a SYN-ACK acknowledging a number just below its sequence number;
//! the client's reset, which carries that number back, verifies the
//! source, and its next SYN reaches a backend. Needs root (see `golden.rs`).

use aya::maps::{HashMap, MapData};
use lb_common::{
    abi::{
        DropReason, FLOOD_CHALLENGE, FLOOD_ON, FlowKey, FlowTimeouts, FlowValue, MAP_FLOWS,
        MAP_PENDING, MAP_VERIFIED, VerifiedKey,
    },
    challenge,
};
use lb_tests::{
    fixture::{
        ACK, CLIENT_MAC, GIN_MAC, Golden, Prog, RST, SYN, SYN_ACK, XDP_DROP, XDP_REDIRECT, sent_to,
    },
    packet::{Frame, mac},
};

lb_tests::in_both_hooks!(
    in_flood_mode_a_syn_from_a_new_source_is_answered_with_a_challenge,
    the_reset_that_returns_the_challenge_verifies_the_source,
    resets_that_do_not_return_the_challenge_verify_nothing,
    in_flood_mode_packets_of_no_flow_from_unverified_sources_are_dropped,
    out_of_flood_mode_or_with_challenges_off_nothing_is_challenged,
    sources_that_acknowledged_a_backend_before_the_flood_are_not_challenged,
    a_spoofed_flood_takes_no_flow_entry_and_past_the_verified_table_only_costs_a_challenge,
);

const VIP: &str = "10.100.0.1:80";
const VIP6: &str = "[fd64::1]:443";
const BACKEND: &str = "10.1.0.10:8080";
const ISN: u32 = 0x7000_0010;
/// The flow table's capacity: the pending and verified tables are then
/// their minimum, 1024 entries.
const CAPACITY: u32 = 1024;

/// Turns the datapath's flood mode on, with challenges (or off), as the
/// agent does.
fn flood_mode(g: &mut Golden, on: bool) {
    let flood = if on { FLOOD_ON | FLOOD_CHALLENGE } else { 0 };
    g.dp.set_timeouts(FlowTimeouts { flood, ..FlowTimeouts::DEFAULT }).expect("settings");
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// Sends `client`'s SYN (sequence number `isn`, a TTL of 50) to `vip` and
/// asserts it came back as the challenge, byte for byte (checksums
/// included): MACs, addresses and ports swapped, TTL 64, SYN-ACK, window
/// 65535, an acknowledgement number that carries the challenge and lies
/// at most `challenge::WINDOW` below `isn`. Returns that number.
#[track_caller]
fn challenged(g: &mut Golden, client: &str, vip: &str, isn: u32) -> u32 {
    let syn = Frame::tcp(client, vip).tcp_flags(SYN).seq(isn).ttl(50);
    let (action, out) = g.run(&syn.bytes(), g.gin);
    assert_eq!(action, XDP_REDIRECT, "{client}'s SYN is answered back out");
    let l4 = syn.l4_offset();
    let (seq, ack) = (u32_at(&out, l4 + 4), u32_at(&out, l4 + 8));
    assert!(isn.wrapping_sub(ack) < challenge::WINDOW, "ack {ack:#x} for isn {isn:#x}");
    assert!(challenge::answered(ack, seq), "the ack carries the token (the seq)");
    let expected = Frame::tcp(vip, client)
        .tcp_flags(SYN_ACK)
        .seq(seq)
        .ack(ack)
        .macs(mac(GIN_MAC), mac(CLIENT_MAC))
        .bytes();
    lb_tests::fixture::check("challenge", (action, out), XDP_REDIRECT, &expected);
    ack
}

/// The client's reset answering a challenge: sequence number `seq`, no ACK.
fn reset(client: &str, vip: &str, seq: u32) -> Vec<u8> {
    Frame::tcp(client, vip).tcp_flags(RST).seq(seq).bytes()
}

/// Whether `client`'s SYN to `vip` goes to a backend (sent on, still a
/// SYN), not back as a challenge.
fn forwarded(g: &mut Golden, client: &str, vip: &str) -> bool {
    let syn = Frame::tcp(client, vip).tcp_flags(SYN).seq(ISN);
    let (action, out) = g.run(&syn.bytes(), g.gin);
    action == XDP_REDIRECT && out.get(syn.l4_offset() + 13) == Some(&SYN)
}

fn count(g: &Golden, name: &'static str) -> usize {
    let t: HashMap<&MapData, FlowKey, FlowValue> = g.dp.map(name).expect("flow map");
    t.keys().count()
}

fn verified(g: &Golden) -> HashMap<&MapData, VerifiedKey, u32> {
    g.dp.map(MAP_VERIFIED).expect("verified map")
}

fn in_flood_mode_a_syn_from_a_new_source_is_answered_with_a_challenge(prog: Prog) {
    let mut g = Golden::with_prog(CAPACITY, prog);
    flood_mode(&mut g, true);
    let first = challenged(&mut g, "10.0.0.2:40000", VIP, ISN);
    // No state per SYN: the same SYN again gets the same challenge.
    assert_eq!(challenged(&mut g, "10.0.0.2:40000", VIP, ISN), first);
    // Sequence numbers at the edges of the window and of the number space.
    for isn in [0, 1, challenge::WINDOW, u32::MAX] {
        challenged(&mut g, "10.0.0.2:40001", VIP, isn);
    }
    challenged(&mut g, "[fd00::2]:40000", VIP6, ISN);
    assert_eq!(g.exceptions(DropReason::SynChallenged), 7);
    assert_eq!(count(&g, MAP_PENDING), 0, "a challenged SYN takes no flow entry");
    assert_eq!(count(&g, MAP_FLOWS), 0);
    // A SYN in a first fragment is not turned around: its answer would
    // keep the fragment's offset and flags.
    let fragment = Frame::tcp("10.0.0.2:40002", VIP).tcp_flags(SYN).seq(ISN).fragment(0, true);
    let (_, out) = g.run(&fragment.bytes(), g.gin);
    assert_ne!(out.get(fragment.l4_offset() + 13), Some(&SYN_ACK), "a fragment challenged");
    assert_eq!(g.exceptions(DropReason::SynChallenged), 7);
}

fn the_reset_that_returns_the_challenge_verifies_the_source(prog: Prog) {
    let mut g = Golden::with_prog(CAPACITY, prog);
    flood_mode(&mut g, true);
    for (client, vip, other_port, same_64, other_64) in [
        ("10.0.0.2:40000", VIP, "10.0.0.2:40001", None, "10.0.0.3:40000"),
        (
            "[fd00::2]:40000",
            VIP6,
            "[fd00::2]:40001",
            Some("[fd00::1:2:3:4]:40000"),
            "[fd00:0:0:1::2]:40000",
        ),
    ] {
        let ack = challenged(&mut g, client, vip, ISN);
        let (action, _) = g.run(&reset(client, vip, ack), g.gin);
        assert_eq!(action, XDP_DROP, "the reset was meant for the balancer");
        assert!(forwarded(&mut g, client, vip), "{client}'s SYN again reaches a backend");
        assert!(forwarded(&mut g, other_port, vip), "so do its other connections");
        if let Some(same) = same_64 {
            assert!(forwarded(&mut g, same, vip), "{same} is in {client}'s /64");
        }
        challenged(&mut g, other_64, vip, ISN);
    }
    assert_eq!(g.exceptions(DropReason::ChallengeAnswered), 2);
    assert_eq!(verified(&g).keys().count(), 2);
    // Flood mode off and on again: the verified sources stay verified.
    flood_mode(&mut g, false);
    flood_mode(&mut g, true);
    assert!(forwarded(&mut g, "10.0.0.2:40002", VIP));
}

fn resets_that_do_not_return_the_challenge_verify_nothing(prog: Prog) {
    let mut g = Golden::with_prog(CAPACITY, prog);
    flood_mode(&mut g, true);
    let client = "10.0.0.2:40000";
    let ack = challenged(&mut g, client, VIP, ISN);
    // Every other number within the window below the SYN's: a blind
    // spoofer's guesses, and a client's reset of another connection. Each
    // is dropped as a packet of no flow from a source not verified, not
    // taken for an answer.
    let mut sent = 0;
    for miss in (1..challenge::WINDOW).step_by(97) {
        let (action, _) = g.run(&reset(client, VIP, ack.wrapping_sub(miss)), g.gin);
        assert_eq!(action, XDP_DROP);
        sent += 1;
    }
    // A reset with ACK (a client aborting a connection) is never one.
    let abort = Frame::tcp(client, VIP).tcp_flags(RST | ACK).seq(ack).bytes();
    assert_eq!(g.run(&abort, g.gin).0, XDP_DROP);
    // Nor a reset from another port of the same source.
    assert_eq!(g.run(&reset("10.0.0.2:40001", VIP, ack), g.gin).0, XDP_DROP);
    assert_eq!(g.exceptions(DropReason::NoFlowUnverified), sent + 2);
    assert_eq!(g.exceptions(DropReason::ChallengeAnswered), 0);
    assert_eq!(verified(&g).keys().count(), 0);
    challenged(&mut g, client, VIP, ISN);
}

fn in_flood_mode_packets_of_no_flow_from_unverified_sources_are_dropped(prog: Prog) {
    let mut g = Golden::with_prog(CAPACITY, prog);
    flood_mode(&mut g, true);
    // A spoofed ACK flood: no entry taken, nothing sent to a backend.
    for i in 0..3000u32 {
        let src = format!("10.3.{}.{}:{}", i / 250, 1 + i % 250, 1024 + i);
        let ack = Frame::tcp(&src, VIP).tcp_flags(ACK).seq(i).ack(i).bytes();
        assert_eq!(g.run(&ack, g.gin).0, XDP_DROP, "{src}'s ACK of no flow");
    }
    let fin = Frame::tcp("[fd00::9]:40000", VIP6).tcp_flags(ACK | 0x01).bytes();
    assert_eq!(g.run(&fin, g.gin).0, XDP_DROP, "an IPv6 FIN of no flow");
    // Segments with SYN or RST meet the challenge's check, the others the
    // flow rules: each kind of no flow is dropped on either way.
    for (flags, what) in [
        (RST | ACK, "a reset with ACK"),
        (SYN | RST, "SYN and RST together"),
        (SYN | ACK, "a SYN-ACK"),
        (0x08, "a push without ACK"),
        (0, "no flags at all"),
    ] {
        let odd = Frame::tcp("10.3.200.1:5000", VIP).tcp_flags(flags).bytes();
        assert_eq!(g.run(&odd, g.gin).0, XDP_DROP, "{what} of no flow");
    }
    assert_eq!(g.exceptions(DropReason::NoFlowUnverified), 3006);
    assert_eq!(count(&g, MAP_PENDING), 0, "the ACK flood took no entry");
    // A verified source's packet of no flow is picked up as ever (a
    // connection whose entry lb lost), and a connection it opens is
    // followed through its handshake.
    let client = "10.0.0.2:40000";
    let ack = challenged(&mut g, client, VIP, ISN);
    assert_eq!(g.run(&reset(client, VIP, ack), g.gin).0, XDP_DROP);
    let lost = Frame::tcp("10.0.0.2:40001", VIP).tcp_flags(ACK).payload(b"more").bytes();
    assert_eq!(sent_to(&g.run(&lost, g.gin).1), BACKEND, "a verified source's ACK is picked up");
    assert!(forwarded(&mut g, "10.0.0.2:40002", VIP));
    let handshake = Frame::tcp("10.0.0.2:40002", VIP).tcp_flags(ACK).ack(1).bytes();
    assert_eq!(sent_to(&g.run(&handshake, g.gin).1), BACKEND);
    // Flood mode without challenges picks up every packet of no flow.
    let t = FlowTimeouts { flood: FLOOD_ON, ..FlowTimeouts::DEFAULT };
    g.dp.set_timeouts(t).expect("settings");
    let other = Frame::tcp("10.3.0.1:1024", VIP).tcp_flags(ACK).bytes();
    assert_eq!(sent_to(&g.run(&other, g.gin).1), BACKEND, "picked up without challenges");
    assert_eq!(g.exceptions(DropReason::NoFlowUnverified), 3006);
    // With challenges on again, the flow it took keeps being served,
    // though its source was never verified: only packets of no flow are
    // refused.
    flood_mode(&mut g, true);
    assert_eq!(sent_to(&g.run(&other, g.gin).1), BACKEND, "a flow of an unverified source");
    assert_eq!(g.exceptions(DropReason::NoFlowUnverified), 3006);
}

fn out_of_flood_mode_or_with_challenges_off_nothing_is_challenged(prog: Prog) {
    let mut g = Golden::with_prog(CAPACITY, prog);
    assert!(forwarded(&mut g, "10.0.0.2:40000", VIP));
    assert!(forwarded(&mut g, "[fd00::2]:40000", VIP6));
    // `flows.syn_challenge = false`: flood mode without challenges.
    let t = FlowTimeouts { flood: FLOOD_ON, ..FlowTimeouts::DEFAULT };
    g.dp.set_timeouts(t).expect("settings");
    assert!(forwarded(&mut g, "10.0.0.3:40000", VIP));
    assert!(forwarded(&mut g, "[fd00::3]:40000", VIP6));
    assert_eq!(g.exceptions(DropReason::SynChallenged), 0);
}

fn sources_that_acknowledged_a_backend_before_the_flood_are_not_challenged(prog: Prog) {
    let mut g = Golden::with_prog(CAPACITY, prog);
    let client = "10.0.0.2:40000";
    assert!(forwarded(&mut g, client, VIP));
    let synack = Frame::tcp(BACKEND, client).tcp_flags(SYN_ACK).seq(ISN).bytes();
    assert_eq!(g.run(&synack, g.gout).0, XDP_REDIRECT);
    // An ACK that does not acknowledge the SYN-ACK verifies nothing.
    let blind = Frame::tcp(client, VIP).tcp_flags(ACK).ack(ISN ^ 0x8000_0000).bytes();
    g.run(&blind, g.gin);
    assert_eq!(verified(&g).keys().count(), 0, "a blind ACK verifies nothing");
    let ack = Frame::tcp(client, VIP).tcp_flags(ACK).ack(ISN + 1).bytes();
    assert_eq!(g.run(&ack, g.gin).0, XDP_REDIRECT);
    assert_eq!(verified(&g).keys().count(), 1, "the handshake's ACK verifies its source");
    flood_mode(&mut g, true);
    assert!(forwarded(&mut g, "10.0.0.2:40001", VIP), "a known client's new connection");
    challenged(&mut g, "10.0.0.3:40000", VIP, ISN);
    assert_eq!(g.exceptions(DropReason::SynChallenged), 1);
}

fn a_spoofed_flood_takes_no_flow_entry_and_past_the_verified_table_only_costs_a_challenge(
    prog: Prog,
) {
    let mut g = Golden::with_prog(CAPACITY, prog);
    flood_mode(&mut g, true);
    // More verified sources than the table holds (1024).
    let sources: Vec<String> =
        (0..1500u32).map(|i| format!("10.2.{}.{}:40000", i / 250, 1 + i % 250)).collect();
    for s in &sources {
        let ack = challenged(&mut g, s, VIP, ISN);
        assert_eq!(g.run(&reset(s, VIP, ack), g.gin).0, XDP_DROP);
    }
    let held = verified(&g).keys().count();
    assert!(held <= 1024, "the verified table holds {held}, more than its size");
    // The latest are still verified; the oldest were forgotten and are
    // challenged again, which costs their clients one more round trip.
    for s in sources.iter().rev().take(100) {
        assert!(forwarded(&mut g, s, VIP), "{s}, verified last, is forwarded");
    }
    // A spoofed flood: every SYN answered, none takes an entry.
    for i in 0..6000u32 {
        let src = format!("10.3.{}.{}:{}", i / 250, 1 + i % 250, 1024 + i);
        let syn = Frame::tcp(&src, VIP).tcp_flags(SYN).seq(i);
        let (action, out) = g.run(&syn.bytes(), g.gin);
        assert_eq!((action, out.get(syn.l4_offset() + 13)), (XDP_REDIRECT, Some(&SYN_ACK)));
    }
    assert_eq!(count(&g, MAP_PENDING), 100, "the 100 forwarded SYNs only");
    assert_eq!(verified(&g).keys().count(), held, "the flood verified no source");
    assert_eq!(g.exceptions(DropReason::PendingTableFull), 0);
}
