//! Backend -> client: give the reply the VIP back as its source, so the
//! client only ever sees the address it connected to.
//!
//! A reply finds its flow without a table of its own: `LB_REPLIES` maps the
//! backend's endpoint to the services it serves, and each gives a forward
//! key (client -> VIP) to look up in the flow table. The backend's first
//! answer to a SYN is watched too: a reset before anything else means it
//! refused a connection the balancer sent it.
//!
//! Only a live flow's packets are replies, and a tuple a balanced flow held
//! is given up as soon as it is used directly: a SYN from a backend's
//! endpoint, or a TCP SYN or UDP datagram from the client straight to the
//! backend (the backend sees both as one conversation; the newest wins).
//! So direct traffic between clients and backends is never rewritten,
//! whatever ports it reuses.
//!
//! A hairpin flow (a backend calling a VIP and picked for itself) reached
//! the backend from a balancer address (see `forward`); its replies go to
//! that address and are turned back to the backend, from the VIP.

use lb_common::{
    abi::{
        Addr, DropReason, EVENT_REFUSED, Endpoint, FLOW_CLOSING, FLOW_ESTABLISHED, FLOW_OPENING,
        FlowKey, FlowValue, MAX_REPLY_TARGETS, PROTO_TCP,
    },
    icmp::Answer,
    parse::{L4Packet, headers::TcpHdr},
};

use crate::{
    answer, clock, datapath, flows,
    hook::Hook,
    maps::{LB_BACKENDS, LB_FLOWS, LB_HAIRPIN, LB_PENDING, LB_REPLIES, LB_SCRATCH},
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
    /// Whether it is still unanswered (in `LB_PENDING`, see `flows`).
    pub pending: bool,
}

impl Default for Found {
    #[inline(always)]
    fn default() -> Self {
        Self {
            entry: core::ptr::null_mut(),
            flow: FlowValue::default(),
            vip: Endpoint::default(),
            pending: false,
        }
    }
}

impl Found {
    /// The flow's key, its client being `client`:`port_be`.
    #[inline(always)]
    fn key(&self, client: &Addr, port_be: u16) -> FlowKey {
        FlowKey {
            src: *client,
            dst: self.vip.addr,
            src_port_be: port_be,
            dst_port_be: self.vip.port_be,
            proto: self.vip.proto,
            family: self.vip.family,
            _pad: [0; 2],
        }
    }
}

/// Finds the live (unexpired) flow between the client
/// `client`:`client_port_be` and the backend `backend`, whichever of the
/// backend's services it came through, and writes it to `out`. False: the
/// packet belongs to no balanced flow (direct traffic between the two, or
/// a flow already over).
#[inline(always)]
pub fn find_flow(backend: &Endpoint, client: &Addr, client_port_be: u16, out: &mut Found) -> bool {
    // SAFETY: the agent replaces elements whole (a hash-map update), so
    // this element stays as it is while the program runs; not copied, to
    // keep it off the 512-byte stack.
    let Some(replies) = (unsafe { LB_REPLIES.get(backend) }) else { return false };
    // Only now: traffic from non-backends (most of what a gateway passes)
    // pays one small-map lookup and no clock read.
    let now = clock::now();
    for i in 0..MAX_REPLY_TARGETS {
        if i as u32 >= replies.count {
            break;
        }
        let Some(vip) = replies.vips.get(i) else { break };
        let key = FlowKey {
            src: *client,
            dst: vip.addr,
            src_port_be: client_port_be,
            dst_port_be: vip.port_be,
            proto: backend.proto,
            family: backend.family,
            _pad: [0; 2],
        };
        // Answered flows first, then unanswered ones (see `flows`).
        let entry = flows::find(&key, now);
        if entry.is_null() {
            continue;
        }
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
            *out =
                Found { entry, flow, vip: *vip, pending: flows::found_in() == flows::IN_PENDING };
            return true;
        }
    }
    false
}

/// What [`find_reply`] found.
pub const NOT_A_REPLY: u32 = 0;
/// A reply of a balanced flow.
pub const REPLY: u32 = 1;
/// A reply of a hairpin flow, to a balancer address.
pub const HAIRPIN_REPLY: u32 = 2;

