use core::net::SocketAddr;

use super::{Addr, abi_type, family_of};

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

impl FlowKey {
    /// The key of the flow from `src` to `dst` over `proto` (`PROTO_*`):
    /// what the parser builds from the packet's headers. Both addresses are
    /// of one family (the source's is used).
    pub fn between(src: SocketAddr, dst: SocketAddr, proto: u8) -> Self {
        Self {
            src: Addr::from(src.ip()),
            dst: Addr::from(dst.ip()),
            src_port_be: src.port().to_be(),
            dst_port_be: dst.port().to_be(),
            proto,
            family: family_of(src.ip()),
            _pad: [0; 2],
        }
    }
}

/// Value of the flow table: the backend a flow is pinned to. Nothing else:
/// the service follows from the key, and flows have no idle timeout (the
/// LRU evicts the oldest), so a timestamp would cost a clock read per new
/// flow for nothing.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowValue {
    /// Backend id the flow forwards to.
    pub backend_id: u32,
}
abi_type!(FlowValue, size = 4, align = 4);

/// Value of the NAT table: what a reply from a backend is rewritten to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatValue {
    /// The VIP the client connected to.
    pub vip: Addr,
    /// The virtual port, network order.
    pub vip_port_be: u16,
    /// `NAT_*` bits, set by the datapath.
    pub flags: u8,
    /// Always zero.
    pub _pad: u8,
    /// Backend id the flow forwards to.
    pub backend_id: u32,
}
abi_type!(NatValue, size = 24, align = 4);

/// `NatValue::flags`: the backend has answered this flow with something
/// other than a reset. An RST before that means it refused the connection.
pub const NAT_ESTABLISHED: u8 = 1;

/// `PassiveEvent::kind`: a backend reset a TCP connection the balancer
/// forwarded before answering it at all (its port is closed).
pub const EVENT_REFUSED: u32 = 1;

/// A failure signal the datapath saw, sent to the agent through a ring
/// buffer so it can act before the next probe.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PassiveEvent {
    /// The backend it is about.
    pub backend_id: u32,
    /// `EVENT_*`.
    pub kind: u32,
}
abi_type!(PassiveEvent, size = 8, align = 4);

impl PassiveEvent {
    /// Decodes a ring-buffer record; `None` if it is not 8 bytes.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        let id: [u8; 4] = b.get(0..4)?.try_into().ok()?;
        let kind: [u8; 4] = b.get(4..8)?.try_into().ok()?;
        (b.len() == 8).then(|| PassiveEvent {
            backend_id: u32::from_ne_bytes(id),
            kind: u32::from_ne_bytes(kind),
        })
    }
}
