//! Reading a whole hash map in chunks with `BPF_MAP_LOOKUP_BATCH`: one
//! syscall per few thousand entries, where aya's iterator makes two per
//! entry (a full default flow table would cost half a million syscalls).

use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd},
};

/// `BPF_MAP_LOOKUP_BATCH`, from `enum bpf_cmd`.
const BPF_MAP_LOOKUP_BATCH: i64 = 24;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Calls `f` with every (key, value) of the hash map `fd`, read `chunk`
/// entries at a time. Entries added or removed meanwhile may be seen or not.
pub fn for_each<K: Copy + Default, V: Copy + Default>(
    fd: BorrowedFd<'_>,
    chunk: u32,
    mut f: impl FnMut(&K, &V),
) -> io::Result<()> {
    let mut keys = vec![K::default(); chunk as usize];
    let mut values = vec![V::default(); chunk as usize];
    // The position tokens of a hash map are bucket indices (u32); u64 room.
    let (mut token_in, mut token_out) = (0u64, 0u64);
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { &raw const token_in as u64 },
            out_batch: &raw mut token_out as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: chunk,
            map_fd: fd.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        // SAFETY: `attr` is a valid batch attribute whose buffers hold
        // `chunk` keys and values of the map's sizes (the caller's types are
        // the map's key and value types) and live across the call.
        let rc = unsafe {
            nix::libc::syscall(
                nix::libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &raw mut attr,
                size_of::<BatchAttr>(),
            )
        };
        let err = (rc < 0).then(io::Error::last_os_error);
        let got = (attr.count as usize).min(keys.len());
        for (k, v) in keys.iter().zip(&values).take(got) {
            f(k, v);
        }
        match err {
            None => {}
            // The end: `got` held the last entries.
            Some(e) if e.raw_os_error() == Some(nix::libc::ENOENT) => return Ok(()),
            Some(e) => return Err(e),
        }
        token_in = token_out;
        first = false;
    }
}