/// Whether `pkt`, from a backend's endpoint, is a reply of a balanced flow;
/// if so the flow's state moves on and its VIP is left in the scratch map
/// for [`to_client`]. A SYN from the backend opens a connection of its
/// own: the flow on its tuple ends, and the packet is no reply.
// Not inlined, as `to_client` is not: each is a frame of its own called
// from the datapath, rather than one on top of the other.
#[inline(never)]
pub fn find_reply<H: Hook>(h: &H, pkt: &L4Packet) -> u32 {
    let Some(s) = LB_SCRATCH.get_ptr_mut(0) else { return NOT_A_REPLY };
    let mut found = Found::default();
    let found = &mut found;
    let backend = Endpoint {
        addr: pkt.key.src,
        port_be: pkt.key.src_port_be,
        proto: pkt.key.proto,
        family: pkt.key.family,
    };
    // SAFETY: only tested for presence. Most of what a gateway passes is
    // from no backend: one small-map lookup, and no more.
    if unsafe { LB_REPLIES.get(&backend) }.is_none() {
        return NOT_A_REPLY;
    }
    let kind = if find_flow(&backend, &pkt.key.dst, pkt.key.dst_port_be, found) {
        REPLY
    } else if hairpin_flow(&backend, pkt, found) {
        HAIRPIN_REPLY
    } else {
        return NOT_A_REPLY;
    };
    if opens(pkt) {
        let client = if kind == HAIRPIN_REPLY { backend.addr } else { pkt.key.dst };
        forget(found, &found.key(&client, pkt.key.dst_port_be));
        return NOT_A_REPLY;
    }
    // A SYN-ACK's sequence number, which the client's ACK must acknowledge
    // before its flow counts as answered (see `flows`).
    let isn = if answers_syn(pkt) {
        h.load::<4>(pkt.l4_off + TcpHdr::SEQ_OFF).map_or(0, u32::from_be_bytes)
    } else {
        0
    };
    observe(pkt, found, isn);
    // SAFETY: this CPU's scratch element; its `reply_vip` part is written
    // here and read by `to_client` in the same run.
    unsafe { *core::ptr::addr_of_mut!((*s).reply_vip) = found.vip };
    kind
}

/// Forwards a reply (`kind`, from [`find_reply`]) from a backend to its
/// client.
#[inline(never)]
pub fn to_client<H: Hook>(h: &H, pkt: &L4Packet, kind: u32) -> u32 {
    let Some(pkt) = pkt.checked() else {
        return datapath::settle::<H>(Err(DropReason::MalformedIp));
    };
    datapath::settle::<H>(try_to_client(h, pkt, kind == HAIRPIN_REPLY))
}

#[inline(always)]
fn try_to_client<H: Hook>(h: &H, pkt: &L4Packet, hairpin: bool) -> Result<u32, DropReason> {
    let s = LB_SCRATCH.get_ptr(0).ok_or(DropReason::BadTableEntry)?;
    // SAFETY: this CPU's scratch element, written by `find_reply`.
    let vip = unsafe { *core::ptr::addr_of!((*s).reply_vip) };
    let client = if hairpin { pkt.key.src } else { pkt.key.dst };
    rewrite::check_udp6(h, pkt)?;
    if rewrite::ttl_expires(h, pkt.l3_off, pkt.key.family)? {
        return Ok(answer::later::<H>(Answer::TimeExceeded, &vip.addr));
    }
    let to = FlowKey { src: vip.addr, src_port_be: vip.port_be, dst: client, ..pkt.key };
    let route = if hairpin {
        route::back_to_sender(h)?
    } else {
        route::lookup(h, pkt.l3_off, rewrite::headers(h, pkt)?, 0, &to, None)?
    };
    if let Some(mtu) = route.too_big()
        && !rewrite::may_fragment(h, pkt)?
    {
        return Ok(answer::later::<H>(Answer::TooBig { mtu }, &vip.addr));
    }
    rewrite::endpoint(h, pkt, Side::Src, &vip.addr, vip.port_be, true)?;
    if hairpin {
        rewrite::endpoint(h, pkt, Side::Dst, &client, pkt.key.dst_port_be, false)?;
    }
    route::send(h, &route)
}

