//! The lb XDP datapath.
#![no_std]
#![no_main]

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

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
pub fn lb_xdp(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
