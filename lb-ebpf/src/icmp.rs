//! ICMP errors about balanced flows, passed on translated, so that path MTU
//! discovery, port unreachables and traceroute work through the balancer
//! as they do through a router:
//!
//! - an error about a reply lb sent from a VIP (to a client somewhere
//!   beyond) is addressed to the VIP: it goes to the flow's backend, its
//!   destination and the quoted source made the backend's again (for a
//!   direct-server-return service the backend sent that reply from the VIP
//!   itself: the error goes to it unchanged, see `dsr::icmp_to_backend`);
//! - an error about a packet lb forwarded to a backend (from a router on
//!   the way, or the backend itself) goes back to the client with the
//!   quoted destination made the VIP again, and its own source too if the
//!   backend sent it. The client never sees the backend's address.
//!
//! Inner and outer checksums are updated incrementally. An error about no
//! balanced flow passes to the kernel untouched.

use lb_common::{
    abi::{
        Addr, DropReason, EVENT_UNREACHABLE, Endpoint, FAMILY_V4, FLOW_OPENING, FORWARD_NAT,
        FlowKey, PROTO_UDP, ServiceKey,
    },
    csum,
    parse::{
        IcmpError, IcmpKind,
        headers::{ICMP_CHECK_OFF, Ipv4Hdr, Ipv6Hdr, PROTO_ICMP, PROTO_ICMPV6},
    },
};

use crate::{
    clock, datapath, dsr, flows,
    hook::Hook,
    maps::{LB_BACKENDS, LB_SERVICES},
    passive,
    reverse::{self, Found},
    rewrite::{self, Side},
    route,
};

/// Passes on the ICMP error `e` translated if it is about a balanced flow;
/// anything else passes to the kernel.
// Not inlined: a function of its own has a stack frame of its own,
// and the datapath's branches together would not fit one 512-byte frame.
#[inline(never)]
pub fn translate<H: Hook>(h: &H, e: &IcmpError) -> u32 {
    datapath::settle::<H>(try_translate(h, e))
}

#[inline(always)]
fn try_translate<H: Hook>(h: &H, e: &IcmpError) -> Result<u32, DropReason> {
    if let Some(action) = to_backend(h, e)? {
        return Ok(action);
    }
    if let Some(action) = to_client(h, e)? {
        return Ok(action);
    }
    Ok(H::PASS)
}

/// An error about a reply lb sent from a VIP: to the flow's backend.
#[inline(always)]
fn to_backend<H: Hook>(h: &H, e: &IcmpError) -> Result<Option<u32>, DropReason> {
    let q = &e.key;
    let service =
        ServiceKey { addr: q.src, port_be: q.src_port_be, proto: q.proto, family: q.family };
    // SAFETY: a reference to a map value, only read (see `datapath`).
    let Some(svc) = (unsafe { LB_SERVICES.get(&service) }) else { return Ok(None) };
    let key = FlowKey {
        src: q.dst,
        dst: q.src,
        src_port_be: q.dst_port_be,
        dst_port_be: q.src_port_be,
        ..*q
    };
    // Answered flows first, then those still waiting (see `flows`).
    let now = clock::now();
    let entry = flows::find(&key, now);
    if entry.is_null() {
        return Ok(None);
    }
    // SAFETY: a pointer to a live map value, copied out at once.
    let flow = unsafe { *entry };
    if clock::expired(&flow, q.proto, now) {
        return Ok(None);
    }
    if svc.forwarding != FORWARD_NAT {
        let target = dsr::Target { id: flow.backend_id, new_flow: 0, now };
        return Ok(Some(dsr::later_icmp::<H>(target, &key)));
    }
    let Some(backend) = LB_BACKENDS.get(flow.backend_id).copied() else { return Ok(None) };
    if backend.family != q.family {
        return Err(DropReason::BadTableEntry);
    }
    let (src, dst) = outer(h, e)?;
    pass_on(h, e, Side::Src, &backend.addr, backend.port_be, Side::Dst, &dst, &backend.addr)?;
    route::forward(h, e.l3_off, &icmp_key(e, src, backend.addr)).map(Some)
}

