//! The flow table's clock and idle timeouts.

use core::cell::UnsafeCell;

use aya_ebpf::helpers::generated::{bpf_jiffies64, bpf_ktime_get_coarse_ns};
use lb_common::abi::{FlowTimeouts, FlowValue, ticks};

use crate::maps::LB_SETTINGS;

/// The last clock reading, shared by the CPUs: the jiffy it was taken in
/// (its low 32 bits) above the ticks it read. One 64-bit word, so a CPU
/// never pairs one reading's jiffy with another's ticks. 0: none yet.
/// A global in a section of its own, which the loader makes a map of one
/// value: read with one load, no map lookup.
#[unsafe(no_mangle)]
#[unsafe(link_section = ".data.lb_clock")]
static LB_CLOCK: Reading = Reading(UnsafeCell::new(0));

struct Reading(UnsafeCell<u64>);

// SAFETY: read and written whole, with volatile 64-bit accesses, which
// are single-copy atomic on every architecture BPF runs on.
unsafe impl Sync for Reading {}

/// Now, in flow-table ticks: the coarse clock (the last timer tick), all
/// expiry needs.
///
/// The coarse clock is read at most once per jiffy on each CPU: it only
/// moves at a timer tick, when jiffies do, and its helper call cost 45 ns
/// of a 370 ns flow-table hit on a CPU with return-thunk mitigations,
/// where `bpf_jiffies64` is inlined by the verifier into one load. A
/// reading taken a moment after the jiffy moved but before the timekeeper
/// did is one tick late, for that jiffy.
#[inline(always)]
pub fn now() -> u32 {
    // SAFETY: a helper without arguments (inlined by the verifier).
    let jiffy = unsafe { bpf_jiffies64() } as u32;
    let cell = LB_CLOCK.0.get();
    // SAFETY: a valid, aligned global; see `Reading`.
    let last = unsafe { core::ptr::read_volatile(cell) };
    if last != 0 && (last >> 32) as u32 == jiffy {
        return last as u32;
    }
    // SAFETY: a helper without arguments.
    let now = ticks(unsafe { bpf_ktime_get_coarse_ns() });
    // SAFETY: as above; a concurrent writer stores a reading of the same
    // or the next jiffy.
    unsafe { core::ptr::write_volatile(cell, (u64::from(jiffy) << 32) | u64::from(now)) };
    now
}

/// The idle timeouts the agent configured (the defaults until it has).
#[inline(always)]
fn timeouts() -> FlowTimeouts {
    LB_SETTINGS.get(0).copied().unwrap_or_default().or_defaults()
}

/// Whether `flow` (of protocol `proto`) is over at `now`. A flow seen within
/// the refresh period cannot be (every timeout is longer), so the busy
/// flows of the hot path skip reading the settings.
#[inline(always)]
pub fn expired(flow: &FlowValue, proto: u8, now: u32) -> bool {
    !flow.fresh(now) && flow.expired(proto, now, &timeouts())
}
