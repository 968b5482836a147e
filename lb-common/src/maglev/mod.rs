//! Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable
//! Software Network Load Balancer", NSDI 2016): the lookup table that maps a
//! flow hash to a backend.
//!
//! Why Maglev rather than `hash % backends` or a hash ring:
//! - every balancer given the same backends builds the same table, with no
//!   coordination, so a flow re-routed by ECMP to another balancer still
//!   reaches its backend;
//! - shares are near-exact: with equal weights every backend gets `⌊M/N⌋` or
//!   `⌈M/N⌉` of the `M` slots;
//! - when one backend leaves, its slots move and only a few percent of the
//!   others' do (measured in the tests and `benches/maglev.rs`), so few
//!   established flows without a flow-table entry are broken.
//!
//! The table depends only on the *set* of members (identity, id, weight): not
//! on their order, the host, or the run. Each member's permutation comes from
//! a fixed hash of its address, see [`Member::addr`].
//!
//! Weights use proportional turns. Members take turns in rounds; each round
//! a member earns `weight` credit and takes its next preferred free slot once
//! per `max_weight` of credit. Equal weights therefore reduce to the paper's
//! algorithm. Every member takes one slot in the first round whatever its
//! weight, paid for by going into debt, so a member with weight > 0 always
//! has a slot without skewing the long-run shares.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use core::net::SocketAddr;

use crate::abi::NO_BACKEND;

mod identity;
mod prime;
#[cfg(test)]
mod tests;

pub use prime::{is_prime, next_prime};

/// One backend offered to [`build`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    /// The value stored in the member's slots: the caller's backend id,
    /// usually its index in the backends map. Must not be [`NO_BACKEND`].
    pub id: u32,
    /// The backend's identity, which alone decides where its slots are: its
    /// address and port (IPv6 flow label and scope id are ignored). Keying on
    /// the address rather than `id` keeps a backend's slots when ids are
    /// renumbered, and makes balancers agree even if they number backends
    /// differently.
    pub addr: SocketAddr,
    /// Relative share of slots. 0 leaves the member out of the table: this
    /// is how a draining or down backend stops getting new flows.
    pub weight: u32,
}

/// Why [`build`] refused its input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaglevError {
    /// The table size is not prime.
    SizeNotPrime {
        /// The size asked for.
        size: u32,
        /// The largest prime below it, if any.
        below: Option<u32>,
        /// The smallest prime above it, if it fits a `u32`.
        above: Option<u32>,
    },
    /// Fewer slots than members with weight > 0, so some would get none.
    SizeTooSmall {
        /// The size asked for.
        size: u32,
        /// Members with weight > 0.
        members: usize,
    },
    /// Two members share an identity, so they would share a permutation and
    /// the table would depend on which came first.
    DuplicateIdentity {
        /// The shared address.
        addr: SocketAddr,
        /// Id of one of them.
        first_id: u32,
        /// Id of the other.
        second_id: u32,
    },
    /// A member's id is [`NO_BACKEND`], which the table reserves for "empty".
    ReservedId {
        /// Address of that member.
        addr: SocketAddr,
    },
}

impl fmt::Display for MaglevError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::SizeNotPrime { size, below, above } => {
                write!(f, "Maglev table size {size} is not prime")?;
                match (below, above) {
                    (Some(b), Some(a)) => write!(f, "; the nearest primes are {b} and {a}"),
                    (Some(p), None) | (None, Some(p)) => write!(f, "; the nearest prime is {p}"),
                    (None, None) => Ok(()),
                }
            }
            Self::SizeTooSmall { size, members } => write!(
                f,
                "Maglev table size {size} is smaller than the {members} backends with weight > 0; \
                 use a prime of at least 100 times the backend count (e.g. 65537) for even shares"
            ),
            Self::DuplicateIdentity { addr, first_id, second_id } => write!(
                f,
                "backends {first_id} and {second_id} have the same address {addr}; \
                 Maglev places a backend by its address, so each needs a distinct one"
            ),
            Self::ReservedId { addr } => write!(
                f,
                "backend {addr} has id {NO_BACKEND}, which Maglev tables reserve for empty slots"
            ),
        }
    }
}

