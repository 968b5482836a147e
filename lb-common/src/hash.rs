//! The flow hash that maps a packet to a Maglev slot.
//!
//! Both datapaths (XDP and splice) call these functions, so a flow lands on the
//! same backend in either mode, and every balancer running the same config
//! picks the same backend for it. The function is fixed (murmur3's 32-bit
//! mixing with a fixed seed) and must never depend on the host: changing it
//! re-shuffles every new flow, so treat it as part of the wire contract.
//!
//! It is written for the eBPF verifier: fixed-size arrays, no loops of unknown
//! length, wrapping arithmetic only.

use crate::abi::{Addr, FlowKey};

pub(crate) const SEED: u32 = 0x6c62_2d31; // "lb-1"
const C1: u32 = 0xcc9e_2d51;
const C2: u32 = 0x1b87_3593;

#[inline(always)]
pub(crate) fn mix(h: u32, k: u32) -> u32 {
    let k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
    (h ^ k).rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64)
}

#[inline(always)]
pub(crate) fn finish(h: u32, len_words: u32) -> u32 {
    let mut h = h ^ (len_words * 4);
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// Hash of a flow's 5-tuple (the default scheduler).
#[inline(always)]
pub fn flow_hash(key: &FlowKey) -> u32 {
    let mut h = SEED;
    h = mix(h, key.src.words[0]);
    h = mix(h, key.src.words[1]);
    h = mix(h, key.src.words[2]);
    h = mix(h, key.src.words[3]);
    h = mix(h, key.dst.words[0]);
    h = mix(h, key.dst.words[1]);
    h = mix(h, key.dst.words[2]);
    h = mix(h, key.dst.words[3]);
    h = mix(h, u32::from(key.src_port_be) << 16 | u32::from(key.dst_port_be));
    h = mix(h, u32::from(key.proto) << 8 | u32::from(key.family));
    finish(h, 10)
}

/// Hash of the client address only (the affinity scheduler): every connection
/// from one client reaches the same backend.
#[inline(always)]
pub fn client_hash(src: &Addr) -> u32 {
    let mut h = SEED;
    h = mix(h, src.words[0]);
    h = mix(h, src.words[1]);
    h = mix(h, src.words[2]);
    h = mix(h, src.words[3]);
    finish(h, 4)
}

/// The slot of a flow hash in a Maglev table of `table_size` slots, or `None`
/// for an empty table.
///
/// Every reader of a table maps hashes this way, or XDP and the splice
/// fallback would pick different backends for one flow. Plain modulo: the size
/// is prime, so no bit pattern of the hash is favoured. No panic path, so the
/// eBPF program can call it.
#[inline(always)]
pub const fn slot_for(hash: u32, table_size: u32) -> Option<u32> {
    hash.checked_rem(table_size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::{FAMILY_V4, PROTO_TCP};

    fn key(src_port: u16) -> FlowKey {
        FlowKey {
            src: Addr::from_v4_bytes([10, 0, 1, 2]),
            dst: Addr::from_v4_bytes([10, 0, 0, 100]),
            src_port_be: src_port.to_be(),
            dst_port_be: 80u16.to_be(),
            proto: PROTO_TCP,
            family: FAMILY_V4,
            _pad: [0; 2],
        }
    }

    /// Pins the function: a change here re-shuffles flows between releases
    /// and between balancers of mixed versions.
    #[test]
    fn values_are_stable() {
        let pinned = [flow_hash(&key(1)), flow_hash(&key(2)), client_hash(&key(1).src)];
        assert_eq!(pinned, PINNED);
    }
    const PINNED: [u32; 3] = [2331241653, 4110445763, 2749277172];

    #[test]
    fn ports_spread_evenly_over_buckets() {
        let mut buckets = [0u32; 16];
        for p in 0..16000u16 {
            buckets[(flow_hash(&key(p)) % 16) as usize] += 1;
        }
        for b in buckets {
            // 1000 expected, sd ~31: 850..1150 is a ~5 sd bound.
            assert!((850..1150).contains(&b), "{buckets:?}");
        }
    }
}
