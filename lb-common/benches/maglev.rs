//! Maglev table build time and disruption.
//!
//! The agent rebuilds a service's table on every backend change, so a build
//! must stay well under a health-check interval even at 1000 backends; and
//! the disruption figures are the reason to use Maglev at all, so they are
//! printed next to the times to catch a change that trades one for the other.
//!
//! Run: `cargo bench -p lb-common --features alloc --bench maglev`.
//! Plain `std`, no harness: median and p90 of `RUNS` builds after a warm-up.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use lb_common::maglev::{Member, build};

const RUNS: usize = 21;

fn member(i: u32, weight: u32) -> Member {
    let ip = IpAddr::V4(Ipv4Addr::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8));
    Member { id: i, addr: SocketAddr::new(ip, 8080), weight }
}

fn members(n: u32, weight: impl Fn(u32) -> u32) -> Vec<Member> {
    (0..n).map(|i| member(i, weight(i))).collect()
}

fn table(members: &[Member], size: u32) -> Vec<u32> {
    build(members, size).expect("valid benchmark input")
}

/// Median and p90 of `RUNS` builds.
fn time(members: &[Member], size: u32) -> (Duration, Duration) {
    black_box(table(members, size));
    let mut t: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            black_box(table(black_box(members), size));
            start.elapsed()
        })
        .collect();
    t.sort();
    (t[RUNS / 2], t[RUNS * 9 / 10])
}

/// Fraction of the other members' slots that move when one member is
/// removed: mean and worst over up to 10 members spread over the set.
fn removal(members: &[Member], size: u32) -> (f64, f64) {
    let full = table(members, size);
    let step = (members.len() / 10).max(1);
    let fractions: Vec<f64> = members
        .iter()
        .step_by(step)
        .map(|gone| {
            let rest: Vec<Member> = members.iter().copied().filter(|m| m.id != gone.id).collect();
            let after = table(&rest, size);
            let others = full.iter().filter(|&&id| id != gone.id).count();
            let moved = full.iter().zip(&after).filter(|&(a, b)| *a != gone.id && a != b).count();
            moved as f64 / others as f64
        })
        .collect();
    let mean = fractions.iter().sum::<f64>() / fractions.len() as f64;
    (mean, fractions.iter().copied().fold(0.0, f64::max))
}

/// Slots a new equal-weight member takes, and slots that change hands among
/// the old members, when one is added.
fn addition(members: &[Member], size: u32) -> (usize, usize) {
    let before = table(members, size);
    let mut more = members.to_vec();
    let new_id = members.len() as u32;
    more.push(member(new_id, 1));
    let after = table(&more, size);
    let taken = after.iter().filter(|&&id| id == new_id).count();
    let shuffled = before.iter().zip(&after).filter(|&(a, b)| *b != new_id && a != b).count();
    (taken, shuffled)
}

/// A member's weight from its index.
type Weight = fn(u32) -> u32;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    println!("{:>7} {:>5} {:<14} {:>10} {:>10}", "M", "N", "weights", "median ms", "p90 ms");
    let cases: [(u32, u32, &str, Weight); 6] = [
        (65537, 10, "equal", |_| 1),
        (65537, 100, "equal", |_| 1),
        (65537, 1000, "equal", |_| 1),
        (655373, 1000, "equal", |_| 1),
        (65537, 1000, "1..=10", |i| i % 10 + 1),
        // Worst case for proportional turns: one member takes a slot per
        // round, so there are ~M rounds of N members each.
        (65537, 1000, "1 x 10^6, 1s", |i| if i == 0 { 1_000_000 } else { 1 }),
    ];
    for (size, n, label, weight) in cases {
        let (median, p90) = time(&members(n, weight), size);
        println!("{size:>7} {n:>5} {label:<14} {:>10.3} {:>10.3}", ms(median), ms(p90));
    }

    println!();
    println!("disruption, equal weights:");
    for (size, n) in [(65537, 10), (65537, 100), (65537, 1000), (655373, 1000)] {
        let set = members(n, |_| 1);
        let (mean, worst) = removal(&set, size);
        let (taken, shuffled) = addition(&set, size);
        println!(
            "M={size:<6} N={n:<4}  remove one: {:.3}% of others' slots move (mean), {:.3}% (worst)  \
             add one: takes {taken} (M/(N+1) = {:.1}), {shuffled} others' slots ({:.3}% of M) change hands",
            mean * 100.0,
            worst * 100.0,
            f64::from(size) / f64::from(n + 1),
            shuffled as f64 * 100.0 / f64::from(size),
        );
    }
}
