//! Failure signals about backends, seen in passing traffic: counted for
//! the agent (SYNs opened and answered per backend, read through a memory
//! mapping) or sent to it as events (refusals, ICMP unreachables).

use lb_common::abi::PassiveEvent;

use crate::maps::{LB_EVENTS, LB_SYNS};

// The SYN counters are shared by all CPUs and the BPF target has no atomic
// read-modify-write in Rust's core, so two CPUs counting at once may lose
// one increment. The agent only asks whether `answered` moved at all and
// whether `opened` moved by a few, so a lost increment can delay a signal
// by one connection, never fake one.

/// A connection was opened towards `backend_id` (a SYN forwarded).
#[inline(always)]
pub fn opened(backend_id: u32) {
    if let Some(c) = LB_SYNS.get_ptr_mut(backend_id) {
        // SAFETY: a pointer to a live array element (see above on races).
        unsafe { (*c).opened += 1 };
    }
}

/// `backend_id` answered a connection it was sent (SYN-ACK or RST).
#[inline(always)]
pub fn answered(backend_id: u32) {
    if let Some(c) = LB_SYNS.get_ptr_mut(backend_id) {
        // SAFETY: as in `opened`.
        unsafe { (*c).answered += 1 };
    }
}

/// Tells the agent about `backend_id`. A full ring buffer only loses the
/// signal; the probes still catch the failure.
#[inline(always)]
pub fn report(backend_id: u32, kind: u32) {
    let _ = LB_EVENTS.output::<PassiveEvent>(&PassiveEvent { backend_id, kind }, 0);
}
