//! Client -> VIP by direct server return, once the flow has its backend:
//! the packet keeps the VIP as its destination and reaches the backend
//! inside an outer IP header (`dsr-ipip`) or by the backend's MAC alone
//! (`dsr-l2`). The backend holds the VIP and answers the client itself, so
//! no reply comes back through lb and nothing is recorded for one.
//!
//! As on the NAT path, the packet is routed first and answered "too big"
//! as it arrived if it does not fit: here for the path's MTU less the
//! outer header, since that is what the client may send. XDP cannot
//! fragment, and the kernel cannot be handed a packet still addressed to a
//! VIP to fragment it, so an IPv4 packet without DF that does not fit is
//! answered the same way (its sender then fragments it, or does not).

use lb_common::{
    abi::{DropReason, FAMILY_V4, FORWARD_DSR_IPIP, FlowKey, ServiceKey, ServiceRecord},
    encap::{self, PROTO_IPIP, PROTO_IPV6, V4_OVERHEAD, V6_OVERHEAD},
    hash::flow_hash,
    icmp::Answer,
    parse::{IcmpError, L4Packet},
};

use crate::{
    answer, datapath,
    hook::Hook,
    maps::{LB_BACKENDS, LB_SCRATCH, LB_SERVICES},
    rewrite::{self, Side},
    route::{self, RouteKind},
    stats,
};

const ETH_HLEN: usize = 14;
const IPV6_HEADER: u16 = 40;

/// What `forward::to_backend` returns in place of an action for a service
/// whose forwarding is direct server return, once the flow has its
/// backend: the datapath then calls [`to_backend`] (its stack frame beside
/// the flow rules', not on top of them: together they would pass the
/// verifier's 512 bytes).
pub const DSR_PENDING: u32 = 0xd5a0_0000;

/// What `icmp::translate` returns in place of an action for an ICMP error
/// about a reply a direct-server-return backend sent (from the VIP, so the
/// error is addressed to the VIP and reaches lb): the datapath then calls
/// [`icmp_to_backend`], which sends it on to that backend unchanged, as
/// its flow's packets go.
pub const ICMP_PENDING: u32 = 0xd5a0_0002;

/// What [`to_backend`] returns in place of an action for a `dsr-ipip`
/// packet routed and ready to be wrapped: the datapath then calls
/// [`wrap_and_send`].
pub const WRAP_PENDING: u32 = 0xd5a0_0001;

/// The backend a flow goes to, and how it was found, left in the scratch
/// map by [`later`] for [`to_backend`].
#[derive(Clone, Copy)]
pub struct Target {
    /// Its id (its record, counters, the next-hop cache).
    pub id: u32,
    /// Whether the packet opened a new flow (1: counted as one).
    pub new_flow: u32,
    /// Now, in flow-table ticks.
    pub now: u32,
}

/// Records `target` and the flow `key` (client -> VIP) an ICMP error is
/// about, and returns [`ICMP_PENDING`] (DROP if the scratch map is
/// missing).
#[inline(always)]
pub fn later_icmp<H: Hook>(target: Target, key: &FlowKey) -> u32 {
    match LB_SCRATCH.get_ptr_mut(0) {
        Some(s) => {
            // SAFETY: this CPU's scratch element; read once by
            // `icmp_to_backend`.
            unsafe {
                *core::ptr::addr_of_mut!((*s).dsr) = target;
                *core::ptr::addr_of_mut!((*s).dsr_key) = *key;
            }
            ICMP_PENDING
        }
        None => H::DROP,
    }
}

/// Sends the ICMP error `e` that [`later_icmp`] recorded to its flow's
/// backend, by the service's forwarding, its TTL the only change: the
/// backend's kernel then learns the path MTU, or that the client is
/// unreachable, about the connection it answers from the VIP.
#[inline(never)]
pub fn icmp_to_backend<H: Hook>(h: &H, e: &IcmpError) -> u32 {
    datapath::settle::<H>(try_icmp_to_backend(h, e))
}

