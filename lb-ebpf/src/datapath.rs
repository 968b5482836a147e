//! The datapath, written once for every hook: parse, match the service,
//! follow the flow rules, pick by Maglev, rewrite, forward.

use lb_common::{
    abi::{DropReason, ServiceKey},
    parse::{ParseError, Parsed, parse},
};

use crate::{
    answer, forward,
    hook::Hook,
    icmp,
    maps::{LB_SCRATCH, LB_SERVICES},
    reverse, stats,
};

/// The action for the packet `h`. Each `DropReason` has one fixed action
/// (drop, or pass to the kernel) and is counted in `LB_DROPS`.
#[inline(always)]
pub fn run<H: Hook>(h: &H) -> u32 {
    settle::<H>(try_lb(h))
}

/// The action of an outcome: a `DropReason` is counted and decides it.
///
/// The datapath's branches are functions of their own (each its own stack
/// frame, or together they would not fit 512 bytes) that return this
/// action: a plain number in a register. A larger result would be written
/// through a pointer to the caller's stack, which the verifier refuses to
/// see returned.
#[inline(always)]
pub fn settle<H: Hook>(outcome: Result<u32, DropReason>) -> u32 {
    match outcome {
        Ok(action) => action,
        Err(reason) => {
            stats::exception(reason);
            if reason.drops() { H::DROP } else { H::PASS }
        }
    }
}

/// - addressed to a VIP: forwarded to its flow's backend ([`forward`]);
/// - a reply from a backend of a known flow: given the VIP back ([`reverse`]);
/// - an ICMP error about a balanced flow: translated and passed on ([`icmp`]);
/// - direct traffic to a backend: ends a balanced flow on its tuple, then
///   passes ([`reverse::direct`]);
/// - anything else: passed to the kernel untouched.
#[inline(always)]
fn try_lb<H: Hook>(h: &H) -> Result<u32, DropReason> {
    let scratch = LB_SCRATCH.get_ptr_mut(0).ok_or(DropReason::BadTableEntry)?;
    // SAFETY: this CPU's scratch element, used by this program run only;
    // the parse result is written once here and only read after.
    let parsed = unsafe { &mut *core::ptr::addr_of_mut!((*scratch).parsed) };
    classify(h, parsed).map_err(|e| e.reason())?;
    let pkt = match parsed {
        Parsed::L4(pkt) => &*pkt,
        Parsed::Fragment => return Err(DropReason::Fragment),
        Parsed::IcmpError(e) => return Ok(icmp::translate(h, e)),
        Parsed::NotIp | Parsed::OtherProtocol => return Ok(H::PASS),
    };
    let service = ServiceKey {
        addr: pkt.key.dst,
        port_be: pkt.key.dst_port_be,
        proto: pkt.key.proto,
        family: pkt.key.family,
    };
    // SAFETY: the value is copied out before use; the agent replaces
    // elements rather than writing into them.
    let action = if let Some(svc) = unsafe { LB_SERVICES.get(&service) } {
        let svc = *svc;
        forward::to_backend(h, pkt, &svc)
    } else {
        match reverse::find_reply(pkt) {
            reverse::NOT_A_REPLY => {
                reverse::direct(pkt);
                return Ok(H::PASS);
            }
            kind => reverse::to_client(h, pkt, kind),
        }
    };
    if action == answer::ANSWER_PENDING { Ok(answer::pending(h, pkt)) } else { Ok(action) }
}

/// [`parse`] in a stack frame of its own, its result written to `out` (in
/// the scratch map: the BPF stack cannot hold it, and a result larger
/// than a register would be written through a pointer to the caller's
/// stack, which the verifier does not follow well).
#[inline(never)]
fn classify<H: Hook>(h: &H, out: &mut Parsed) -> Result<(), ParseError> {
    // Variant by variant: a whole enum copied would carry its undefined
    // padding, which the verifier refuses to see written.
    match parse(h)? {
        Parsed::L4(pkt) => *out = Parsed::L4(pkt),
        Parsed::IcmpError(e) => *out = Parsed::IcmpError(e),
        Parsed::Fragment => *out = Parsed::Fragment,
        Parsed::NotIp => *out = Parsed::NotIp,
        Parsed::OtherProtocol => *out = Parsed::OtherProtocol,
    }
    Ok(())
}
