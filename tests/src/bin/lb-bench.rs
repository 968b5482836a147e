//! `cargo xtask bench datapath`: ns/packet of the XDP program under
//! BPF_PROG_TEST_RUN, side by side with a no-op XDP program from the same
//! object, in one run (machines here are noisy: only ratios measured
//! together mean anything).
//!
//! Two regimes, each repeated `ROUNDS` times (median and min-max reported):
//! - kernel loop: one packet, `REPEAT` runs inside one syscall (the
//!   kernel's own per-packet mean). The kernel runs the program again on
//!   its own output, not on the packet given, so only a packet the program
//!   leaves as it is can be measured this way: one not for a VIP, passed to
//!   the kernel untouched (what a gateway does with most of its traffic).
//!   Rewritten packets (hits, SYNs, replies) are measured per packet only;
//!   until 2026-12 this loop reported them, but measured this pass path
//!   after the first run.
//! - per packet: `DISTINCT` different flows, one syscall each (the kernel
//!   times each run; its timer calls are included, equally for every
//!   program), in passes over the same flows: SYNs of new flows (Maglev
//!   pick, one insert into the table of unanswered flows), the backend's
//!   first answers (found there), the clients' ACKs (each moves its flow
//!   to the flow table: an insert and a delete, once per flow), ACKs that
//!   hit, the backend's replies, SYNs again (reused ports), and, after the flows have been idle past the refresh
//!   period, ACKs that hit and rewrite the flow's last-seen time (the cost
//!   of expiry bookkeeping, paid at most about once a second per flow).
//!   Passes over 100k flows find every entry out of the CPU's caches; one
//!   row of hits over 100 flows, passed 1 000 times, shows the program's
//!   own work without those misses.
//!
//! - kernel loop at the tc hook: the same three cases run by `lb_tc` on
//!   skbs, against a no-op tc program.
//!
//! - flood mode (issue 14): SYNs of 100k sources never verified, each
//!   answered with a SYN challenge (rewritten in place, sent back), and
//!   hits of flows of verified sources (what flood mode costs the
//!   legitimate traffic).
//!
//! - refused (issue 14), after a reload that gives "tcp4" a deny list
//!   covering every bench client and "three" a new-flow limit per /24 whose
//!   bucket for the clients is emptied for good: a denied source's packets
//!   and an over-limit source's new flows, both dropped, so the kernel loop
//!   measures them as they are (a dropped packet is rerun unchanged); per
//!   packet too, over 100k distinct flows.
//!
//! The packets are 64-byte TCP segments, rewritten and sent to XDP_REDIRECT
//! (not executed by the test harness).

use std::time::Duration;

use aya::maps::{HashMap, MapData};
use lb_common::abi::{
    Addr, BucketKey, FAMILY_V4, FLOOD_CHALLENGE, FLOOD_ON, FlowKey, FlowTimeouts, FlowValue,
    MAP_BUCKETS, MAP_FLOWS, REFRESH_TICKS, TICK_SHIFT,
};
use lb_tests::{
    fixture::{
        CONFIG, Golden, TC_ACT_REDIRECT, TC_ACT_SHOT, XDP_DROP, XDP_PASS, XDP_REDIRECT, test_run,
        test_run_tc,
    },
    packet::Frame,
};

const REPEAT: u32 = 1_000_000;
const DISTINCT: usize = 100_000;
/// Flows of the cache-warm hit row.
const WARM_FLOWS: usize = 100;
const ROUNDS: usize = 5;
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

/// The client address and port of flow `i`: two addresses the fixture has
/// neighbours for (replies must route back), 50 000 ports each.
fn client(i: usize) -> String {
    let ip = if (i / 50_000).is_multiple_of(2) { "10.0.0.2" } else { "10.0.0.50" };
    format!("{ip}:{}", 1024 + i % 50_000)
}

/// 64-byte segments with `flags` from `src` to `dst`, one per flow.
fn segments(n: usize, flags: u8, fwd: bool) -> Vec<Vec<u8>> {
    segments_to(n, flags, fwd, "10.100.0.1:80")
}

/// As [`segments`], to (or from, if not `fwd`) the VIP `vip`.
fn segments_to(n: usize, flags: u8, fwd: bool, vip: &str) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let (src, dst) = if fwd {
                (client(i), vip.to_owned())
            } else {
                ("10.1.0.10:8080".to_owned(), client(i))
            };
            // The backends' answers carry sequence number 0, so a client's
            // ACK acknowledges 1: only an ACK of the answer moves a flow to
            // the flow table (a blind one proves nothing, see `flows`).
            // Until 2026-12-07 the ACKs acknowledged 0, every flow stayed
            // unanswered, and the "hit" rows measured pending-table hits.
            let ack = if fwd && flags & ACK != 0 { 1 } else { 0 };
            Frame::tcp(&src, &dst).tcp_flags(flags).ack(ack).pad_to(64).bytes()
        })
        .collect()
}

/// Named series of ns/packet, one value per round.
#[derive(Default)]
struct Series(Vec<(&'static str, &'static str, Vec<f64>)>);

