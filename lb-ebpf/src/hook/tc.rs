//! The tc hook (sched_cls at ingress): an skb, possibly a GSO/GRO
//! super-packet with its L4 checksum left partial for offload
//! (CHECKSUM_PARTIAL), so endpoints need no offload changes.
//!
//! - Headers are read and written in the skb's linear part, pulled there
//!   once; the packet's length is the skb's, not the linear part's.
//! - Checksums go through the kernel's helpers, which alone know the skb's
//!   checksum state: a partial L4 checksum takes only pseudo-header
//!   (address) changes, and `skb->csum` of a CHECKSUM_COMPLETE skb is kept
//!   true.
//! - A packet for an interface with a peer (veth, netkit) goes straight to
//!   the peer's ingress with `bpf_redirect_peer`, as Cilium does for pods:
//!   no backlog queue, no second pass through a stack. Anything else leaves
//!   by `bpf_redirect_neigh`, so the kernel resolves the next hop itself.

use aya_ebpf::{
    bindings::{
        BPF_F_ADJ_ROOM_ENCAP_L3_IPV4, BPF_F_ADJ_ROOM_ENCAP_L3_IPV6, BPF_F_MARK_MANGLED_0,
        BPF_F_PSEUDO_HDR, BPF_F_RECOMPUTE_CSUM, TC_ACT_SHOT, TC_ACT_UNSPEC,
        bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, bpf_fib_lookup, bpf_redir_neigh,
    },
    helpers::generated::{
        bpf_l3_csum_replace, bpf_l4_csum_replace, bpf_redirect, bpf_redirect_neigh,
        bpf_redirect_peer, bpf_skb_adjust_room, bpf_skb_change_tail, bpf_skb_pull_data,
        bpf_skb_store_bytes,
    },
    programs::TcContext,
};
use lb_common::{
    abi::{DropReason, HOOK_TC, NextHop},
    parse::{Header, PacketView},
};

use super::{Hook, MAX_OFFSET};
use crate::maps::LB_PEER_DEVICES;

const ETH_ALEN: usize = 6;
const ETH_HLEN: u32 = 14;
const AF_INET: u8 = 2;
/// Enough linear bytes for every header the datapath reads: Ethernet, a
/// VLAN tag, an IP header with options or extension headers, TCP/UDP, and
/// an ICMP error's quoted headers.
const HEADERS: u32 = 192;
/// `BPF_F_IPV6` of `bpf_l4_csum_replace` (Linux 6.16): an IPv6 address
/// change leaves `skb->csum` as it is (no header checksum balances it).
/// Older kernels refuse the flag; they are retried without it.
const BPF_F_IPV6: u64 = 1 << 7;

/// The skb a tc program runs on.
pub struct TcSkb<'a> {
    ctx: &'a TcContext,
}

impl<'a> TcSkb<'a> {
    /// Wraps `ctx`, pulling the headers into the linear part if they are
    /// not all there (a packet shorter than that is pulled whole).
    #[inline(always)]
    pub fn new(ctx: &'a TcContext) -> Self {
        let len = ctx.len();
        let want = if len < HEADERS { len } else { HEADERS };
        if ctx.data() + (want as usize) > ctx.data_end() {
            // SAFETY: a helper on this program's skb. On failure the parser
            // finds the headers short and counts the packet.
            unsafe { bpf_skb_pull_data(ctx.skb.skb, want) };
        }
        Self { ctx }
    }

    /// The linear part's bounds. Read anew at every access: every helper
    /// that may change the skb invalidates earlier packet pointers.
    #[inline(always)]
    fn bounds(&self) -> (usize, usize) {
        (self.ctx.data(), self.ctx.data_end())
    }

    #[inline(always)]
    fn skb(&self) -> *mut aya_ebpf::bindings::__sk_buff {
        self.ctx.skb.skb
    }
}

