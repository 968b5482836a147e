//! Removing the bytes right after the Ethernet header (an IP-in-IP packet's
//! outer header), for the decapsulating program. A trait of its own beside
//! [`Hook`]: only `decap` needs it, and it uses nothing of either hook but
//! its context and its bounds-checked loads and stores.

use aya_ebpf::{
    bindings::{
        BPF_F_ADJ_ROOM_DECAP_L3_IPV4, BPF_F_ADJ_ROOM_DECAP_L3_IPV6, BPF_F_ADJ_ROOM_FIXED_GSO,
        bpf_adj_room_mode::BPF_ADJ_ROOM_MAC,
    },
    helpers::generated::{bpf_skb_adjust_room, bpf_xdp_adjust_head},
};

use super::{Hook, tc::TcSkb, xdp::XdpFrame};

const ETH_HLEN: usize = 14;
/// Where the ethertype lies in the Ethernet header.
const ETHERTYPE_OFF: usize = 12;

/// A hook that can remove bytes after the Ethernet header.
pub trait Strip: Hook {
    /// Removes the `len` bytes after the (untagged) Ethernet header, whose
    /// ethertype becomes `ethertype` (network order): that of the packet
    /// that then follows it. False if the kernel refused; the caller drops
    /// the packet then, which may be half-moved. Earlier packet pointers
    /// and bounds are invalid afterwards: return the action at once.
    fn strip(&self, len: usize, ethertype: [u8; 2]) -> bool;
}

impl Strip for XdpFrame<'_> {
    /// The Ethernet header is copied forward over the end of what goes
    /// (`len` is at least 20, so the copy does not overlap its source),
    /// then the frame's start moves up by `len`.
    #[inline(always)]
    fn strip(&self, len: usize, ethertype: [u8; 2]) -> bool {
        let Some(mut eth) = self.load::<ETH_HLEN>(0) else { return false };
        eth[ETHERTYPE_OFF] = ethertype[0];
        eth[ETHERTYPE_OFF + 1] = ethertype[1];
        if !self.store(len, eth) {
            return false;
        }
        // SAFETY: a helper on this program's frame, which nothing reads
        // through the old bounds afterwards.
        unsafe { bpf_xdp_adjust_head(self.ctx().cast(), len as i32) == 0 }
    }
}

impl Strip for TcSkb<'_> {
    /// `bpf_skb_adjust_room` in MAC mode moves the MAC header up itself and
    /// takes the removed bytes out of a CHECKSUM_COMPLETE skb's `csum`
    /// (`skb_postpull_rcsum`); a CHECKSUM_UNNECESSARY skb becomes
    /// CHECKSUM_NONE (the default without BPF_F_ADJ_ROOM_NO_CSUM_RESET), so
    /// the stack verifies the inner checksums itself. Of a GSO skb (GRO on
    /// the interface aggregates IP-in-IP TCP, the offload is built in) the
    /// segment size is kept (BPF_F_ADJ_ROOM_FIXED_GSO: each segment loses
    /// its outer header, not payload); the kernel refuses UDP GSO skbs
    /// without it, and such skbs are counted as failed. The skb keeps its
    /// tunnel GSO type bit: harmless for local delivery, which is where a
    /// decapsulated packet goes (the VIP is on `lo`). A change of family
    /// (4-in-6, 6-in-4) sets `skb->protocol` through the DECAP_L3 flag
    /// (Linux 6.3) and the ethertype by a store (the MAC header is outside
    /// `csum` at ingress).
    #[inline(always)]
    fn strip(&self, len: usize, ethertype: [u8; 2]) -> bool {
        let Some(old) = self.load::<2>(ETHERTYPE_OFF) else { return false };
        let mut flags = u64::from(BPF_F_ADJ_ROOM_FIXED_GSO);
        let switch = old != ethertype;
        if switch {
            flags |= u64::from(if ethertype == 0x86ddu16.to_be_bytes() {
                BPF_F_ADJ_ROOM_DECAP_L3_IPV6
            } else {
                BPF_F_ADJ_ROOM_DECAP_L3_IPV4
            });
        }
        // SAFETY: a helper on this program's skb; bounds are read anew at
        // every later access.
        let rc = unsafe {
            bpf_skb_adjust_room(self.ctx().cast(), -(len as i32), BPF_ADJ_ROOM_MAC, flags)
        };
        rc == 0 && (!switch || self.store(ETHERTYPE_OFF, ethertype))
    }
}
