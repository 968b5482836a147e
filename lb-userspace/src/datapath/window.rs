//! The Maglev map, memory-mapped: a table of 65537 slots is written with one
//! memcpy instead of 65537 map-update syscalls (~300 ms), which is what
//! makes applying a health change take microseconds.
//!
//! The map is created `BPF_F_MMAPABLE`; writes land directly in the memory
//! the XDP program reads. Only regions no service record points at are ever
//! written, and the record switch (a syscall, a full barrier) comes after.

use std::{io, num::NonZeroUsize, os::fd::AsFd, ptr::NonNull};

use aya::maps::{Map, MapData};
use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};

/// A writable mapping of the Maglev map's slots.
///
/// Element spacing depends on the kernel: older ones put array elements
/// `round_up(value_size, 8)` bytes apart, newer ones pack a u32 map. The
/// window measures it once, by writing a marker through the syscall path
/// and finding it in the mapping.
#[derive(Debug)]
pub struct SlotWindow {
    ptr: NonNull<u32>,
    slots: usize,
    bytes: usize,
    /// u32s from one element to the next.
    stride: usize,
}

// SAFETY: the mapping is plain shared memory owned by this value; nothing
// else in the process aliases it.
unsafe impl Send for SlotWindow {}

impl SlotWindow {
    /// Maps the `slots` u32 entries of `map` (an mmapable array, at least
    /// 2 slots, all zero: a map just created).
    pub fn new(map: &mut Map, slots: u32) -> io::Result<Self> {
        let fd = match &*map {
            Map::Array(data) => data.fd().as_fd().try_clone_to_owned()?,
            _ => return Err(io::Error::other("the Maglev map is not an array")),
        };
        let slots = slots as usize;
        // Map the packed size (always within the kernel's area), find the
        // real spacing, and remap wider if the kernel uses 8-byte elements.
        let mut w = Self::map(&fd, slots, 1)?;
        let stride = w.calibrate(map)?;
        if stride != 1 {
            drop(w);
            w = Self::map(&fd, slots, stride)?;
        }
        Ok(w)
    }

    /// A shared read-write mapping of `slots` elements `stride` u32s apart.
    fn map(fd: &impl AsFd, slots: usize, stride: usize) -> io::Result<Self> {
        let page = 4096;
        let bytes = (slots * 4 * stride).div_ceil(page) * page;
        let len = NonZeroUsize::new(bytes).ok_or_else(|| io::Error::other("empty Maglev map"))?;
        // SAFETY: a fresh shared mapping of the map's fd, no larger than the
        // area the kernel allocated for it (page-rounded, as it requires).
        let ptr = unsafe {
            mmap(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                fd.as_fd(),
                0,
            )
        }
        .map_err(io::Error::from)?;
        Ok(Self { ptr: ptr.cast(), slots, bytes, stride })
    }

    /// Writes a marker to element 1 with a map-update syscall and returns
    /// how many u32s into the mapping it appeared (1 or 2).
    fn calibrate(&self, map: &mut Map) -> io::Result<usize> {
        const MARKER: u32 = 0x6c62_5f31;
        let mut arr = aya::maps::Array::<&mut MapData, u32>::try_from(&mut *map)
            .map_err(|e| io::Error::other(e.to_string()))?;
        arr.set(1, MARKER, 0).map_err(|e| io::Error::other(e.to_string()))?;
        // SAFETY: at least 2 slots (4096 bytes) are mapped; reads of u32.
        let found = unsafe {
            let p = self.ptr.as_ptr();
            [(1, p.add(1).read_volatile()), (2, p.add(2).read_volatile())]
        };
        arr.set(1, 0, 0).map_err(|e| io::Error::other(e.to_string()))?;
        found
            .iter()
            .find(|(_, v)| *v == MARKER)
            .map(|(stride, _)| *stride)
            .ok_or_else(|| io::Error::other("cannot find the Maglev map's layout in its mapping"))
    }

    /// Copies `table` to slots `base..base + table.len()`; false if that
    /// runs past the map.
    pub fn write(&mut self, base: u32, table: &[u32]) -> bool {
        let base = base as usize;
        if base.checked_add(table.len()).is_none_or(|end| end > self.slots) {
            return false;
        }
        // SAFETY: slots base..base + len lie inside the mapping (checked
        // above), which is valid for u32 writes for as long as `self` lives.
        let dst = unsafe {
            std::slice::from_raw_parts_mut(
                self.ptr.as_ptr().add(base * self.stride),
                table.len() * self.stride,
            )
        };
        if self.stride == 1 {
            dst.copy_from_slice(table);
        } else {
            for (elem, &id) in dst.chunks_exact_mut(self.stride).zip(table) {
                elem[0] = id;
            }
        }
        true
    }
}

impl Drop for SlotWindow {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped, once.
        let _ = unsafe { munmap(self.ptr.cast(), self.bytes) };
    }
}
