//! Sending a rewritten packet on: the kernel's FIB gives the egress interface
//! and the MAC addresses, as it would for a packet it routed itself; the
//! hook sends it there.
//!
//! A backend's next hop is cached (`LB_NEXT_HOPS`, by backend id) and asked
//! of the FIB again about once a second, so the forward path of a known
//! backend costs no FIB lookup and a changed route or neighbour is picked up
//! within a second. Replies go to clients, too many to cache: they ask the
//! FIB every time.

use aya_ebpf::{
    bindings::{
        BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS,
        bpf_fib_lookup,
    },
    helpers::generated::bpf_fib_lookup as fib_lookup,
};
use lb_common::{
    abi::{DropReason, FAMILY_V4, FlowKey, NextHop},
    parse::L4Packet,
};

use crate::{hook::Hook, maps::LB_NEXT_HOPS};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// Which cache entry a forward may use and refresh.
pub struct Cached {
    /// The backend the packet goes to.
    pub backend_id: u32,
    /// Now, in flow-table ticks.
    pub now: u32,
}

/// Routes the packet `pkt`, rewritten to `to`, and sends it; through the
/// backend's cached next hop when `cache` names one that is usable.
#[inline(always)]
pub fn forward<H: Hook>(
    h: &H,
    pkt: &L4Packet,
    to: &FlowKey,
    cache: Option<Cached>,
) -> Result<u32, DropReason> {
    let ingress = h.ifindex();
    let ip_len = h.len().saturating_sub(pkt.l3_off as u64);
    let slot = cache.as_ref().and_then(|c| LB_NEXT_HOPS.get_ptr_mut(c.backend_id));
    if let (Some(c), Some(slot)) = (&cache, slot) {
        // SAFETY: a pointer to a live array element, copied out at once. A
        // concurrent refresh writes the same bytes unless the neighbour
        // changed, when one packet may see a mix of the two MACs.
        let hop = unsafe { *slot };
        if hop.usable(ingress, c.now, ip_len) {
            return h.send(&hop);
        }
    }
    // SAFETY: a plain C struct of integers and unions of integers.
    let mut p: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    p.l4_protocol = to.proto;
    p.sport = to.src_port_be;
    p.dport = to.dst_port_be;
    p.ifindex = ingress;
    if to.family == FAMILY_V4 {
        p.family = AF_INET;
        p.__bindgen_anon_3.ipv4_src = to.src.words[0];
        p.__bindgen_anon_4.ipv4_dst = to.dst.words[0];
    } else {
        p.family = AF_INET6;
        p.__bindgen_anon_3.ipv6_src = to.src.words;
        p.__bindgen_anon_4.ipv6_dst = to.dst.words;
    }
    // SAFETY: `p` is a valid, fully initialised lookup struct of the size
    // given, and the context is the program's own.
    let rc =
        unsafe { fib_lookup(h.ctx(), &mut p, core::mem::size_of::<bpf_fib_lookup>() as i32, 0) };
    match rc as u32 {
        BPF_FIB_LKUP_RET_SUCCESS => {
            let hop = NextHop {
                ingress,
                ifindex: p.ifindex,
                stamp: cache.as_ref().map_or(0, |c| c.now),
                // SAFETY: the FIB writes the egress MTU here on success
                // (0 where it does not check, as for XDP).
                mtu: u32::from(unsafe { p.__bindgen_anon_1.mtu_result }),
                dmac: p.dmac,
                smac: p.smac,
            };
            if let (Some(_), Some(slot)) = (&cache, slot) {
                // SAFETY: a pointer to a live array element; see above on
                // concurrent writers.
                unsafe { *slot = hop };
            }
            h.send(&hop)
        }
        BPF_FIB_LKUP_RET_NO_NEIGH => h.resolve(&p),
        BPF_FIB_LKUP_RET_FRAG_NEEDED => Ok(H::PASS),
        _ => Err(DropReason::NoRoute),
    }
}
