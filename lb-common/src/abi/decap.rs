//! The maps of the decapsulating program (`lb decap`, the backend side of
//! direct server return). They live in the same object as the balancer's
//! maps but only `lb decap` fills and reads them.

use super::abi_type;

/// This host's addresses: `Addr` -> its family (`FAMILY_V4` / `FAMILY_V6`,
/// as `u32`), hash. An IP-in-IP packet is stripped only when its outer
/// destination is listed with the outer header's family (the family is the
/// value, not part of the key, so an IPv6 address whose tail is zero does
/// not pass for the IPv4 address of its first four bytes).
pub const MAP_DECAP_ADDRS: &str = "LB_DECAP_ADDRS";
/// What the program did: index 0 -> `DecapCounters` (per-CPU array of one).
pub const MAP_DECAP_COUNTERS: &str = "LB_DECAP_COUNTERS";
/// Every map `lb decap` expects in the object.
pub const DECAP_MAPS: [&str; 2] = [MAP_DECAP_ADDRS, MAP_DECAP_COUNTERS];
/// Most addresses `LB_DECAP_ADDRS` holds.
pub const MAX_DECAP_ADDRS: u32 = 256;

/// Per-CPU counters of the decapsulating program: every packet it sees is
/// counted under exactly one of them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecapCounters {
    /// IP-in-IP packets to a listed address: the outer header was removed
    /// and the inner packet handed to the stack.
    pub decapsulated: u64,
    /// Not IP-in-IP, or not to a listed address, or a kind the program
    /// leaves to the kernel (VLAN tag in line, outer fragment, IPv6 outer
    /// with extension headers): handed to the stack untouched.
    pub passed: u64,
    /// Dropped as malformed: an IP header truncated or with lengths beyond
    /// the frame, or an IP-in-IP packet to a listed address whose inner
    /// header is not the family its protocol number says or does not fit.
    pub malformed: u64,
    /// Dropped because the kernel refused to remove the header (the helper
    /// failed: e.g. a UDP GSO skb at tc); the frame may be half-moved.
    pub failed: u64,
}
abi_type!(DecapCounters, size = 32, align = 8);

impl DecapCounters {
    /// Sum of per-CPU values.
    pub fn sum<'a>(per_cpu: impl IntoIterator<Item = &'a DecapCounters>) -> DecapCounters {
        per_cpu.into_iter().fold(DecapCounters::default(), |acc, c| DecapCounters {
            decapsulated: acc.decapsulated.wrapping_add(c.decapsulated),
            passed: acc.passed.wrapping_add(c.passed),
            malformed: acc.malformed.wrapping_add(c.malformed),
            failed: acc.failed.wrapping_add(c.failed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_per_cpu_values() {
        let a = DecapCounters { decapsulated: 1, passed: 2, malformed: 3, failed: 4 };
        let b = DecapCounters { decapsulated: 10, passed: 20, malformed: 30, failed: 40 };
        let s = DecapCounters::sum([&a, &b]);
        assert_eq!(s, DecapCounters { decapsulated: 11, passed: 22, malformed: 33, failed: 44 });
    }
}
