//! Reading the per-backend SYN counters (`LB_SYNS`) through a memory
//! mapping: the agent samples them every few milliseconds to find backends
//! that stopped answering, which would cost a syscall per backend per
//! sample through the map interface.

use std::{io, os::fd::AsFd};

use aya::maps::Map;
use lb_common::abi::{MAX_BACKENDS, SynCounters};

use super::window::{PAGE, Pages};

/// The whole `LB_SYNS` array, mapped for as long as the view lives.
pub struct SynView {
    pages: Pages,
}

// SAFETY: the mapping is only read (volatile reads of plain integers the
// kernel updates), from whichever thread holds the view.
unsafe impl Send for SynView {}

impl std::fmt::Debug for SynView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SynView")
    }
}

/// Bytes of the array: its 16-byte elements are already 8-byte aligned, so
/// every kernel lays them out back to back.
const BYTES: usize = MAX_BACKENDS as usize * size_of::<SynCounters>();

impl SynView {
    /// Maps `map` (the program's `LB_SYNS`).
    pub fn new(map: &Map) -> io::Result<Self> {
        let fd = match map {
            Map::Array(data) => data.fd().as_fd().try_clone_to_owned()?,
            _ => return Err(io::Error::other("not an array")),
        };
        Ok(Self { pages: Pages::map(&fd, 0, BYTES.div_ceil(PAGE) * PAGE)? })
    }

    /// The counters of backend `id` now.
    pub fn get(&self, id: u32) -> SynCounters {
        if id >= MAX_BACKENDS {
            return SynCounters::default();
        }
        // SAFETY: `id` is inside the array, which the mapping covers whole;
        // the element is 8-byte aligned (page-aligned start, 16-byte
        // elements); a volatile read, since the kernel writes it.
        unsafe { self.pages.ptr.as_ptr().cast::<SynCounters>().add(id as usize).read_volatile() }
    }
}
