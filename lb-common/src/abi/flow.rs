use core::net::SocketAddr;

use super::{Addr, Endpoint, abi_type, family_of};

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

/// Value of the flow table: the backend a flow is pinned to, where its
/// TCP conversation stands, and when it was last seen.
///
/// There is one entry per flow and no separate reply table: a reply finds
/// its flow through [`Replies`] (the backend's endpoint gives the VIP, and
/// the client's address and port complete the forward key), so the state
/// of the two directions cannot be evicted apart.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowValue {
    /// Backend id the flow forwards to.
    pub backend_id: u32,
    /// Coarse monotonic time of the last packet seen, in [`ticks`]; refreshed
    /// at most every [`REFRESH_TICKS`] so a busy flow does not write its
    /// entry on every packet.
    pub last_seen: u32,
    /// While the flow is opening: the sequence number of the SYN that
    /// opened it (0 if none), so a SYN with the same one is a
    /// retransmission, not a new connection. Once the backend's SYN-ACK
    /// passed (NAT mode): that SYN-ACK's sequence number + 1, which the
    /// client's ACK must acknowledge before a pending flow is promoted (0: a
    /// flow picked up mid-connection, promoted by its backend's answer).
    pub syn_seq: u32,
    /// `FLOW_*`.
    pub state: u8,
    /// Always zero.
    pub _pad: [u8; 3],
}
abi_type!(FlowValue, size = 16, align = 4);

/// `FlowValue::state`: a TCP SYN was forwarded and the backend has not
/// answered yet. A reset now means the backend refused the connection.
pub const FLOW_OPENING: u8 = 0;
/// `FlowValue::state`: the backend answered (or the flow is UDP, or was
/// picked up mid-connection).
pub const FLOW_ESTABLISHED: u8 = 1;
/// `FlowValue::state`: a FIN or RST was seen; the flow expires after the
/// short closing timeout.
pub const FLOW_CLOSING: u8 = 2;

/// Bits of nanoseconds dropped to make a tick: a tick is 2^20 ns, about
/// 1.05 ms, and a `u32` of ticks wraps after about 52 days (ages are taken
/// with wrapping subtraction, so only idle times below half that are
/// meaningful; every timeout is far below).
pub const TICK_SHIFT: u32 = 20;
/// A flow's `last_seen` is rewritten only when it is at least this old
/// (about 1.07 s): expiry is that coarse, and a flow's entry is written at
/// most about once a second however many packets it carries.
pub const REFRESH_TICKS: u32 = 1 << 10;

/// Coarse monotonic nanoseconds (`bpf_ktime_get_coarse_ns`,
/// `CLOCK_MONOTONIC_COARSE`) as ticks.
pub const fn ticks(ns: u64) -> u32 {
    (ns >> TICK_SHIFT) as u32
}

/// Idle timeouts of the flow table, in ticks: the agent writes them to the
/// settings map from the config, the datapath and the agent's flow sweep
/// both judge expiry with [`FlowValue::expired`].
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowTimeouts {
    /// An established TCP flow.
    pub tcp: u32,
    /// A TCP flow after FIN or RST, or whose SYN was never answered.
    pub tcp_closing: u32,
    /// A UDP flow.
    pub udp: u32,
    /// [`FLOOD_ON`] while the agent has flood mode on (new flows arrive
    /// faster than `flows.flood_threshold`), with [`FLOOD_CHALLENGE`] if
    /// SYNs from sources not verified are to be challenged then
    /// (`flows.syn_challenge`); else 0.
    pub flood: u32,
}

/// `FlowTimeouts::flood`: flood mode is on. The datapath then adopts a
/// backend's SYN-ACK that matches no flow if the service's Maglev choice
/// for its client is that backend (see `lb-ebpf`'s `flows::adopt`): the
/// unanswered table turns over too fast under a flood to be sure to hold
/// every legitimate SYN until its answer. And a UDP flow's first reply no
/// longer promotes it: the client's next datagram does.
pub const FLOOD_ON: u32 = 1;
/// `FlowTimeouts::flood`, with [`FLOOD_ON`]: a TCP SYN from a source not
/// verified is answered with a SYN challenge (`crate::challenge`) rather
/// than forwarded.
pub const FLOOD_CHALLENGE: u32 = 2;
abi_type!(FlowTimeouts, size = 16, align = 4);

/// Ticks in `secs` seconds.
const fn secs(secs: u64) -> u32 {
    ticks(secs * 1_000_000_000)
}

