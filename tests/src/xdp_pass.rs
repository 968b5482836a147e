//! An XDP program that passes every frame, for the far end of a veth the
//! balancer runs native XDP on.
//!
//! Frames that XDP redirects into a veth need NAPI at its peer. GRO on gives
//! it, but on Linux 6.18 frames redirected back out of the veth they came in
//! on (a hairpin call, an ICMP answer) were sometimes held at a GRO-only
//! peer until its next frame: 14 of about 2 400 hairpin calls to the
//! caller itself stalled for seconds, at the end of a burst (6 of 12 runs of
//! the edges hairpin test). With an XDP program on the peer none did (about
//! 6 000 such calls, 30 runs). This is what the README asks of an XDP-on-veth
//! deployment, so the XDP-mode topologies do it too.
//!
//! The program is two instructions (`r0 = XDP_PASS; exit`) loaded with the
//! bpf(2) syscall, pinned (in the tests' own BPF file system) just long enough for `ip link ... xdpdrv pinned`
//! to attach it by netlink (an attachment the interface holds, with no file
//! descriptor to keep), then unpinned.

use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::atomic::{AtomicU32, Ordering},
};

use lb_userspace::datapath::sys::{BPF_OBJ_PIN, BPF_PROG_LOAD, bpf};

use crate::netns::NetNs;

const BPF_PROG_TYPE_XDP: u32 = 6;
const XDP_PASS: i32 = 2;

/// One eBPF instruction as the kernel reads it.
#[repr(C)]
#[derive(Clone, Copy)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

/// `r0 = XDP_PASS; exit`.
const PROGRAM: [Insn; 2] = [
    // BPF_ALU64 | BPF_MOV | BPF_K, into r0.
    Insn { code: 0xb7, regs: 0, off: 0, imm: XDP_PASS },
    // BPF_JMP | BPF_EXIT.
    Insn { code: 0x95, regs: 0, off: 0, imm: 0 },
];

/// The head of `union bpf_attr` for BPF_PROG_LOAD; the kernel zero-extends
/// a shorter attr.
#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
}

/// The head of `union bpf_attr` for BPF_OBJ_PIN.
#[repr(C)]
#[derive(Default)]
struct ObjPin {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

fn load() -> io::Result<OwnedFd> {
    let license = c"GPL";
    let mut attr = ProgLoad {
        prog_type: BPF_PROG_TYPE_XDP,
        insn_cnt: PROGRAM.len() as u32,
        insns: PROGRAM.as_ptr() as u64,
        license: license.as_ptr() as u64,
        ..ProgLoad::default()
    };
    let fd = bpf(BPF_PROG_LOAD, &mut attr)?;
    // SAFETY: the kernel just returned this new descriptor, owned by no one
    // else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn pin(prog: &OwnedFd, path: &str) -> io::Result<()> {
    let path = CString::new(path).expect("no NUL in a pin path");
    let mut attr = ObjPin {
        pathname: path.as_ptr() as u64,
        bpf_fd: prog.as_raw_fd() as u32,
        ..ObjPin::default()
    };
    bpf(BPF_OBJ_PIN, &mut attr).map(drop)
}

/// Attaches the pass program at the native XDP hook of `iface` in `ns`.
/// Panics if it cannot: the XDP-mode tests must not run without it.
pub fn attach(ns: &NetNs, iface: &str) {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let prog = load().expect("load an XDP_PASS program (bpf(2) BPF_PROG_LOAD)");
    let path = crate::agent::test_bpffs()
        .join(format!("xdp-pass-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)))
        .display()
        .to_string();
    pin(&prog, &path).unwrap_or_else(|e| panic!("pin the XDP_PASS program at {path}: {e}"));
    let attached =
        ns.command(&["ip", "link", "set", "dev", iface, "xdpdrv", "pinned", &path]).status();
    let _ = std::fs::remove_file(&path);
    let ok = attached.is_ok_and(|s| s.success());
    assert!(ok, "attach the XDP_PASS program to {iface} in {}", ns.name());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pass_program_attaches_to_a_veth() {
        let ns = NetNs::new();
        ns.ip("link add va type veth peer name vb");
        attach(&ns, "va");
        let out = ns.exec(&["ip", "link", "show", "va"]);
        let shown = String::from_utf8_lossy(&out.stdout);
        assert!(shown.contains("prog/xdp"), "no XDP program on va: {shown}");
    }
}
