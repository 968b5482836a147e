//! The lb XDP datapath: NAT load balancing of TCP and UDP flows.
//!
//! Every packet is parsed (`lb_common::parse`) and then:
//! - addressed to a VIP: forwarded to its flow's backend ([`forward`]);
//! - a reply from a backend of a known flow: given the VIP back ([`reverse`]);
//! - anything else: passed to the kernel untouched.
//!
//! [`try_lb`] returns the action, or the `DropReason` that decides it: each
//! reason has one fixed action (drop, or pass to the kernel) and is counted
//! in `LB_DROPS`. The hot path never logs.
#![no_std]
#![no_main]

mod clock;
mod forward;
mod frame;
mod maps;
mod passive;
mod reverse;
mod rewrite;
mod route;
mod stats;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use lb_common::{
    abi::{DropReason, ServiceKey},
    parse::{Parsed, parse},
};

use crate::{frame::Frame, maps::LB_SERVICES};

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

#[xdp]
pub fn lb_xdp(ctx: XdpContext) -> u32 {
    match try_lb(&ctx) {
        Ok(action) => action,
        Err(reason) => {
            stats::exception(reason);
            if reason.drops() { xdp_action::XDP_DROP } else { xdp_action::XDP_PASS }
        }
    }
}

/// Does nothing: the baseline `cargo xtask bench datapath` measures `lb_xdp`
/// against, in the same run and harness. Never attached by the agent.
#[xdp]
pub fn lb_bench_noop(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[inline(always)]
fn try_lb(ctx: &XdpContext) -> Result<u32, DropReason> {
    let frame = Frame::new(ctx);
    let pkt = match parse(&frame) {
        Ok(Parsed::L4(pkt)) => pkt,
        Ok(Parsed::Fragment) => return Err(DropReason::Fragment),
        Ok(Parsed::Unreachable(quoted)) => {
            passive::unreachable(&quoted.key);
            return Ok(xdp_action::XDP_PASS);
        }
        Ok(Parsed::NotIp | Parsed::OtherProtocol) => return Ok(xdp_action::XDP_PASS),
        Err(e) => return Err(e.reason()),
    };
    let service = ServiceKey {
        addr: pkt.key.dst,
        port_be: pkt.key.dst_port_be,
        proto: pkt.key.proto,
        family: pkt.key.family,
    };
    // SAFETY: the value is copied out before use; the agent replaces
    // elements rather than writing into them.
    if let Some(svc) = unsafe { LB_SERVICES.get(service) } {
        let svc = *svc;
        return forward::to_backend(ctx, &frame, &pkt, &svc);
    }
    reverse::to_client(ctx, &frame, &pkt)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
