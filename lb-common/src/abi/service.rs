use super::{Addr, abi_type};

/// `ServiceRecord::flags` bit: hash only the client address (affinity), so
/// every connection of one client reaches the same backend.
pub const SERVICE_HASH_CLIENT_IP: u32 = 1 << 0;
/// `ServiceRecord::flags` bit: the service has an allow list; a source
/// that no allow entry of it covers is refused.
pub const SERVICE_ALLOW_LIST: u32 = 1 << 1;
/// `ServiceRecord::flags` bit: the service has a deny list. Without either
/// list bit the datapath does not look in the ACL tries at all.
pub const SERVICE_DENY_LIST: u32 = 1 << 2;
/// The `ServiceRecord::flags` bits that say how flows are balanced (the
/// others say who may reach the service, and change without a new table).
pub const SERVICE_BALANCING_FLAGS: u32 = SERVICE_HASH_CLIENT_IP;

/// `ServiceRecord::forwarding`: the backend's address and port replace the
/// VIP's, and its replies come back through lb to be given the VIP back.
pub const FORWARD_NAT: u8 = 0;
/// `ServiceRecord::forwarding`: direct server return, the packet sent
/// unchanged inside an outer IP header to the backend, which holds the VIP
/// and answers the client directly.
pub const FORWARD_DSR_IPIP: u8 = 1;
/// `ServiceRecord::forwarding`: direct server return on one L2 segment,
/// the packet unchanged but for the destination MAC (the backend's).
pub const FORWARD_DSR_L2: u8 = 2;

/// One end of a TCP or UDP conversation: (address, port, protocol).
///
/// Key of the services map (a virtual service is its VIP endpoint) and of
/// the replies map (a backend is its own endpoint).
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// The address (a VIP, or a backend's).
    pub addr: Addr,
    /// The port, network order.
    pub port_be: u16,
    /// `PROTO_TCP` or `PROTO_UDP`.
    pub proto: u8,
    /// `FAMILY_V4` or `FAMILY_V6`.
    pub family: u8,
}
abi_type!(Endpoint, size = 20, align = 4);

/// Key of the services map: a virtual service is its VIP endpoint.
pub type ServiceKey = Endpoint;

/// Value of the services map.
///
/// The datapath reads the Maglev table of the service at
/// `table_base .. table_base + table_size` of the Maglev map. A table change is
/// written to a region no packet reads, then published by replacing this whole
/// record, which a hash map does atomically for readers: no packet ever sees
/// a half-written table.
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
// Plans saved by an agent from before the limit fields read as "no limit".
#[cfg_attr(feature = "user", serde(default))]
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceRecord {
    /// Index of the service in the per-service counters.
    pub id: u32,
    /// `SERVICE_*` bits.
    pub flags: u32,
    /// Number of slots of the service's Maglev table (a prime).
    pub table_size: u32,
    /// First slot of the service's active table in the Maglev map.
    pub table_base: u32,
    /// The per-source new-flow limit: nanoseconds of allowance one new
    /// flow costs (1 s / rate, see [`admit`](super::admit)); 0: no limit.
    pub limit_cost_ns: u32,
    /// New flows one source prefix may open at once (the bucket's size).
    pub limit_burst: u32,
    /// Bits of an IPv4 source that make one limited prefix.
    pub limit_prefix_v4: u8,
    /// Bits of an IPv6 source that make one limited prefix.
    pub limit_prefix_v6: u8,
    /// How packets reach a backend: `FORWARD_*`.
    pub forwarding: u8,
    /// `FORWARD_DSR_IPIP`: how many low bits of `tunnel_src` the flow hash
    /// fills (see [`tunnel_source`](crate::encap::tunnel_source)).
    pub tunnel_host_bits: u8,
    /// `FORWARD_DSR_IPIP`: the outer source prefix, of the VIP's family.
    pub tunnel_src: Addr,
}
abi_type!(ServiceRecord, size = 44, align = 4);
