//! `lb trace`: the filter the agent writes while a trace session runs, and
//! the match the datapath applies to each parsed packet.
//!
//! The match lives here, not in the eBPF crate, so it is tested on the host
//! and the datapath runs the very same code.

use super::{Addr, FlowKey, abi_type, masked};

/// `TraceFilter::enabled`: a session runs and packets are matched.
pub const TRACE_ON: u8 = 1;

/// The kinds of trace record, as the aya-log target of each: the datapath
/// writes numbers, the agent turns them into names (services, backends,
/// reasons) it alone knows.
pub mod record {
    /// The parsed packet: "src:port > dst:port proto P flags F".
    pub const PACKET: &str = "lb_packet";
    /// The service the destination is ("ID"), or [`super::NO_SERVICE`].
    pub const SERVICE: &str = "lb_service";
    /// The flow's backend and why: "WHY BACKEND PREVIOUS SLOT" (`FLOW_*`).
    pub const FLOW: &str = "lb_flow";
    /// The action the hook returns: "HOOK ACTION" (`HOOK_*`).
    pub const ACTION: &str = "lb_action";
    /// A `DropReason` decided the packet: "INDEX".
    pub const EXCEPTION: &str = "lb_exception";
}

/// `record::SERVICE`: no service has the destination (a reply, or traffic
/// for the kernel).
pub const NO_SERVICE: u32 = u32::MAX;

/// `record::FLOW`: a live flow kept its backend.
pub const FLOW_KEPT: u32 = 0;
/// `record::FLOW`: a new flow, given its Maglev slot's backend.
pub const FLOW_MAGLEV: u32 = 1;
/// `record::FLOW`: the flow's backend (PREVIOUS) is down; re-hashed.
pub const FLOW_REHASH: u32 = 2;
/// `record::FLOW`: a SYN on a 5-tuple still pinned (to PREVIOUS): a new
/// connection on a reused port, given the current Maglev choice.
pub const FLOW_REUSED_PORT: u32 = 3;
/// `record::FLOW`: a retransmitted SYN of a connection already waiting.
pub const FLOW_SYN_AGAIN: u32 = 4;

/// `record::ACTION`: the XDP hook's action numbers.
pub const HOOK_XDP: u32 = 0;
/// `record::ACTION`: the tc hook's.
pub const HOOK_TC: u32 = 1;

/// The one element of `LB_TRACE`. Every criterion left at zero matches
/// anything; a packet is traced when it meets all the others.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TraceFilter {
    /// Source prefix (`src_len` leading bits count).
    pub src: Addr,
    /// Destination prefix (`dst_len` leading bits count).
    pub dst: Addr,
    /// [`TRACE_ON`] while a session runs; 0 (the datapath's one test when
    /// nobody traces) otherwise.
    pub enabled: u8,
    /// Source prefix length in bits; 0: any source.
    pub src_len: u8,
    /// Destination prefix length in bits; 0: any destination.
    pub dst_len: u8,
    /// `PROTO_TCP` or `PROTO_UDP`; 0: either.
    pub proto: u8,
    /// `FAMILY_V4` or `FAMILY_V6`; 0: either (a prefix sets it).
    pub family: u8,
    /// Always zero.
    pub _pad: u8,
    /// A port on either side, network order; 0: any port.
    pub port_be: u16,
}
abi_type!(TraceFilter, size = 40, align = 4);

impl TraceFilter {
    /// Whether the packet whose 5-tuple is `key` is traced.
    #[inline(always)]
    pub fn matches(&self, key: &FlowKey) -> bool {
        self.enabled == TRACE_ON
            && (self.family == 0 || self.family == key.family)
            && (self.proto == 0 || self.proto == key.proto)
            && (self.port_be == 0
                || self.port_be == key.src_port_be
                || self.port_be == key.dst_port_be)
            && within(&key.src, key.family, &self.src, self.src_len)
            && within(&key.dst, key.family, &self.dst, self.dst_len)
    }
}

