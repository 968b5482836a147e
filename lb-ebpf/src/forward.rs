//! Client -> VIP: pin the flow to a backend and send it there.

use lb_common::{
    abi::{
        Addr, BACKEND_DOWN, BackendRecord, DropReason, FLOW_CLOSING, FLOW_ESTABLISHED, FLOW_KEPT,
        FLOW_MAGLEV, FLOW_OPENING, FLOW_REHASH, FLOW_REUSED_PORT, FLOW_SYN_AGAIN, FORWARD_NAT,
        FlowKey, FlowValue, NO_BACKEND, PROTO_TCP, SERVICE_HASH_CLIENT_IP, ServiceRecord,
    },
    hash::{client_hash, flow_hash, slot_for},
    icmp::Answer,
    parse::{L4Packet, headers::TcpHdr},
};

use crate::{
    answer, challenge, clock, datapath, dsr, flows,
    hook::Hook,
    maps::{LB_BACKENDS, LB_HAIRPIN, LB_MAGLEV},
    passive,
    rewrite::{self, Side},
    route, sources, stats, trace,
};

/// Forwards a packet addressed to the service `svc`.
///
/// A TCP SYN is a new connection, whatever the table holds for its 5-tuple
/// (clients reuse ports): it takes the service's current Maglev choice and
/// re-pins the flow, so drains and removals hold for reused ports too and a
/// refusal is seen on every connection. Any other packet of a live flow
/// keeps the backend recorded, even if the service's table has changed; a
/// packet of no live flow takes the Maglev choice and pins it.
// Not inlined: a function of its own has a stack frame of its own,
// and the datapath's branches together would not fit one 512-byte frame.
#[inline(never)]
pub fn to_backend<H: Hook>(h: &H, pkt: &L4Packet, svc: &ServiceRecord) -> u32 {
    let Some(pkt) = pkt.checked() else {
        return datapath::settle::<H>(Err(DropReason::MalformedIp));
    };
    datapath::settle::<H>(try_to_backend(h, pkt, svc))
}

