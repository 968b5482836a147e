//! Sending a rewritten packet on: the kernel's FIB gives the egress interface
//! and the MAC addresses, as it would for a packet it routed itself; the
//! hook sends it there.

use aya_ebpf::{bindings::bpf_fib_lookup, helpers::generated::bpf_fib_lookup as fib_lookup};
use lb_common::abi::{DropReason, FAMILY_V4, FlowKey};

use crate::hook::Hook;

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// Routes the packet to `to.dst` (a rewritten 5-tuple) and sends it.
#[inline(always)]
pub fn forward<H: Hook>(h: &H, to: &FlowKey) -> Result<u32, DropReason> {
    // SAFETY: a plain C struct of integers and unions of integers.
    let mut p: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    p.l4_protocol = to.proto;
    p.sport = to.src_port_be;
    p.dport = to.dst_port_be;
    p.ifindex = h.ifindex();
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
    h.send(&p, rc as u32)
}
