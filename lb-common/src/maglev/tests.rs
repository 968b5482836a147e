extern crate std;

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::ToString;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::*;
use crate::abi::DEFAULT_TABLE_SIZE;

const M: u32 = DEFAULT_TABLE_SIZE;

fn member(i: u32, weight: u32) -> Member {
    let ip = IpAddr::V4(Ipv4Addr::new(10, 1, (i >> 8) as u8, i as u8));
    Member { id: i, addr: SocketAddr::new(ip, 8080), weight }
}

fn equal(n: u32) -> Vec<Member> {
    (0..n).map(|i| member(i, 1)).collect()
}

fn table(members: &[Member], size: u32) -> Vec<u32> {
    build(members, size).expect("valid members")
}

fn counts(table: &[u32]) -> BTreeMap<u32, u64> {
    let mut c = BTreeMap::new();
    for &id in table {
        *c.entry(id).or_insert(0) += 1;
    }
    c
}

/// Slots that held some backend other than `except` in `a` and hold
/// something else in `b`.
fn moved_except(a: &[u32], b: &[u32], except: u32) -> usize {
    a.iter().zip(b).filter(|&(x, y)| *x != except && *y != except && x != y).count()
}

/// Checks every member's share against its weight share.
///
/// The bound that always holds: after `R` full rounds a member of weight `w`
/// has taken `max(1, ⌊R·w/w_max⌋)` slots, and the last partial round gives at
/// most one more. Summing over the `N` members pins `R·W/w_max` to within `N`
/// of `M` (`W` = total weight), so each member is off its expected
/// `E = M·w/W` by less than `E·N/M + 1` slots. With `M > 100·N` that is under
/// 1 % of `E` plus one slot: Maglev's "nearly equal shares".
fn assert_shares(members: &[Member], table: &[u32]) {
    let c = counts(table);
    let total: u64 = members.iter().map(|m| u64::from(m.weight)).sum();
    let (n, size) = (members.iter().filter(|m| m.weight > 0).count() as f64, table.len() as f64);
    for m in members.iter().filter(|m| m.weight > 0) {
        let expected = size * f64::from(m.weight) / total as f64;
        let actual = c.get(&m.id).copied().unwrap_or(0) as f64;
        let bound = expected * n / size + 1.0;
        assert!(
            (actual - expected).abs() < bound,
            "id {} weight {}: {actual} slots, expected {expected:.1} ± {bound:.1}",
            m.id,
            m.weight
        );
    }
}

#[test]
fn equal_weights_share_within_one_slot() {
    let members = equal(100);
    let c = counts(&table(&members, M));
    assert_eq!(c.len(), 100);
    let expected = f64::from(M) / 100.0;
    for (&id, &n) in &c {
        // Every round each member takes exactly one slot.
        assert!(n == u64::from(M / 100) || n == u64::from(M / 100 + 1), "id {id}: {n}");
        assert!((n as f64 - expected).abs() <= 0.01 * expected);
    }
}

#[test]
fn mixed_weights_share_within_one_percent() {
    for n in [3, 150] {
        // M = 65537 > 100·150.
        let members: Vec<Member> = (0..n).map(|i| member(i, i % 3 + 1)).collect();
        let t = table(&members, M);
        assert_shares(&members, &t);
        let c = counts(&t);
        let total: u32 = members.iter().map(|m| m.weight).sum();
        for m in &members {
            let expected = f64::from(M) * f64::from(m.weight) / f64::from(total);
            let actual = c[&m.id] as f64;
            assert!(
                (actual - expected).abs() <= 0.01 * expected,
                "n {n} id {}: {actual} vs {expected:.1}",
                m.id
            );
        }
    }
}

#[test]
fn removing_a_backend_moves_few_other_slots() {
    let members = equal(100);
    let full = table(&members, M);
    for gone in (0..100).step_by(7) {
        let rest: Vec<Member> = members.iter().copied().filter(|m| m.id != gone).collect();
        let after = table(&rest, M);
        assert!(!after.contains(&gone));
        let others = full.iter().filter(|&&id| id != gone).count();
        let moved = moved_except(&full, &after, gone);
        // Measured (N = 100, M = 65537, each of the 100 removed in turn):
        // 333 to 416 of the ~64 880 other slots move, 0.58 % on average and
        // 0.64 % at worst. Minimal disruption would be 0; Maglev trades a
        // little of it for exact balance. Bound: 1 %.
        assert!(moved * 100 <= others, "removing {gone}: {moved} of {others} moved");
    }
}