impl Series {
    fn push(&mut self, regime: &'static str, name: &'static str, v: f64) {
        match self.0.iter_mut().find(|(r, n, _)| *r == regime && *n == name) {
            Some((_, _, vs)) => vs.push(v),
            None => self.0.push((regime, name, vec![v])),
        }
    }
}

fn main() {
    println!(
        "datapath benchmark: BPF_PROG_TEST_RUN, 64-byte TCP segments to a VIP (1 backend), \
         {ROUNDS} rounds"
    );
    let refresh = Duration::from_nanos(u64::from(REFRESH_TICKS) << TICK_SHIFT);
    let mut series = Series::default();
    for round in 0..ROUNDS {
        // A fresh datapath each round: the first pass must find an empty
        // table. Large enough that the table of unanswered flows (an
        // eighth, split between the CPUs' LRU lists, and a test run uses
        // one) holds every new flow of the first pass until its answer.
        let mut g = Golden::new(1 << 21);
        let (gin, gout) = (g.gin, g.gout);
        let one = |flags| Frame::tcp(&client(0), "10.100.0.1:80").tcp_flags(flags).pad_to(64);
        let (syns, acks) = (segments(DISTINCT, SYN, true), segments(DISTINCT, ACK, true));
        let replies = segments(DISTINCT, ACK, false);

        let base = g.dp.baseline_program().expect("baseline program");
        series.push(
            "kernel loop",
            "no-op XDP",
            test_run(base, &one(SYN).bytes(), gin, REPEAT).2 as f64,
        );
        series.push("per packet", "no-op XDP", per_packet(base, &syns, gin, XDP_PASS));

        let prog = g.dp.program_mut().expect("program");
        let (syn1, ack1) = (one(SYN).bytes(), one(ACK).bytes());
        assert_eq!(test_run(prog, &syn1, gin, 1).0, XDP_REDIRECT, "the VIP packet is forwarded");
        let passed = Frame::tcp(&client(0), "10.1.0.77:9000").tcp_flags(ACK).pad_to(64).bytes();
        let (action, out, _) = test_run(prog, &passed, gin, 1);
        assert_eq!((action, &out), (XDP_PASS, &passed), "a packet not for a VIP passes untouched");
        let ns = test_run(prog, &passed, gin, REPEAT).2;
        series.push("kernel loop", "lb, not for a VIP (passed untouched)", ns as f64);
        for (name, packets, ifindex) in [
            ("lb, new flow (SYN: Maglev + insert)", &syns, gin),
            ("lb, first answer (a pending flow)", &replies, gout),
            ("lb, client's ACK (moves the flow to the flow table)", &acks, gin),
            ("lb, flow-table hit (ACK)", &acks, gin),
            ("lb, reply from the backend", &replies, gout),
            ("lb, SYN on a known 5-tuple (re-pin)", &syns, gin),
        ] {
            series.push("per packet", name, per_packet(prog, packets, ifindex, XDP_REDIRECT));
        }
        let answered: HashMap<&MapData, FlowKey, FlowValue> = g.dp.map(MAP_FLOWS).expect("flows");
        let answered = answered.keys().count();
        assert_eq!(answered, DISTINCT, "the clients' ACKs moved every flow to the flow table");
        let prog = g.dp.program_mut().expect("program");
        // The same hits over few flows, again and again: their entries stay
        // in the CPU's caches, so this is the program's own work, and the
        // row above less this one is what a cold entry costs.
        let warm: Vec<Vec<u8>> =
            acks[..WARM_FLOWS].iter().cycle().take(DISTINCT).cloned().collect();
        let name = "lb, flow-table hit (ACK), 100 flows (cache-warm)";
        series.push("per packet", name, per_packet(prog, &warm, gin, XDP_REDIRECT));
        // The same datapath at the tc hook, on skbs (the test runner builds
        // one per run, which the no-op pays too).
        let tc = "kernel loop, tc hook";
        let base = g.dp.tc_baseline_program().expect("tc baseline program");
        series.push(tc, "no-op tc", test_run_tc(base, &ack1, gin, REPEAT, 0).2 as f64);
        let prog = g.dp.tc_program_mut().expect("tc program");
        assert_eq!(test_run_tc(prog, &ack1, gin, 1, 0).0, TC_ACT_REDIRECT, "tc forwards too");
        let ns = test_run_tc(prog, &passed, gin, REPEAT, 0).2;
        series.push(tc, "lb, not for a VIP (passed untouched)", ns as f64);
        let prog = g.dp.program_mut().expect("program");
        std::thread::sleep(refresh + Duration::from_millis(50));
        series.push(
            "per packet",
            "lb, hit that refreshes last-seen (idle > 1.07 s)",
            per_packet(prog, &acks, gin, XDP_REDIRECT),
        );
        // Flood mode: SYNs of sources never verified, each turned around
        // into a challenge (rewritten in place and sent back).
        let flood = FlowTimeouts { flood: FLOOD_ON | FLOOD_CHALLENGE, ..FlowTimeouts::DEFAULT };
        g.dp.set_timeouts(flood).expect("flood mode on");
        let spoofed: Vec<Vec<u8>> = (0..DISTINCT)
            .map(|i| {
                let src = format!("10.9.{}.{}:{}", i / 250 % 250, 1 + i % 250, 1024 + i % 50_000);
                Frame::tcp(&src, "10.100.0.1:80").tcp_flags(SYN).pad_to(64).bytes()
            })
            .collect();
        let prog = g.dp.program_mut().expect("program");
        series.push(
            "per packet",
            "lb, flood mode: SYN of an unverified source (challenged)",
            per_packet(prog, &spoofed, gin, XDP_REDIRECT),
        );
        // What flood mode costs the legitimate traffic: hits of flows
        // whose clients were verified by their handshakes (the ACK pass
        // above), each now also looking its source up.
        series.push(
            "per packet",
            "lb, flood mode: flow-table hit of a verified source",
            per_packet(prog, &acks, gin, XDP_REDIRECT),
        );
        g.dp.set_timeouts(FlowTimeouts::DEFAULT).expect("flood mode off");
        refused_rows(&mut g, &mut series, &syns);
        eprintln!("round {}/{ROUNDS} done", round + 1);
    }
    println!("\n| regime | program | ns/packet (median) | min-max | x no-op |");
    println!("|---|---|---|---|---|");
    for (regime, name, v) in &series.0 {
        let base = series.0.iter().find(|(r, n, _)| r == regime && n.starts_with("no-op"));
        let base = base.map_or(f64::NAN, |(_, _, b)| stats(b).0);
        let (m, lo, hi) = stats(v);
        println!("| {regime} | {name} | {m:.1} | {lo:.1}-{hi:.1} | {:.2} |", m / base);
    }
}

