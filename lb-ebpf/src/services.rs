//! The service of a packet's destination: `LB_SERVICES`, behind a per-CPU
//! cache of the records read.
//!
//! A hash-map lookup is a call into the kernel (the hash, the bucket walk,
//! the key compare, each a function returning), and every packet to a VIP
//! makes one before anything else. The cache is an array the verifier
//! inlines, in sets of two slots chosen by the low bits of the VIP's
//! prefilter bit; a slot holds the key, the record and the generation it
//! was read in.
//!
//! Two ways, because one thrashed: two busy VIPs that shared a slot each
//! evicted the other, and every packet paid the lookup and the copy: two
//! VIPs alternating over 100 warm flows cost 354-389 ns a hit, against
//! 293-300 in different slots and about 320 with no cache. The first way
//! keeps its record for the generation; later VIPs of the set take turns
//! in the second, so a third busy VIP costs about what no cache did.
//!
//! The agent bumps `LB_SERVICES_GEN` after each change it writes to
//! `LB_SERVICES`, so a slot read in an older generation is read again. A
//! record read just before a change and kept under the old generation is
//! read again at the slot's next use: a change is seen by every CPU from
//! its next packet after the bump, as with the map itself.

use lb_common::{
    abi::{SERVICE_CACHE_SLOTS, ServiceKey, ServiceRecord},
    prefilter,
};

use crate::maps::{LB_SERVICE_CACHE, LB_SERVICES, LB_SERVICES_GEN};

/// The record of `key`, or null. Valid for
/// the rest of this program run: it is this CPU's cache slot, rewritten
/// only here, and a program run is not preempted on its CPU.
///
/// Always a slot, even when nothing may be cached yet (generation 0, which
/// never matches): the verifier then sees one kind of pointer whichever
/// way the record was found, and does not walk the rest of the datapath
/// once for each. The slot always exists (its index is masked below the
/// map's size).
///
/// A frame of its own, returning a register: the datapath's entry frame
/// has no room for the key compare.
#[inline(never)]
pub fn find(key: &ServiceKey) -> *const ServiceRecord {
    // The prefilter's bit again: passing it would keep it on the caller's
    // frame, which the tc hook's deepest call chain has no room for.
    let bit = prefilter::bit(&key.addr, key.port_be, key.proto);
    let set = (bit & (SERVICE_CACHE_SLOTS / 2 - 1)) * 2;
    let (Some(first), Some(second)) =
        (LB_SERVICE_CACHE.get_ptr_mut(set), LB_SERVICE_CACHE.get_ptr_mut(set + 1))
    else {
        return core::ptr::null();
    };
    let generation = LB_SERVICES_GEN.get(0).copied().unwrap_or(0);
    // SAFETY: this CPU's slots, written here only, by this CPU.
    unsafe {
        if generation != 0 {
            if (*first).generation == generation && (*first).key == *key {
                return core::ptr::addr_of!((*first).record);
            }
            if (*second).generation == generation && (*second).key == *key {
                return core::ptr::addr_of!((*second).record);
            }
        }
        // SAFETY: the agent replaces elements rather than writing into
        // them, so the copy is one consistent record.
        let Some(record) = LB_SERVICES.get(key) else { return core::ptr::null() };
        let slot = if (*first).generation != generation { first } else { second };
        // `generation` was read before the record: a change written in
        // between is kept under the older generation, and read again at
        // the slot's next use.
        (*slot).key = *key;
        (*slot).record = *record;
        (*slot).generation = generation;
        core::ptr::addr_of!((*slot).record)
    }
}
