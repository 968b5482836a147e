//! The XDP hook: one linear frame, checksums updated in place, sent with
//! XDP_TX or XDP_REDIRECT.

use core::cell::Cell;

use aya_ebpf::{
    bindings::{bpf_fib_lookup, xdp_action},
    helpers::generated::{bpf_redirect, bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use lb_common::{
    abi::{DropReason, HOOK_XDP, NextHop},
    csum,
    parse::{Header, PacketView},
};

use super::{Hook, MAX_OFFSET};

const ETH_ALEN: usize = 6;
const ETH_HLEN: usize = 14;

/// The frame an XDP program runs on: its start and end, as the verifier's
/// packet pointers (read again after the frame is reshaped).
pub struct XdpFrame<'a> {
    ctx: &'a XdpContext,
    start: Cell<usize>,
    end: Cell<usize>,
}

impl<'a> XdpFrame<'a> {
    #[inline(always)]
    pub fn new(ctx: &'a XdpContext) -> Self {
        Self { ctx, start: Cell::new(ctx.data()), end: Cell::new(ctx.data_end()) }
    }

    #[inline(always)]
    fn bounds(&self) -> (usize, usize) {
        (self.start.get(), self.end.get())
    }
}

impl Hook for XdpFrame<'_> {
    const PASS: u32 = xdp_action::XDP_PASS;
    const DROP: u32 = xdp_action::XDP_DROP;
    const HOOK: u32 = HOOK_XDP;

    #[inline(always)]
    fn load<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        let (start, end) = self.bounds();
        let p = start + (off & MAX_OFFSET);
        if p + N > end {
            return None;
        }
        // SAFETY: [p, p + N) is inside the frame (checked above), and a byte
        // array has alignment 1.
        Some(unsafe { core::ptr::read_unaligned(p as *const [u8; N]) })
    }

    #[inline(always)]
    fn store<const N: usize>(&self, off: usize, bytes: [u8; N]) -> bool {
        let (start, end) = self.bounds();
        let p = start + (off & MAX_OFFSET);
        if p + N > end {
            return false;
        }
        // SAFETY: as in `load`.
        unsafe { core::ptr::write_unaligned(p as *mut [u8; N], bytes) };
        true
    }

    #[inline(always)]
    fn len(&self) -> u64 {
        let (start, end) = self.bounds();
        let len = (end - start) as u64;
        // Read back through a volatile load: otherwise the compiler may fold
        // the subtraction into what follows (`x - (end - start)` as
        // `x + start - end`), and the verifier refuses arithmetic on the end
        // pointer.
        // SAFETY: a read of a local.
        unsafe { core::ptr::read_volatile(&len) }
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
        // XDP_TX on a veth loses frames (seen on Linux 6.18: hairpin SYNs
        // sent back with it went missing): back out of a veth by redirect.
        if hop.ifindex == self.ifindex() && hop.peer == 0 {
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

    const RESOLVES_IN_PLACE: bool = false;

    #[inline(always)]
    fn mtu_len(&self, l3_off: usize, _headers: usize, outer: usize) -> u64 {
        self.len().saturating_sub(l3_off as u64) + outer as u64
    }

    /// The frame grows at its head, into the driver's headroom; the
    /// Ethernet header is written back at the new start.
    #[inline(always)]
    fn encapsulate<const N: usize>(&self, outer: &[u8; N], _v6: bool) -> bool {
        let Some(eth) = self.load::<ETH_HLEN>(0) else { return false };
        // SAFETY: a helper on this program's frame; the bounds are read again.
        let grown = unsafe { bpf_xdp_adjust_head(self.ctx.ctx, -(N as i32)) == 0 };
        self.start.set(self.ctx.data());
        self.end.set(self.ctx.data_end());
        grown && self.store(0, eth) && self.store(ETH_HLEN, *outer)
    }

    /// The tail is cut first, then the head grown: the whole frame moves,
    /// so the new Ethernet header is written over the old one's place.
    #[inline(always)]
    fn reshape(&self, grow: u32, new_len: u32) -> bool {
        let keep = i64::from(new_len) - i64::from(grow);
        let cut = keep - self.len() as i64;
        // SAFETY: helpers on this program's frame; the bounds are read again.
        let ok = unsafe {
            bpf_xdp_adjust_tail(self.ctx.ctx, cut as i32) == 0
                && bpf_xdp_adjust_head(self.ctx.ctx, -(grow as i32)) == 0
        };
        self.start.set(self.ctx.data());
        self.end.set(self.ctx.data_end());
        ok
    }

    /// XDP_REDIRECT to the interface itself, not XDP_TX: on veth, a frame
    /// reshaped and sent with XDP_TX never arrived (seen on Linux 6.18).
    #[inline(always)]
    fn back_out(&self) -> u32 {
        // SAFETY: a helper call with an interface index and no flags.
        unsafe { bpf_redirect(self.ifindex(), 0) as u32 }
    }
}

impl PacketView for XdpFrame<'_> {
    #[inline(always)]
    fn fits(&self, len: usize) -> bool {
        let (start, end) = self.bounds();
        start + len <= end
    }

    #[inline(always)]
    fn header<T: Header>(&self, off: usize) -> Option<&T> {
        let (start, end) = self.bounds();
        let p = start + (off & MAX_OFFSET);
        if p + core::mem::size_of::<T>() > end {
            return None;
        }
        // SAFETY: the header lies inside the frame (checked above), and
        // `Header` types have alignment 1 and accept any bytes.
        Some(unsafe { &*(p as *const T) })
    }
}