#[inline(always)]
fn try_icmp_to_backend<H: Hook>(h: &H, e: &IcmpError) -> Result<u32, DropReason> {
    let s = LB_SCRATCH.get_ptr_mut(0).ok_or(DropReason::BadTableEntry)?;
    // SAFETY: this CPU's scratch element, written by `later_icmp` in this
    // run; `dsr_to` is written here and read by `push_outer`.
    let (target, key, to) = unsafe {
        (
            *core::ptr::addr_of!((*s).dsr),
            &*core::ptr::addr_of!((*s).dsr_key),
            &mut *core::ptr::addr_of_mut!((*s).dsr_to),
        )
    };
    let service = ServiceKey {
        addr: key.dst,
        port_be: key.dst_port_be,
        proto: key.proto,
        family: key.family,
    };
    // SAFETY: a reference to a map value, only read (see `datapath`).
    let svc = unsafe { LB_SERVICES.get(&service) }.ok_or(DropReason::BadTableEntry)?;
    let ipip = svc.forwarding == FORWARD_DSR_IPIP;
    let outer = next_hop_key(key, svc, &target, to)?;
    let route = route::lookup(h, e.l3_off, 0, outer, to, None)?;
    if route.kind == RouteKind::TooBig || (ipip && e.l3_off != ETH_HLEN) {
        // No error is sent about an error.
        return Err(DropReason::EncapFailed);
    }
    if route.kind == RouteKind::Resolve && !ipip && !H::RESOLVES_IN_PLACE {
        return Err(DropReason::NoNeighbour);
    }
    if rewrite::ttl_expires(h, e.l3_off, key.family)? {
        return Err(DropReason::TtlExpired);
    }
    let vip = key.dst;
    rewrite::ip_header(h, e.l3_off, key.family, Side::Dst, &vip, &vip, true)?;
    if ipip && !push_outer(h, e.l3_off) {
        return Err(DropReason::EncapFailed);
    }
    route::send(h, &route)
}

/// Records `target` and returns [`DSR_PENDING`] (DROP if the scratch map
/// is missing).
#[inline(always)]
pub fn later<H: Hook>(target: Target) -> u32 {
    match LB_SCRATCH.get_ptr_mut(0) {
        Some(s) => {
            // SAFETY: this CPU's scratch element; its `dsr` part is
            // written here and read once by `to_backend`.
            unsafe { *core::ptr::addr_of_mut!((*s).dsr) = target };
            DSR_PENDING
        }
        None => H::DROP,
    }
}

/// Sends `pkt`, of a service `svc` whose forwarding is direct server
/// return, to the target [`later`] recorded.
#[inline(never)]
pub fn to_backend<H: Hook>(h: &H, pkt: &L4Packet, svc: &ServiceRecord) -> u32 {
    let Some(pkt) = pkt.checked() else {
        return datapath::settle::<H>(Err(DropReason::MalformedIp));
    };
    let Some(s) = LB_SCRATCH.get_ptr(0) else { return H::DROP };
    // SAFETY: this CPU's scratch element, written by `later` in this run.
    let target = unsafe { *core::ptr::addr_of!((*s).dsr) };
    datapath::settle::<H>(try_to_backend(h, pkt, svc, &target))
}

#[inline(always)]
fn try_to_backend<H: Hook>(
    h: &H,
    pkt: &L4Packet,
    svc: &ServiceRecord,
    target: &Target,
) -> Result<u32, DropReason> {
    let ipip = svc.forwarding == FORWARD_DSR_IPIP;
    let vip = pkt.key.dst;
    let s = LB_SCRATCH.get_ptr_mut(0).ok_or(DropReason::BadTableEntry)?;
    // SAFETY: this CPU's scratch element; its `dsr_to` part is written
    // here and read by `push_outer` in this run. In the map, not on the
    // stack: this function's frame sits beside the flow rules' and must
    // stay small.
    let to = unsafe { &mut *core::ptr::addr_of_mut!((*s).dsr_to) };
    let outer = next_hop_key(&pkt.key, svc, target, to)?;
    let cache = Some(route::Cached { backend_id: target.id, now: target.now });
    let route = route::lookup(h, pkt.l3_off, rewrite::headers(h, pkt)?, outer, to, cache)?;
    if let Some(mtu) = route.too_big() {
        let mtu = mtu.saturating_sub(outer as u32);
        return Ok(answer::later::<H>(Answer::TooBig { mtu }, &vip));
    }
    if route.kind == RouteKind::Resolve && !ipip && !H::RESOLVES_IN_PLACE {
        // Passed to the kernel, a packet still addressed to the VIP would
        // be taken as this host's own.
        return Err(DropReason::NoNeighbour);
    }
    // The TTL only: the addresses and ports stay the client's and the VIP's.
    rewrite::ip_header(h, pkt.l3_off, pkt.key.family, Side::Dst, &vip, &vip, true)?;
    if ipip {
        // SAFETY: as above; read by `wrap_and_send` in this run.
        unsafe { *core::ptr::addr_of_mut!((*s).dsr_route) = route };
        return Ok(WRAP_PENDING);
    }
    sent(h, svc, target, &route)
}

