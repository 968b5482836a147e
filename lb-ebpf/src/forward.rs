//! Client -> VIP: pin the flow to a backend and send it there.

use aya_ebpf::programs::XdpContext;
use lb_common::{
    abi::{
        BACKEND_DOWN, DropReason, FlowKey, FlowValue, NAT_ESTABLISHED, NO_BACKEND, NatValue,
        PROTO_TCP, SERVICE_HASH_CLIENT_IP, ServiceRecord,
    },
    hash::{client_hash, flow_hash, slot_for},
    parse::{L4Packet, headers::TcpHdr},
};

use crate::{
    frame::Frame,
    maps::{LB_BACKENDS, LB_FLOWS, LB_MAGLEV, LB_NAT},
    rewrite::{self, Side},
    route, stats,
};

/// Forwards a packet addressed to the service `svc`.
///
/// An established flow keeps the backend recorded in the flow table, even if
/// the service's table has changed since; a new flow takes the backend of its
/// Maglev slot and is recorded, together with the NAT entry its replies need.
#[inline(always)]
pub fn to_backend(
    ctx: &XdpContext,
    frame: &Frame,
    pkt: &L4Packet,
    svc: &ServiceRecord,
) -> Result<u32, DropReason> {
    // SAFETY: the value is copied out at once; a concurrent update replaces
    // the element rather than writing into it.
    let pinned = unsafe { LB_FLOWS.get(pkt.key) }.map(|f| f.backend_id);
    // A flow pinned to a backend that is down is re-hashed like a new one:
    // UDP flows move on at once, and an established TCP flow gets a reset
    // from its new backend rather than silence until it times out.
    let live = pinned
        .and_then(|id| LB_BACKENDS.get(id).filter(|b| b.state != BACKEND_DOWN).map(|b| (id, *b)));
    let new_flow = live.is_none();
    let (backend_id, backend) = match live {
        Some(found) => found,
        None => {
            let id = pick(pkt, svc)?;
            (id, *LB_BACKENDS.get(id).ok_or(DropReason::BadTableEntry)?)
        }
    };
    if backend.family != pkt.key.family {
        return Err(DropReason::BadTableEntry);
    }
    rewrite::check_ttl(frame, pkt)?;

    let to = FlowKey {
        src: pkt.key.src,
        dst: backend.addr,
        src_port_be: pkt.key.src_port_be,
        dst_port_be: backend.port_be,
        proto: pkt.key.proto,
        family: pkt.key.family,
        _pad: [0; 2],
    };
    if new_flow {
        pin(pkt, &to, backend_id);
    }
    rewrite::endpoint(frame, pkt, Side::Dst, &backend.addr, backend.port_be)?;
    let action = route::forward(ctx, frame, &to)?;
    stats::forwarded(svc.id, backend_id, frame.len(), new_flow);
    Ok(action)
}

/// The backend of the flow's Maglev slot.
#[inline(always)]
fn pick(pkt: &L4Packet, svc: &ServiceRecord) -> Result<u32, DropReason> {
    let hash = if svc.flags & SERVICE_HASH_CLIENT_IP != 0 {
        client_hash(&pkt.key.src)
    } else {
        flow_hash(&pkt.key)
    };
    let slot = slot_for(hash, svc.table_size).ok_or(DropReason::NoBackend)?;
    let index = svc.table_base.checked_add(slot).ok_or(DropReason::BadTableEntry)?;
    match LB_MAGLEV.get(index) {
        None => Err(DropReason::BadTableEntry),
        Some(&NO_BACKEND) => Err(DropReason::NoBackend),
        Some(&id) => Ok(id),
    }
}

/// Records a new flow and the NAT entry its replies (backend -> client) match.
/// A full table is counted, not fatal: Maglev sends the next packet of the
/// flow to the same backend as long as the table is unchanged.
#[inline(always)]
fn pin(pkt: &L4Packet, to: &FlowKey, backend_id: u32) {
    let flow = FlowValue { backend_id };
    let reply = FlowKey {
        src: to.dst,
        dst: to.src,
        src_port_be: to.dst_port_be,
        dst_port_be: to.src_port_be,
        proto: to.proto,
        family: to.family,
        _pad: [0; 2],
    };
    // Only a flow opened by a SYN can be refused: a flow re-hashed away
    // from a dead backend mid-connection draws a reset from its new backend,
    // which says nothing about that backend's health.
    let syn =
        pkt.key.proto == PROTO_TCP && pkt.tcp_flags & (TcpHdr::SYN | TcpHdr::ACK) == TcpHdr::SYN;
    let nat = NatValue {
        vip: pkt.key.dst,
        vip_port_be: pkt.key.dst_port_be,
        flags: if syn { 0 } else { NAT_ESTABLISHED },
        _pad: 0,
        backend_id,
    };
    if LB_FLOWS.insert(pkt.key, flow, 0).is_err() || LB_NAT.insert(reply, nat, 0).is_err() {
        stats::exception(DropReason::FlowTableFull);
    }
}