#[test]
fn adding_a_backend_takes_its_share() {
    let members = equal(100);
    let before = table(&members, M);
    let mut more = members.clone();
    more.push(member(100, 1));
    let after = table(&more, M);
    let taken = after.iter().filter(|&&id| id == 100).count();
    // With equal weights each round hands out one slot per member, so the
    // newcomer gets exactly ⌊M/101⌋ or ⌈M/101⌉: no tolerance needed.
    assert!(taken == (M / 101) as usize || taken == (M / 101 + 1) as usize, "{taken}");
    // Slots that changed hands among the old members: measured 386, 0.59 %
    // of M (the newcomer's own 648 aside). Bound: 1 %.
    let shuffled = moved_except(&before, &after, 100);
    assert!(shuffled * 100 <= M as usize, "{shuffled}");
}

#[test]
fn order_does_not_matter() {
    let mut members: Vec<Member> = (0..50).map(|i| member(i, i % 4 + 1)).collect();
    let t = table(&members, 5003);
    members.reverse();
    assert_eq!(table(&members, 5003), t);
    // A fixed stride permutation (17 is coprime to 50).
    let strided: Vec<Member> = (0..50).map(|i| members[i * 17 % 50]).collect();
    assert_eq!(table(&strided, 5003), t);
}

fn pinned_members() -> [Member; 3] {
    [
        Member { id: 7, addr: "10.0.0.1:80".parse().expect("addr"), weight: 1 },
        Member { id: 8, addr: "[2001:db8::2]:8080".parse().expect("addr"), weight: 2 },
        Member { id: 9, addr: "192.168.1.3:443".parse().expect("addr"), weight: 1 },
    ]
}

/// Pins the table of a fixed case, so any change to the identity hash, the
/// canonical bytes or the fill order fails here: such a change reshuffles
/// flows between balancers of mixed versions.
#[test]
fn tables_are_stable() {
    // 10.0.0.1:80 is [4, 10, 0, 0, 1, 0 × 12, 0, 80]. The values were
    // checked against an independent (Python) rendering of the documented
    // hash.
    let key = identity::key(&pinned_members()[0].addr);
    assert_eq!(key, [4, 10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 80]);
    assert_eq!(identity::offset_skip(&key, M), (24035, 18599));
    assert_eq!(table(&pinned_members(), 13), [8, 9, 8, 8, 8, 9, 7, 7, 7, 8, 9, 8, 8]);
    let big = table(&pinned_members(), M);
    assert_eq!([big[0], big[1], big[1000], big[65536]], [9, 8, 7, 9]);
}

#[test]
fn all_zero_weights_give_an_empty_table() {
    let members: Vec<Member> = (0..5).map(|i| member(i, 0)).collect();
    assert_eq!(table(&members, 13), vec![NO_BACKEND; 13]);
    assert_eq!(table(&[], 2), vec![NO_BACKEND; 2]);
}

#[test]
fn zero_weight_members_stay_out() {
    let mut members = equal(5);
    members[2].weight = 0;
    let t = table(&members, 101);
    assert!(!t.contains(&2));
    assert_eq!(t, table(&[members[0], members[1], members[3], members[4]], 101));
}

#[test]
fn rejects_a_size_that_is_not_prime() {
    let err = build(&equal(3), 65536).expect_err("65536 is not prime");
    assert_eq!(
        err,
        MaglevError::SizeNotPrime { size: 65536, below: Some(65521), above: Some(65537) }
    );
    let msg = err.to_string();
    assert!(msg.contains("65536") && msg.contains("65521 and 65537"), "{msg}");
    for size in [0, 1, 4, 100] {
        assert!(matches!(build(&[], size), Err(MaglevError::SizeNotPrime { .. })), "{size}");
    }
    assert_eq!(
        build(&[], 0),
        Err(MaglevError::SizeNotPrime { size: 0, below: None, above: Some(2) })
    );
}

#[test]
fn rejects_a_size_below_the_member_count() {
    let err = build(&equal(12), 11).expect_err("too small");
    assert_eq!(err, MaglevError::SizeTooSmall { size: 11, members: 12 });
    // Members with weight 0 do not count.
    let mut members = equal(12);
    members[0].weight = 0;
    let t = table(&members, 11);
    assert_eq!(counts(&t).len(), 11);
}

#[test]
fn rejects_duplicate_identity() {
    let mut members = equal(4);
    members[3].addr = members[1].addr;
    let err = build(&members, 13).expect_err("duplicate");
    assert_eq!(
        err,
        MaglevError::DuplicateIdentity { addr: members[1].addr, first_id: 1, second_id: 3 }
    );
    assert!(err.to_string().contains("10.1.0.1:8080"));
    // Even with weight 0: it is a config error either way.
    members[3].weight = 0;
    assert!(build(&members, 13).is_err());
    // Same address, other port: distinct backends.
    members[3].addr.set_port(8081);
    assert!(build(&members, 13).is_ok());
}

#[test]
fn rejects_the_reserved_id() {
    let mut members = equal(3);
    members[1].id = NO_BACKEND;
    assert_eq!(build(&members, 13), Err(MaglevError::ReservedId { addr: members[1].addr }));
}

