//! Who may reach a service: its source lists (one LPM trie per family,
//! shared by every service) and its per-source new-flow limit (a bucket
//! per service and source prefix).
//!
//! Both are functions of their own that return a plain number: the caller
//! tests one register, and its stack frame does not grow by their keys.

use aya_ebpf::{helpers::generated::bpf_ktime_get_ns, maps::lpm_trie::Key};
use lb_common::abi::{
    ACL_DENY, AclV4, AclV6, Addr, BucketKey, FAMILY_V4, SERVICE_ALLOW_LIST, ServiceRecord, admit,
    masked, tolerance_ns,
};

use crate::maps::{LB_ACL_V4, LB_ACL_V6, LB_BUCKETS, LB_SCRATCH};

/// [`admitted`]'s and [`within_limit`]'s answers.
pub const YES: u32 = 1;
pub const NO: u32 = 0;

/// Whether a packet from `src` (of `family`) may reach `svc`, which has
/// a source list. The longest entry covering the source decides: the agent
/// writes an allow entry that lies inside a deny entry as a deny, so a
/// deny wins whatever the lengths. A source no entry covers is refused
/// only if the service has an allow list.
#[inline(never)]
pub fn admitted(src: &Addr, family: u8, svc: &ServiceRecord) -> u32 {
    let found = if family == FAMILY_V4 {
        let [a, b, c, d] = src.words[0].to_ne_bytes();
        let key = Key::new(64, AclV4 { service_id: svc.id, addr: [a, b, c, d] });
        LB_ACL_V4.get(&key).copied()
    } else {
        let key = Key::new(160, AclV6 { service_id: svc.id, addr: src.to_bytes() });
        LB_ACL_V6.get(&key).copied()
    };
    match found {
        Some(ACL_DENY) => NO,
        Some(_) => YES,
        None if svc.flags & SERVICE_ALLOW_LIST != 0 => NO,
        None => YES,
    }
}

/// Whether a new flow from `src` (of `family`) is within `svc`'s
/// per-source limit (which it has: `limit_cost_ns` is not 0), taking one
/// flow from its bucket if so.
///
/// The buckets are one shared LRU hash, not per-CPU: a source's flows
/// arrive on every CPU (RSS spreads them by port), and per-CPU buckets
/// would give it the limit once per CPU. The update is a plain read and
/// write, not atomic: two CPUs admitting flows of one source at the same
/// instant may both take the same allowance, so a source can exceed its
/// limit by about one flow per CPU racing, never more; the bucket is right
/// again at its next flow.
// The key and the new bucket time live in the scratch map: this is called
// from `forward::to_backend`, whose frame leaves a callee 32 bytes of the
// 512-byte stack.
#[inline(never)]
pub fn within_limit(src: &Addr, family: u8, svc: &ServiceRecord) -> u32 {
    let Some(scratch) = LB_SCRATCH.get_ptr_mut(0) else { return YES };
    // SAFETY: this CPU's scratch element, used by this program run only;
    // these two fields by this function only.
    let (key, tat) = unsafe {
        (
            &mut *core::ptr::addr_of_mut!((*scratch).bucket),
            &mut *core::ptr::addr_of_mut!((*scratch).bucket_tat),
        )
    };
    let len = if family == FAMILY_V4 { svc.limit_prefix_v4 } else { svc.limit_prefix_v6 };
    *key =
        BucketKey { prefix: masked(*src, family, len), service_id: svc.id, family, _pad: [0; 3] };
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let cost = u64::from(svc.limit_cost_ns);
    let tolerance = tolerance_ns(svc.limit_cost_ns, svc.limit_burst);
    match LB_BUCKETS.get_ptr_mut(&*key) {
        Some(bucket) => {
            // SAFETY: a pointer to a live map value (see above on races).
            match admit(unsafe { *bucket }, now, cost, tolerance) {
                Some(next) => {
                    // SAFETY: as above.
                    unsafe { *bucket = next };
                    YES
                }
                None => NO,
            }
        }
        None => {
            // A source not seen (or forgotten) has a full bucket. A full
            // map evicts the least recently used bucket, which only makes
            // that source's bucket full again.
            *tat = now + cost;
            let _ = LB_BUCKETS.insert(&*key, &*tat, 0);
            YES
        }
    }
}
