//! A small-packet generator that is not the bottleneck: the kernel's
//! BPF_PROG_TEST_RUN in live-frames mode runs a tiny XDP program (write the
//! frame, `return XDP_TX`), and every run transmits a copy out of the
//! client's veth (what xdp-trafficgen does; its own binary fails to load on
//! this kernel, a removed tracepoint). The receiving veth needs NAPI: an XDP
//! program or GRO on (the bed turns GRO on).
//!
//! Raw syscalls: aya loads programs from ELF objects only, and this one is
//! built here from the frame.

use std::{
    os::fd::{FromRawFd, OwnedFd, RawFd},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use lb_userspace::datapath::sys::{BPF_PROG_LOAD, BPF_PROG_TEST_RUN, bpf};
use nix::libc;

const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;
/// Frames per kernel batch (the kernel's default).
const BATCH: u32 = 64;
/// Frames per syscall: short enough to check the clock often.
const CHUNK: u32 = 200_000;

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
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    u64::from(code)
        | u64::from(dst | (src << 4)) << 8
        | u64::from(off as u16) << 16
        | u64::from(imm as u32) << 32
}

/// Loads a program that writes `frame` over the packet and returns XDP_TX.
/// It must write it every time: live-frame pages are recycled without being
/// reset, and whoever forwarded the last copy (the kernel, or lb's XDP
/// rewrite) changed its MACs and addresses in place.
fn load_tx_program(frame: &[u8]) -> Result<OwnedFd> {
    let words: Vec<i32> = frame
        .chunks(4)
        .map(|c| {
            let mut w = [0u8; 4];
            w[..c.len()].copy_from_slice(c);
            i32::from_le_bytes(w)
        })
        .collect();
    let len = (words.len() * 4) as i32;
    let mut insns = vec![
        insn(0x61, 2, 1, 0, 0),                      // r2 = ctx->data
        insn(0x61, 3, 1, 4, 0),                      // r3 = ctx->data_end
        insn(0xbf, 4, 2, 0, 0),                      // r4 = r2
        insn(0x07, 4, 0, 0, len),                    // r4 += len
        insn(0x2d, 4, 3, words.len() as i16 + 2, 0), // if r4 > r3: drop
    ];
    for (i, w) in words.iter().enumerate() {
        insns.push(insn(0x62, 2, 0, (i * 4) as i16, *w)); // *(u32 *)(r2 + 4i) = w
    }
    insns.extend([insn(0xb7, 0, 0, 0, 3), insn(0x95, 0, 0, 0, 0)]); // return XDP_TX
    insns.extend([insn(0xb7, 0, 0, 0, 1), insn(0x95, 0, 0, 0, 0)]); // return XDP_DROP
    load(BPF_PROG_TYPE_XDP, &insns).context("loading the generator's XDP_TX program")
}

/// Loads a program of type `prog_type` from its instructions.
fn load(prog_type: u32, insns: &[u64]) -> Result<OwnedFd> {
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
/// thread's namespace) for `secs` seconds or until a stop signal; returns
/// how many were handed to the driver.
pub fn blast(ifindex: u32, frame: &[u8], secs: f64) -> Result<u64> {
    let prog = load_tx_program(frame)?;
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex.
    let md: [u32; 6] = [0, frame.len() as u32, 0, ifindex, 0, 0];
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut sent = 0u64;
    while Instant::now() < deadline && !crate::signals::stopped() {
        let mut attr = TestRun {
            prog_fd: std::os::fd::AsRawFd::as_raw_fd(&prog) as u32,
            data_size_in: frame.len() as u32,
            data_in: frame.as_ptr() as u64,
            repeat: CHUNK,
            ctx_size_in: std::mem::size_of_val(&md) as u32,
            ctx_in: md.as_ptr() as u64,
            flags: BPF_F_TEST_XDP_LIVE_FRAMES,
            batch_size: BATCH,
            ..Default::default()
        };
        if let Err(e) = bpf(BPF_PROG_TEST_RUN, &mut attr) {
            bail!("BPF_PROG_TEST_RUN (live frames) on ifindex {ifindex}: {e}");
        }
        sent += u64::from(CHUNK);
    }
    Ok(sent)
}
