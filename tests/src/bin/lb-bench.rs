//! `cargo xtask bench datapath`: ns/packet of the XDP program under
//! BPF_PROG_TEST_RUN, side by side with a no-op XDP program from the same
//! object, in one run (machines here are noisy: only ratios measured
//! together mean anything).
//!
//! Two regimes, each repeated `ROUNDS` times (median and min-max reported):
//! - kernel loop: one packet, `REPEAT` runs inside one syscall (the
//!   kernel's own per-packet mean). A flow-table hit, after the first run.
//! - per packet: `DISTINCT` different flows, one syscall each (the kernel
//!   times each run; its timer calls are included, equally for every
//!   program). First pass: every packet misses the flow table (Maglev pick
//!   and two table inserts); second pass: the same packets hit.
//!
//! The packets are 64-byte TCP SYNs to a VIP, rewritten and sent to
//! XDP_REDIRECT (not executed by the test harness).

use lb_tests::{
    fixture::{Golden, XDP_PASS, XDP_REDIRECT, test_run},
    packet::Frame,
};

const REPEAT: u32 = 1_000_000;
const DISTINCT: usize = 100_000;
const ROUNDS: usize = 5;

fn main() {
    println!(
        "datapath benchmark: BPF_PROG_TEST_RUN, 64-byte TCP SYN to a VIP (1 backend), {ROUNDS} rounds"
    );
    let mut kernel_noop = Vec::new();
    let mut kernel_hit = Vec::new();
    let mut noop = Vec::new();
    let mut miss = Vec::new();
    let mut hit = Vec::new();
    for round in 0..ROUNDS {
        // A fresh datapath each round: the miss pass must find an empty table.
        let mut g = Golden::new(1 << 18);
        let gin = g.gin;
        let one = Frame::tcp("10.0.0.2:40000", "10.100.0.1:80").pad_to(64).bytes();
        let flows: Vec<Vec<u8>> = (0..DISTINCT)
            .map(|i| {
                let src = format!(
                    "10.0.{}.{}:{}",
                    2 + i / 60000 % 200,
                    2 + i / 300 % 200,
                    1024 + i % 60000
                );
                Frame::tcp(&src, "10.100.0.1:80").pad_to(64).bytes()
            })
            .collect();

        let base = g.dp.baseline_program().expect("baseline program");
        kernel_noop.push(test_run(base, &one, gin, REPEAT).2 as f64);
        noop.push(per_packet(base, &flows, gin, XDP_PASS));

        let prog = g.dp.program_mut().expect("program");
        assert_eq!(
            test_run(prog, &one, gin, 1).0,
            XDP_REDIRECT,
            "the VIP packet must be forwarded"
        );
        kernel_hit.push(test_run(prog, &one, gin, REPEAT).2 as f64);
        miss.push(per_packet(prog, &flows, gin, XDP_REDIRECT));
        hit.push(per_packet(prog, &flows, gin, XDP_REDIRECT));
        eprintln!("round {}/{ROUNDS} done", round + 1);
    }
    let rows = [
        ("kernel loop", "no-op XDP", &kernel_noop, &kernel_noop),
        ("kernel loop", "lb, flow-table hit", &kernel_hit, &kernel_noop),
        ("per packet", "no-op XDP", &noop, &noop),
        ("per packet", "lb, flow-table miss (Maglev)", &miss, &noop),
        ("per packet", "lb, flow-table hit", &hit, &noop),
    ];
    println!("\n| regime | program | ns/packet (median) | min-max | x no-op |");
    println!("|---|---|---|---|---|");
    for (regime, name, v, base) in rows {
        let (m, lo, hi) = stats(v);
        println!("| {regime} | {name} | {m:.1} | {lo:.1}-{hi:.1} | {:.2} |", m / stats(base).0);
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