/// An error about a packet lb forwarded to a backend: back to the client.
#[inline(always)]
fn to_client<H: Hook>(h: &H, e: &IcmpError) -> Result<Option<u32>, DropReason> {
    let q = &e.key;
    let backend =
        Endpoint { addr: q.dst, port_be: q.dst_port_be, proto: q.proto, family: q.family };
    let mut found = Found::default();
    if !reverse::find_flow(&backend, &q.src, q.src_port_be, &mut found) {
        return Ok(None);
    }
    // A failure signal only about UDP or a connection not yet answered: an
    // error about an answered connection is left to the probes, so a forged
    // error cannot take down a backend that is serving it.
    if e.kind == IcmpKind::Unreachable && (q.proto == PROTO_UDP || found.flow.state == FLOW_OPENING)
    {
        passive::report(found.flow.backend_id, EVENT_UNREACHABLE);
    }
    let vip = found.vip;
    let (src, dst) = outer(h, e)?;
    let new_src = if src == backend.addr { vip.addr } else { src };
    pass_on(h, e, Side::Dst, &vip.addr, vip.port_be, Side::Src, &src, &new_src)?;
    route::forward(h, e.l3_off, &icmp_key(e, new_src, dst)).map(Some)
}

/// Rewrites the quoted packet's `inner` endpoint to `addr`:`port_be` and
/// the outer header's `outer` address from `old` to `new`, takes one off
/// the outer TTL, and updates the ICMP checksum for all of it.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn pass_on<H: Hook>(
    h: &H,
    e: &IcmpError,
    inner: Side,
    addr: &Addr,
    port_be: u16,
    outer: Side,
    old: &Addr,
    new: &Addr,
) -> Result<(), DropReason> {
    let family = e.key.family;
    // No error is sent about an error: one about to expire is dropped.
    if rewrite::ttl_expires(h, e.l3_off, family)? {
        return Err(DropReason::TtlExpired);
    }
    let inner_diff = rewrite::quoted(h, e, inner, addr, port_be)?;
    rewrite::ip_header(h, e.l3_off, family, outer, old, new, true)?;
    let off = e.icmp_off + ICMP_CHECK_OFF;
    let v6 = family != FAMILY_V4;
    // ICMPv6 covers a pseudo-header with the outer addresses; ICMP does not.
    let ok = h.l4_csum(off, inner_diff, false, false, v6)
        && (!v6 || old == new || h.l4_csum(off, csum::diff_addr(old, new, 4), true, false, true));
    if ok { Ok(()) } else { Err(DropReason::MalformedIp) }
}

/// The outer header's source and destination.
#[inline(always)]
fn outer<H: Hook>(h: &H, e: &IcmpError) -> Result<(Addr, Addr), DropReason> {
    let l3 = e.l3_off;
    if e.key.family == FAMILY_V4 {
        let s = h.load::<4>(l3 + Ipv4Hdr::SRC_OFF).ok_or(DropReason::MalformedIp)?;
        let d = h.load::<4>(l3 + Ipv4Hdr::DST_OFF).ok_or(DropReason::MalformedIp)?;
        Ok((Addr::from_v4_bytes(s), Addr::from_v4_bytes(d)))
    } else {
        let s = h.load::<16>(l3 + Ipv6Hdr::SRC_OFF).ok_or(DropReason::MalformedIp)?;
        let d = h.load::<16>(l3 + Ipv6Hdr::DST_OFF).ok_or(DropReason::MalformedIp)?;
        Ok((Addr::from_v6_bytes(s), Addr::from_v6_bytes(d)))
    }
}

/// What the FIB is asked for an ICMP message from `src` to `dst`.
#[inline(always)]
fn icmp_key(e: &IcmpError, src: Addr, dst: Addr) -> FlowKey {
    let proto = if e.key.family == FAMILY_V4 { PROTO_ICMP } else { PROTO_ICMPV6 };
    FlowKey { src, dst, src_port_be: 0, dst_port_be: 0, proto, family: e.key.family, _pad: [0; 2] }
}
