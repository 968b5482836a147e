//! The two flow tables: `LB_FLOWS` holds answered flows, `LB_PENDING`
//! (an eighth of its size) the flows not answered yet.
//!
//! A new flow is pinned in `LB_PENDING` and moves into `LB_FLOWS` once it
//! is a two-way conversation:
//! - TCP: at the client's first packet that acknowledges the backend's
//!   SYN-ACK (its ACK of it): its acknowledgement number is the SYN-ACK's
//!   sequence number plus one, give or take what the backend sent since
//!   ([`ACK_WINDOW`]). The backend answers a spoofed SYN as readily as a
//!   real one, so its SYN-ACK alone proves nothing, and a spoofer can send
//!   an ACK too, but not one that acknowledges a SYN-ACK it never saw. A
//!   flow picked up mid-connection (its first packet no SYN) is answered
//!   when its backend sends anything but a reset or a SYN-ACK. With direct
//!   server return, where the backend's packets do not pass here, the
//!   client's first packet after its SYN: not proof, but all there is.
//! - UDP: at the backend's first reply (`reverse`); in flood mode, at the
//!   client's next datagram after it, as for TCP. With direct server
//!   return, at the client's second datagram.
//!
//! A flood of flows that are never answered (spoofed SYNs, single
//! datagrams) therefore churns only `LB_PENDING`: it cannot evict an
//! answered flow, and its memory is bounded by the smaller table.
//!
//! A flow is looked for in `LB_FLOWS` first: the packets of answered flows
//! (nearly all packets) cost one lookup, as with one table. Only a miss
//! there (a new flow, a SYN, a flow still waiting) looks in `LB_PENDING`.
//!
//! The functions are frames of their own returning a register: they are
//! called from `forward::to_backend` and `reverse::find_reply`, whose
//! frames leave their callees little of the 512-byte stack. Where a flow
//! was found, and its key when it is pending, go to the scratch map.

use lb_common::abi::{
    DropReason, Endpoint, FLOOD_CHALLENGE, FLOOD_ON, FLOW_ESTABLISHED, FORWARD_NAT, FlowKey,
    FlowValue, MAX_REPLY_TARGETS, ServiceKey,
};
use lb_common::parse::{L4Packet, headers::TcpHdr};

use crate::{
    clock, forward,
    hook::Hook,
    maps::{LB_BACKENDS, LB_FLOWS, LB_PENDING, LB_REPLIES, LB_SCRATCH, LB_SERVICES, LB_SETTINGS},
    passive, reverse, stats,
};

/// Whether the agent has flood mode on (new flows above its threshold).
#[inline(always)]
pub fn flood_mode() -> bool {
    LB_SETTINGS.get(0).is_some_and(|t| t.flood & FLOOD_ON != 0)
}

/// Whether flood mode is on and SYNs from sources not verified are to be
/// challenged (`flows.syn_challenge`, see `challenge`).
#[inline(always)]
pub fn challenging() -> bool {
    const BOTH: u32 = FLOOD_ON | FLOOD_CHALLENGE;
    LB_SETTINGS.get(0).is_some_and(|t| t.flood & BOTH == BOTH)
}

/// How far past the SYN-ACK the client's acknowledgement may be and still
/// promote its flow: a lost first ACK is followed by packets acknowledging
/// whatever the backend sent since. A blind guess hits one time in 65 536.
pub const ACK_WINDOW: u32 = 1 << 16;

/// What a pending flow keeps (in `syn_seq`, its SYN no longer needed once
/// answered: a retransmitted SYN then pins the flow afresh, on the same
/// backend while the table is unchanged) for a SYN-ACK whose sequence
/// number is `isn`: the acknowledgement its client must send. Never 0,
/// which marks a flow picked up mid-connection.
#[inline(always)]
pub fn expected_ack(isn: u32) -> u32 {
    let ack = isn.wrapping_add(1);
    if ack == 0 { 1 } else { ack }
}

/// Whether a client's acknowledgement number `ack` acknowledges the SYN-ACK
/// of a pending flow that expects `expected` ([`expected_ack`]).
#[inline(always)]
pub fn acknowledged(expected: u32, ack: u32) -> bool {
    expected != 0 && ack.wrapping_sub(expected) < ACK_WINDOW
}

/// Where [`find`] found a flow (the scratch map's `flow_in`).
pub const IN_NONE: u32 = 0;
pub const IN_FLOWS: u32 = 1;
pub const IN_PENDING: u32 = 2;

