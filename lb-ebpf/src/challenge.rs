//! Flood mode's SYN challenge (`lb_common::challenge`): a SYN to a VIP
//! from a source not in `LB_VERIFIED` is turned around, in place, into a
//! SYN-ACK its client must refuse; the client's reset returns the
//! challenge, verifies the source and is dropped, and its SYN, sent again
//! at once, reaches a backend. A spoofed flood is answered here, at the
//! hook, and never reaches a backend, whose answers and the clients'
//! resets to them would cross the balancer again.
//!
//! Sources are verified by an answered challenge, or by acknowledging a
//! backend's SYN-ACK through the balancer (`flows::promote`), so clients
//! that connected before a flood are not challenged during it.

use aya_ebpf::{
    bindings::{iphdr, ipv6hdr, tcphdr},
    helpers::generated::{bpf_tcp_raw_gen_syncookie_ipv4, bpf_tcp_raw_gen_syncookie_ipv6},
};
use lb_common::{
    abi::{Addr, DropReason, FAMILY_V4, VerifiedKey},
    challenge::{self, REWRITTEN},
    csum,
    parse::{
        L4Packet,
        headers::{Ipv4Hdr, Ipv6Hdr, TcpHdr},
    },
};

use crate::{
    answer, clock, datapath, flows,
    hook::Hook,
    maps::{LB_SCRATCH, LB_VERIFIED},
    stats, trace,
};

/// [`check`]'s answer when the packet goes on as usual.
pub const NOT_CHALLENGED: u32 = 0xc4a1_0000;

/// The TTL / hop limit of a challenge, as the kernel's own answers have.
const TTL: u8 = 64;

/// Whether `check` must see the TCP segment with `flags`: one with SYN or
/// RST. Other segments (ACKs, data, FINs) of a flow go on unchecked, so a
/// verified client's traffic pays no lookup of its source in flood mode;
/// one of no flow is judged where its flow was looked up
/// (`forward::to_backend`, with [`verified`]).
#[inline(always)]
pub fn checks(flags: u8) -> bool {
    flags & (TcpHdr::SYN | TcpHdr::RST) != 0
}

/// In flood mode with challenges on (`flows::challenging`, which the
/// caller checked), for a TCP segment to a VIP with SYN or RST ([`checks`])
/// from a source not verified:
/// - a SYN is answered with the challenge;
/// - a reset without ACK that returns it verifies its source and is
///   dropped;
/// - anything else that belongs to no flow (a spoofed RST flood, or odd
///   flag sets, which would otherwise be picked up as a flow and sent to a
///   backend) is dropped;
///
/// and everything else, and every segment of a verified source, goes on
/// ([`NOT_CHALLENGED`]). So does a SYN whose challenge cannot be made (no
/// SYN cookies in this kernel), which is then forwarded as ever.
#[inline(never)]
pub fn check<H: Hook>(h: &H, pkt: &L4Packet) -> u32 {
    if verified(&pkt.key.src, pkt.key.family) == YES {
        return NOT_CHALLENGED;
    }
    let Some(pkt) = pkt.checked() else { return NOT_CHALLENGED };
    let flags = pkt.tcp_flags & (TcpHdr::SYN | TcpHdr::ACK | TcpHdr::RST);
    if flags == TcpHdr::SYN {
        return match token(pkt).and_then(|token| turn_around(h, pkt, token)) {
            Some(action) => {
                stats::exception(DropReason::SynChallenged);
                if H::TRACE {
                    trace::exception(DropReason::SynChallenged);
                }
                action
            }
            None => NOT_CHALLENGED,
        };
    }
    if flags == TcpHdr::RST && answers(h, pkt) {
        remember(&pkt.key.src, pkt.key.family);
        return datapath::settle::<H>(Err(DropReason::ChallengeAnswered));
    }
    if flows::find(&pkt.key, clock::now()).is_null() {
        return datapath::settle::<H>(Err(DropReason::NoFlowUnverified));
    }
    NOT_CHALLENGED
}

