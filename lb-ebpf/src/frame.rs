//! The packet as the XDP program sees it: the parser's bounds-checked view,
//! plus bounds-checked writes for the rewrite.

use aya_ebpf::programs::XdpContext;
use lb_common::parse::{Header, PacketView};

/// Start and end of the frame, as the verifier's packet pointers.
pub struct Frame {
    start: usize,
    end: usize,
}

impl Frame {
    #[inline(always)]
    pub fn new(ctx: &XdpContext) -> Self {
        Self { start: ctx.data(), end: ctx.data_end() }
    }

    /// Writes `bytes` at `off`, or returns false if they do not fit.
    #[inline(always)]
    pub fn store<const N: usize>(&self, off: usize, bytes: [u8; N]) -> bool {
        let p = self.start + off;
        if p + N > self.end {
            return false;
        }
        // SAFETY: [p, p + N) is inside the frame (checked above), and a byte
        // array has alignment 1.
        unsafe { core::ptr::write_unaligned(p as *mut [u8; N], bytes) };
        true
    }

    /// Reads `N` bytes at `off`.
    #[inline(always)]
    pub fn load<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        let p = self.start + off;
        if p + N > self.end {
            return None;
        }
        // SAFETY: as in `store`.
        Some(unsafe { core::ptr::read_unaligned(p as *const [u8; N]) })
    }

    /// Length of the frame, for byte counters.
    #[inline(always)]
    pub fn len(&self) -> u64 {
        (self.end - self.start) as u64
    }
}

impl PacketView for Frame {
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
