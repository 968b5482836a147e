//! The lb datapath: NAT load balancing of TCP and UDP flows, built for two
//! hooks from one logic ([`datapath`]): XDP (`lb_xdp`) and tc ingress
//! (`lb_tc`). What differs between the hooks (packet access, checksum
//! updates, sending, action numbers) is the small layer in [`hook`].
//!
//! `datapath::try_lb` returns the action, or the `DropReason` that decides
//! it: each reason has one fixed action (drop, or pass to the kernel) and is
//! counted in `LB_DROPS`. The hot path never logs: only packets an `lb trace`
//! filter takes are recorded ([`trace`]).
#![no_std]
#![no_main]
// Map keys and values go by reference: by value, each call would copy
// them onto the 512-byte BPF stack.
#![allow(clippy::needless_borrows_for_generic_args)]

mod answer;
mod challenge;
mod clock;
mod datapath;
mod decap;
mod dsr;
mod flows;
mod forward;
mod fragments;
mod hook;
mod icmp;
mod maps;
mod passive;
mod prefilter;
mod reverse;
mod rewrite;
mod route;
mod services;
mod sources;
mod stats;
mod trace;

use aya_ebpf::{
    bindings::xdp_action,
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};

use crate::hook::{tc::TcSkb, xdp::XdpFrame};

/// The fingerprint of the sources this object was built from, found by the
/// agent by its `LB_BUILD_ID=` prefix. `#[used]` keeps it through linking.
#[unsafe(no_mangle)]
#[used]
#[unsafe(link_section = ".lb_build_id")]
static LB_BUILD_ID: [u8; 44] = build_id();

const fn build_id() -> [u8; 44] {
    let mut out = *b"LB_BUILD_ID=00000000000000000000000000000000";
    let id = env!("LB_BUILD_ID").as_bytes();
    let mut i = 0;
    while i < 32 && i < id.len() {
        out[12 + i] = id[i];
        i += 1;
    }
    out
}

/// The datapath at the XDP hook (physical NICs).
///
/// While no `lb trace` session runs, tracing costs this one load and
/// branch. Each branch is a function of its own: this frame then holds
/// nothing, and the deepest call chain (the datapath's, which has no byte
/// of the 512 to spare) is as long in both.
#[xdp]
pub fn lb_xdp(ctx: XdpContext) -> u32 {
    if trace::enabled() { xdp_traced(ctx) } else { xdp(ctx) }
}

#[inline(never)]
fn xdp(ctx: XdpContext) -> u32 {
    datapath::run(&XdpFrame::new(&ctx))
}

#[inline(never)]
fn xdp_traced(ctx: XdpContext) -> u32 {
    datapath::run_traced(&XdpFrame::new(&ctx))
}

/// The datapath at the tc hook (ingress; veth and other virtual
/// interfaces, and drivers without native XDP); tracing as at [`lb_xdp`].
#[classifier]
pub fn lb_tc(ctx: TcContext) -> i32 {
    (if trace::enabled() { tc_traced(ctx) } else { tc(ctx) }) as i32
}

#[inline(never)]
fn tc(ctx: TcContext) -> u32 {
    datapath::run(&TcSkb::new(&ctx))
}

#[inline(never)]
fn tc_traced(ctx: TcContext) -> u32 {
    datapath::run_traced(&TcSkb::new(&ctx))
}

/// The backend side of direct server return at the XDP hook: strips the
/// outer header of IP-in-IP packets to this host (`decap`).
#[xdp]
pub fn lb_decap_xdp(ctx: XdpContext) -> u32 {
    decap::run(&XdpFrame::new(&ctx))
}

/// The same at tc ingress.
#[classifier]
pub fn lb_decap_tc(ctx: TcContext) -> i32 {
    decap::run(&TcSkb::new(&ctx)) as i32
}

/// Does nothing: the baseline `cargo xtask bench datapath` measures `lb_xdp`
/// against, in the same run and harness. Never attached by the agent.
#[xdp]
pub fn lb_bench_noop(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// The tc hook's no-op baseline, as [`lb_bench_noop`] is XDP's.
#[classifier]
pub fn lb_bench_noop_tc(_ctx: TcContext) -> i32 {
    aya_ebpf::bindings::TC_ACT_UNSPEC
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
