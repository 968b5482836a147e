//! The hook a traced packet runs through: any hook, with `TRACE` on.
//!
//! The datapath is written once over `Hook`; wrapping the hook gives a
//! second instantiation in which the trace records exist, chosen per packet
//! by `datapath::run` while a session runs. The plain instantiation, the
//! one every packet takes when nobody traces, has no trace code at all.

use aya_ebpf::bindings::bpf_fib_lookup;
use lb_common::{
    abi::{DropReason, NextHop},
    parse::{Header, PacketView},
};

use super::Hook;

/// `H`, traced.
pub struct Traced<H>(pub H);

impl<H: Hook> PacketView for Traced<&H> {
    #[inline(always)]
    fn fits(&self, len: usize) -> bool {
        self.0.fits(len)
    }

    #[inline(always)]
    fn header<T: Header>(&self, off: usize) -> Option<&T> {
        self.0.header(off)
    }
}

impl<H: Hook> Hook for Traced<&H> {
    const PASS: u32 = H::PASS;
    const DROP: u32 = H::DROP;
    const HOOK: u32 = H::HOOK;
    const TRACE: bool = true;
    const RESOLVES_IN_PLACE: bool = H::RESOLVES_IN_PLACE;

    #[inline(always)]
    fn load<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        self.0.load(off)
    }

    #[inline(always)]
    fn store<const N: usize>(&self, off: usize, bytes: [u8; N]) -> bool {
        self.0.store(off, bytes)
    }

    #[inline(always)]
    fn len(&self) -> u64 {
        self.0.len()
    }

    #[inline(always)]
    fn ifindex(&self) -> u32 {
        self.0.ifindex()
    }

    #[inline(always)]
    fn ctx(&self) -> *mut core::ffi::c_void {
        self.0.ctx()
    }

    #[inline(always)]
    fn l3_csum(&self, off: usize, diff: u32) -> bool {
        self.0.l3_csum(off, diff)
    }

    #[inline(always)]
    fn l4_csum(&self, off: usize, diff: u32, pseudo: bool, udp: bool, v6: bool) -> bool {
        self.0.l4_csum(off, diff, pseudo, udp, v6)
    }

    #[inline(always)]
    fn send(&self, hop: &NextHop) -> Result<u32, DropReason> {
        self.0.send(hop)
    }

    #[inline(always)]
    fn resolve(&self, fib: &bpf_fib_lookup) -> Result<u32, DropReason> {
        self.0.resolve(fib)
    }

    #[inline(always)]
    fn mtu_len(&self, l3_off: usize, headers: usize, outer: usize) -> u64 {
        self.0.mtu_len(l3_off, headers, outer)
    }

    #[inline(always)]
    fn encapsulate<const N: usize>(&self, outer: &[u8; N], v6: bool) -> bool {
        self.0.encapsulate(outer, v6)
    }

    #[inline(always)]
    fn reshape(&self, grow: u32, new_len: u32) -> bool {
        self.0.reshape(grow, new_len)
    }

    #[inline(always)]
    fn back_out(&self) -> u32 {
        self.0.back_out()
    }
}
