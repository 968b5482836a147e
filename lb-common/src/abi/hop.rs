//! The next hop towards a backend, cached so a forwarded packet of a known
//! backend needs no FIB lookup.

use super::{REFRESH_TICKS, abi_type};

/// Where packets for one backend leave, as the FIB said at `stamp`.
/// `ifindex` 0: nothing cached.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NextHop {
    /// The interface the packets came in on when the FIB was asked (its
    /// answer may depend on it); another ingress asks again.
    pub ingress: u32,
    /// The egress interface.
    pub ifindex: u32,
    /// When the FIB was asked, in flow-table ticks.
    pub stamp: u32,
    /// The egress MTU the FIB gave (0: unknown, not checked).
    pub mtu: u32,
    /// The next hop's MAC.
    pub dmac: [u8; 6],
    /// The egress interface's MAC.
    pub smac: [u8; 6],
    /// 1 if the egress is a device with a peer (a veth, whose other end
    /// is in another namespace: `LB_PEER_DEVICES`), else 0. Kept with the
    /// hop so a forwarded packet does not look its egress up again.
    pub peer: u32,
}
abi_type!(NextHop, size = 32, align = 4);

impl NextHop {
    /// Whether this entry may be used at `now` for a packet that came in
    /// on `ingress`, `len` bytes from its IP header on. Entries are asked
    /// again after [`REFRESH_TICKS`] (about a second), so a changed route
    /// or neighbour is picked up within that.
    #[inline(always)]
    pub const fn usable(&self, ingress: u32, now: u32, len: u64) -> bool {
        self.ifindex != 0
            && self.ingress == ingress
            && now.wrapping_sub(self.stamp) < REFRESH_TICKS
            && (self.mtu == 0 || len <= self.mtu as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_used_only_fresh_for_its_ingress_and_within_its_mtu() {
        let hop = NextHop { ingress: 3, ifindex: 4, stamp: 100, mtu: 1500, ..NextHop::default() };
        assert!(hop.usable(3, 100, 1500));
        assert!(hop.usable(3, 100 + REFRESH_TICKS - 1, 60));
        assert!(!hop.usable(3, 100 + REFRESH_TICKS, 60), "stale");
        assert!(!hop.usable(2, 100, 60), "another ingress");
        assert!(!hop.usable(3, 100, 1501), "beyond the MTU: the FIB decides");
        assert!(!NextHop::default().usable(0, 0, 0), "empty");
        assert!(NextHop { mtu: 0, ..hop }.usable(3, 100, 9000), "MTU unknown");
        // The clock wraps; an entry stamped just before still counts.
        let wrapped = NextHop { stamp: u32::MAX - 1, ..hop };
        assert!(wrapped.usable(3, 5, 60));
    }
}