/// Whether `addr` lies in `prefix`/`len` (stored already masked); a zero
/// length holds every address.
#[inline(always)]
fn within(addr: &Addr, family: u8, prefix: &Addr, len: u8) -> bool {
    len == 0 || masked(*addr, family, len) == *prefix
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::{FAMILY_V4, FAMILY_V6, PROTO_TCP, PROTO_UDP};

    fn key(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, proto: u8) -> FlowKey {
        FlowKey {
            src: Addr::from_v4_bytes(src),
            dst: Addr::from_v4_bytes(dst),
            src_port_be: sport.to_be(),
            dst_port_be: dport.to_be(),
            proto,
            family: FAMILY_V4,
            _pad: [0; 2],
        }
    }

    fn on() -> TraceFilter {
        TraceFilter { enabled: TRACE_ON, ..Default::default() }
    }

    const CLIENT: [u8; 4] = [10, 0, 0, 2];
    const VIP: [u8; 4] = [10, 0, 0, 100];

    #[test]
    fn a_disabled_filter_matches_nothing() {
        let k = key(CLIENT, 40000, VIP, 80, PROTO_TCP);
        assert!(!TraceFilter::default().matches(&k));
        assert!(on().matches(&k), "an enabled filter with no criteria matches everything");
    }

    #[test]
    fn a_port_matches_on_either_side() {
        let f = TraceFilter { port_be: 40000u16.to_be(), ..on() };
        assert!(f.matches(&key(CLIENT, 40000, VIP, 80, PROTO_TCP)));
        assert!(f.matches(&key(VIP, 80, CLIENT, 40000, PROTO_TCP)), "the reply");
        assert!(!f.matches(&key(CLIENT, 40001, VIP, 80, PROTO_TCP)));
    }

    #[test]
    fn the_protocol_and_family_must_agree_when_set() {
        let f = TraceFilter { proto: PROTO_UDP, ..on() };
        assert!(f.matches(&key(CLIENT, 1, VIP, 53, PROTO_UDP)));
        assert!(!f.matches(&key(CLIENT, 1, VIP, 53, PROTO_TCP)));
        let f = TraceFilter { family: FAMILY_V6, ..on() };
        assert!(!f.matches(&key(CLIENT, 1, VIP, 53, PROTO_UDP)));
    }

    #[test]
    fn prefixes_match_their_leading_bits() {
        let f = TraceFilter {
            src: Addr::from_v4_bytes([10, 0, 0, 0]),
            src_len: 24,
            dst: Addr::from_v4_bytes(VIP),
            dst_len: 32,
            family: FAMILY_V4,
            ..on()
        };
        assert!(f.matches(&key([10, 0, 0, 77], 5, VIP, 80, PROTO_TCP)));
        assert!(!f.matches(&key([10, 0, 1, 77], 5, VIP, 80, PROTO_TCP)), "outside the source /24");
        assert!(!f.matches(&key(CLIENT, 5, [10, 0, 0, 101], 80, PROTO_TCP)), "another VIP");
    }

    #[test]
    fn a_v6_prefix_matches_v6_packets() {
        let mut net = [0u8; 16];
        net[..2].copy_from_slice(&[0xfd, 0x00]);
        let mut host = net;
        host[15] = 7;
        let f =
            TraceFilter { src: Addr::from_v6_bytes(net), src_len: 16, family: FAMILY_V6, ..on() };
        let k = FlowKey {
            src: Addr::from_v6_bytes(host),
            dst: Addr::from_v6_bytes(host),
            src_port_be: 1,
            dst_port_be: 2,
            proto: PROTO_TCP,
            family: FAMILY_V6,
            _pad: [0; 2],
        };
        assert!(f.matches(&k));
        host[1] = 1;
        assert!(!f.matches(&FlowKey { src: Addr::from_v6_bytes(host), ..k }));
    }
}
