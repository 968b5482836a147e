//! `lb trace`: aya-log records for the packets the agent's filter
//! (`LB_TRACE`) takes.
//!
//! Cost when nobody traces: [`enabled`], one load of the switch and one
//! branch per packet, at the entry points (`lb_xdp`, `lb_tc`). The records
//! themselves are written only by the datapath's second instantiation
//! (`datapath::run_traced`, through `hook::Traced`, whose `TRACE` is true):
//! in the plain one every `if H::TRACE` is false at compile time and no
//! trace code exists. A traced packet is one the filter (`LB_TRACE`) takes
//! ([`start`]); the others of a session run the traced code silently.
//!
//! Each record is a function of its own (`#[inline(never)]`): the logging
//! macro's header and fields take stack, which the callers' frames, tight
//! already, must not carry. Records hold numbers; the agent names them
//! (`lb_common::abi::record`).

use aya_ebpf::Global;
use aya_log_ebpf::info;
use lb_common::{
    abi::{DropReason, FAMILY_V4, record},
    parse::L4Packet,
};

use crate::maps::{LB_SCRATCH, LB_TRACE};

/// Whether a trace session runs: written by the agent (1 while a session
/// runs, with the filter in `LB_TRACE`). A global in a section of its own,
/// which the loader makes a map of one value: the datapath reads it with
/// one load, no map lookup and no key on the stack (the entry points'
/// frames are part of the deepest call chain, which has no byte to spare).
#[unsafe(no_mangle)]
#[unsafe(link_section = ".data.lb_trace_on")]
static LB_TRACE_ON: Global<u32> = Global::new(0);

/// Whether a trace session runs.
#[inline(always)]
pub fn enabled() -> bool {
    LB_TRACE_ON.load() != 0
}

/// Whether the packet being handled is traced.
#[inline(always)]
fn on() -> bool {
    // SAFETY: this CPU's scratch element, used by this program run only.
    LB_SCRATCH.get_ptr(0).is_some_and(|s| unsafe { (*s).traced } != 0)
}

/// Forgets the previous packet's verdict (before this one is parsed: a
/// packet that is not TCP or UDP is never traced).
#[inline(always)]
pub fn reset() {
    if let Some(s) = LB_SCRATCH.get_ptr_mut(0) {
        // SAFETY: as in `on`.
        unsafe { (*s).traced = 0 };
    }
}

/// Decides whether `pkt` is traced, and records its tuple if it is.
#[inline(never)]
pub fn start(pkt: &L4Packet) {
    // SAFETY: the filter is copied out; the agent replaces it whole.
    let Some(filter) = LB_TRACE.get(0).copied() else { return };
    if !filter.matches(&pkt.key) {
        return;
    }
    if let Some(s) = LB_SCRATCH.get_ptr_mut(0) {
        // SAFETY: as in `on`.
        unsafe { (*s).traced = 1 };
    }
    let k = &pkt.key;
    let (sport, dport) = (u16::from_be(k.src_port_be), u16::from_be(k.dst_port_be));
    // Per family, with plain integers and arrays: an `IpAddr` argument
    // spills its enum in halves, which the verifier refuses.
    if k.family == FAMILY_V4 {
        info!(
            &(),
            target: record::PACKET,
            "{:i}:{} > {:i}:{} proto {} flags {:x}",
            u32::from_be(k.src.words[0]),
            sport,
            u32::from_be(k.dst.words[0]),
            dport,
            k.proto,
            pkt.tcp_flags
        );
    } else {
        info!(
            &(),
            target: record::PACKET,
            "[{:i}]:{} > [{:i}]:{} proto {} flags {:x}",
            k.src.to_bytes(),
            sport,
            k.dst.to_bytes(),
            dport,
            k.proto,
            pkt.tcp_flags
        );
    }
}

/// The service the destination is (`NO_SERVICE`: none).
#[inline(never)]
pub fn service(id: u32) {
    if on() {
        info!(&(), target: record::SERVICE, "{}", id);
    }
}

/// The flow's backend and why (`FLOW_*`), the backend it had, and the
/// Maglev slot that chose it.
#[inline(never)]
pub fn flow(why: u32, backend: u32, previous: u32, slot: u32) {
    if on() {
        info!(&(), target: record::FLOW, "{} {} {} {}", why, backend, previous, slot);
    }
}

/// The action the hook (`HOOK_*`) returns, returned again: the caller
/// then keeps nothing across the call (its frame is part of the deepest
/// call chain, which has no byte to spare).
#[inline(never)]
pub fn action(hook: u32, action: u32) -> u32 {
    if on() {
        info!(&(), target: record::ACTION, "{} {}", hook, action);
    }
    action
}

/// A reason decided the packet.
#[inline(never)]
pub fn exception(reason: DropReason) {
    if on() {
        info!(&(), target: record::EXCEPTION, "{}", reason as u32);
    }
}
