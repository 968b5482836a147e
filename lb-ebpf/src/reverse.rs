//! Backend -> client: give the reply the VIP back as its source, so the
//! client only ever sees the address it connected to.

use aya_ebpf::programs::XdpContext;
use lb_common::{
    abi::{DropReason, FlowKey, NatValue},
    parse::L4Packet,
};

use crate::{
    frame::Frame,
    rewrite::{self, Side},
    route,
};

/// Forwards a reply that matched the NAT entry `nat`.
#[inline(always)]
pub fn to_client(
    ctx: &XdpContext,
    frame: &Frame,
    pkt: &L4Packet,
    nat: &NatValue,
) -> Result<u32, DropReason> {
    rewrite::check_ttl(frame, pkt)?;
    rewrite::endpoint(frame, pkt, Side::Src, &nat.vip, nat.vip_port_be)?;
    let to = FlowKey { src: nat.vip, src_port_be: nat.vip_port_be, ..pkt.key };
    route::forward(ctx, frame, &to)
}
