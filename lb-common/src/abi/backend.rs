use super::{Addr, abi_type};

/// Backend takes new flows.
pub const BACKEND_ACTIVE: u8 = 0;
/// Backend keeps its established flows but takes no new ones.
pub const BACKEND_DRAINING: u8 = 1;
/// Backend failed its health checks: nothing is sent to it.
pub const BACKEND_DOWN: u8 = 2;

/// Value of the backends array, indexed by backend id.
///
/// The Maglev tables hold backend ids; this record says where an id forwards to.
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendRecord {
    /// The backend's address.
    pub addr: Addr,
    /// The backend's port, network order.
    pub port_be: u16,
    /// `FAMILY_V4` or `FAMILY_V6`.
    pub family: u8,
    /// `BACKEND_ACTIVE`, `BACKEND_DRAINING` or `BACKEND_DOWN`.
    pub state: u8,
    /// Id of the service this backend belongs to.
    pub service_id: u32,
}
abi_type!(BackendRecord, size = 24, align = 4);

/// Maglev slot value meaning "no backend": the table of a service with no
/// backend able to take new flows is filled with it.
pub const NO_BACKEND: u32 = u32::MAX;