/// A packet to a backend's endpoint that did not come through a VIP
/// (direct traffic): a TCP SYN or a UDP datagram on a tuple a balanced flow
/// held ends that flow, so the backend's answers are not given the VIP.
#[inline(never)]
pub fn direct(pkt: &L4Packet) {
    if pkt.key.proto == PROTO_TCP && !opens(pkt) {
        return;
    }
    let backend = Endpoint {
        addr: pkt.key.dst,
        port_be: pkt.key.dst_port_be,
        proto: pkt.key.proto,
        family: pkt.key.family,
    };
    let mut found = Found::default();
    if find_flow(&backend, &pkt.key.src, pkt.key.src_port_be, &mut found) {
        forget(&found, &found.key(&pkt.key.src, pkt.key.src_port_be));
    }
}

/// Ends the flow `found` (its key `key`), in whichever table holds it.
#[inline(always)]
fn forget(found: &Found, key: &FlowKey) {
    let _ = if found.pending { LB_PENDING.remove(key) } else { LB_FLOWS.remove(key) };
}

/// Whether `pkt` answers a TCP SYN (a SYN-ACK).
#[inline(always)]
pub fn answers_syn(pkt: &L4Packet) -> bool {
    let both = TcpHdr::SYN | TcpHdr::ACK;
    pkt.key.proto == PROTO_TCP && pkt.tcp_flags & both == both
}

/// Whether `pkt` opens a TCP connection (a SYN without ACK).
#[inline(always)]
fn opens(pkt: &L4Packet) -> bool {
    pkt.key.proto == PROTO_TCP && pkt.tcp_flags & (TcpHdr::SYN | TcpHdr::ACK) == TcpHdr::SYN
}

/// The hairpin flow a reply from `backend` to a balancer address belongs
/// to: the backend called a VIP from the reply's destination port.
#[inline(always)]
fn hairpin_flow(backend: &Endpoint, pkt: &L4Packet, out: &mut Found) -> bool {
    // SAFETY: only tested for presence.
    unsafe { LB_HAIRPIN.get(&pkt.key.dst) }.is_some()
        && find_flow(backend, &pkt.key.src, pkt.key.dst_port_be, out)
}

/// Moves the flow's state on for a reply: the first answer to a SYN is
/// counted (and a reset reported as a refusal), a UDP flow's first reply
/// establishes it, FIN and RST start closing, and the entry's time is
/// refreshed when stale.
///
/// A pending UDP flow's first reply moves it to the answered flows, except
/// in flood mode: then, as TCP flows always do (see `forward`), it waits
/// for the client's next datagram, which a spoofed source does not send.
#[inline(always)]
fn observe(pkt: &L4Packet, found: &Found, isn: u32) {
    let (old, now) = (found.flow, clock::now());
    let mut new = FlowValue { last_seen: now, ..old };
    let tcp = pkt.key.proto == PROTO_TCP;
    let rst = tcp && pkt.tcp_flags & TcpHdr::RST != 0;
    if tcp {
        if old.state == FLOW_OPENING {
            passive::answered(old.backend_id);
            if rst {
                passive::report(old.backend_id, EVENT_REFUSED);
            }
            new.state = FLOW_ESTABLISHED;
            // What the client's ACK must acknowledge (`flows::acknowledged`).
            new.syn_seq = flows::expected_ack(isn);
        }
        if rst || pkt.tcp_flags & TcpHdr::FIN != 0 {
            new.state = FLOW_CLOSING;
        }
    } else {
        new.state = FLOW_ESTABLISHED;
    }
    // A TCP flow picked up mid-connection (no SYN seen) is answered when
    // its backend sends anything but a reset or a SYN-ACK: only a backend
    // that holds the connection does.
    let picked_up = tcp
        && old.state == FLOW_ESTABLISHED
        && old.syn_seq == 0
        && !rst
        && pkt.tcp_flags & TcpHdr::SYN == 0;
    if found.pending && ((!tcp && !flows::flood_mode()) || picked_up) {
        flows::promote(found.entry, u32::from(new.state), now, false);
    } else if new.state != old.state || old.stale(now) {
        // SAFETY: a pointer to a live map value; a concurrent writer of the
        // same flow can only make the entry one refresh older or newer.
        unsafe { *found.entry = new };
    }
}
