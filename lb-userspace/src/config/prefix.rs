//! A CIDR prefix of source addresses, as the `allow` and `deny` lists
//! hold them.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An address prefix: `addr/len`, host bits clear.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

/// Why a prefix's text was refused (the message names the text; the
/// validator adds where it is and how to fix it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    /// Not `address` or `address/length`.
    #[error("{0:?} is not an IP address or prefix")]
    Syntax(String),
    /// A length beyond the family's bits.
    #[error("{text:?} has length {len}, beyond the {max} bits of its family")]
    Length {
        /// The text.
        text: String,
        /// Its length.
        len: u32,
        /// The family's bits.
        max: u8,
    },
    /// Bits set past the length: probably not the prefix meant.
    #[error("{text:?} has bits set past its length (its prefix is {masked})")]
    HostBits {
        /// The text.
        text: String,
        /// The prefix with them cleared.
        masked: Prefix,
    },
}

impl Prefix {
    /// The prefix of `addr`'s first `len` bits (`len` at most the family's).
    pub fn new(addr: IpAddr, len: u8) -> Self {
        let len = len.min(bits(addr));
        Self { addr: mask(addr, len), len }
    }

    /// Its first address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// Its length in bits.
    pub fn bits(&self) -> u8 {
        self.len
    }

    /// Whether `ip` is in it (an address of the other family never is).
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.len) == self.addr
    }

    /// Whether every address of `other` is in it.
    pub fn covers(&self, other: &Prefix) -> bool {
        self.len <= other.len && self.contains(other.addr)
    }

    /// Its first and last address as numbers (an IPv4 one within `u32`).
    pub(crate) fn range(&self) -> (u128, u128) {
        let first = match self.addr {
            IpAddr::V4(v4) => u128::from(u32::from(v4)),
            IpAddr::V6(v6) => u128::from(v6),
        };
        let host_bits = u32::from(bits(self.addr) - self.len);
        (first, first | u128::MAX.checked_shr(128 - host_bits).unwrap_or(0))
    }
}

/// The family's bits.
fn bits(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

/// `ip` with every bit past the first `len` cleared.
fn mask(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let m = u32::MAX.checked_shl(32 - u32::from(len.min(32))).unwrap_or(0);
            IpAddr::V4((u32::from(v4) & m).into())
        }
        IpAddr::V6(v6) => {
            let m = u128::MAX.checked_shl(128 - u32::from(len.min(128))).unwrap_or(0);
            IpAddr::V6((u128::from(v6) & m).into())
        }
    }
}

impl FromStr for Prefix {
    type Err = PrefixError;

    /// `10.0.0.0/8`, `2001:db8::/32`, or a bare address (one host).
    fn from_str(text: &str) -> Result<Self, PrefixError> {
        let syntax = || PrefixError::Syntax(text.to_owned());
        let (addr, len) = match text.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| syntax())?;
        let max = bits(addr);
        let len = match len {
            None => u32::from(max),
            Some(l) if !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()) => {
                l.parse().map_err(|_| syntax())?
            }
            Some(_) => return Err(syntax()),
        };
        let len8 = u8::try_from(len)
            .ok()
            .filter(|&l| l <= max)
            .ok_or_else(|| PrefixError::Length { text: text.to_owned(), len, max })?;
        let prefix = Prefix::new(addr, len8);
        if prefix.addr != addr {
            return Err(PrefixError::HostBits { text: text.to_owned(), masked: prefix });
        }
        Ok(prefix)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl serde::Serialize for Prefix {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Prefix {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Prefix {
        text.parse().unwrap()
    }

    #[test]
    fn parses_prefixes_and_bare_addresses() {
        assert_eq!(p("10.0.0.0/8").to_string(), "10.0.0.0/8");
        assert_eq!(p("10.1.2.3").to_string(), "10.1.2.3/32");
        assert_eq!(p("2001:db8::/32").to_string(), "2001:db8::/32");
        assert_eq!(p("::1").bits(), 128);
        assert_eq!(p("0.0.0.0/0").bits(), 0);
    }

    #[test]
    fn refuses_what_is_not_a_prefix() {
        for bad in ["", "10.0.0/8", "10.0.0.0/", "10.0.0.0/x", "10.0.0.0/+8", "fe80::1%eth0"] {
            assert!(matches!(bad.parse::<Prefix>(), Err(PrefixError::Syntax(_))), "{bad}");
        }
        assert!(matches!("10.0.0.0/33".parse::<Prefix>(), Err(PrefixError::Length { .. })));
        assert!(matches!("::/129".parse::<Prefix>(), Err(PrefixError::Length { .. })));
        let err = "10.1.0.0/8".parse::<Prefix>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "\"10.1.0.0/8\" has bits set past its length (its prefix is 10.0.0.0/8)"
        );
    }

    #[test]
    fn containment() {
        let net = p("10.1.0.0/16");
        assert!(net.contains("10.1.255.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(!net.contains("::ffff:10.1.0.1".parse().unwrap()), "another family");
        assert!(p("0.0.0.0/0").contains("1.2.3.4".parse().unwrap()));
        assert!(net.covers(&p("10.1.2.0/24")));
        assert!(!p("10.1.2.0/24").covers(&net));
        assert!(p("2001:db8::/32").contains("2001:db8:1::5".parse().unwrap()));
    }

    #[test]
    fn ranges() {
        assert_eq!(p("0.0.0.0/0").range(), (0, u128::from(u32::MAX)));
        assert_eq!(p("10.0.0.0/8").range(), (0x0a00_0000, 0x0aff_ffff));
        assert_eq!(p("10.1.2.3").range(), (0x0a01_0203, 0x0a01_0203));
        assert_eq!(p("::/0").range(), (0, u128::MAX));
        assert_eq!(p("::1").range(), (1, 1));
        assert_eq!(p("8000::/1").range(), (1 << 127, u128::MAX));
    }
}
