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

pub(super) const PAGE: usize = 4096;

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
pub(super) struct Pages {
    pub(super) ptr: NonNull<u32>,
    len: usize,
}

impl Pages {
    /// Maps `len` bytes (a page multiple) from byte `offset` (page aligned).
    pub(super) fn map(fd: &OwnedFd, offset: usize, len: usize) -> io::Result<Self> {
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
        let stride = calibrate(&fd, map, slots as usize)?;
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

/// Writes a marker to the map's last element (headroom, which no table
/// uses: a datapath being taken over is live) with a map-update syscall,
/// finds it in the mapping at 4- or 8-byte spacing, and restores the
/// element. Returns the spacing in u32s (1 or 2).
fn calibrate(fd: &OwnedFd, map: &mut Map, slots: usize) -> io::Result<usize> {
    const MARKER: u32 = 0x6c62_5f31;
    let last = u32::try_from(slots.saturating_sub(1)).map_err(io::Error::other)?;
    let mut arr = Array::<&mut MapData, u32>::try_from(&mut *map)
        .map_err(|e| io::Error::other(e.to_string()))?;
    let before = arr.get(&last, 0).map_err(|e| io::Error::other(e.to_string()))?;
    arr.set(last, MARKER, 0).map_err(|e| io::Error::other(e.to_string()))?;
    let read = |stride: usize| -> io::Result<u32> {
        let byte = last as usize * 4 * stride;
        let page = Pages::map(fd, byte / PAGE * PAGE, PAGE)?;
        // SAFETY: the page holding `byte` is mapped; reading one u32 of it.
        Ok(unsafe { page.ptr.as_ptr().add((byte % PAGE) / 4).read_volatile() })
    };
    // The 8-byte layout is the larger: if the marker is not where packed
    // elements would put it, the mapping at 8 bytes is in range.
    let stride = if read(1)? == MARKER {
        1
    } else if read(2)? == MARKER {
        2
    } else {
        0
    };
    arr.set(last, before, 0).map_err(|e| io::Error::other(e.to_string()))?;
    match stride {
        0 => Err(io::Error::other("cannot find the Maglev map's layout in its mapping")),
        s => Ok(s),
    }
}