#[test]
fn slot_for_is_modulo() {
    assert_eq!(slot_for(0, M), Some(0));
    assert_eq!(slot_for(5, 0), None);
    assert_eq!(slot_for(M, M), Some(0));
    assert_eq!(slot_for(u32::MAX, M), Some(u32::MAX % M));
}

fn trial_division(n: u32) -> bool {
    n >= 2
        && (2..)
            .take_while(|d: &u32| u64::from(*d) * u64::from(*d) <= u64::from(n))
            .all(|d| !n.is_multiple_of(d))
}

#[test]
fn primes() {
    for n in 0..20_000 {
        assert_eq!(is_prime(n), trial_division(n), "{n}");
    }
    // Strong pseudoprimes to some of the bases, and the largest u32 prime.
    for (n, p) in [(2047, false), (1_373_653, false), (25_326_001, false), (3_215_031_751, false)] {
        assert_eq!(is_prime(n), p, "{n}");
    }
    assert!(is_prime(4_294_967_291));
    assert!(is_prime(M) && is_prime(655_373));
    assert_eq!(next_prime(0), Some(2));
    assert_eq!(next_prime(65536), Some(65537));
    assert_eq!(next_prime(65537), Some(65537));
    assert_eq!(next_prime(4_294_967_291), Some(4_294_967_291));
    assert_eq!(next_prime(4_294_967_292), None);
    assert_eq!(prime::prev_prime(1), None);
    assert_eq!(prime::prev_prime(u32::MAX), Some(4_294_967_291));
}

/// Table sizes for the property tests.
const PRIMES: [u32; 10] = [101, 211, 503, 1009, 2003, 5003, 10007, 20011, 40009, 65537];

fn any_addr() -> impl Strategy<Value = SocketAddr> {
    let ip = prop_oneof![
        any::<[u8; 4]>().prop_map(|b| IpAddr::V4(Ipv4Addr::from(b))),
        any::<[u8; 16]>().prop_map(|b| IpAddr::V6(Ipv6Addr::from(b))),
    ];
    (ip, any::<u16>()).prop_map(|(ip, port)| SocketAddr::new(ip, port))
}

/// 1 to 200 members with distinct identities, ids `0..N` in a random order,
/// weights 1 to 10, and a table size from `PRIMES`: half the time the
/// smallest above `100·N` (shares then within 1 %), else any of at least `N`.
fn any_case() -> impl Strategy<Value = (Vec<Member>, u32)> {
    proptest::collection::btree_map(any_addr(), 1u32..=10, 1..=200)
        .prop_flat_map(|m| {
            let ids = Just((0..m.len() as u32).collect::<Vec<_>>()).prop_shuffle();
            (Just(m), ids, any::<bool>(), any::<prop::sample::Index>())
        })
        .prop_map(|(m, ids, even, pick)| {
            let members: Vec<Member> = m
                .into_iter()
                .zip(ids)
                .map(|((addr, weight), id)| Member { id, addr, weight })
                .collect();
            let n = members.len() as u32;
            let fits: Vec<u32> = PRIMES.iter().copied().filter(|&p| p >= n).collect();
            let size = match PRIMES.iter().find(|&&p| p > 100 * n) {
                Some(&p) if even => p,
                _ => *pick.get(&fits),
            };
            (members, size)
        })
}

proptest! {
    #[test]
    fn tables_are_full_and_fair((members, size) in any_case()) {
        let t = table(&members, size);
        prop_assert_eq!(t.len(), size as usize);
        let ids: BTreeSet<u32> = members.iter().map(|m| m.id).collect();
        prop_assert!(t.iter().all(|id| ids.contains(id)), "full, and only members' ids");
        let c = counts(&t);
        prop_assert_eq!(c.len(), members.len(), "every member has a slot");
        assert_shares(&members, &t);
        if size > 100 * members.len() as u32 {
            let total: u32 = members.iter().map(|m| m.weight).sum();
            // Below 1 % of the expected share plus one slot (see assert_shares).
            for m in &members {
                let expected = f64::from(size) * f64::from(m.weight) / f64::from(total);
                prop_assert!((c[&m.id] as f64 - expected).abs() < 0.01 * expected + 1.0);
            }
        }
    }

    #[test]
    fn order_is_irrelevant(
        (members, shuffled, size) in any_case().prop_flat_map(|(m, size)| {
            (Just(m.clone()), Just(m).prop_shuffle(), Just(size))
        })
    ) {
        prop_assert_eq!(table(&members, size), table(&shuffled, size));
    }

    #[test]
    fn is_prime_is_exact(n in any::<u32>()) {
        prop_assert_eq!(is_prime(n), trial_division(n));
    }
}
