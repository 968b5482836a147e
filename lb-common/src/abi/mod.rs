//! Layout of every BPF map key and value.
//!
//! Rules for every type here, enforced by `abi_type!`:
//! - `#[repr(C)]` with padding written out as named `_pad` fields, so no byte
//!   of a key is left uninitialised (the kernel hashes every byte of a key);
//! - only integers and arrays of integers: no `bool`, `Option` or enum payload,
//!   whose invalid bit patterns would be undefined behaviour when read from a map;
//! - size and alignment asserted at compile time, on both sides.
//!
//! Multi-byte fields named `*_be` or documented as "network order" hold bytes as
//! they are on the wire; everything else is host order.

mod addr;
mod backend;
mod counters;
mod decap;
mod flow;
mod hop;
mod maps;
mod service;
mod sources;
mod trace;

pub use addr::{Addr, FAMILY_V4, FAMILY_V6, PROTO_TCP, PROTO_UDP, family_of};
pub use backend::{BACKEND_ACTIVE, BACKEND_DOWN, BACKEND_DRAINING, BackendRecord, NO_BACKEND};
pub use counters::{Counters, DropReason};
pub use decap::{DECAP_MAPS, DecapCounters, MAP_DECAP_ADDRS, MAP_DECAP_COUNTERS, MAX_DECAP_ADDRS};
pub use flow::{
    EVENT_REFUSED, EVENT_UNREACHABLE, FLOOD_CHALLENGE, FLOOD_ON, FLOW_CLOSING, FLOW_ESTABLISHED,
    FLOW_OPENING, FlowKey, FlowTimeouts, FlowValue, FragKey, FragPorts, MAX_REPLY_TARGETS,
    PassiveEvent, REFRESH_TICKS, Replies, SynCounters, TICK_SHIFT, ticks,
};
pub use hop::NextHop;
pub use maps::*;
pub use service::{
    Endpoint, FORWARD_DSR_IPIP, FORWARD_DSR_L2, FORWARD_NAT, SERVICE_ALLOW_LIST,
    SERVICE_BALANCING_FLAGS, SERVICE_DENY_LIST, SERVICE_HASH_CLIENT_IP, ServiceKey, ServiceRecord,
};
pub use sources::{
    ACL_ALLOW, ACL_DENY, AclV4, AclV6, BucketKey, VerifiedKey, admit, cost_ns, masked, tolerance_ns,
};
pub use trace::{
    FLOW_KEPT, FLOW_MAGLEV, FLOW_REHASH, FLOW_REUSED_PORT, FLOW_SYN_AGAIN, HOOK_TC, HOOK_XDP,
    NO_SERVICE, TRACE_ON, TraceFilter, record,
};

/// Asserts a map type's size and alignment at compile time and, with the
/// `user` feature, marks it plain-old-data for aya.
macro_rules! abi_type {
    ($t:ty, size = $size:expr, align = $align:expr) => {
        const _: () = assert!(core::mem::size_of::<$t>() == $size);
        const _: () = assert!(core::mem::align_of::<$t>() == $align);
        // SAFETY: the type is repr(C), made only of integers with all padding
        // written out as fields (the size assert above holds only then), so
        // every bit pattern is valid and no byte is uninitialised.
        #[cfg(feature = "user")]
        unsafe impl aya::Pod for $t {}
    };
}
pub(crate) use abi_type;
