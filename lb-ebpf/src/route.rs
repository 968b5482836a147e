//! Sending a rewritten packet on: the kernel's FIB gives the egress interface
//! and the MAC addresses, as it would for a packet it routed itself; the
//! hook sends it there.
//!
//! A backend's next hop is cached (`LB_NEXT_HOPS`, by backend id) and asked
//! of the FIB again about once a second, so the forward path of a known
//! backend costs no FIB lookup and a changed route or neighbour is picked up
//! within a second. Replies go to clients, too many to cache: they ask the
//! FIB every time.

use aya_ebpf::{
    bindings::{
        BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS,
        BPF_FIB_LOOKUP_SKIP_NEIGH, BPF_FIB_LOOKUP_SRC, bpf_fib_lookup,
    },
    helpers::generated::bpf_fib_lookup as fib_lookup,
};
use lb_common::abi::{Addr, DropReason, FAMILY_V4, FlowKey, NextHop};

use crate::{
    hook::Hook,
    maps::{LB_NEXT_HOPS, LB_PEER_DEVICES, LB_SCRATCH},
    stats,
};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// Which cache entry a forward may use and refresh.
pub struct Cached {
    /// The backend the packet goes to.
    pub backend_id: u32,
    /// Now, in flow-table ticks.
    pub now: u32,
}

/// Where a packet goes, as the FIB (or the cache) said, before it is
/// rewritten: a packet that does not fit is answered as it arrived.
///
/// A struct, not an enum with data: every byte is always written, as the
/// verifier wants of every register it sees copied.
#[derive(Clone, Copy)]
pub struct Route {
    /// What to do.
    pub kind: RouteKind,
    /// For `Hop`: the next hop. For `TooBig`: `mtu` is the path's MTU.
    pub hop: NextHop,
}

/// What [`Route`] says.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    /// Out of `hop.ifindex` to its MAC.
    Hop,
    /// The next hop's MAC is not known yet: the kernel resolves it (from
    /// the FIB's answer, left in `LB_SCRATCH`).
    Resolve,
    /// Larger than the MTU towards it, `hop.mtu`.
    TooBig,
}

impl Route {
    #[inline(always)]
    const fn of(kind: RouteKind, hop: NextHop) -> Self {
        Self { kind, hop }
    }

    /// The MTU a packet did not fit, if it did not.
    #[inline(always)]
    pub fn too_big(&self) -> Option<u32> {
        (self.kind == RouteKind::TooBig).then_some(self.hop.mtu)
    }
}

/// Routes a packet whose IP header is at `l3_off` (`headers` bytes from
/// there to its payload, and `outer` bytes of encapsulation to come), once
/// rewritten (or encapsulated) to `to`; through the backend's
/// cached next hop when `cache` names one that is usable. Nothing in the
/// packet changes.
#[inline(always)]
pub fn lookup<H: Hook>(
    h: &H,
    l3_off: usize,
    headers: usize,
    outer: usize,
    to: &FlowKey,
    cache: Option<Cached>,
) -> Result<Route, DropReason> {
    let ingress = h.ifindex();
    let len = h.mtu_len(l3_off, headers, outer);
    let slot = cache.as_ref().and_then(|c| LB_NEXT_HOPS.get_ptr_mut(c.backend_id));
    if let (Some(c), Some(slot)) = (&cache, slot) {
        // SAFETY: a pointer to a live array element, copied out at once. A
        // concurrent refresh writes the same bytes unless the neighbour
        // changed, when one packet may see a mix of the two MACs.
        let hop = unsafe { *slot };
        if hop.usable(ingress, c.now, len) {
            return Ok(Route::of(RouteKind::Hop, hop));
        }
    }
    let p = fib_query(ingress, to)?;
    if len > 0 {
        // The FIB checks the route's MTU only when given the length (the IP
        // datagram's, or a GSO skb's segments'). The tc FIB's own check of
        // the skb passes any skb marked GSO, whatever its segments' size.
        p.__bindgen_anon_1.tot_len = len as u16;
    }
    // SAFETY: `p` is a valid, fully initialised lookup struct of the size
    // given, and the context is the program's own.
    let rc = unsafe { fib_lookup(h.ctx(), p, core::mem::size_of::<bpf_fib_lookup>() as i32, 0) };
    match rc as u32 {
        BPF_FIB_LKUP_RET_SUCCESS => {
            let hop = NextHop {
                ingress,
                ifindex: p.ifindex,
                stamp: cache.as_ref().map_or(0, |c| c.now),
                // Given a length, the FIB leaves it here: known to fit (a
                // larger packet asks the FIB again and records its own).
                // SAFETY: an integer member of a union of integers.
                mtu: u32::from(unsafe { p.__bindgen_anon_1.mtu_result }),
                dmac: p.dmac,
                smac: p.smac,
                peer: has_peer(p.ifindex),
            };
            if let (Some(_), Some(slot)) = (&cache, slot) {
                // SAFETY: a pointer to a live array element; see above on
                // concurrent writers.
                unsafe { *slot = hop };
            }
            Ok(Route::of(RouteKind::Hop, hop))
        }
        BPF_FIB_LKUP_RET_NO_NEIGH => Ok(Route::of(RouteKind::Resolve, NextHop::default())),
        BPF_FIB_LKUP_RET_FRAG_NEEDED => {
            // SAFETY: on FRAG_NEEDED the FIB writes the MTU here.
            let mtu = u32::from(unsafe { p.__bindgen_anon_1.mtu_result });
            Ok(Route::of(RouteKind::TooBig, NextHop { mtu, ..NextHop::default() }))
        }
        _ => Err(DropReason::NoRoute),
    }
}

