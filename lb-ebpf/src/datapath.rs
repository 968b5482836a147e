//! The datapath, written once for every hook: parse, match the service,
//! follow the flow rules, pick by Maglev, rewrite, forward.

use lb_common::{
    abi::{DropReason, ServiceKey},
    parse::{Parsed, parse},
};

use crate::{forward, hook::Hook, maps::LB_SERVICES, passive, reverse, stats};

/// The action for the packet `h`. Each `DropReason` has one fixed action
/// (drop, or pass to the kernel) and is counted in `LB_DROPS`.
#[inline(always)]
pub fn run<H: Hook>(h: &H) -> u32 {
    match try_lb(h) {
        Ok(action) => action,
        Err(reason) => {
            stats::exception(reason);
            if reason.drops() { H::DROP } else { H::PASS }
        }
    }
}

/// - addressed to a VIP: forwarded to its flow's backend ([`forward`]);
/// - a reply from a backend of a known flow: given the VIP back ([`reverse`]);
/// - anything else: passed to the kernel untouched.
#[inline(always)]
fn try_lb<H: Hook>(h: &H) -> Result<u32, DropReason> {
    let pkt = match parse(h) {
        Ok(Parsed::L4(pkt)) => pkt,
        Ok(Parsed::Fragment) => return Err(DropReason::Fragment),
        Ok(Parsed::Unreachable(quoted)) => {
            passive::unreachable(&quoted.key);
            return Ok(H::PASS);
        }
        Ok(Parsed::NotIp | Parsed::OtherProtocol) => return Ok(H::PASS),
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
        return forward::to_backend(h, &pkt, &svc);
    }
    reverse::to_client(h, &pkt)
}