impl Hook for TcSkb<'_> {
    const PASS: u32 = TC_ACT_UNSPEC as u32;
    const DROP: u32 = TC_ACT_SHOT as u32;
    const HOOK: u32 = HOOK_TC;

    #[inline(always)]
    fn load<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        let (start, end) = self.bounds();
        let p = start + (off & MAX_OFFSET);
        if p + N > end {
            return None;
        }
        // SAFETY: [p, p + N) is inside the linear part (checked above), and
        // a byte array has alignment 1.
        Some(unsafe { core::ptr::read_unaligned(p as *const [u8; N]) })
    }

    #[inline(always)]
    fn store<const N: usize>(&self, off: usize, bytes: [u8; N]) -> bool {
        let (start, end) = self.bounds();
        let p = start + (off & MAX_OFFSET);
        if p + N > end {
            return false;
        }
        // SAFETY: as in `load`. The verifier makes the skb writable (not
        // shared with a clone) before a program that writes runs.
        unsafe { core::ptr::write_unaligned(p as *mut [u8; N], bytes) };
        true
    }

    #[inline(always)]
    fn len(&self) -> u64 {
        u64::from(self.ctx.len())
    }

    #[inline(always)]
    fn ifindex(&self) -> u32 {
        // SAFETY: a field read from the program's own context.
        unsafe { (*self.skb()).ifindex }
    }

    #[inline(always)]
    fn ctx(&self) -> *mut core::ffi::c_void {
        self.skb().cast()
    }

    #[inline(always)]
    fn l3_csum(&self, off: usize, diff: u32) -> bool {
        // SAFETY: a helper on this program's skb; size 0 means "`to` is a
        // difference" (`from` must then be 0).
        unsafe { bpf_l3_csum_replace(self.skb(), off as u32, 0, u64::from(diff), 0) == 0 }
    }

    #[inline(always)]
    fn l4_csum(&self, off: usize, diff: u32, pseudo: bool, udp: bool, v6: bool) -> bool {
        let mut flags = 0u64;
        if pseudo {
            flags |= u64::from(BPF_F_PSEUDO_HDR);
        }
        if udp {
            flags |= u64::from(BPF_F_MARK_MANGLED_0);
        }
        let call = |flags: u64| {
            // SAFETY: as in `l3_csum`.
            unsafe { bpf_l4_csum_replace(self.skb(), off as u32, 0, u64::from(diff), flags) == 0 }
        };
        if v6 && pseudo { call(flags | BPF_F_IPV6) || call(flags) } else { call(flags) }
    }

    #[inline(always)]
    fn send(&self, hop: &NextHop) -> Result<u32, DropReason> {
        // Through the helper, with BPF_F_RECOMPUTE_CSUM: the MACs are
        // covered by a CHECKSUM_COMPLETE skb's csum.
        let macs = mac_pair(hop);
        // SAFETY: a helper on this program's skb, writing 12 bytes from a
        // local array of 12.
        let rc = unsafe {
            bpf_skb_store_bytes(
                self.skb(),
                0,
                macs.as_ptr().cast(),
                macs.len() as u32,
                u64::from(BPF_F_RECOMPUTE_CSUM),
            )
        };
        if rc != 0 {
            return Err(DropReason::TruncatedEthernet);
        }
        if hop.peer != 0 {
            // SAFETY: a helper call with an interface index, no flags.
            Ok(unsafe { bpf_redirect_peer(hop.ifindex, 0) } as u32)
        } else {
            // SAFETY: as above.
            Ok(unsafe { bpf_redirect(hop.ifindex, 0) } as u32)
        }
    }

    /// The FIB gave the egress and the next hop; the kernel resolves its
    /// MAC (and queues the packet meanwhile).
    #[inline(always)]
    fn resolve(&self, fib: &bpf_fib_lookup) -> Result<u32, DropReason> {
        let mut nh = next_hop(fib);
        // SAFETY: a helper call with a fully initialised struct of the size
        // given.
        Ok(unsafe {
            bpf_redirect_neigh(
                fib.ifindex,
                &mut nh,
                core::mem::size_of::<bpf_redir_neigh>() as i32,
                0,
            )
        } as u32)
    }

    const RESOLVES_IN_PLACE: bool = true;

    /// A GSO skb's segments take no `outer` bytes more: growing its head
    /// (`encapsulate`) takes them off its `gso_size`, so each segment still
    /// fits the MTU it fitted.
    #[inline(always)]
    fn mtu_len(&self, l3_off: usize, headers: usize, outer: usize) -> u64 {
        // SAFETY: field reads from the program's own context.
        let (segs, size) = unsafe { ((*self.skb()).gso_segs, (*self.skb()).gso_size) };
        if segs > 1 && size > 0 {
            u64::from(size) + headers as u64
        } else {
            self.len().saturating_sub(l3_off as u64) + outer as u64
        }
    }

    /// Room is made after the MAC header, the skb marked as carrying an
    /// IP-in-IP packet (a GSO skb's segments are then cut as tunnelled,
    /// each with its own outer header, and its `gso_size` shrinks by the
    /// outer header), and the header written through the helper so a
    /// CHECKSUM_COMPLETE skb's `csum` takes it (the room is zeros and
    /// changed nothing). The Ethernet type stays: 4-in-4 and 6-in-6.
    #[inline(always)]
    fn encapsulate<const N: usize>(&self, outer: &[u8; N], v6: bool) -> bool {
        let flags =
            if v6 { BPF_F_ADJ_ROOM_ENCAP_L3_IPV6 } else { BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 } as u64;
        // SAFETY: helpers on this program's skb, the second writing N bytes
        // from a local array of N.
        unsafe {
            bpf_skb_adjust_room(self.skb(), N as i32, BPF_ADJ_ROOM_MAC, flags) == 0
                && bpf_skb_store_bytes(
                    self.skb(),
                    ETH_HLEN,
                    outer.as_ptr().cast(),
                    N as u32,
                    u64::from(BPF_F_RECOMPUTE_CSUM),
                ) == 0
        }
    }

    /// The tail is cut first (to the Ethernet header and the quote), then
    /// room made after the MAC header. Only packets that are not GSO get
    /// here (the FIB passes GSO skbs, whose segments fit). A partial L4
    /// checksum (CHECKSUM_PARTIAL, from a local sender) would still point
    /// into what becomes the quote; a veth peer trusts it without checking,
    /// and skbs received from a wire are never partial.
    #[inline(always)]
    fn reshape(&self, grow: u32, new_len: u32) -> bool {
        // SAFETY: helpers on this program's skb; bounds are read anew at
        // every access.
        unsafe {
            bpf_skb_change_tail(self.skb(), new_len - grow, 0) == 0
                && bpf_skb_adjust_room(self.skb(), grow as i32, BPF_ADJ_ROOM_MAC, 0) == 0
        }
    }

    /// Into the sender's own ingress if the interface has a peer (a veth:
    /// the peer is the sender's end), as `send` does; otherwise out of the
    /// interface.
    #[inline(always)]
    fn back_out(&self) -> u32 {
        let ifindex = self.ifindex();
        // SAFETY: a map lookup by value; the value is not kept.
        let peer = unsafe { LB_PEER_DEVICES.get(&ifindex) }.is_some();
        // SAFETY: helper calls with an interface index, no flags.
        unsafe {
            if peer {
                bpf_redirect_peer(ifindex, 0) as u32
            } else {
                bpf_redirect(ifindex, 0) as u32
            }
        }
    }
}

