use super::{Addr, abi_type};

/// `ServiceRecord::flags` bit: hash only the client address (affinity), so
/// every connection of one client reaches the same backend.
pub const SERVICE_HASH_CLIENT_IP: u32 = 1 << 0;

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
}
abi_type!(ServiceRecord, size = 16, align = 4);