/// The entry of `key`: its live entry in `LB_FLOWS`, else its entry in
/// `LB_PENDING` (live or not: the caller judges expiry, as before), else
/// null. An expired `LB_FLOWS` entry is not returned: the flow's next
/// life starts unanswered, in `LB_PENDING`. Where the entry is goes to the
/// scratch map (see [`found_in`]), with the key if it is pending (see
/// [`promote`]). `now` is the caller's [`clock::now`]: a clock read is a
/// helper call, and each caller has one already.
#[inline(never)]
pub fn find(key: &FlowKey, now: u32) -> *mut FlowValue {
    let Some(s) = LB_SCRATCH.get_ptr_mut(0) else { return core::ptr::null_mut() };
    if let Some(entry) = LB_FLOWS.get_ptr_mut(key) {
        // SAFETY: a pointer to a live map value, read once.
        if !clock::expired(unsafe { &*entry }, key.proto, now) {
            // SAFETY: this CPU's scratch element; `flow_in` is written here
            // only and read in the same program run.
            unsafe { *core::ptr::addr_of_mut!((*s).flow_in) = IN_FLOWS };
            return entry;
        }
    }
    match LB_PENDING.get_ptr_mut(key) {
        Some(entry) => {
            // SAFETY: as above; `pending_key` is read by `promote`.
            unsafe {
                *core::ptr::addr_of_mut!((*s).flow_in) = IN_PENDING;
                *core::ptr::addr_of_mut!((*s).pending_key) = *key;
            }
            entry
        }
        None => {
            // SAFETY: as above.
            unsafe { *core::ptr::addr_of_mut!((*s).flow_in) = IN_NONE };
            core::ptr::null_mut()
        }
    }
}

/// Where the last [`find`] of this program run found its flow (`IN_*`).
#[inline(always)]
pub fn found_in() -> u32 {
    match LB_SCRATCH.get_ptr(0) {
        // SAFETY: this CPU's scratch element, written by `find`.
        Some(s) => unsafe { *core::ptr::addr_of!((*s).flow_in) },
        None => IN_NONE,
    }
}

/// Pins `key` to `flow`: over the entry [`find`] gave (`entry`, not null),
/// whichever table holds it, so a SYN on a reused port of an answered flow
/// evicts nothing; otherwise as a new, unanswered flow in `LB_PENDING`. A
/// full table is counted, not fatal: Maglev sends the next packet of the
/// flow to the same backend as long as the service's table is unchanged.
#[inline(never)]
pub fn pin(key: &FlowKey, entry: *mut FlowValue, flow: &FlowValue) {
    if !entry.is_null() {
        // SAFETY: a pointer to a live map value found in this program run;
        // a concurrent writer of the same flow makes it one packet older
        // or newer.
        unsafe { *entry = *flow };
        return;
    }
    if LB_PENDING.insert(key, flow, 0).is_err() {
        stats::exception(DropReason::PendingTableFull);
    }
}

/// Moves the pending flow [`find`] found last (its entry `entry`) into
/// `LB_FLOWS`, in state `state` and seen at `now`: it was answered. If
/// `proven` (its client acknowledged the backend's SYN-ACK), its source
/// is verified too (see `challenge`). A full
/// `LB_FLOWS` evicts its least recently used answered flow, as it would
/// for any answered flow; if the insert fails, the flow stays pending.
#[inline(never)]
pub fn promote(entry: *mut FlowValue, state: u32, now: u32, proven: bool) {
    let Some(s) = LB_SCRATCH.get_ptr_mut(0) else { return };
    // SAFETY: this CPU's scratch element; `pending_key` was written by the
    // `find` that returned `entry`; `entry` points to a live map value.
    let (key, old) = unsafe { (&*core::ptr::addr_of!((*s).pending_key), *entry) };
    let flow = FlowValue { state: state as u8, last_seen: now, ..old };
    if LB_FLOWS.insert(key, &flow, 0).is_ok() {
        let _ = LB_PENDING.remove(key);
        if proven {
            // Recorded by the datapath once `to_backend` has returned: a
            // frame on top of this one would not fit the 512 bytes.
            // SAFETY: this CPU's scratch element; read by `try_lb`.
            unsafe { *core::ptr::addr_of_mut!((*s).promoted) = 1 };
        }
    } else {
        stats::exception(DropReason::FlowTableFull);
        // SAFETY: as above.
        unsafe { *entry = flow };
    }
}

