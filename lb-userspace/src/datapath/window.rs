//! Writing Maglev tables through a memory mapping of the Maglev map: a table
//! of 65537 slots is one memcpy instead of 65537 map-update syscalls
//! (~300 ms), which is what makes applying a health change take well under
//! a millisecond.
//!
//! The map is created `BPF_F_MMAPABLE`; writes land directly in the memory
//! the XDP program reads. Only regions no service record points at are ever
//! written, and the record switch (a syscall, a full barrier) comes after.
//! Each write maps just the pages it touches and unmaps them at once, so the
//! agent's resident memory does not grow with the tables (100 services of
//! 65537 slots would otherwise keep ~52 MB mapped).

use std::{
    io,
    num::NonZeroUsize,
    os::fd::{AsFd, OwnedFd},
    ptr::NonNull,
};

use aya::maps::{Array, Map, MapData};
use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};

const PAGE: usize = 4096;

/// Writes slots of the Maglev map through short-lived mappings.
///
/// Element spacing depends on the kernel: some put array elements
/// `round_up(value_size, 8)` bytes apart, others pack a u32 map. The window
/// measures it once, by writing a marker through the syscall path and
/// finding it in the mapping.
#[derive(Debug)]
pub struct SlotWindow {
    fd: OwnedFd,
    slots: usize,
    /// u32s from one element to the next.
    stride: usize,
}

/// A mapping of some pages of the map, unmapped on drop.
struct Pages {
    ptr: NonNull<u32>,
    len: usize,
}

impl Pages {
    /// Maps `len` bytes (a page multiple) from byte `offset` (page aligned).
    fn map(fd: &OwnedFd, offset: usize, len: usize) -> io::Result<Self> {
        let size = NonZeroUsize::new(len).ok_or_else(|| io::Error::other("empty mapping"))?;
        let offset = i64::try_from(offset).map_err(io::Error::other)?;
        // SAFETY: a fresh shared mapping of the map's fd, inside the area the
        // kernel allocated for its elements (the caller checks the range).
        let ptr = unsafe {
            mmap(
                None,
                size,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                fd.as_fd(),
                offset,
            )
        }
        .map_err(io::Error::from)?;
        Ok(Self { ptr: ptr.cast(), len })
    }
}

impl Drop for Pages {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `map` mapped, once.
        let _ = unsafe { munmap(self.ptr.cast(), self.len) };
    }
}

impl SlotWindow {
    /// A window on the `slots` u32 entries of `map` (an mmapable array of
    /// at least 2 slots, all zero: a map just created).
    pub fn new(map: &mut Map, slots: u32) -> io::Result<Self> {
        let fd = match &*map {
            Map::Array(data) => data.fd().as_fd().try_clone_to_owned()?,
            _ => return Err(io::Error::other("the Maglev map is not an array")),
        };
        let stride = calibrate(&fd, map)?;
        Ok(Self { fd, slots: slots as usize, stride })
    }

    /// Copies `table` to slots `base..base + table.len()`.
    pub fn write(&mut self, base: u32, table: &[u32]) -> io::Result<()> {
        let base = base as usize;
        if base.checked_add(table.len()).is_none_or(|end| end > self.slots) {
            return Err(io::Error::other("table outside the Maglev map"));
        }
        let elem = 4 * self.stride;
        let start = base * elem;
        let first_page = start / PAGE * PAGE;
        let len = (start + table.len() * elem - first_page).div_ceil(PAGE) * PAGE;
        let pages = Pages::map(&self.fd, first_page, len)?;
        // SAFETY: the mapping covers bytes first_page..first_page + len,
        // which include the elements written (start..start + n * elem), and
        // is valid for u32 writes while `pages` lives.
        let dst = unsafe {
            std::slice::from_raw_parts_mut(
                pages.ptr.as_ptr().add((start - first_page) / 4),
                table.len() * self.stride,
            )
        };
        if self.stride == 1 {
            dst.copy_from_slice(table);
        } else {
            for (e, &id) in dst.chunks_exact_mut(self.stride).zip(table) {
                e[0] = id;
            }
        }
        Ok(())
    }
}

/// Writes a marker to element 1 with a map-update syscall and returns how
/// many u32s into the mapping it appeared (1 or 2).
fn calibrate(fd: &OwnedFd, map: &mut Map) -> io::Result<usize> {
    const MARKER: u32 = 0x6c62_5f31;
    let mut arr = Array::<&mut MapData, u32>::try_from(&mut *map)
        .map_err(|e| io::Error::other(e.to_string()))?;
    arr.set(1, MARKER, 0).map_err(|e| io::Error::other(e.to_string()))?;
    let found = {
        let page = Pages::map(fd, 0, PAGE)?;
        // SAFETY: one page is mapped; reading its u32s 1 and 2.
        unsafe {
            let p = page.ptr.as_ptr();
            [(1, p.add(1).read_volatile()), (2, p.add(2).read_volatile())]
        }
    };
    arr.set(1, 0, 0).map_err(|e| io::Error::other(e.to_string()))?;
    found
        .iter()
        .find(|(_, v)| *v == MARKER)
        .map(|(stride, _)| *stride)
        .ok_or_else(|| io::Error::other("cannot find the Maglev map's layout in its mapping"))
}
