//! The flow table's clock and idle timeouts.

use aya_ebpf::helpers::generated::bpf_ktime_get_coarse_ns;
use lb_common::abi::{FlowTimeouts, FlowValue, ticks};

use crate::maps::LB_SETTINGS;

/// Now, in flow-table ticks. The coarse clock (the last timer tick) is all
/// expiry needs and costs no clock-source read.
#[inline(always)]
pub fn now() -> u32 {
    // SAFETY: a helper without arguments.
    ticks(unsafe { bpf_ktime_get_coarse_ns() })
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
