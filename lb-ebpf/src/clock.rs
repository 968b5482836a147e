//! The flow table's clock and idle timeouts.

use aya_ebpf::helpers::generated::bpf_ktime_get_coarse_ns;
use lb_common::abi::{FlowTimeouts, ticks};

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
pub fn timeouts() -> FlowTimeouts {
    LB_SETTINGS.get(0).copied().unwrap_or_default().or_defaults()
}
