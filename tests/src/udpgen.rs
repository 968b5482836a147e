//! A small-packet generator that is not the bottleneck: BPF_PROG_TEST_RUN
//! runs a tiny tc (sched_cls) program on one skb holding the frame, and the
//! program hands [`BURST`] clones of it to the interface's transmit path
//! with `bpf_clone_redirect` (egress) on every run, so the kernel loops over
//! transmits with no syscall, copy from user or socket per frame. The
//! receiving veth needs nothing: a frame is an skb, as from any socket.
//!
//! Not live frames: until this kernel build it was BPF_PROG_TEST_RUN in
//! live-frames mode (BPF_F_TEST_XDP_LIVE_FRAMES: an XDP program whose
//! XDP_TX the kernel turns into a redirect out of the interface, what
//! xdp-trafficgen does). The sandbox's kernel 6.18.44-fc-v1300 refuses every
//! live-frames run with EPERM (XDP_DROP, PASS or TX, any namespace,
//! interface, repeat or batch size, with or without a context), while the
//! same run without the flag passes; fc-v595 and fc-v1147 ran it. Upstream's
//! bpf_prog_test_run_xdp has no EPERM. This build's refusal comes after that
//! function's attach-type and flags checks (a devmap program or an unknown
//! flag still get EINVAL) and before its batch-size check (batch 300 gets
//! EPERM, not E2BIG). [`live_frames_refused`] checks for it, to name the
//! cause.
//!
//! Raw syscalls: aya loads programs from ELF objects only, and these are
//! built here.

use std::{
    os::fd::{FromRawFd, OwnedFd, RawFd},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use lb_userspace::datapath::sys::{BPF_PROG_LOAD, BPF_PROG_TEST_RUN, bpf};
use nix::libc;

/// BPF_PROG_TYPE_XDP.
pub const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;
/// The bpf_clone_redirect helper's number.
const BPF_FUNC_CLONE_REDIRECT: i32 = 13;
/// Clones transmitted per program run: the softirqs a run left pending
/// (the receiving side's) run between runs, so this is also how many frames
/// the far side gets to process at once.
pub const BURST: u32 = 32;
/// Program runs per syscall: short enough to check the clock often
/// (200 000 frames).
const RUNS: u32 = 200_000 / BURST;

/// The prefix of `union bpf_attr` that BPF_PROG_LOAD reads; the rest zero.
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
    kern_version: u32,
    prog_flags: u32,
    rest: [u64; 12],
}

/// `union bpf_attr`'s `test` member.
#[repr(C)]
#[derive(Default)]
struct TestRun {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    pad: u32,
}

/// One `struct bpf_insn` {u8 code; u8 dst:4, src:4; i16 off; i32 imm} as
/// its little-endian u64.
pub fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    u64::from(code)
        | u64::from(dst | (src << 4)) << 8
        | u64::from(off as u16) << 16
        | u64::from(imm as u32) << 32
}

/// Loads the sched_cls program that transmits [`BURST`] clones of its skb
/// out of interface `ifindex` and returns how many of them the interface
/// took (`bpf_clone_redirect` returned 0; a full veth ring refuses some).
/// The skb is never written: a clone shares its data, and whoever changes
/// a clone's headers later (NAT, lb's rewrite) copies it first.
fn load_tx_program(ifindex: u32) -> Result<OwnedFd> {
    let mut insns = vec![
        insn(0xbf, 6, 1, 0, 0), // r6 = skb
        insn(0xb7, 7, 0, 0, 0), // r7 = 0
    ];
    for _ in 0..BURST {
        insns.extend([
            insn(0xbf, 1, 6, 0, 0),                       // r1 = skb
            insn(0xb7, 2, 0, 0, ifindex as i32),          // r2 = ifindex
            insn(0xb7, 3, 0, 0, 0),                       // r3 = 0: egress
            insn(0x85, 0, 0, 0, BPF_FUNC_CLONE_REDIRECT), // r0 = bpf_clone_redirect()
            insn(0x55, 0, 0, 1, 0),                       // if r0 != 0: skip the count
            insn(0x07, 7, 0, 0, 1),                       // r7 += 1
        ]);
    }
    insns.extend([insn(0xbf, 0, 7, 0, 0), insn(0x95, 0, 0, 0, 0)]); // return r7
    load(BPF_PROG_TYPE_SCHED_CLS, &insns).context("loading the generator's tc program")
}