#[inline(always)]
fn try_to_backend<H: Hook>(h: &H, pkt: &L4Packet, svc: &ServiceRecord) -> Result<u32, DropReason> {
    rewrite::check_udp6(h, pkt)?;
    let vip = pkt.key.dst;
    // Before the flow is touched: a packet that never reaches a backend
    // must not count as a connection it was sent.
    if rewrite::ttl_expires(h, pkt.l3_off, pkt.key.family)? {
        return Ok(answer::later::<H>(Answer::TimeExceeded, &vip));
    }
    let now = clock::now();
    let tcp = pkt.key.proto == PROTO_TCP;
    let syn = tcp && pkt.tcp_flags & (TcpHdr::SYN | TcpHdr::ACK) == TcpHdr::SYN;
    let closing = tcp && pkt.tcp_flags & (TcpHdr::FIN | TcpHdr::RST) != 0;
    // Answered flows first, then unanswered ones (see `flows`).
    let entry = flows::find(&pkt.key, now);
    // SAFETY: null, or a pointer to a live map value, read once.
    let current = (!entry.is_null())
        .then(|| unsafe { *entry })
        .filter(|f| !clock::expired(f, pkt.key.proto, now));
    // A flow pinned to a backend that is down is re-hashed like a new one:
    // UDP flows move on at once, and an established TCP flow gets a reset
    // from its new backend rather than silence until it times out.
    let kept = current.filter(|_| !syn).and_then(|f| live(f.backend_id).map(|b| (f, b)));
    let (backend_id, backend, new_flow) = match kept {
        Some((flow, backend)) => {
            let dsr = svc.forwarding != FORWARD_NAT;
            // Read only for a TCP flow waiting to be promoted (see `flows`).
            let ack = if tcp && !dsr && flows::found_in() == flows::IN_PENDING {
                tcp_number(h, pkt, TcpHdr::ACK_OFF)?
            } else {
                0
            };
            refresh(entry, flow, (closing, tcp), now, (dsr, ack));
            if H::TRACE {
                trace::flow(FLOW_KEPT, flow.backend_id, flow.backend_id, 0);
            }
            (flow.backend_id, backend, false)
        }
        _ => {
            // Flood mode: a segment of no flow without SYN or RST (those
            // met `challenge::check`) from a source never verified, as a
            // spoofed ACK flood sends, would be picked up as a flow.
            if tcp
                && entry.is_null()
                && !challenge::checks(pkt.tcp_flags)
                && flows::challenging()
                && challenge::verified(&pkt.key.src, pkt.key.family) == challenge::NO
            {
                return Err(DropReason::NoFlowUnverified);
            }
            // Read here, for SYNs only: the parser's result stays small, as
            // the BPF stack must.
            let seq = if syn { tcp_number(h, pkt, TcpHdr::SEQ_OFF)? } else { 0 };
            let waiting = current.filter(|f| syn && f.state == FLOW_OPENING && f.syn_seq == seq);
            // Only new flows are limited: not a flow re-hashed off a
            // backend that went down, nor a retransmitted SYN (same
            // sequence number) of a connection already waiting.
            let new = (syn || current.is_none()) && waiting.is_none();
            if new
                && svc.limit_cost_ns != 0
                && sources::within_limit(&pkt.key.src, pkt.key.family, svc) == sources::NO
            {
                stats::rate_limited(svc.id);
                return Err(DropReason::RateLimited);
            }
            let (id, slot) = pick(&pkt.key, svc)?;
            let backend = *LB_BACKENDS.get(id).ok_or(DropReason::BadTableEntry)?;
            // A retransmitted SYN of a connection already waiting on this
            // backend is the same connection; a new one on a reused port
            // has another sequence number.
            let again = waiting.is_some_and(|f| f.backend_id == id);
            if H::TRACE {
                let previous = current.map_or(NO_BACKEND, |f| f.backend_id);
                let why = match current {
                    _ if again => FLOW_SYN_AGAIN,
                    Some(_) if syn => FLOW_REUSED_PORT,
                    Some(_) => FLOW_REHASH,
                    None => FLOW_MAGLEV,
                };
                trace::flow(why, id, previous, slot);
            }
            // A UDP flow is `opening` until its first reply (see `flows`).
            let state = if syn || !tcp {
                FLOW_OPENING
            } else if closing {
                FLOW_CLOSING
            } else {
                FLOW_ESTABLISHED
            };
            let flow =
                FlowValue { backend_id: id, last_seen: now, syn_seq: seq, state, _pad: [0; 3] };
            flows::pin(&pkt.key, entry, &flow);
            if syn && !again {
                passive::opened(id);
            }
            (id, backend, !again)
        }
    };
    if backend.family != pkt.key.family {
        return Err(DropReason::BadTableEntry);
    }
    if svc.forwarding != FORWARD_NAT {
        let target = dsr::Target { id: backend_id, new_flow: u32::from(new_flow), now };
        return Ok(dsr::later::<H>(target));
    }
    let hairpin = backend.addr == pkt.key.src;
    let src = if hairpin { hairpin_source(h, pkt, &backend)? } else { pkt.key.src };
    let to = FlowKey { src, dst: backend.addr, dst_port_be: backend.port_be, ..pkt.key };
    let route = if hairpin {
        route::back_to_sender(h)?
    } else {
        let cache = Some(route::Cached { backend_id, now });
        route::lookup(h, pkt.l3_off, rewrite::headers(h, pkt)?, 0, &to, cache)?
    };
    if let Some(mtu) = route.too_big()
        && !rewrite::may_fragment(h, pkt)?
    {
        return Ok(answer::later::<H>(Answer::TooBig { mtu }, &vip));
    }
    rewrite::endpoint(h, pkt, Side::Dst, &backend.addr, backend.port_be, true)?;
    if hairpin {
        rewrite::endpoint(h, pkt, Side::Src, &src, pkt.key.src_port_be, false)?;
    }
    let action = route::send(h, &route)?;
    stats::forwarded(svc.id, backend_id, h.len(), new_flow);
    Ok(action)
}

