use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::abi_type;

/// Address family tag for IPv4, as stored in map keys.
pub const FAMILY_V4: u8 = 4;
/// Address family tag for IPv6, as stored in map keys.
pub const FAMILY_V6: u8 = 6;
/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const PROTO_UDP: u8 = 17;

/// An IPv4 or IPv6 address in network byte order, as read off the wire.
///
/// IPv4 occupies the first word and the other three are zero, so one key type
/// serves both families. The family itself is stored next to the address in
/// every key, since `0.0.0.0` and `::` would otherwise collide.
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Addr {
    /// The address bytes, four to a word, in the order they appear on the wire.
    pub words: [u32; 4],
}
abi_type!(Addr, size = 16, align = 4);

impl Addr {
    /// The address of an IPv4 header's 4 wire bytes.
    pub const fn from_v4_bytes(b: [u8; 4]) -> Self {
        Self { words: [u32::from_ne_bytes(b), 0, 0, 0] }
    }

    /// The address of an IPv6 header's 16 wire bytes.
    pub const fn from_v6_bytes(b: [u8; 16]) -> Self {
        Self {
            words: [
                u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
                u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
                u32::from_ne_bytes([b[8], b[9], b[10], b[11]]),
                u32::from_ne_bytes([b[12], b[13], b[14], b[15]]),
            ],
        }
    }

    /// The wire bytes, 16 of them (IPv4 uses the first 4).
    pub const fn to_bytes(self) -> [u8; 16] {
        let [a, b, c, d] = self.words;
        let (a, b, c, d) = (a.to_ne_bytes(), b.to_ne_bytes(), c.to_ne_bytes(), d.to_ne_bytes());
        [
            a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3], c[0], c[1], c[2], c[3], d[0], d[1],
            d[2], d[3],
        ]
    }

    /// Rebuilds the standard address, given the family stored beside this one.
    pub fn to_ip(self, family: u8) -> IpAddr {
        let b = self.to_bytes();
        if family == FAMILY_V4 {
            IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
        } else {
            IpAddr::V6(Ipv6Addr::from(b))
        }
    }
}

impl From<IpAddr> for Addr {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self::from_v4_bytes(v4.octets()),
            IpAddr::V6(v6) => Self::from_v6_bytes(v6.octets()),
        }
    }
}

/// The family tag of a standard address.
pub fn family_of(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => FAMILY_V4,
        IpAddr::V6(_) => FAMILY_V6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_both_families() {
        for ip in ["10.0.0.100", "255.1.2.3", "2001:db8::1", "::ffff:1.2.3.4"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(Addr::from(ip).to_ip(family_of(ip)), ip);
        }
    }

    #[test]
    fn v4_keeps_wire_order_and_zero_tail() {
        let a = Addr::from(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(&a.to_bytes()[..4], &[10, 0, 0, 1]);
        assert_eq!(a.words[1..], [0, 0, 0]);
    }
}
