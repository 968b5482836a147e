//! The decapsulating program (`lb_decap_xdp`, `lb_decap_tc`): the backend
//! side of direct server return over IP-in-IP. The balancer sends a client's
//! packet to a backend inside an outer IPv4/IPv6 header addressed to the
//! backend; here that outer header is removed and the inner packet, still
//! addressed to the VIP (held on the backend's `lo`), goes to the stack,
//! which answers the client directly from the VIP.
//!
//! Only packets whose outer destination is listed in `LB_DECAP_ADDRS` (this
//! host's addresses, filled by `lb decap`) are stripped; everything else is
//! handed to the stack untouched. The kernel needs no ipip module for this
//! (many kernels have none), and where it has one, the module only sees
//! what this program leaves.
//!
//! Checksums: the inner packet's are untouched, and were computed by its
//! sender over the inner headers only, so they stay true. At XDP the stack
//! verifies them in full; at tc see `Strip for TcSkb` for `skb->csum`.

use aya_ebpf::{
    macros::map,
    maps::{HashMap, PerCpuArray},
};
use lb_common::{
    abi::{Addr, DecapCounters, FAMILY_V6, MAX_DECAP_ADDRS},
    parse::{
        headers::{ETH_P_IP, ETH_P_IPV6},
        tunnel::{Tunnel, inner_fits, tunnel},
    },
};

use crate::hook::strip::Strip;

// The decapsulating program's own maps, here rather than in `maps`: the
// balancer never touches them (names: `lb_common::abi::MAP_DECAP_*`).

/// This host's addresses -> their family.
#[map]
pub static LB_DECAP_ADDRS: HashMap<Addr, u32> = HashMap::with_max_entries(MAX_DECAP_ADDRS, 0);

/// One `DecapCounters` per CPU.
#[map]
pub static LB_DECAP_COUNTERS: PerCpuArray<DecapCounters> = PerCpuArray::with_max_entries(1, 0);

/// What became of a packet: each is one counter of `DecapCounters`.
enum Outcome {
    Decapsulated,
    Passed,
    Malformed,
    Failed,
}

/// Runs the program on one packet and returns the hook's action.
#[inline(always)]
pub fn run<H: Strip>(pkt: &H) -> u32 {
    let outcome = decap(pkt);
    if let Some(c) = LB_DECAP_COUNTERS.get_ptr_mut(0) {
        // SAFETY: a per-CPU slot, written only by this CPU.
        let c: &mut DecapCounters = unsafe { &mut *c };
        match outcome {
            Outcome::Decapsulated => c.decapsulated += 1,
            Outcome::Passed => c.passed += 1,
            Outcome::Malformed => c.malformed += 1,
            Outcome::Failed => c.failed += 1,
        }
    }
    match outcome {
        Outcome::Decapsulated | Outcome::Passed => H::PASS,
        Outcome::Malformed | Outcome::Failed => H::DROP,
    }
}

#[inline(always)]
fn decap<H: Strip>(pkt: &H) -> Outcome {
    let t = match tunnel(pkt) {
        Ok(Some(t)) => t,
        Ok(None) => return Outcome::Passed,
        // The kernel's own input drops these too.
        Err(_) => return Outcome::Malformed,
    };
    if !for_us(&t) {
        return Outcome::Passed;
    }
    if !inner_fits(pkt, &t) {
        return Outcome::Malformed;
    }
    let ethertype = if t.inner_family == FAMILY_V6 { ETH_P_IPV6 } else { ETH_P_IP };
    if pkt.strip(t.outer_len, ethertype.to_be_bytes()) {
        Outcome::Decapsulated
    } else {
        Outcome::Failed
    }
}

/// Whether the outer destination is one of this host's addresses, of the
/// outer header's family.
#[inline(always)]
fn for_us(t: &Tunnel) -> bool {
    // SAFETY: a map lookup by value; the value is copied out at once.
    unsafe { LB_DECAP_ADDRS.get(&t.dst) }.is_some_and(|family| *family == u32::from(t.family))
}