/// The balancer address a hairpin flow's packets reach `backend` from: a
/// backend that called a VIP and was picked for itself would drop a packet
/// from its own address, so, as IPVS and kube-proxy do, the caller is
/// replaced by this host's address towards it (and recorded, so replies
/// to it are looked for among hairpin flows).
#[inline(always)]
fn hairpin_source<H: Hook>(
    h: &H,
    pkt: &L4Packet,
    backend: &BackendRecord,
) -> Result<Addr, DropReason> {
    let towards = FlowKey { dst: backend.addr, dst_port_be: backend.port_be, ..pkt.key };
    let src = route::source_towards(h, &towards).ok_or(DropReason::HairpinNoSource)?;
    // SAFETY: only tested for presence.
    if unsafe { LB_HAIRPIN.get(&src) }.is_none() {
        // A full map loses only the record; replies then pass untouched.
        let _ = LB_HAIRPIN.insert(&src, &1, 0);
    }
    Ok(src)
}

/// The sequence (`TcpHdr::SEQ_OFF`) or acknowledgement (`ACK_OFF`) number
/// of a TCP segment.
#[inline(always)]
fn tcp_number<H: Hook>(h: &H, pkt: &L4Packet, at: usize) -> Result<u32, DropReason> {
    let n = h.load::<4>(pkt.l4_off + at).ok_or(DropReason::TruncatedL4)?;
    Ok(u32::from_be_bytes(n))
}

/// The record of backend `id` if it may keep its flows (it is not down).
#[inline(always)]
fn live(id: u32) -> Option<BackendRecord> {
    LB_BACKENDS.get(id).filter(|b| b.state != BACKEND_DOWN).copied()
}

/// Notes a packet of a kept flow: FIN or RST starts closing, and the
/// entry's time is rewritten only when stale, so a busy flow does not
/// write its entry on every packet.
///
/// With direct server return (`dsr`) the backend's answer never passes
/// here: the client's first packet after its SYN (the handshake's ACK), or
/// its second UDP datagram, is what shows the backend answered, and
/// establishes the flow.
///
/// An unanswered flow (in `LB_PENDING`) moves to the answered flows at the
/// client's first packet once the flow is established that, for TCP in NAT
/// mode, acknowledges the backend's SYN-ACK (`ack`, see `flows`): a spoofed
/// source never saw it (the backend answers a spoofed SYN too: its answer
/// alone proves nothing).
#[inline(always)]
fn refresh(
    entry: *mut FlowValue,
    flow: FlowValue,
    (closing, tcp): (bool, bool),
    now: u32,
    (dsr, ack): (bool, u32),
) {
    let answered = dsr && flow.state == FLOW_OPENING && !closing;
    if answered && tcp {
        passive::answered(flow.backend_id);
    }
    let state = if closing {
        FLOW_CLOSING
    } else if answered {
        FLOW_ESTABLISHED
    } else {
        flow.state
    };
    let shown = !tcp || dsr || flows::acknowledged(flow.syn_seq, ack);
    if state == FLOW_ESTABLISHED && shown && flows::found_in() == flows::IN_PENDING {
        flows::promote(entry, u32::from(state), now, tcp && !dsr);
        return;
    }
    if state != flow.state || flow.stale(now) {
        // SAFETY: a pointer to a live map value; a concurrent writer of the
        // same flow can only make the entry one refresh older or newer.
        unsafe { *entry = FlowValue { state, last_seen: now, ..flow } };
    }
}

/// The backend of the Maglev slot of the flow `key` (client -> VIP), and
/// the slot.
#[inline(always)]
pub fn pick(key: &FlowKey, svc: &ServiceRecord) -> Result<(u32, u32), DropReason> {
    let hash = if svc.flags & SERVICE_HASH_CLIENT_IP != 0 {
        client_hash(&key.src)
    } else {
        flow_hash(key)
    };
    let slot = slot_for(hash, svc.table_size).ok_or(DropReason::NoBackend)?;
    let index = svc.table_base.checked_add(slot).ok_or(DropReason::BadTableEntry)?;
    match LB_MAGLEV.get(index) {
        None => Err(DropReason::BadTableEntry),
        Some(&NO_BACKEND) => Err(DropReason::NoBackend),
        Some(&id) => Ok((id, slot)),
    }
}