/// Whether the reset `pkt` returns the challenge of its connection.
#[inline(always)]
fn answers<H: Hook>(h: &H, pkt: &L4Packet) -> bool {
    let Some(seq) = h.load::<4>(pkt.l4_off + TcpHdr::SEQ_OFF) else { return false };
    token(pkt).is_some_and(|token| challenge::answered(u32::from_be_bytes(seq), token))
}

/// [`verified`]'s answers.
pub const YES: u32 = 1;
pub const NO: u32 = 0;

/// Whether `src` (of `family`) is in `LB_VERIFIED`. A function of its own
/// that returns a plain number, with its key in the scratch map: it is
/// called from `forward::to_backend`, whose frame leaves a callee little
/// of the 512 bytes.
#[inline(never)]
pub fn verified(src: &Addr, family: u8) -> u32 {
    let Some(s) = LB_SCRATCH.get_ptr_mut(0) else { return YES };
    // SAFETY: this CPU's scratch element; `verified` is used by this
    // function and `remember` only, neither running while the other does.
    let key = unsafe { &mut *core::ptr::addr_of_mut!((*s).verified) };
    *key = VerifiedKey::of(*src, family);
    // SAFETY: only tested for presence (a lookup also marks the entry used).
    if unsafe { LB_VERIFIED.get(&*key) }.is_some() { YES } else { NO }
}

/// Records the source of the pending flow `flows::promote` just moved: it
/// acknowledged its backend's SYN-ACK, so it receives what is sent to it.
/// Called by the datapath once `forward::to_backend` has returned (a frame
/// on top of `promote`'s would not fit the 512 bytes), which `promote`
/// flags in the scratch map; the key goes through the scratch map too.
#[inline(never)]
pub fn remember(src: &Addr, family: u8) {
    let Some(s) = LB_SCRATCH.get_ptr_mut(0) else { return };
    // SAFETY: this CPU's scratch element; see `verified`.
    let key = unsafe { &mut *core::ptr::addr_of_mut!((*s).verified) };
    *key = VerifiedKey::of(*src, family);
    // SAFETY: only tested for presence (a lookup also marks the entry used).
    if unsafe { LB_VERIFIED.get(&*key) }.is_none() {
        let _ = LB_VERIFIED.insert(&*key, &clock::now(), 0);
    }
}

/// The keyed hash of `pkt`'s addresses and ports: the kernel's SYN cookie
/// for a SYN of that tuple with sequence number 0 and no options (the
/// reset that returns the challenge does not carry the client's sequence
/// number, so the hash cannot cover it). A frame of its own, as are the
/// header rewrites of [`turn_around`]: their buffers together would not
/// fit one.
#[inline(never)]
fn token(pkt: &L4Packet) -> Option<u32> {
    let [s0, s1] = pkt.key.src_port_be.to_ne_bytes();
    let [d0, d1] = pkt.key.dst_port_be.to_ne_bytes();
    // Ports, sequence 0, acknowledgement 0, a 20-byte header with SYN.
    let mut th: [u32; 5] =
        [u32::from_ne_bytes([s0, s1, d0, d1]), 0, 0, u32::from_ne_bytes([0x50, 0x02, 0, 0]), 0];
    let th_ptr = th.as_mut_ptr().cast::<tcphdr>();
    let (src, dst) = (pkt.key.src.words, pkt.key.dst.words);
    // SAFETY: helper calls on initialized stack memory of the sizes they
    // read (a 20- or 40-byte IP header, a 20-byte TCP header).
    let cookie = unsafe {
        if pkt.key.family == FAMILY_V4 {
            let mut ip: [u32; 5] = [u32::from_ne_bytes([0x45, 0, 0, 40]), 0, 0, src[0], dst[0]];
            bpf_tcp_raw_gen_syncookie_ipv4(ip.as_mut_ptr().cast::<iphdr>(), th_ptr, 20)
        } else {
            let mut ip: [u32; 10] = [
                u32::from_ne_bytes([0x60, 0, 0, 0]),
                0,
                src[0],
                src[1],
                src[2],
                src[3],
                dst[0],
                dst[1],
                dst[2],
                dst[3],
            ];
            bpf_tcp_raw_gen_syncookie_ipv6(ip.as_mut_ptr().cast::<ipv6hdr>(), th_ptr, 20)
        }
    };
    (cookie >= 0).then_some(cookie as u32)
}

