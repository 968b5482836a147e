//! Where a backend starts and how it strides through the table: its Maglev
//! offset and skip, from a fixed hash of its identity.
//!
//! Every balancer must derive the same permutation for a backend, or two
//! balancers behind one ECMP group would send a flow to different backends.
//! So the hash is written out here (no `RandomState`, nothing from the host)
//! and its input is a canonical byte string, not a Rust value's in-memory form.
//! Tests pin a few table slots: changing anything here reshuffles flows, so
//! treat it like a wire format.

use core::net::SocketAddr;

use crate::abi::{Addr, family_of};

/// Canonical identity: family tag (`FAMILY_V4` or `FAMILY_V6`), the 16
/// address bytes as `Addr` stores them (IPv4 in the first 4, the rest zero),
/// the port big-endian. IPv6 flow label and scope id are not part of it: they
/// do not name a different backend.
///
/// Byte-wise order of keys is also the order members are placed in, which
/// makes the table independent of the caller's order.
pub(super) type Key = [u8; 19];

/// FNV-1a 64-bit parameters.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
/// Seeds of the two hashes, mixed into the FNV offset basis, so offset and
/// skip come from unrelated hashes of the same key.
const SEED_OFFSET: u64 = u64::from_be_bytes(*b"maglev-o");
const SEED_SKIP: u64 = u64::from_be_bytes(*b"maglev-s");

/// The canonical identity of a backend address.
pub(super) fn key(addr: &SocketAddr) -> Key {
    let mut k = [0; 19];
    k[0] = family_of(addr.ip());
    k[1..17].copy_from_slice(&Addr::from(addr.ip()).to_bytes());
    k[17..].copy_from_slice(&addr.port().to_be_bytes());
    k
}

/// `(offset, skip)` of a backend in a table of prime size `m`: its
/// permutation is `offset, offset + skip, offset + 2·skip, …` (mod `m`).
/// `skip` is in `1..m`, so with `m` prime the walk visits every slot.
pub(super) fn offset_skip(key: &Key, m: u32) -> (u32, u32) {
    debug_assert!(m >= 2);
    let m = u64::from(m);
    let offset = hash(SEED_OFFSET, key) % m;
    let skip = hash(SEED_SKIP, key) % (m - 1) + 1;
    // Both are below `m`, which is a u32.
    (offset as u32, skip as u32)
}

/// FNV-1a over the key, then the splitmix64 finaliser: FNV alone leaves the
/// last bytes (the port) poorly mixed into the high bits, and `% m` depends
/// on all of them.
fn hash(seed: u64, key: &Key) -> u64 {
    let mut h = FNV_OFFSET ^ seed;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}
