//! The XDP hook: one linear frame, checksums updated in place, sent with
//! XDP_TX or XDP_REDIRECT.

use aya_ebpf::{
    bindings::{bpf_fib_lookup, xdp_action},
    helpers::generated::bpf_redirect,
    programs::XdpContext,
};
use lb_common::{
    abi::{DropReason, NextHop},
    csum,
    parse::{Header, PacketView},
};

use super::Hook;

const ETH_ALEN: usize = 6;

/// The frame an XDP program runs on: its start and end, as the verifier's
/// packet pointers.
pub struct XdpFrame<'a> {
    ctx: &'a XdpContext,
    start: usize,
    end: usize,
}

impl<'a> XdpFrame<'a> {
    #[inline(always)]
    pub fn new(ctx: &'a XdpContext) -> Self {
        Self { ctx, start: ctx.data(), end: ctx.data_end() }
    }
}

impl Hook for XdpFrame<'_> {
    const PASS: u32 = xdp_action::XDP_PASS;
    const DROP: u32 = xdp_action::XDP_DROP;

    #[inline(always)]
    fn load<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        let p = self.start + off;
        if p + N > self.end {
            return None;
        }
        // SAFETY: [p, p + N) is inside the frame (checked above), and a byte
        // array has alignment 1.
        Some(unsafe { core::ptr::read_unaligned(p as *const [u8; N]) })
    }

    #[inline(always)]
    fn store<const N: usize>(&self, off: usize, bytes: [u8; N]) -> bool {
        let p = self.start + off;
        if p + N > self.end {
            return false;
        }
        // SAFETY: as in `load`.
        unsafe { core::ptr::write_unaligned(p as *mut [u8; N], bytes) };
        true
    }

    #[inline(always)]
    fn len(&self) -> u64 {
        (self.end - self.start) as u64
    }

    #[inline(always)]
    fn ifindex(&self) -> u32 {
        self.ctx.ingress_ifindex() as u32
    }

    #[inline(always)]
    fn ctx(&self) -> *mut core::ffi::c_void {
        self.ctx.ctx.cast()
    }

    #[inline(always)]
    fn l3_csum(&self, off: usize, diff: u32) -> bool {
        match self.load::<2>(off) {
            Some(c) => self.store(off, csum::apply(u16::from_ne_bytes(c), diff).to_ne_bytes()),
            None => false,
        }
    }

    #[inline(always)]
    fn l4_csum(&self, off: usize, diff: u32, _pseudo: bool, udp: bool, _v6: bool) -> bool {
        let Some(c) = self.load::<2>(off) else { return false };
        let check = u16::from_ne_bytes(c);
        if udp && check == 0 {
            return true;
        }
        let mut new = csum::apply(check, diff);
        if udp && new == 0 {
            new = 0xffff;
        }
        self.store(off, new.to_ne_bytes())
    }

    /// XDP_TX when the packet leaves by the interface it came in on,
    /// XDP_REDIRECT otherwise.
    #[inline(always)]
    fn send(&self, hop: &NextHop) -> Result<u32, DropReason> {
        if !self.store::<ETH_ALEN>(0, hop.dmac) || !self.store::<ETH_ALEN>(ETH_ALEN, hop.smac) {
            return Err(DropReason::TruncatedEthernet);
        }
        if hop.ifindex == self.ifindex() {
            Ok(xdp_action::XDP_TX)
        } else {
            // SAFETY: a helper call with an interface index and no flags.
            Ok(unsafe { bpf_redirect(hop.ifindex, 0) } as u32)
        }
    }

    /// The packet goes to the kernel (already rewritten), which resolves
    /// the neighbour and forwards it; later packets take the fast path.
    #[inline(always)]
    fn resolve(&self, _fib: &bpf_fib_lookup) -> Result<u32, DropReason> {
        Ok(xdp_action::XDP_PASS)
    }
}

impl PacketView for XdpFrame<'_> {
    #[inline(always)]
    fn fits(&self, len: usize) -> bool {
        self.start + len <= self.end
    }

    #[inline(always)]
    fn header<T: Header>(&self, off: usize) -> Option<&T> {
        let p = self.start + off;
        if p + core::mem::size_of::<T>() > self.end {
            return None;
        }
        // SAFETY: the header lies inside the frame (checked above), and
        // `Header` types have alignment 1 and accept any bytes.
        Some(unsafe { &*(p as *const T) })
    }
}
