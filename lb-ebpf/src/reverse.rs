//! Backend -> client: give the reply the VIP back as its source, so the
//! client only ever sees the address it connected to.
//!
//! A reply finds its flow without a table of its own: `LB_REPLIES` maps the
//! backend's endpoint to the services it serves, and each gives a forward
//! key (client -> VIP) to look up in the flow table. The backend's first
//! answer to a SYN is watched too: a reset before anything else means it
//! refused a connection the balancer sent it.

use lb_common::{
    abi::{
        Addr, DropReason, EVENT_REFUSED, Endpoint, FLOW_CLOSING, FLOW_ESTABLISHED, FLOW_OPENING,
        FlowKey, FlowValue, MAX_REPLY_TARGETS, PROTO_TCP,
    },
    parse::{L4Packet, headers::TcpHdr},
};

use crate::{
    clock,
    hook::Hook,
    maps::{LB_BACKENDS, LB_FLOWS, LB_REPLIES},
    passive,
    rewrite::{self, Side},
    route,
};

/// A live flow found from its backend's side.
pub struct Found {
    /// Its entry in the flow table.
    pub entry: *mut FlowValue,
    /// The entry's value when found.
    pub flow: FlowValue,
    /// The VIP it was addressed to.
    pub vip: Endpoint,
    /// The clock when it was found.
    pub now: u32,
}

/// The live (unexpired) flow between the client `client`:`client_port_be`
/// and the backend `backend`, whichever of the backend's services it came
/// through. `None`: the packet belongs to no balanced flow (direct traffic
/// between the two, or a flow already over).
#[inline(always)]
pub fn find_flow(backend: &Endpoint, client: Addr, client_port_be: u16) -> Option<Found> {
    // SAFETY: the agent replaces elements whole (a hash-map update), so
    // this element stays as it is while the program runs; not copied, to
    // keep it off the 512-byte stack.
    let replies = unsafe { LB_REPLIES.get(backend) }?;
    // Only now: traffic from non-backends (most of what a gateway passes)
    // pays one small-map lookup and no clock read.
    let now = clock::now();
    for i in 0..MAX_REPLY_TARGETS {
        if i as u32 >= replies.count {
            break;
        }
        let Some(vip) = replies.vips.get(i) else { break };
        let key = FlowKey {
            src: client,
            dst: vip.addr,
            src_port_be: client_port_be,
            dst_port_be: vip.port_be,
            proto: backend.proto,
            family: backend.family,
            _pad: [0; 2],
        };
        let Some(entry) = LB_FLOWS.get_ptr_mut(key) else { continue };
        // SAFETY: a pointer to a live map value, read once.
        let flow = unsafe { *entry };
        if clock::expired(&flow, backend.proto, now) {
            continue;
        }
        // The flow must be pinned to this very backend: the same client
        // port may talk to another backend of the service directly.
        let pinned_here = LB_BACKENDS
            .get(flow.backend_id)
            .is_some_and(|b| b.addr == backend.addr && b.port_be == backend.port_be);
        if pinned_here {
            return Some(Found { entry, flow, vip: *vip, now });
        }
    }
    None
}

/// Forwards a packet from a backend to its client if it belongs to a
/// balanced flow; anything else passes to the kernel untouched.
#[inline(always)]
pub fn to_client<H: Hook>(h: &H, pkt: &L4Packet) -> Result<u32, DropReason> {
    let backend = Endpoint {
        addr: pkt.key.src,
        port_be: pkt.key.src_port_be,
        proto: pkt.key.proto,
        family: pkt.key.family,
    };
    let Some(found) = find_flow(&backend, pkt.key.dst, pkt.key.dst_port_be) else {
        return Ok(H::PASS);
    };
    rewrite::check_ttl(h, pkt)?;
    observe(pkt, &found);
    let vip = found.vip;
    rewrite::endpoint(h, pkt, Side::Src, &vip.addr, vip.port_be)?;
    let to = FlowKey { src: vip.addr, src_port_be: vip.port_be, ..pkt.key };
    route::forward(h, pkt, &to, None)
}

/// Moves the flow's state on for a reply: the first answer to a SYN is
/// counted (and a reset reported as a refusal), FIN and RST start closing,
/// and the entry's time is refreshed when stale.
#[inline(always)]
fn observe(pkt: &L4Packet, found: &Found) {
    let (old, now) = (found.flow, found.now);
    let mut new = FlowValue { last_seen: now, ..old };
    if pkt.key.proto == PROTO_TCP {
        let rst = pkt.tcp_flags & TcpHdr::RST != 0;
        if old.state == FLOW_OPENING {
            passive::answered(old.backend_id);
            if rst {
                passive::report(old.backend_id, EVENT_REFUSED);
            }
            new.state = FLOW_ESTABLISHED;
        }
        if rst || pkt.tcp_flags & TcpHdr::FIN != 0 {
            new.state = FLOW_CLOSING;
        }
    }
    if new.state != old.state || old.stale(now) {
        // SAFETY: a pointer to a live map value; a concurrent writer of the
        // same flow can only make the entry one refresh older or newer.
        unsafe { *found.entry = new };
    }
}