/// Flood mode: adopts a backend's SYN-ACK that matches no flow (`pkt`, from
/// the backend's endpoint to the client) if, for one of the VIPs the
/// backend serves, the service's Maglev choice for that client is this
/// backend: the balancer sent it that SYN, and the flood pushed the
/// flow's pending entry out before the answer came (under a flood faster
/// than the pending table turns over, a slow backend's answers would
/// otherwise leave untranslated and the connection fail). The flow is
/// pinned again in `LB_PENDING`, answered, and its VIP left in the scratch
/// map for `reverse::to_client`, as `reverse::find_reply` does: the reply
/// is translated and the client's ACK promotes the flow as ever. A
/// flood's own SYN-ACKs, adopted the same way, still only churn the
/// pending table. Only in flood mode: otherwise the pending table holds
/// every waiting SYN, and a SYN-ACK of no flow is direct traffic, which a
/// Maglev match would take for balanced one time in N backends. A table
/// changed between the SYN and its answer makes the check fail: the
/// answer passes untranslated, as without flood mode.
///
/// Called from the datapath beside `find_reply`, not from it: a frame of
/// its own on top of `find_reply`'s would not fit the 512-byte stack. Its
/// keys live in the scratch map for the same reason.
#[inline(never)]
pub fn adopt<H: Hook>(h: &H, pkt: &L4Packet) -> u32 {
    if !reverse::answers_syn(pkt) || !flood_mode() {
        return reverse::NOT_A_REPLY;
    }
    // What the client's ACK must acknowledge, as for any SYN-ACK.
    let Some(isn) = h.load::<4>(pkt.l4_off + TcpHdr::SEQ_OFF) else {
        return reverse::NOT_A_REPLY;
    };
    let Some(s) = LB_SCRATCH.get_ptr_mut(0) else { return reverse::NOT_A_REPLY };
    // SAFETY: this CPU's scratch element; these fields are this
    // function's until it returns (`reply_vip` is read by `to_client`).
    let (backend, key, flow) = unsafe {
        (
            &mut *core::ptr::addr_of_mut!((*s).adopt_backend),
            &mut *core::ptr::addr_of_mut!((*s).pending_key),
            &mut *core::ptr::addr_of_mut!((*s).adopt_flow),
        )
    };
    *backend = Endpoint {
        addr: pkt.key.src,
        port_be: pkt.key.src_port_be,
        proto: pkt.key.proto,
        family: pkt.key.family,
    };
    // SAFETY: replaced whole by the agent, never written into (RCU).
    let Some(replies) = (unsafe { LB_REPLIES.get(&*backend) }) else {
        return reverse::NOT_A_REPLY;
    };
    for i in 0..MAX_REPLY_TARGETS {
        if i as u32 >= replies.count {
            break;
        }
        let Some(vip) = replies.vips.get(i) else { break };
        // SAFETY: as above; the service key is the VIP endpoint's layout.
        let Some(svc) = (unsafe { LB_SERVICES.get(&service_of(vip)) }) else { continue };
        if svc.forwarding != FORWARD_NAT {
            continue;
        }
        *key = FlowKey {
            src: pkt.key.dst,
            dst: vip.addr,
            src_port_be: pkt.key.dst_port_be,
            dst_port_be: vip.port_be,
            proto: vip.proto,
            family: vip.family,
            _pad: [0; 2],
        };
        let Ok((id, _)) = forward::pick(key, svc) else { continue };
        let here = LB_BACKENDS
            .get(id)
            .is_some_and(|b| b.addr == backend.addr && b.port_be == backend.port_be);
        if !here {
            continue;
        }
        *flow = FlowValue {
            backend_id: id,
            last_seen: clock::now(),
            syn_seq: expected_ack(u32::from_be_bytes(isn)),
            state: FLOW_ESTABLISHED,
            _pad: [0; 3],
        };
        if LB_PENDING.insert(&*key, &*flow, 0).is_err() {
            stats::exception(DropReason::PendingTableFull);
            return reverse::NOT_A_REPLY;
        }
        passive::answered(id);
        // SAFETY: as above.
        unsafe { *core::ptr::addr_of_mut!((*s).reply_vip) = *vip };
        return reverse::REPLY;
    }
    reverse::NOT_A_REPLY
}

/// The service key of a VIP endpoint.
#[inline(always)]
fn service_of(vip: &Endpoint) -> ServiceKey {
    ServiceKey { addr: vip.addr, port_be: vip.port_be, proto: vip.proto, family: vip.family }
}
