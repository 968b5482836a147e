//! The bpf(2) syscall, for the few commands aya does not offer: detaching a
//! pinned link now, and (in the tests and benchmarks) loading a program
//! from instructions rather than an ELF object.

use std::io;

use nix::libc;

/// BPF_PROG_LOAD.
pub const BPF_PROG_LOAD: libc::c_long = 5;
/// BPF_OBJ_PIN.
pub const BPF_OBJ_PIN: libc::c_long = 6;
/// BPF_OBJ_GET.
pub const BPF_OBJ_GET: libc::c_long = 7;
/// BPF_PROG_TEST_RUN.
pub const BPF_PROG_TEST_RUN: libc::c_long = 10;
/// BPF_LINK_DETACH.
pub const BPF_LINK_DETACH: libc::c_long = 34;

/// bpf(2) with `attr`, a `#[repr(C)]` prefix of `union bpf_attr` for
/// `cmd` (the kernel zero-extends a shorter attr); its result (a new
/// descriptor for the commands that make one).
pub fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is live and initialised for the call, and its size is
    // passed along with it; the callers give the layout `cmd` reads.
    let r = unsafe {
        libc::syscall(libc::SYS_bpf, cmd, std::ptr::from_mut(attr), size_of::<T>() as u32)
    };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r) }
}
