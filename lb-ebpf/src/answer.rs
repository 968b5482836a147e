//! Answering a packet with an ICMP error in its place, as a router does:
//! "fragmentation needed" / "packet too big" when it does not fit its path,
//! "time exceeded" when its TTL runs out here.
//!
//! The error comes from the VIP, so a client learns the MTU of the path
//! to the address it uses, and the quote names the packet exactly as its
//! sender sent it (the VIP, never the backend): the frame is turned around
//! in place, its IP header and first 8 bytes after it kept as the quote and
//! new headers put in front (`lb_common::icmp`).
//!
//! Each answer is smaller than the packet it answers, so it cannot
//! amplify; time-exceeded errors are limited still, as routers limit
//! theirs (`lb_common::icmp::TIME_EXCEEDED_PER_SEC` per CPU), so a flood of
//! packets at their last hop (their sources spoofed, say) does not make the
//! hook a reflector. "Packet too big" never is: path MTU discovery needs
//! each one.

use aya_ebpf::helpers::generated::bpf_ktime_get_ns;
use lb_common::{
    abi::{Addr, DropReason, FAMILY_V4, PROTO_TCP, admit, cost_ns, tolerance_ns},
    icmp::{self, Answer},
    parse::L4Packet,
};

use crate::{hook::Hook, maps::LB_SCRATCH, stats};

/// What a branch returns in place of an action when the packet is to be
/// answered: the answer waits in the scratch map ([`later`]) and the
/// datapath sends it ([`pending`]) once the branch has returned, so the
/// answer's stack frame is not stacked on the branch's.
pub const ANSWER_PENDING: u32 = 0xa115_0000;

/// A pending answer: which, and from which address.
#[derive(Clone, Copy)]
pub struct Pending {
    /// The error to send.
    pub answer: Answer,
    /// Its source (the VIP).
    pub from: Addr,
}

/// Records that the packet is to be answered with `answer` from `from`
/// and returns [`ANSWER_PENDING`] (or DROP if the scratch map is missing).
#[inline(always)]
pub fn later<H: Hook>(answer: Answer, from: &Addr) -> u32 {
    match LB_SCRATCH.get_ptr_mut(0) {
        Some(s) => {
            // SAFETY: this CPU's scratch element; its `pending` part is
            // written here and read once by `pending`.
            unsafe { *core::ptr::addr_of_mut!((*s).pending) = Pending { answer, from: *from } };
            ANSWER_PENDING
        }
        None => H::DROP,
    }
}

/// Sends the answer a branch left pending for `pkt`.
#[inline(never)]
pub fn pending<H: Hook>(h: &H, pkt: &L4Packet) -> u32 {
    let Some(s) = LB_SCRATCH.get_ptr(0) else { return H::DROP };
    // SAFETY: this CPU's scratch element, written by `later` in this run.
    let p = unsafe { *core::ptr::addr_of!((*s).pending) };
    send(h, pkt, &p.answer, &p.from)
}

pub const ETH_HLEN: usize = 14;
const ETH_ALEN: usize = 6;

/// Turns `pkt` into the ICMP error `answer` from `from` to its sender and
/// sends it back the way it came; counted under the answer's reason
/// (`TooBig`, `TtlExpired`). Frames with a VLAN tag in line, or headers
/// longer than `icmp::MAX_QUOTE`, are dropped unanswered (counted the
/// same).
#[inline(always)]
fn send<H: Hook>(h: &H, pkt: &L4Packet, answer: &Answer, from: &Addr) -> u32 {
    let reason = match answer {
        Answer::TooBig { .. } => DropReason::TooBig,
        Answer::TimeExceeded if !time_exceeded_allowed() => {
            stats::exception(DropReason::TtlExpiredUnanswered);
            return H::DROP;
        }
        Answer::TimeExceeded => DropReason::TtlExpired,
    };
    stats::exception(reason);
    match pkt.checked() {
        Some(pkt) => build(h, pkt, *answer, from, reason).unwrap_or(H::DROP),
        None => H::DROP,
    }
}

/// Whether this CPU may answer one more time-exceeded error now, taking it
/// from its allowance if so (per CPU: no other CPU writes it).
#[inline(always)]
fn time_exceeded_allowed() -> bool {
    const COST: u32 = cost_ns(icmp::TIME_EXCEEDED_PER_SEC);
    let Some(s) = LB_SCRATCH.get_ptr_mut(0) else { return false };
    // SAFETY: this CPU's scratch element; `time_exceeded_tat` is this
    // function's alone, and lasts from run to run.
    let tat = unsafe { &mut *core::ptr::addr_of_mut!((*s).time_exceeded_tat) };
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    match admit(*tat, now, u64::from(COST), tolerance_ns(COST, icmp::TIME_EXCEEDED_BURST)) {
        Some(next) => {
            *tat = next;
            true
        }
        None => false,
    }
}

#[inline(always)]
fn build<H: Hook>(
    h: &H,
    pkt: &L4Packet,
    answer: Answer,
    from: &Addr,
    reason: DropReason,
) -> Result<u32, DropReason> {
    if pkt.l3_off != ETH_HLEN {
        return Err(reason);
    }
    let l4 = if pkt.key.proto == PROTO_TCP { icmp::QUOTED_TCP } else { icmp::QUOTED_L4 };
    let quote_len = pkt.l4_off - pkt.l3_off + l4;
    if quote_len > icmp::MAX_QUOTE {
        return Err(reason);
    }
    let eth = h.load::<ETH_HLEN>(0).ok_or(reason)?;
    let quote_sum = quote_sum(h, pkt.l3_off, quote_len).ok_or(reason)?;
    let to = pkt.key.src;
    let sent = if pkt.key.family == FAMILY_V4 {
        let hdrs = icmp::headers_v4(answer, from, &to, quote_len, quote_sum);
        reshape(h, icmp::V4_HEADERS, quote_len) && h.store(ETH_HLEN, hdrs)
    } else {
        let hdrs = icmp::headers_v6(answer, from, &to, quote_len, quote_sum);
        reshape(h, icmp::V6_HEADERS, quote_len) && h.store(ETH_HLEN, hdrs)
    };
    if !sent || !h.store(0, turned_around(&eth)) {
        return Err(reason);
    }
    Ok(h.back_out())
}

#[inline(always)]
fn reshape<H: Hook>(h: &H, headers: usize, quote_len: usize) -> bool {
    h.reshape(headers as u32, (ETH_HLEN + headers + quote_len) as u32)
}

/// The Ethernet header `eth` back to its sender: the MACs swapped, the
/// ethertype kept.
#[inline(always)]
pub fn turned_around(eth: &[u8; ETH_HLEN]) -> [u8; ETH_HLEN] {
    let mut out = *eth;
    let mut i = 0;
    while i < ETH_ALEN {
        out[i] = eth[ETH_ALEN + i];
        out[ETH_ALEN + i] = eth[i];
        i += 1;
    }
    out
}

/// The word sum of the `len` bytes at `off` (a multiple of 4: IP headers,
/// options and extension headers come in 4-byte words, and the 8 bytes
/// after them).
#[inline(always)]
fn quote_sum<H: Hook>(h: &H, off: usize, len: usize) -> Option<u32> {
    let mut s = 0u32;
    for i in 0..icmp::MAX_QUOTE / 4 {
        if i * 4 >= len {
            break;
        }
        let w = h.load::<4>(off + i * 4)?;
        s += u32::from(u16::from_ne_bytes([w[0], w[1]]))
            + u32::from(u16::from_ne_bytes([w[2], w[3]]));
    }
    Some(s)
}
