//! Incremental Internet checksum updates (RFC 1624, eqn. 3), used when the
//! datapath rewrites addresses and ports.
//!
//! Values are 16-bit words exactly as loaded from the packet, in any byte
//! order used consistently: a one's-complement sum does not depend on it
//! (RFC 1071 §2(B)), so the datapath never byte-swaps.

use crate::abi::Addr;

#[inline(always)]
fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// The checksum after one 16-bit word of the covered data changed from `old`
/// to `new`.
#[inline(always)]
pub fn replace16(check: u16, old: u16, new: u16) -> u16 {
    !fold(u32::from(!check) + u32::from(!old) + u32::from(new))
}

/// The checksum after a 32-bit value of the covered data changed.
#[inline(always)]
pub fn replace32(check: u16, old: u32, new: u32) -> u16 {
    let c = replace16(check, old as u16, new as u16);
    replace16(c, (old >> 16) as u16, (new >> 16) as u16)
}

/// The checksum after an address changed; `words` is 1 for IPv4, 4 for IPv6.
#[inline(always)]
pub fn replace_addr(check: u16, old: &Addr, new: &Addr, words: usize) -> u16 {
    let mut c = replace32(check, old.words[0], new.words[0]);
    if words == 4 {
        c = replace32(c, old.words[1], new.words[1]);
        c = replace32(c, old.words[2], new.words[2]);
        c = replace32(c, old.words[3], new.words[3]);
    }
    c
}

/// The one's-complement difference a change of 16-bit words makes to a sum
/// over them (new minus old, unfolded): the `diff` form the kernel's
/// checksum helpers take, and [`apply`] applies. Sums of diffs are diffs.
#[inline(always)]
pub fn diff16(old: u16, new: u16) -> u32 {
    u32::from(!old) + u32::from(new)
}

/// [`diff16`] for a 32-bit value.
#[inline(always)]
pub fn diff32(old: u32, new: u32) -> u32 {
    diff16(old as u16, new as u16) + diff16((old >> 16) as u16, (new >> 16) as u16)
}

/// [`diff16`] for an address; `words` is 1 for IPv4, 4 for IPv6.
#[inline(always)]
pub fn diff_addr(old: &Addr, new: &Addr, words: usize) -> u32 {
    let mut d = diff32(old.words[0], new.words[0]);
    if words == 4 {
        d += diff32(old.words[1], new.words[1])
            + diff32(old.words[2], new.words[2])
            + diff32(old.words[3], new.words[3]);
    }
    d
}

/// The checksum `check` after the covered data changed by `diff`.
#[inline(always)]
pub fn apply(check: u16, diff: u32) -> u16 {
    // At most 16 halves of 0xffff plus one: no overflow before the fold.
    !fold(u32::from(!check) + (diff & 0xffff) + (diff >> 16))
}

/// The Internet checksum of `data` from scratch, as stored in the packet
/// (native-order words of wire bytes). For tests and userspace tools.
pub fn full(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_ne_bytes([c[0], c[1]]));
        sum = (sum & 0xffff) + (sum >> 16);
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(u16::from_ne_bytes([*last, 0]));
    }
    !fold(sum)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn store(data: &mut [u8], at: usize, check: u16) {
        data[at..at + 2].copy_from_slice(&check.to_ne_bytes());
    }

    proptest! {
        /// Rewriting any aligned 16-bit word and updating incrementally gives
        /// a checksum that still verifies, like one computed from scratch.
        #[test]
        fn incremental_matches_full(
            mut data in proptest::collection::vec(any::<u8>(), 8..64),
            word in 1usize..4,
            new in any::<u16>(),
        ) {
            if data.len() % 2 == 1 { data.pop(); }
            store(&mut data, 0, 0);
            let check = full(&data);
            store(&mut data, 0, check);
            let at = word * 2;
            let old = u16::from_ne_bytes([data[at], data[at + 1]]);
            data[at..at + 2].copy_from_slice(&new.to_ne_bytes());
            let updated = replace16(check, old, new);
            store(&mut data, 0, updated);
            // A correct checksum makes the whole sum verify to zero.
            prop_assert_eq!(full(&data), 0);
        }

        #[test]
        fn address_rewrite_verifies(
            mut data in proptest::collection::vec(any::<u8>(), 40..41),
            new in any::<[u8; 16]>(),
        ) {
            store(&mut data, 0, 0);
            let check = full(&data);
            store(&mut data, 0, check);
            let old_bytes: [u8; 16] = data[8..24].try_into().unwrap();
            let (old, new_a) = (Addr::from_v6_bytes(old_bytes), Addr::from_v6_bytes(new));
            data[8..24].copy_from_slice(&new);
            store(&mut data, 0, replace_addr(check, &old, &new_a, 4));
            prop_assert_eq!(full(&data), 0);
        }
    }

    proptest! {
        /// One diff for an address and a port changed together gives what
        /// word-by-word replacement gives (the tc hook hands diffs to the
        /// kernel's helpers, the XDP hook applies them itself).
        #[test]
        fn diff_applies_like_replacement(
            check in any::<u16>(),
            old in any::<[u32; 4]>(),
            new in any::<[u32; 4]>(),
            ports in any::<(u16, u16)>(),
            words in prop_oneof![Just(1usize), Just(4usize)],
        ) {
            let (old, new) = (Addr { words: old }, Addr { words: new });
            let by_words = replace16(replace_addr(check, &old, &new, words), ports.0, ports.1);
            let by_diff = apply(check, diff_addr(&old, &new, words) + diff16(ports.0, ports.1));
            // 0x0000 and 0xffff are the same one's-complement value.
            let norm = |c: u16| if c == 0xffff { 0 } else { c };
            prop_assert_eq!(norm(by_diff), norm(by_words));
        }
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3 example bytes: sum 0xddf2 in big-endian words.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(u16::from_be_bytes(full(&data).to_ne_bytes()), !0xddf2);
    }
}
