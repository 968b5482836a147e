//! Per-service source lists and the per-source new-flow limit: the keys of
//! the two LPM tries and of the token buckets, and the bucket arithmetic
//! both the datapath and the splice proxy use.

use super::{Addr, FAMILY_V4, abi_type};

/// Value of an ACL trie entry: the source may reach the service.
pub const ACL_ALLOW: u32 = 1;
/// Value of an ACL trie entry: the source may not reach the service.
pub const ACL_DENY: u32 = 2;

/// Data of an IPv4 ACL trie key (after the trie's own 32-bit prefix
/// length). One trie serves every service: the first 32 bits are the
/// service id, always matched whole (every prefix length is 32 + the
/// source prefix's), so its byte order does not matter.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AclV4 {
    /// The service id.
    pub service_id: u32,
    /// The source address, wire order.
    pub addr: [u8; 4],
}
abi_type!(AclV4, size = 8, align = 4);

/// Data of an IPv6 ACL trie key, as [`AclV4`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AclV6 {
    /// The service id.
    pub service_id: u32,
    /// The source address, wire order.
    pub addr: [u8; 16],
}
abi_type!(AclV6, size = 20, align = 4);

/// Key of the new-flow buckets: one source prefix of one service.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BucketKey {
    /// The source address with the bits past the service's prefix length
    /// cleared.
    pub prefix: Addr,
    /// The service id.
    pub service_id: u32,
    /// `FAMILY_V4` or `FAMILY_V6`.
    pub family: u8,
    /// Always zero: keys are hashed byte for byte.
    pub _pad: [u8; 3],
}
abi_type!(BucketKey, size = 24, align = 4);

/// `addr` (of `family`) with every bit past the first `len` cleared.
#[inline(always)]
pub const fn masked(addr: Addr, family: u8, len: u8) -> Addr {
    let [a, b, c, d] = addr.words;
    if family == FAMILY_V4 {
        Addr { words: [a & word_mask(len, 0), 0, 0, 0] }
    } else {
        Addr {
            words: [
                a & word_mask(len, 0),
                b & word_mask(len, 1),
                c & word_mask(len, 2),
                d & word_mask(len, 3),
            ],
        }
    }
}

/// The mask, as stored (wire order), of word `i` of an address for a
/// prefix of `len` bits.
#[inline(always)]
const fn word_mask(len: u8, i: u32) -> u32 {
    let keep = (len as u32).saturating_sub(32 * i);
    let host = if keep >= 32 {
        u32::MAX
    } else if keep == 0 {
        0
    } else {
        !(u32::MAX >> keep)
    };
    host.to_be()
}

/// One source's new-flow allowance as a virtual-scheduling bucket (GCRA,
/// the token bucket in one number): `tat` is the time at which the bucket
/// would be full again. A flow at `now` is admitted when `tat` is no more
/// than `tolerance` ahead of `now` (`tolerance` = (burst - 1) flows'
/// worth), and it moves `tat` on by `cost` (one flow's worth,
/// 1 s / rate). A bucket no one has used is full: `tat` 0, or any `tat`
/// in the past.
///
/// Returns the new `tat` if admitted, `None` if the flow is over the limit
/// (the bucket is then left as it was).
#[inline(always)]
pub const fn admit(tat: u64, now: u64, cost: u64, tolerance: u64) -> Option<u64> {
    let start = if tat > now { tat } else { now };
    if start - now > tolerance { None } else { Some(start + cost) }
}

/// `ServiceRecord::limit_cost_ns` for `rate` new flows a second.
pub const fn cost_ns(rate: u32) -> u32 {
    match 1_000_000_000u32.checked_div(rate) {
        Some(cost) => cost,
        None => 0,
    }
}

/// The tolerance [`admit`] takes for a burst of `burst` flows of
/// `cost` ns each.
#[inline(always)]
pub const fn tolerance_ns(cost: u32, burst: u32) -> u64 {
    (cost as u64) * (burst.saturating_sub(1) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::FAMILY_V6;

    #[test]
    fn masks_keep_only_the_prefix() {
        let a = Addr::from_v4_bytes([10, 1, 2, 3]);
        assert_eq!(masked(a, FAMILY_V4, 32), a);
        assert_eq!(masked(a, FAMILY_V4, 24), Addr::from_v4_bytes([10, 1, 2, 0]));
        assert_eq!(masked(a, FAMILY_V4, 12), Addr::from_v4_bytes([10, 0, 0, 0]));
        assert_eq!(masked(a, FAMILY_V4, 0), Addr::default());
        let mut b = [0xffu8; 16];
        let v6 = Addr::from_v6_bytes(b);
        b[8..].fill(0);
        assert_eq!(masked(v6, FAMILY_V6, 64), Addr::from_v6_bytes(b));
        b[6] = 0xfe;
        b[7] = 0;
        assert_eq!(masked(v6, FAMILY_V6, 55), Addr::from_v6_bytes(b));
        assert_eq!(masked(v6, FAMILY_V6, 128), v6);
    }

    #[test]
    fn a_bucket_admits_its_burst_then_its_rate() {
        // 10 a second, burst 3.
        let (cost, tol) = (cost_ns(10) as u64, tolerance_ns(cost_ns(10), 3));
        let now = 5_000_000_000u64;
        let mut tat = 0;
        for i in 0..3 {
            tat = admit(tat, now, cost, tol).unwrap_or_else(|| panic!("flow {i} of the burst"));
        }
        assert_eq!(admit(tat, now, cost, tol), None, "the fourth at once is over");
        assert_eq!(admit(tat, now + cost - 1, cost, tol), None);
        let tat = admit(tat, now + cost, cost, tol).expect("one more after 1/rate");
        assert_eq!(admit(tat, now + cost, cost, tol), None);
        // Idle long enough: the full burst again, never more.
        let later = now + 100 * cost;
        let mut t = tat;
        let admitted = (0..10).filter(|_| admit(t, later, cost, tol).map(|n| t = n).is_some());
        assert_eq!(admitted.count(), 3);
    }

    #[test]
    fn burst_one_is_the_rate_exactly() {
        let cost = cost_ns(1000) as u64;
        let tat = admit(0, 1, cost, tolerance_ns(cost_ns(1000), 1)).unwrap();
        assert_eq!(admit(tat, 1, cost, 0), None);
        assert!(admit(tat, 1 + cost, cost, 0).is_some());
    }
}

/// Key of `LB_VERIFIED`: a source that showed it receives what is sent to
/// its address (it answered a SYN challenge, or acknowledged a backend's
/// SYN-ACK through the balancer). IPv4 sources are kept whole, IPv6 ones
/// by their /64, where one host's addresses usually lie.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct VerifiedKey {
    /// The source address, IPv6 cut to its /64.
    pub prefix: Addr,
    /// `FAMILY_V4` or `FAMILY_V6`.
    pub family: u8,
    /// Always zero: keys are hashed byte for byte.
    pub _pad: [u8; 3],
}
abi_type!(VerifiedKey, size = 20, align = 4);

impl VerifiedKey {
    /// The key of source `addr` of `family`.
    #[inline(always)]
    pub const fn of(addr: Addr, family: u8) -> Self {
        let len = if family == FAMILY_V4 { 32 } else { 64 };
        Self { prefix: masked(addr, family, len), family, _pad: [0; 3] }
    }
}