/// Loads a program of type `prog_type` from its instructions (see [`insn`]).
pub fn load(prog_type: u32, insns: &[u64]) -> Result<OwnedFd> {
    let license = c"GPL";
    let mut attr = ProgLoad {
        prog_type,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        ..Default::default()
    };
    let fd = bpf(BPF_PROG_LOAD, &mut attr)?;
    // SAFETY: the kernel just returned this fd to us, and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `union bpf_attr`'s `link_create` prefix.
#[repr(C)]
#[derive(Default)]
struct LinkCreate {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
    rest: [u64; 6],
}

/// Attaches a dropping program to interface `ifindex` (of the calling
/// thread's namespace) at both hooks until the returned links are closed:
/// the sink, which counts frames (the veth's rx counter) at almost no cost,
/// so the backend's own stack does not weigh on the rate. XDP drops what
/// arrives through the veth; tc ingress drops what a balancer put straight
/// into its ingress with `bpf_redirect_peer`, which XDP never sees (without
/// it those would climb the backend's stack and answer with ICMP errors).
pub fn attach_drop(ifindex: u32) -> Result<[OwnedFd; 2]> {
    const BPF_XDP: u32 = 37;
    const BPF_TCX_INGRESS: u32 = 46;
    let xdp = load(BPF_PROG_TYPE_XDP, &[insn(0xb7, 0, 0, 0, 1), insn(0x95, 0, 0, 0, 0)])
        .context("loading the sink's XDP_DROP program")?;
    let tc = load(BPF_PROG_TYPE_SCHED_CLS, &[insn(0xb7, 0, 0, 0, 2), insn(0x95, 0, 0, 0, 0)])
        .context("loading the sink's TC_ACT_SHOT program")?;
    Ok([
        link(&xdp, ifindex, BPF_XDP).context("attaching the sink's XDP program")?,
        link(&tc, ifindex, BPF_TCX_INGRESS).context("attaching the sink's tc program")?,
    ])
}

/// A BPF link of `prog` at `attach_type` on interface `ifindex`.
fn link(prog: &OwnedFd, ifindex: u32, attach_type: u32) -> Result<OwnedFd> {
    const BPF_LINK_CREATE: libc::c_long = 28;
    let mut attr = LinkCreate {
        prog_fd: std::os::fd::AsRawFd::as_raw_fd(prog) as u32,
        target_ifindex: ifindex,
        attach_type,
        ..Default::default()
    };
    let fd = bpf(BPF_LINK_CREATE, &mut attr)?;
    // SAFETY: as in `load`.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Sends copies of `frame` out of interface `ifindex` (of the calling
/// thread's namespace) for `secs` seconds or until `stop()`; returns how
/// many were offered to the interface (some a full veth ring may refuse;
/// count what arrives on the far side).
pub fn blast(ifindex: u32, frame: &[u8], secs: f64, stop: &dyn Fn() -> bool) -> Result<u64> {
    let prog = load_tx_program(ifindex)?;
    // struct __sk_buff up to `ifindex`, the device the skb is made on (the
    // rest zero): len, pkt_type, mark, queue_mapping, protocol, vlan_present,
    // vlan_tci, vlan_proto, priority, ingress_ifindex, ifindex.
    let mut skb = [0u32; 11];
    skb[10] = ifindex;
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut sent = 0u64;
    while Instant::now() < deadline && !stop() {
        let mut attr = TestRun {
            prog_fd: std::os::fd::AsRawFd::as_raw_fd(&prog) as u32,
            data_size_in: frame.len() as u32,
            data_in: frame.as_ptr() as u64,
            repeat: RUNS,
            ctx_size_in: std::mem::size_of_val(&skb) as u32,
            ctx_in: skb.as_ptr() as u64,
            ..Default::default()
        };
        if let Err(e) = bpf(BPF_PROG_TEST_RUN, &mut attr) {
            bail!("BPF_PROG_TEST_RUN (tc, bpf_clone_redirect) on ifindex {ifindex}: {e}");
        }
        // retval: the clones the interface took in the last run. None at all
        // means it transmits nothing (down, or gone), not a busy receiver.
        if attr.retval == 0 {
            bail!(
                "the generator's program transmitted none of its {BURST} clones out of \
                 ifindex {ifindex} in its last run (bpf_clone_redirect failed every time)"
            );
        }
        sent += u64::from(BURST * RUNS);
    }
    Ok(sent)
}

/// Whether this kernel refuses BPF_PROG_TEST_RUN in live-frames mode (the
/// generator this one replaced), as 6.18.44-fc-v1300 does with EPERM:
/// `Some(error)` if a one-frame live run of an XDP_DROP program, which
/// upstream kernels run, fails.
pub fn live_frames_refused() -> Result<Option<std::io::Error>> {
    let prog = load(BPF_PROG_TYPE_XDP, &[insn(0xb7, 0, 0, 0, 1), insn(0x95, 0, 0, 0, 0)])
        .context("loading an XDP_DROP program")?;
    let mut frame = [0u8; 60];
    frame[12..14].copy_from_slice(&[0x08, 0x00]);
    let mut attr = TestRun {
        prog_fd: std::os::fd::AsRawFd::as_raw_fd(&prog) as u32,
        data_size_in: frame.len() as u32,
        data_in: frame.as_ptr() as u64,
        repeat: 1,
        flags: BPF_F_TEST_XDP_LIVE_FRAMES,
        ..Default::default()
    };
    Ok(bpf(BPF_PROG_TEST_RUN, &mut attr).err())
}
