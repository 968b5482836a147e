//! Backend -> client: give the reply the VIP back as its source, so the
//! client only ever sees the address it connected to. The first answer of a
//! backend to a TCP flow is also watched: a reset before anything else means
//! the backend refused a connection the balancer sent it.

use aya_ebpf::programs::XdpContext;
use lb_common::{
    abi::{DropReason, EVENT_REFUSED, FlowKey, NAT_ESTABLISHED, NatValue, PROTO_TCP, PassiveEvent},
    parse::{L4Packet, headers::TcpHdr},
};

use crate::{
    frame::Frame,
    maps::{LB_EVENTS, LB_NAT},
    rewrite::{self, Side},
    route,
};

/// Forwards a reply that matched the NAT entry `nat`.
#[inline(always)]
pub fn to_client(
    ctx: &XdpContext,
    frame: &Frame,
    pkt: &L4Packet,
    nat: &NatValue,
) -> Result<u32, DropReason> {
    if pkt.key.proto == PROTO_TCP && nat.flags & NAT_ESTABLISHED == 0 {
        first_answer(pkt, nat);
    }
    rewrite::check_ttl(frame, pkt)?;
    rewrite::endpoint(frame, pkt, Side::Src, &nat.vip, nat.vip_port_be)?;
    let to = FlowKey { src: nat.vip, src_port_be: nat.vip_port_be, ..pkt.key };
    route::forward(ctx, frame, &to)
}

/// A backend's first answer on a flow: a reset is reported to the agent (a
/// full ring buffer only loses the signal; probes still catch the failure),
/// anything else marks the flow answered so later resets are not refusals.
#[inline(always)]
fn first_answer(pkt: &L4Packet, nat: &NatValue) {
    if pkt.tcp_flags & TcpHdr::RST != 0 {
        let event = PassiveEvent { backend_id: nat.backend_id, kind: EVENT_REFUSED };
        let _ = LB_EVENTS.output::<PassiveEvent>(&event, 0);
    } else if let Some(v) = LB_NAT.get_ptr_mut(pkt.key) {
        // SAFETY: a pointer to a live map value; setting a flag bit races
        // only with other writers of the same bit.
        unsafe { (*v).flags |= NAT_ESTABLISHED };
    }
}