/// The refused paths (issue 14): "tcp4" denies every bench client, "three"
/// admits one new flow a second per source. `syns` are SYNs to tcp4.
fn refused_rows(g: &mut Golden, series: &mut Series, syns: &[Vec<u8>]) {
    let text = CONFIG
        .replace("vip = \"10.100.0.1:80\"\n", "vip = \"10.100.0.1:80\"\ndeny = [\"10.0.0.0/24\"]\n")
        .replace(
            "vip = \"10.100.0.3:80\"\n",
            "vip = \"10.100.0.3:80\"\nnew_flow_limit = { rate = 1, prefix_v4 = 24 }\n",
        );
    g.reload(&text);
    let gin = g.gin;
    let denied = Frame::tcp(&client(0), "10.100.0.1:80").tcp_flags(SYN).pad_to(64).bytes();
    // New flows (ACKs of no flow) of one /24 whose bucket the bench has
    // emptied for good (its full time set centuries ahead): every one is
    // over the limit, however long the runs take, and the path measured is
    // the datapath's own (lookup, clock, compare, drop).
    let three = g.plan.services.iter().find(|s| s.name == "three").expect("three").record.id;
    let key = BucketKey {
        prefix: Addr::from_v4_bytes([10, 0, 0, 0]),
        service_id: three,
        family: FAMILY_V4,
        _pad: [0; 3],
    };
    let mut buckets: HashMap<&mut MapData, BucketKey, u64> =
        g.dp.map_mut(MAP_BUCKETS).expect("bucket map");
    buckets.insert(key, u64::MAX / 2, 0).expect("empty the bucket");
    let over = segments_to(DISTINCT, ACK, true, "10.100.0.3:80");
    let prog = g.dp.program_mut().expect("program");
    for (name, packet) in [("lb, denied source", &denied), ("lb, over-limit source", &over[0])] {
        assert_eq!(test_run(prog, packet, gin, 1).0, XDP_DROP, "{name} is dropped");
        series.push("kernel loop", name, test_run(prog, packet, gin, REPEAT).2 as f64);
    }
    series.push("per packet", "lb, denied source", per_packet(prog, syns, gin, XDP_DROP));
    series.push("per packet", "lb, over-limit source", per_packet(prog, &over, gin, XDP_DROP));
    let tc = "kernel loop, tc hook";
    let prog = g.dp.tc_program_mut().expect("tc program");
    for (name, packet) in [("lb, denied source", &denied), ("lb, over-limit source", &over[0])] {
        assert_eq!(test_run_tc(prog, packet, gin, 1, 0).0, TC_ACT_SHOT, "{name} is dropped");
        series.push(tc, name, test_run_tc(prog, packet, gin, REPEAT, 0).2 as f64);
    }
}

/// Mean kernel-measured ns of one run per packet.
fn per_packet(prog: &aya::programs::Xdp, flows: &[Vec<u8>], ifindex: u32, action: u32) -> f64 {
    let mut total = 0u64;
    for f in flows {
        let (a, _, ns) = test_run(prog, f, ifindex, 1);
        assert_eq!(a, action);
        total += ns;
    }
    total as f64 / flows.len() as f64
}

fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    (s[s.len() / 2], s[0], s[s.len() - 1])
}
