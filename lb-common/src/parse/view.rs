//! Bounds-checked access to packet bytes, the one primitive the parser uses.
//!
//! The XDP program implements [`PacketView`] over its packet pointers, host
//! code over a byte slice; the parser is generic over it, so both run the same
//! parsing code. Every header type is alignment 1 (byte arrays only), so a
//! reference to one may point anywhere in a packet.

/// A header layout that can be viewed in place at any offset of a packet.
///
/// # Safety
/// Implementors must be `#[repr(C)]`, have alignment 1, and be made only of
/// `u8` and `[u8; N]` fields, so any byte pattern at any address is valid.
pub unsafe trait Header: Copy {}

/// Read-only, bounds-checked access to a packet.
pub trait PacketView {
    /// Whether the packet is at least `len` bytes long. (A comparison rather
    /// than a length: the verifier tracks pointer comparisons, not the
    /// difference of two packet pointers.)
    fn fits(&self, len: usize) -> bool;

    /// The header of type `T` starting `off` bytes into the packet, or `None`
    /// if it does not fit entirely inside the packet.
    fn header<T: Header>(&self, off: usize) -> Option<&T>;
}

impl PacketView for [u8] {
    #[inline(always)]
    fn fits(&self, len: usize) -> bool {
        len <= self.len()
    }

    #[inline(always)]
    fn header<T: Header>(&self, off: usize) -> Option<&T> {
        let end = off.checked_add(core::mem::size_of::<T>())?;
        let bytes = self.get(off..end)?;
        // SAFETY: `bytes` is exactly size_of::<T>() in-bounds bytes, and
        // `Header` guarantees alignment 1 and that any bytes are a valid T.
        Some(unsafe { &*bytes.as_ptr().cast::<T>() })
    }
}
