//! The "maybe ours" prefilter: one bit per hash of an endpoint (address,
//! port, protocol), set for every VIP and every backend endpoint. The
//! datapath looks up a service, a backend's reply or direct traffic to a
//! backend only for endpoints whose bit is set, so a gateway's other
//! traffic skips the hash-map lookups (a bucket walk and a 20-byte key
//! compare each) for one load from a small array the kernel inlines.
//!
//! A set bit only says "maybe": endpoints share bits, and the maps decide.
//! A clear bit must mean "not ours" at every moment, so the agent sets an
//! endpoint's bit before it writes the endpoint's entries and clears bits
//! only after the entries that needed them are gone.

use crate::{abi::Addr, hash};

/// Bits of the filter, as a power of two: 65 536 bits (8 KB). With a few
/// thousand endpoints set, a few percent of other traffic still pays the
/// lookups; a larger filter would cost cache lines on every packet.
pub const BITS_LOG2: u32 = 16;
/// Words (`u64`) of the filter's array map.
pub const WORDS: u32 = 1 << (BITS_LOG2 - 6);

/// The bit of an endpoint: the flow hash's murmur3 rounds (`hash`) over
/// the address words folded into one, then the port (network order, as
/// the packet has it) with the protocol, so every input bit reaches the top
/// bits taken. (A multiplicative hash of the fields xor-ed together let
/// the 16 million ports of 256 hosts share 65 536 values: multiplying only
/// carries bits upward, onto the port's.)
#[inline(always)]
pub fn bit(addr: &Addr, port_be: u16, proto: u8) -> u32 {
    let w = addr.words;
    let a = w[0] ^ w[1].rotate_left(7) ^ w[2].rotate_left(14) ^ w[3].rotate_left(21);
    let h = hash::mix(hash::SEED, a);
    let h = hash::mix(h, u32::from(port_be) | u32::from(proto) << 16);
    hash::finish(h, 2) >> (32 - BITS_LOG2)
}

/// The word (array index) and the mask within it of bit `bit`.
#[inline(always)]
pub const fn word_and_mask(bit: u32) -> (u32, u64) {
    (bit >> 6, 1u64 << (bit & 63))
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::{IpAddr, Ipv4Addr};

    fn v4(a: [u8; 4]) -> Addr {
        Addr::from(IpAddr::V4(Ipv4Addr::from(a)))
    }

    #[test]
    fn bits_are_in_range_and_words_in_the_array() {
        for i in 0..10_000u32 {
            let b = bit(&v4(i.to_be_bytes()), (i as u16).to_be(), 6);
            assert!(b < 1 << BITS_LOG2);
            assert!(word_and_mask(b).0 < WORDS);
        }
    }

    /// Endpoints that differ in one field only, as a service's backends or
    /// a subnet's hosts do, spread over the filter: 4 096 of them set well
    /// over 3 500 distinct bits (uniform hashing sets about 3 970).
    #[test]
    fn neighbouring_endpoints_spread() {
        let mut seen = [0u64; WORDS as usize];
        let mut mark = |b: u32| {
            let (w, m) = word_and_mask(b);
            seen[w as usize] |= m;
        };
        for i in 0..1024u32 {
            mark(bit(&v4([10, 0, (i >> 8) as u8, i as u8]), 80u16.to_be(), 6));
            mark(bit(&v4([10, 1, 0, 1]), (8000 + i as u16).to_be(), 6));
            mark(bit(&v4([10, 2, (i >> 8) as u8, i as u8]), 53u16.to_be(), 17));
            let mut a = Addr::from(IpAddr::V6("fd00::".parse().unwrap()));
            a.words[3] = i.to_be();
            mark(bit(&a, 443u16.to_be(), 6));
        }
        let set: u32 = seen.iter().map(|w| w.count_ones()).sum();
        assert!(set > 3500, "{set} distinct bits of 4096 endpoints");
    }

    /// Every port of 256 hosts (16 million endpoints, as a host's
    /// connections use) reaches nearly every bit.
    #[test]
    fn a_hosts_ports_reach_every_bit() {
        let mut seen = [0u64; WORDS as usize];
        for h in 0..=255u8 {
            for p in 0..=65535u16 {
                let (w, m) = word_and_mask(bit(&v4([192, 0, 2, h]), p.to_be(), 6));
                seen[w as usize] |= m;
            }
        }
        let set: u32 = seen.iter().map(|w| w.count_ones()).sum();
        assert!(set > 65_000, "{set} of 65 536 bits");
    }

    #[test]
    fn protocol_and_port_count() {
        let a = v4([10, 0, 0, 1]);
        assert_ne!(bit(&a, 80u16.to_be(), 6), bit(&a, 80u16.to_be(), 17));
        assert_ne!(bit(&a, 80u16.to_be(), 6), bit(&a, 81u16.to_be(), 6));
    }
}