/// Sends the packet where `route` says, and counts it.
#[inline(always)]
fn sent<H: Hook>(
    h: &H,
    svc: &ServiceRecord,
    target: &Target,
    route: &route::Route,
) -> Result<u32, DropReason> {
    let action = route::send(h, route)?;
    stats::forwarded(svc.id, target.id, h.len(), target.new_flow != 0);
    Ok(action)
}

/// Wraps a `dsr-ipip` packet that [`to_backend`] routed (it returned
/// [`WRAP_PENDING`]) in its outer header and sends it. A call of the
/// datapath's own, beside `to_backend` rather than inside it, for the
/// same reason as that one.
#[inline(never)]
pub fn wrap_and_send<H: Hook>(h: &H, pkt: &L4Packet, svc: &ServiceRecord) -> u32 {
    let Some(pkt) = pkt.checked() else {
        return datapath::settle::<H>(Err(DropReason::MalformedIp));
    };
    let Some(s) = LB_SCRATCH.get_ptr(0) else { return H::DROP };
    // SAFETY: this CPU's scratch element, its parts written by `later` and
    // `try_to_backend` in this run.
    let (target, route) =
        unsafe { (*core::ptr::addr_of!((*s).dsr), *core::ptr::addr_of!((*s).dsr_route)) };
    let outcome = if pkt.l3_off == ETH_HLEN && push_outer(h, pkt.l3_off) {
        sent(h, svc, &target, &route)
    } else {
        Err(DropReason::EncapFailed)
    };
    datapath::settle::<H>(outcome)
}

/// Writes to `to` what the packet is routed by towards the backend (the
/// outer header's addresses for `dsr-ipip`, the packet's own with the
/// backend's address for `dsr-l2`) and returns the bytes the outer header
/// adds.
#[inline(always)]
fn next_hop_key(
    key: &FlowKey,
    svc: &ServiceRecord,
    target: &Target,
    to: &mut FlowKey,
) -> Result<usize, DropReason> {
    let backend = LB_BACKENDS.get(target.id).ok_or(DropReason::BadTableEntry)?;
    let family = key.family;
    if svc.forwarding != FORWARD_DSR_IPIP {
        *to = FlowKey { dst: backend.addr, ..*key };
        return Ok(0);
    }
    let v4 = family == FAMILY_V4;
    let hash = flow_hash(key);
    *to = FlowKey {
        src: encap::tunnel_source(&svc.tunnel_src, svc.tunnel_host_bits, family, hash),
        dst: backend.addr,
        // The flow hash, where `push_outer` finds it for the IPv6 flow
        // label (an outer header has no ports).
        src_port_be: hash as u16,
        dst_port_be: (hash >> 16) as u16,
        proto: if v4 { PROTO_IPIP } else { PROTO_IPV6 },
        family,
        _pad: [0; 2],
    };
    Ok(if v4 { V4_OVERHEAD } else { V6_OVERHEAD })
}

/// Puts the outer header that `dsr_to` of the scratch map describes in
/// front of the IP packet at `l3_off`, right after the Ethernet header
/// (which is kept as it is, so the caller refuses a frame with a VLAN tag
/// in line: it would end up between the two); false if it could not.
#[inline(always)]
fn push_outer<H: Hook>(h: &H, l3_off: usize) -> bool {
    let Some(s) = LB_SCRATCH.get_ptr(0) else { return false };
    // SAFETY: this CPU's scratch element, written by `try_to_backend`.
    let to = unsafe { &*core::ptr::addr_of!((*s).dsr_to) };
    let Some(first) = h.load::<4>(l3_off) else { return false };
    if to.family == FAMILY_V4 {
        let len = u16::from_be_bytes([first[2], first[3]]);
        h.encapsulate(&encap::outer_v4(&to.src, &to.dst, len, first[1]), false)
    } else {
        let Some(payload) = h.load::<2>(l3_off + 4) else { return false };
        let len = u16::from_be_bytes(payload).saturating_add(IPV6_HEADER);
        let hash = u32::from(to.src_port_be) | u32::from(to.dst_port_be) << 16;
        h.encapsulate(&encap::outer_v6(&to.src, &to.dst, len, first, hash), true)
    }
}
