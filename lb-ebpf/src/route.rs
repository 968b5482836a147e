//! Sending a rewritten packet on: the kernel's FIB gives the egress interface
//! and the MAC addresses, as it would for a packet it routed itself.

use aya_ebpf::{
    bindings::{
        BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS,
        bpf_fib_lookup, xdp_action,
    },
    helpers::generated::{bpf_fib_lookup as fib_lookup, bpf_redirect},
    programs::XdpContext,
};
use lb_common::abi::{DropReason, FAMILY_V4, FlowKey};

use crate::frame::Frame;

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const ETH_ALEN: usize = 6;

/// Routes the packet to `to.dst` (a rewritten 5-tuple): XDP_TX when it leaves
/// by the interface it came in on, XDP_REDIRECT otherwise.
///
/// When the next hop's MAC is not yet known the packet goes to the kernel
/// (already rewritten), which resolves the neighbour and forwards it; later
/// packets then take the fast path.
#[inline(always)]
pub fn forward(ctx: &XdpContext, frame: &Frame, to: &FlowKey) -> Result<u32, DropReason> {
    // SAFETY: a plain C struct of integers and unions of integers.
    let mut p: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    p.l4_protocol = to.proto;
    p.sport = to.src_port_be;
    p.dport = to.dst_port_be;
    p.ifindex = ctx.ingress_ifindex() as u32;
    if to.family == FAMILY_V4 {
        p.family = AF_INET;
        p.__bindgen_anon_3.ipv4_src = to.src.words[0];
        p.__bindgen_anon_4.ipv4_dst = to.dst.words[0];
    } else {
        p.family = AF_INET6;
        p.__bindgen_anon_3.ipv6_src = to.src.words;
        p.__bindgen_anon_4.ipv6_dst = to.dst.words;
    }
    // SAFETY: `p` is a valid, fully initialised lookup struct of the size given.
    let rc = unsafe {
        fib_lookup(ctx.ctx.cast(), &mut p, core::mem::size_of::<bpf_fib_lookup>() as i32, 0)
    };
    match rc as u32 {
        BPF_FIB_LKUP_RET_SUCCESS => {
            if !frame.store::<ETH_ALEN>(0, p.dmac) || !frame.store::<ETH_ALEN>(ETH_ALEN, p.smac) {
                return Err(DropReason::TruncatedEthernet);
            }
            if p.ifindex == ctx.ingress_ifindex() as u32 {
                Ok(xdp_action::XDP_TX)
            } else {
                // SAFETY: a helper call with an interface index and no flags.
                Ok(unsafe { bpf_redirect(p.ifindex, 0) } as u32)
            }
        }
        BPF_FIB_LKUP_RET_NO_NEIGH | BPF_FIB_LKUP_RET_FRAG_NEEDED => Ok(xdp_action::XDP_PASS),
        _ => Err(DropReason::NoRoute),
    }
}
