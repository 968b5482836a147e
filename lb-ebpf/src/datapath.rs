//! The datapath, written once for every hook: parse, match the service,
//! follow the flow rules, pick by Maglev, rewrite, forward.

use lb_common::{
    abi::{DropReason, NO_SERVICE, PROTO_TCP, SERVICE_ALLOW_LIST, SERVICE_DENY_LIST, ServiceKey},
    parse::{FRAG_FIRST, Fragment, IcmpError, L4Packet, Parsed, parse},
};

use crate::{
    answer, challenge, dsr, flows, forward, fragments,
    hook::{Hook, Traced},
    icmp,
    maps::LB_SCRATCH,
    prefilter, reverse, services, sources, stats, trace,
};

/// The action for the packet `h`. Each `DropReason` has one fixed action
/// (drop, or pass to the kernel) and is counted in `LB_DROPS`.
///
#[inline(always)]
pub fn run<H: Hook>(h: &H) -> u32 {
    settle::<H>(try_lb(h))
}

/// [`run`] with trace records, for the packets that arrive while an `lb
/// trace` session runs (see `trace`).
#[inline(always)]
pub fn run_traced<H: Hook>(h: &H) -> u32 {
    trace::reset();
    trace::action(H::HOOK, settle::<Traced<&H>>(try_lb(&Traced(h))))
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
            if H::TRACE {
                trace::exception(reason);
            }
            if reason.drops() { H::DROP } else { H::PASS }
        }
    }
}

