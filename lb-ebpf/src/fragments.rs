//! Fragmented datagrams, balanced as Cilium does: the first fragment
//! carries the ports and is balanced as any packet (its TCP/UDP checksum
//! covers the whole datagram, so the incremental update holds for all of
//! it); the ports are remembered by the datagram's addresses, protocol and
//! identification, and each later fragment is balanced by them, only its IP
//! header rewritten. A later fragment that arrives before its first (or
//! after its entry was evicted) is passed on untouched and counted as
//! `fragment`: its datagram cannot be reassembled where it is going.

use lb_common::{
    abi::{FragKey, FragPorts},
    parse::{FRAG_LATER, Fragment, L4Packet},
};

use crate::maps::LB_FRAGS;

/// Remembers the ports of the first fragment `pkt`.
// Not inlined: called from the entry point, whose frame every branch's
// frame stacks on.
#[inline(never)]
pub fn first(pkt: &L4Packet) {
    let key = FragKey {
        src: pkt.key.src,
        dst: pkt.key.dst,
        id: pkt.frag_id,
        proto: pkt.key.proto,
        family: pkt.key.family,
        _pad: [0; 2],
    };
    let ports = FragPorts { src_port_be: pkt.key.src_port_be, dst_port_be: pkt.key.dst_port_be };
    // A full table evicts the oldest datagram; an insert never fails but
    // for memory, when the later fragments pass untouched.
    let _ = LB_FRAGS.insert(&key, &ports, 0);
}

/// Writes to `out` the packet the later fragment `f` is, with its first
/// fragment's ports; false if they are not known.
#[inline(never)]
pub fn later(f: &Fragment, out: &mut L4Packet) -> bool {
    let key = FragKey {
        src: f.key.src,
        dst: f.key.dst,
        id: f.id,
        proto: f.key.proto,
        family: f.key.family,
        _pad: [0; 2],
    };
    // SAFETY: copied out at once.
    let Some(ports) = (unsafe { LB_FRAGS.get(&key) }).copied() else { return false };
    *out = L4Packet {
        l3_off: f.l3_off,
        l4_off: f.payload_off,
        key: lb_common::abi::FlowKey {
            src_port_be: ports.src_port_be,
            dst_port_be: ports.dst_port_be,
            ..f.key
        },
        tcp_flags: 0,
        fragment: FRAG_LATER,
        frag_id: f.id,
    };
    true
}
