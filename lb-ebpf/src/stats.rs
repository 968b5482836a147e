//! Per-CPU counters: the hot path counts, it never logs.

use lb_common::abi::{Counters, DropReason};

use crate::maps::{LB_BACKEND_COUNTERS, LB_DROPS, LB_SERVICE_COUNTERS};

#[inline(always)]
pub fn exception(reason: DropReason) {
    if let Some(c) = LB_DROPS.get_ptr_mut(reason as u32) {
        // SAFETY: a per-CPU slot, written only by this CPU.
        unsafe { *c += 1 };
    }
}

#[inline(always)]
fn add(c: Option<*mut Counters>, bytes: u64, new_flow: bool) {
    if let Some(c) = c {
        // SAFETY: a per-CPU slot, written only by this CPU.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
            if new_flow {
                (*c).new_flows += 1;
            }
        }
    }
}

/// Counts a packet forwarded to a backend of a service.
#[inline(always)]
pub fn forwarded(service_id: u32, backend_id: u32, bytes: u64, new_flow: bool) {
    add(LB_SERVICE_COUNTERS.get_ptr_mut(service_id), bytes, new_flow);
    add(LB_BACKEND_COUNTERS.get_ptr_mut(backend_id), bytes, new_flow);
}

/// Counts a packet of service `service_id` refused by its source lists.
#[inline(always)]
pub fn acl_denied(service_id: u32) {
    if let Some(c) = LB_SERVICE_COUNTERS.get_ptr_mut(service_id) {
        // SAFETY: a per-CPU slot, written only by this CPU.
        unsafe { (*c).acl_denied += 1 };
    }
}

/// Counts a new flow of service `service_id` over its source's limit.
#[inline(always)]
pub fn rate_limited(service_id: u32) {
    if let Some(c) = LB_SERVICE_COUNTERS.get_ptr_mut(service_id) {
        // SAFETY: as in `acl_denied`.
        unsafe { (*c).rate_limited += 1 };
    }
}