/// Destination then source MAC, as they lead the frame.
#[inline(always)]
fn mac_pair(hop: &NextHop) -> [u8; 2 * ETH_ALEN] {
    let mut out = [0u8; 2 * ETH_ALEN];
    let mut i = 0;
    while i < ETH_ALEN {
        out[i] = hop.dmac[i];
        out[ETH_ALEN + i] = hop.smac[i];
        i += 1;
    }
    out
}

/// The next hop the FIB chose (a gateway, or the destination itself).
#[inline(always)]
fn next_hop(fib: &bpf_fib_lookup) -> bpf_redir_neigh {
    // SAFETY: a plain C struct of integers and a union of integers.
    let mut nh: bpf_redir_neigh = unsafe { core::mem::zeroed() };
    // SAFETY: reading the union member the FIB's family says it filled.
    unsafe {
        if fib.family == AF_INET {
            nh.nh_family = u32::from(AF_INET);
            nh.__bindgen_anon_1.ipv4_nh = fib.__bindgen_anon_4.ipv4_dst;
        } else {
            nh.nh_family = 10;
            nh.__bindgen_anon_1.ipv6_nh = fib.__bindgen_anon_4.ipv6_dst;
        }
    }
    nh
}

impl PacketView for TcSkb<'_> {
    #[inline(always)]
    fn fits(&self, len: usize) -> bool {
        len <= self.ctx.len() as usize
    }

    #[inline(always)]
    fn header<T: Header>(&self, off: usize) -> Option<&T> {
        let (start, end) = self.bounds();
        let p = start + (off & MAX_OFFSET);
        if p + core::mem::size_of::<T>() > end {
            return None;
        }
        // SAFETY: the header lies inside the linear part (checked above),
        // and `Header` types have alignment 1 and accept any bytes. The
        // parser reads before anything changes the skb.
        Some(unsafe { &*(p as *const T) })
    }
}
