use super::{Addr, abi_type};

/// A connection's 5-tuple as seen in one direction.
///
/// Key of the flow table (client -> VIP, the forward direction) and of the NAT
/// table (backend -> client, the return direction).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Source address.
    pub src: Addr,
    /// Destination address.
    pub dst: Addr,
    /// Source port, network order.
    pub src_port_be: u16,
    /// Destination port, network order.
    pub dst_port_be: u16,
    /// `PROTO_TCP` or `PROTO_UDP`.
    pub proto: u8,
    /// `FAMILY_V4` or `FAMILY_V6`.
    pub family: u8,
    /// Always zero: keys are hashed byte for byte.
    pub _pad: [u8; 2],
}
abi_type!(FlowKey, size = 40, align = 4);

/// Value of the flow table: the backend a flow is pinned to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowValue {
    /// Backend id the flow forwards to.
    pub backend_id: u32,
    /// Service id the flow belongs to.
    pub service_id: u32,
    /// `bpf_ktime_get_ns()` of the last packet, for idle accounting.
    pub last_seen_ns: u64,
}
abi_type!(FlowValue, size = 16, align = 8);

/// Value of the NAT table: what a reply from a backend is rewritten to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatValue {
    /// The VIP the client connected to.
    pub vip: Addr,
    /// The virtual port, network order.
    pub vip_port_be: u16,
    /// Always zero.
    pub _pad: [u8; 2],
    /// Backend id the flow forwards to.
    pub backend_id: u32,
}
abi_type!(NatValue, size = 24, align = 4);