/// - addressed to a VIP: forwarded to its flow's backend ([`forward`]);
/// - a reply from a backend of a known flow: given the VIP back ([`reverse`]);
/// - an ICMP error about a balanced flow: translated and passed on ([`icmp`]);
/// - a later fragment of a datagram whose first fragment was seen: as
///   that one ([`fragments`]);
/// - direct traffic to a backend: ends a balanced flow on its tuple, then
///   passes ([`reverse::direct`]);
/// - anything else: passed to the kernel untouched.
#[inline(always)]
fn try_lb<H: Hook>(h: &H) -> Result<u32, DropReason> {
    let scratch = LB_SCRATCH.get_ptr_mut(0).ok_or(DropReason::BadTableEntry)?;
    // SAFETY: this CPU's scratch element, used by this program run only;
    // the parse result is written once by `classify` and only read after.
    let (pkt, icmp, frag) = unsafe {
        (
            &mut *core::ptr::addr_of_mut!((*scratch).pkt),
            &mut *core::ptr::addr_of_mut!((*scratch).icmp),
            &mut *core::ptr::addr_of_mut!((*scratch).frag),
        )
    };
    let pkt = match classify(h, pkt, icmp, frag) {
        KIND_L4 => {
            if H::TRACE {
                trace::start(pkt);
            }
            &*pkt
        }
        KIND_ICMP => {
            return Ok(match icmp::translate(h, icmp) {
                dsr::ICMP_PENDING => dsr::icmp_to_backend(h, icmp),
                action => action,
            });
        }
        KIND_FRAGMENT => {
            if !fragments::later(frag, pkt) {
                return Err(DropReason::Fragment);
            }
            if H::TRACE {
                trace::start(pkt);
            }
            &*pkt
        }
        KIND_OTHER => return Ok(H::PASS),
        error => {
            return Err(DropReason::ALL
                .get(error as usize)
                .copied()
                .unwrap_or(DropReason::MalformedIp));
        }
    };
    let service = ServiceKey {
        addr: pkt.key.dst,
        port_be: pkt.key.dst_port_be,
        proto: pkt.key.proto,
        family: pkt.key.family,
    };
    // A first fragment's ports are remembered only for balanced traffic:
    // fragments the gateway merely passes must not take (or evict) entries.
    let first = pkt.fragment == FRAG_FIRST;
    // Most of what a gateway passes is to and from neither a VIP nor a
    // backend: the prefilter spares it every lookup below.
    let to_ours = prefilter::maybe(&pkt.key.dst, pkt.key.dst_port_be, pkt.key.proto);
    // SAFETY: null or a record that holds still for this program run (see
    // `services::find`). Not copied: the record's bytes on this frame would
    // leave its callees too little of the 512.
    let found = if to_ours { unsafe { services::find(&service).as_ref() } } else { None };
    let action = if let Some(svc) = found {
        if H::TRACE {
            trace::service(svc.id);
        }
        // Every packet, not only new flows': a source a reload denies
        // loses its established flows too. Before anything else, so a
        // refused packet costs little; here, not in `to_backend`, whose
        // stack frame leaves its callees little room.
        if svc.flags & (SERVICE_ALLOW_LIST | SERVICE_DENY_LIST) != 0
            && sources::admitted(&pkt.key.src, pkt.key.family, svc) == sources::NO
        {
            stats::acl_denied(svc.id);
            return Err(DropReason::AclDenied);
        }
        // Flood mode's SYN challenge: before the flow rules, so a spoofed
        // SYN (or RST) from a source not verified costs no flow entry and
        // reaches no backend; other segments of no flow from such a source
        // are dropped by `forward::to_backend`, which looks their flow up
        // anyway. Not for a first fragment: its answer would keep the
        // fragment's offset and flags (a first fragment without SYN or RST
        // from such a source, of no flow, is dropped there all the same).
        if pkt.key.proto == PROTO_TCP
            && challenge::checks(pkt.tcp_flags)
            && !first
            && flows::challenging()
        {
            let action = challenge::check(h, pkt);
            if action != challenge::NOT_CHALLENGED {
                return Ok(action);
            }
        }
        if first {
            fragments::first(pkt);
        }
        let action = match forward::to_backend(h, pkt, svc) {
            dsr::DSR_PENDING => match dsr::to_backend(h, pkt, svc) {
                dsr::WRAP_PENDING => dsr::wrap_and_send(h, pkt, svc),
                action => action,
            },
            action => action,
        };
        // SAFETY: this CPU's scratch element; `promoted` is set by
        // `flows::promote` in this run, and cleared here only.
        unsafe {
            let promoted = core::ptr::addr_of_mut!((*scratch).promoted);
            if *promoted != 0 {
                *promoted = 0;
                challenge::remember(&pkt.key.src, pkt.key.family);
            }
        }
        action
    } else {
        if H::TRACE {
            trace::service(NO_SERVICE);
        }
        // Not from a backend: no reply to translate or adopt; only direct
        // traffic to a backend has something to do.
        if !prefilter::maybe(&pkt.key.src, pkt.key.src_port_be, pkt.key.proto) {
            if to_ours {
                reverse::direct(pkt);
            }
            return Ok(H::PASS);
        }
        match reverse::find_reply(h, pkt) {
            // Flood mode: a SYN-ACK whose pending entry the flood pushed
            // out is taken back if Maglev sent its SYN there (`flows`).
            reverse::NOT_A_REPLY if flows::adopt(h, pkt) == reverse::REPLY => {
                reverse::to_client(h, pkt, reverse::REPLY)
            }
            reverse::NOT_A_REPLY => {
                reverse::direct(pkt);
                return Ok(H::PASS);
            }
            kind if first => {
                fragments::first(pkt);
                reverse::to_client(h, pkt, kind)
            }
            kind => reverse::to_client(h, pkt, kind),
        }
    };
    if action == answer::ANSWER_PENDING { Ok(answer::pending(h, pkt)) } else { Ok(action) }
}

/// What [`classify`] found (below these: a parse error's `DropReason`
/// index).
const KIND_L4: u32 = 100;
const KIND_ICMP: u32 = 101;
const KIND_FRAGMENT: u32 = 102;
const KIND_OTHER: u32 = 103;

/// [`parse`] in a stack frame of its own, its result written to `pkt` or
/// `icmp` (plain structs in the scratch map: the BPF stack cannot hold
/// them, a result larger than a register would be written through a
/// pointer to the caller's stack, which the verifier does not follow well,
/// and a whole enum written carries padding the compiler fills byte by
/// byte). Returns a `KIND_*`, or a parse error's `DropReason` index.
#[inline(never)]
fn classify<H: Hook>(h: &H, pkt: &mut L4Packet, icmp: &mut IcmpError, frag: &mut Fragment) -> u32 {
    match parse(h) {
        Ok(Parsed::L4(p)) => {
            *pkt = p;
            KIND_L4
        }
        Ok(Parsed::IcmpError(e)) => {
            *icmp = e;
            KIND_ICMP
        }
        Ok(Parsed::Fragment(f)) => {
            *frag = f;
            KIND_FRAGMENT
        }
        Ok(Parsed::NotIp | Parsed::OtherProtocol) => KIND_OTHER,
        Err(e) => e.reason() as u32,
    }
}