impl FlowTimeouts {
    /// The defaults: established TCP 300 s, closing TCP 10 s, UDP 30 s.
    pub const DEFAULT: FlowTimeouts =
        FlowTimeouts { tcp: secs(300), tcp_closing: secs(10), udp: secs(30), flood: 0 };

    /// These timeouts, or the defaults if none were written yet (a zero
    /// TCP timeout, which the config never allows).
    #[inline(always)]
    pub const fn or_defaults(self) -> FlowTimeouts {
        if self.tcp == 0 { Self::DEFAULT } else { self }
    }
}

impl FlowValue {
    /// The idle time after which this flow, of protocol `proto`, is over.
    #[inline(always)]
    pub const fn idle_limit(&self, proto: u8, t: &FlowTimeouts) -> u32 {
        if proto != super::PROTO_TCP {
            t.udp
        } else if self.state == FLOW_ESTABLISHED {
            t.tcp
        } else {
            t.tcp_closing
        }
    }

    /// Whether the flow has been idle longer than its timeout at `now`
    /// (ticks). An expired flow is gone: its next packet is a new flow, and
    /// replies no longer match it. `last_seen` lags the last packet by up
    /// to [`REFRESH_TICKS`], which is added to the limit: a flow expires
    /// between its timeout and about a second after it, never before.
    #[inline(always)]
    pub const fn expired(&self, proto: u8, now: u32, t: &FlowTimeouts) -> bool {
        now.wrapping_sub(self.last_seen) > self.idle_limit(proto, t).saturating_add(REFRESH_TICKS)
    }

    /// Whether `last_seen` is old enough to be rewritten at `now`.
    #[inline(always)]
    pub const fn stale(&self, now: u32) -> bool {
        now.wrapping_sub(self.last_seen) >= REFRESH_TICKS
    }

    /// Whether the flow was seen within the refresh period: then it cannot
    /// have expired, whatever the timeouts (see [`FlowValue::expired`]).
    #[inline(always)]
    pub const fn fresh(&self, now: u32) -> bool {
        !self.stale(now)
    }
}

/// Most services one backend endpoint (address, port, protocol) may serve
/// in the datapath: a reply tries each of them to find its flow.
pub const MAX_REPLY_TARGETS: usize = 4;

/// Value of the replies map, keyed by a backend's [`Endpoint`]: the VIP
/// endpoints of the services it serves, so a packet from it can find the
/// flow it answers (client -> one of these VIPs, pinned to a backend with
/// this endpoint).
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Replies {
    /// The first `count` are valid.
    pub vips: [Endpoint; MAX_REPLY_TARGETS],
    /// How many are valid.
    pub count: u32,
}
abi_type!(Replies, size = 84, align = 4);

/// Per-backend count of TCP connections the datapath opened towards the
/// backend (SYNs forwarded on flows not already waiting for it) and of
/// first answers from it (SYN-ACK or RST). The agent reads them through a
/// memory mapping to find backends that stopped answering SYNs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SynCounters {
    /// Connections opened towards the backend.
    pub opened: u64,
    /// Connections the backend answered.
    pub answered: u64,
}
abi_type!(SynCounters, size = 16, align = 8);

/// `PassiveEvent::kind`: a backend reset a TCP connection the balancer
/// forwarded before answering it at all (its port is closed).
pub const EVENT_REFUSED: u32 = 1;
/// `PassiveEvent::kind`: an ICMP destination unreachable (port, host, net,
/// protocol or administratively prohibited) came back about a flow the
/// balancer forwarded to the backend.
pub const EVENT_UNREACHABLE: u32 = 2;

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

/// Key of the fragment table: one fragmented datagram.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKey {
    /// Source address.
    pub src: Addr,
    /// Destination address.
    pub dst: Addr,
    /// The datagram's identification.
    pub id: u32,
    /// `PROTO_TCP` or `PROTO_UDP`.
    pub proto: u8,
    /// `FAMILY_V4` or `FAMILY_V6`.
    pub family: u8,
    /// Always zero: keys are hashed byte for byte.
    pub _pad: [u8; 2],
}
abi_type!(FragKey, size = 40, align = 4);

/// Value of the fragment table: the ports the datagram's first fragment
/// carried, which its later fragments are balanced by.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragPorts {
    /// Source port, network order.
    pub src_port_be: u16,
    /// Destination port, network order.
    pub dst_port_be: u16,
}
abi_type!(FragPorts, size = 4, align = 2);
