//! The "maybe ours" test before the hash-map lookups (see
//! `lb_common::prefilter`): one load from an array the kernel inlines.

use lb_common::{abi::Addr, prefilter};

use crate::maps::LB_PREFILTER;

/// Whether the endpoint may be a VIP or a backend's; `false` is certain.
/// A missing word (it cannot be: the index is in range) counts as "maybe",
/// so a fault can only cost a lookup, never a balanced packet.
#[inline(always)]
pub fn maybe(addr: &Addr, port_be: u16, proto: u8) -> bool {
    let (word, mask) = prefilter::word_and_mask(prefilter::bit(addr, port_be, proto));
    LB_PREFILTER.get(word).is_none_or(|w| w & mask != 0)
}