/// Rewrites the SYN `pkt` into its challenge and returns the action that
/// sends it back to its sender: MACs, addresses and ports swapped, a fresh
/// TTL, the TCP header's first bytes from `lb_common::challenge`. Lengths,
/// options and payload stay, so the pseudo-header sum does too and the
/// checksums take differences only (right for partial checksums too).
///
/// Each header is turned by a function of its own, called one after the
/// other: their buffers together would not fit one frame. Each loads its
/// bytes in one piece before storing: a store may move the packet, and
/// the verifier does not carry one bounds check over to another pointer.
#[inline(always)]
fn turn_around<H: Hook>(h: &H, pkt: &L4Packet, token: u32) -> Option<u32> {
    let v4 = pkt.key.family == FAMILY_V4;
    let ok = turn_tcp(h, pkt.l4_off, token, v4) && turn_ip(h, pkt.l3_off, v4);
    ok.then(|| h.back_out())
}

#[inline(never)]
fn turn_tcp<H: Hook>(h: &H, l4: usize, token: u32, v4: bool) -> bool {
    let Some(syn) = h.load::<REWRITTEN>(l4) else { return false };
    let (tcp, diff) = challenge::syn_ack(&syn, token);
    h.store(l4, tcp) && h.l4_csum(l4 + TcpHdr::CHECK_OFF, diff, false, false, !v4)
}

#[inline(never)]
fn turn_ip<H: Hook>(h: &H, l3: usize, v4: bool) -> bool {
    if v4 {
        // TTL, protocol, checksum, source, destination.
        let Some(o) = h.load::<12>(l3 + 8) else { return false };
        let new = [TTL, o[1], o[2], o[3], o[8], o[9], o[10], o[11], o[4], o[5], o[6], o[7]];
        let diff = csum::diff16(u16::from_ne_bytes([o[0], o[1]]), u16::from_ne_bytes([TTL, o[1]]));
        return h.store(l3 + 8, new) && h.l3_csum(l3 + Ipv4Hdr::CHECK_OFF, diff) && turn_eth(h);
    }
    // The hop limit (with the next header before it: the compiler turns a
    // one-byte bounds check into a form the verifier gives no room), then
    // the addresses a word of each at a time: the source's word and the
    // destination's, 16 bytes apart, in one load.
    let Some([next, _]) = h.load::<2>(l3 + 6) else { return false };
    if !h.store(l3 + 6, [next, TTL]) {
        return false;
    }
    for i in 0..4 {
        let at = l3 + Ipv6Hdr::SRC_OFF + 4 * i;
        let Some(o) = h.load::<20>(at) else { return false };
        if !h.store(at, [o[16], o[17], o[18], o[19]]) || !h.store(at + 16, [o[0], o[1], o[2], o[3]])
        {
            return false;
        }
    }
    turn_eth(h)
}

/// The MACs swapped (`answer::turned_around`, the ethertype kept).
/// Inlined: a function of its own that reads only the packet's bounds is
/// given them as arguments by the compiler, which the verifier refuses.
#[inline(always)]
fn turn_eth<H: Hook>(h: &H) -> bool {
    let Some(eth) = h.load::<{ answer::ETH_HLEN }>(0) else { return false };
    h.store(0, answer::turned_around(&eth))
}
