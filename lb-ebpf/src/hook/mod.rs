//! The per-hook layer: everything that differs between the XDP hook and the
//! tc hook, behind one trait the datapath is written against once.
//!
//! - packet access: XDP sees one linear frame; tc sees an skb whose headers
//!   are pulled into its linear part and whose length may be far beyond it
//!   (a GSO/GRO super-packet);
//! - checksum updates: XDP applies them itself; tc must use the kernel's
//!   helpers, which alone know whether the skb's L4 checksum is complete or
//!   left partial for offload (CHECKSUM_PARTIAL), and keep `skb->csum` true;
//! - sending: XDP_TX / XDP_REDIRECT, or `bpf_redirect_peer` /
//!   `bpf_redirect_neigh` at tc;
//! - the numbers of the actions.

pub mod strip;
pub mod tc;
mod traced;
pub mod xdp;

pub use traced::Traced;

use aya_ebpf::bindings::bpf_fib_lookup;
use lb_common::{
    abi::{DropReason, NextHop},
    parse::PacketView,
};

/// The mask every offset into a packet is taken through. Offsets the
/// datapath computes pass between its functions through the stack, where
/// the verifier loses their bounds; without a bound it refuses to add them
/// to a packet pointer. A mask, not a comparison: the compiler rewrites a
/// comparison of `x + k` into one of `x` (signed, even), and then forms
/// packet offsets the verifier sees as possibly negative; it cannot move
/// an addition through a mask. Offsets never reach it: packets are checked
/// where they enter a function (`L4Packet::checked`), every header the
/// datapath touches lies in the first few hundred bytes, and the bounds
/// check against the packet's end follows in any case.
pub const MAX_OFFSET: usize = 0x3fff;

/// One hook's access to the packet it runs on.
pub trait Hook: PacketView {
    /// The action that hands the packet to the kernel's stack.
    const PASS: u32;
    /// The action that drops it.
    const DROP: u32;
    /// Which hook, as trace records name it (`HOOK_*`).
    const HOOK: u32;
    /// Whether this instantiation of the datapath writes trace records:
    /// true only for [`Traced`], run while an `lb trace` session is on.
    const TRACE: bool = false;

    /// Reads `N` bytes at `off`.
    fn load<const N: usize>(&self, off: usize) -> Option<[u8; N]>;

    /// Writes `bytes` at `off`, or returns false if they do not fit. A plain
    /// write: the checksums covering it are updated separately.
    fn store<const N: usize>(&self, off: usize, bytes: [u8; N]) -> bool;

    /// The whole packet's length in bytes (a super-packet's included), for
    /// byte counters.
    fn len(&self) -> u64;

    /// The interface it arrived on.
    fn ifindex(&self) -> u32;

    /// The program context, for helpers that take either kind.
    fn ctx(&self) -> *mut core::ffi::c_void;

    /// Adds `diff` (`lb_common::csum::diff*`) to the IPv4 header checksum
    /// at `off`.
    fn l3_csum(&self, off: usize, diff: u32) -> bool;

    /// Adds `diff` to the TCP/UDP checksum at `off`. `pseudo`: the change is
    /// to the pseudo-header (an address), which a partial checksum must
    /// also take; a port change it must not. `udp`: a zero checksum means
    /// "none" and stays so, and a computed zero is sent as 0xffff. `v6`:
    /// the packet is IPv6 (it has no header checksum to balance an address
    /// change in `skb->csum`).
    fn l4_csum(&self, off: usize, diff: u32, pseudo: bool, udp: bool, v6: bool) -> bool;

    /// Sends the rewritten packet to `hop` (its MACs written first).
    fn send(&self, hop: &NextHop) -> Result<u32, DropReason>;

    /// Sends the rewritten packet by the FIB's answer `fib` that the
    /// next hop's MAC is not known yet.
    fn resolve(&self, fib: &bpf_fib_lookup) -> Result<u32, DropReason>;

    /// Whether [`resolve`](Hook::resolve) sends the packet as it is to the
    /// FIB's next hop (tc: `bpf_redirect_neigh`), rather than handing it to
    /// the kernel to route by its destination (XDP: `XDP_PASS`).
    const RESOLVES_IN_PLACE: bool;

    /// The length to hold against an MTU, `l3_off` being the IP header's
    /// offset, `headers` the bytes from there to the payload and `outer`
    /// the bytes an encapsulation will add: the IP length, or for a GSO skb
    /// that of each segment it will be cut into (its headers and `gso_size`
    /// bytes of payload).
    fn mtu_len(&self, l3_off: usize, headers: usize, outer: usize) -> u64;

    /// Puts the outer IP header `outer` (IPv6 if `v6`) between the Ethernet
    /// header, kept as it is, and the packet. Earlier packet pointers are
    /// invalid afterwards.
    fn encapsulate<const N: usize>(&self, outer: &[u8; N], v6: bool) -> bool;

    /// Makes room for `grow` bytes right after the Ethernet header and cuts
    /// the packet to `new_len` bytes in all: the original IP header moves
    /// back by `grow`. Earlier packet pointers are invalid afterwards.
    fn reshape(&self, grow: u32, new_len: u32) -> bool;

    /// The action that sends the (rewritten) packet back out of the
    /// interface it came in on, to its sender.
    fn back_out(&self) -> u32;
}