impl core::error::Error for MaglevError {}

pub use crate::hash::slot_for;

/// Builds the Maglev table of `table_size` slots: each slot holds the `id` of
/// a member with weight > 0, and every such member has at least one slot.
/// A member of weight `w` gets within `E·N/M + 1` slots of its expected
/// `E = M·w/W` (`N` members with weight > 0, total weight `W`). When no
/// member has weight > 0, every slot is [`NO_BACKEND`].
///
/// `table_size` must be prime and at least the number of members with
/// weight > 0; 65537 (`DEFAULT_TABLE_SIZE`) suits up to ~650 backends at
/// 1 % share accuracy. Members must have distinct addresses (see
/// [`Member::addr`]) and ids other than [`NO_BACKEND`]; two members with the
/// same id but different addresses are allowed and simply share their slots.
///
/// Allocates the table plus one small record per member; time is about
/// `M·ln M` probes when weights are equal. With very uneven weights each round
/// still visits every member, so the worst case is `M·N` cheap steps.
pub fn build(members: &[Member], table_size: u32) -> Result<Vec<u32>, MaglevError> {
    if !is_prime(table_size) {
        return Err(MaglevError::SizeNotPrime {
            size: table_size,
            below: prime::prev_prime(table_size),
            above: next_prime(table_size.saturating_add(1)),
        });
    }

    let mut sorted: Vec<(identity::Key, &Member)> =
        members.iter().map(|m| (identity::key(&m.addr), m)).collect();
    sorted.sort_unstable_by(|(ka, a), (kb, b)| ka.cmp(kb).then(a.id.cmp(&b.id)));
    for pair in sorted.windows(2) {
        let ((ka, a), (kb, b)) = (pair[0], pair[1]);
        if ka == kb {
            return Err(MaglevError::DuplicateIdentity {
                addr: a.addr,
                first_id: a.id,
                second_id: b.id,
            });
        }
    }
    if let Some((_, m)) = sorted.iter().find(|(_, m)| m.id == NO_BACKEND) {
        return Err(MaglevError::ReservedId { addr: m.addr });
    }

    let mut turns: Vec<Turn> = sorted
        .iter()
        .filter(|(_, m)| m.weight > 0)
        .map(|(key, m)| {
            let (offset, skip) = identity::offset_skip(key, table_size);
            Turn { next: offset, skip, id: m.id, weight: i64::from(m.weight), credit: 0 }
        })
        .collect();
    if turns.len() > table_size as usize {
        return Err(MaglevError::SizeTooSmall { size: table_size, members: turns.len() });
    }

    let mut table = vec![NO_BACKEND; table_size as usize];
    if !turns.is_empty() {
        populate(&mut table, &mut turns);
    }
    Ok(table)
}

/// A member's progress through its permutation.
struct Turn {
    /// Next slot of its permutation to try.
    next: u32,
    skip: u32,
    id: u32,
    weight: i64,
    /// Earned minus spent, in units where one slot costs `max_weight`;
    /// negative after the free first slot. Stays within ±2·`u32::MAX`.
    credit: i64,
}

/// Fills every slot of `table` (all `NO_BACKEND`, at least `turns.len()`
/// long, prime length) from the members' permutations.
fn populate(table: &mut [u32], turns: &mut [Turn]) {
    let size = table.len() as u64;
    let max_weight = turns.iter().map(|t| t.weight).max().unwrap_or(1);
    let mut free = table.len();
    let mut first_round = true;
    loop {
        for t in turns.iter_mut() {
            t.credit += t.weight;
            if t.credit < max_weight && !first_round {
                continue;
            }
            t.credit -= max_weight;
            // Walk the permutation to the first free slot. One exists, since
            // `free > 0`, and the walk reaches it: with `size` prime and
            // `skip` in 1..size it visits every slot.
            loop {
                let slot = t.next;
                let next = u64::from(t.next) + u64::from(t.skip);
                t.next = if next >= size { next - size } else { next } as u32;
                if table[slot as usize] == NO_BACKEND {
                    table[slot as usize] = t.id;
                    break;
                }
            }
            free -= 1;
            if free == 0 {
                return;
            }
        }
        first_round = false;
    }
}