/// Back the way the packet came: out of its ingress to the MAC it came
/// from. What a hairpin flow's packets take in both directions: the
/// backend is the caller, so its path is the one the packet arrived by
/// (and the FIB may not know its neighbour yet, when the kernel, given
/// such a packet from one of its own addresses, would drop it).
#[inline(always)]
pub fn back_to_sender<H: Hook>(h: &H) -> Result<Route, DropReason> {
    let eth = h.load::<12>(0).ok_or(DropReason::TruncatedEthernet)?;
    let ifindex = h.ifindex();
    let mut hop =
        NextHop { ingress: ifindex, ifindex, peer: has_peer(ifindex), ..NextHop::default() };
    let mut i = 0;
    while i < 6 {
        hop.dmac[i] = eth[6 + i];
        hop.smac[i] = eth[i];
        i += 1;
    }
    Ok(Route::of(RouteKind::Hop, hop))
}

/// [`NextHop::peer`] of the interface `ifindex`.
#[inline(always)]
fn has_peer(ifindex: u32) -> u32 {
    // SAFETY: a map lookup by value; the value is not kept.
    u32::from(unsafe { LB_PEER_DEVICES.get(&ifindex) }.is_some())
}

/// Sends a rewritten packet where [`lookup`] said. A packet too big for its
/// path that may be fragmented (IPv4 without DF) goes to the kernel, which
/// fragments it; the caller answers the others before rewriting.
#[inline(always)]
pub fn send<H: Hook>(h: &H, route: &Route) -> Result<u32, DropReason> {
    match route.kind {
        RouteKind::Hop => h.send(&route.hop),
        RouteKind::Resolve => {
            let s = LB_SCRATCH.get_ptr(0).ok_or(DropReason::NoRoute)?;
            // SAFETY: this CPU's scratch element, holding the FIB's answer.
            h.resolve(unsafe { &*core::ptr::addr_of!((*s).fib) })
        }
        RouteKind::TooBig => {
            stats::exception(DropReason::FragmentedByKernel);
            Ok(H::PASS)
        }
    }
}

/// Routes and sends an already rewritten packet that is never answered
/// (an ICMP error being passed on).
#[inline(always)]
pub fn forward<H: Hook>(h: &H, l3_off: usize, to: &FlowKey) -> Result<u32, DropReason> {
    let route = lookup(h, l3_off, 0, 0, to, None)?;
    if route.kind == RouteKind::TooBig { Err(DropReason::TooBig) } else { send(h, &route) }
}

/// The source address this host uses towards `to.dst`, as the FIB says:
/// what a hairpin flow's caller is replaced by. `None` where the kernel
/// cannot say (before Linux 6.7, or no address on the way).
#[inline(always)]
pub fn source_towards<H: Hook>(h: &H, to: &FlowKey) -> Option<Addr> {
    let p = fib_query(h.ifindex(), to).ok()?;
    // SAFETY: as in `lookup`.
    let rc = unsafe {
        fib_lookup(
            h.ctx(),
            p,
            core::mem::size_of::<bpf_fib_lookup>() as i32,
            BPF_FIB_LOOKUP_SRC | BPF_FIB_LOOKUP_SKIP_NEIGH,
        )
    };
    // The tc FIB may add that the skb is too big for the egress; the source
    // is written all the same.
    if rc != 0 && rc as u32 != BPF_FIB_LKUP_RET_FRAG_NEEDED {
        return None;
    }
    // SAFETY: the FIB wrote the source of the family asked for.
    Some(unsafe {
        if to.family == FAMILY_V4 {
            Addr { words: [p.__bindgen_anon_3.ipv4_src, 0, 0, 0] }
        } else {
            Addr { words: p.__bindgen_anon_3.ipv6_src }
        }
    })
}

/// A FIB query for a packet from `to.src` to `to.dst` that came in on
/// `ingress`, written in this CPU's `LB_SCRATCH` element: 64 bytes the
/// 512-byte BPF stack cannot spare.
#[inline(always)]
fn fib_query(ingress: u32, to: &FlowKey) -> Result<&'static mut bpf_fib_lookup, DropReason> {
    let s = LB_SCRATCH.get_ptr_mut(0).ok_or(DropReason::NoRoute)?;
    // SAFETY: this CPU's element of a per-CPU map, used by one program run
    // at a time, its FIB part only through this reference until the next
    // query.
    let p = unsafe {
        let p = core::ptr::addr_of_mut!((*s).fib);
        core::ptr::write_bytes(p, 0, 1);
        &mut *p
    };
    p.l4_protocol = to.proto;
    p.sport = to.src_port_be;
    p.dport = to.dst_port_be;
    p.ifindex = ingress;
    if to.family == FAMILY_V4 {
        p.family = AF_INET;
        p.__bindgen_anon_3.ipv4_src = to.src.words[0];
        p.__bindgen_anon_4.ipv4_dst = to.dst.words[0];
    } else {
        p.family = AF_INET6;
        p.__bindgen_anon_3.ipv6_src = to.src.words;
        p.__bindgen_anon_4.ipv6_dst = to.dst.words;
    }
    Ok(p)
}
