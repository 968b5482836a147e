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
    os::fd::{AsRawFd, OwnedFd},
    sync::atomic::{AtomicU32, Ordering},
};

use lb_userspace::datapath::sys::{BPF_OBJ_PIN, bpf};

use crate::{netns::NetNs, udpgen::insn};

const XDP_PASS: i32 = 2;

/// The head of `union bpf_attr` for BPF_OBJ_PIN.
#[repr(C)]
#[derive(Default)]
struct ObjPin {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

/// `r0 = XDP_PASS; exit`, loaded.
fn load() -> anyhow::Result<OwnedFd> {
    crate::udpgen::load(
        crate::udpgen::BPF_PROG_TYPE_XDP,
        &[insn(0xb7, 0, 0, 0, XDP_PASS), insn(0x95, 0, 0, 0, 0)],
    )
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
    let prog = load().unwrap_or_else(|e| panic!("load an XDP_PASS program: {e:#}"));
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
