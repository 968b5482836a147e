//! This host's addresses: what `lb decap` decapsulates for when no
//! `--address` is given.

use std::{collections::BTreeSet, io, net::IpAddr};

/// Every IPv4 and IPv6 address of every interface (getifaddrs), loopback
/// ones left out: no IP-in-IP packet arrives for them from a wire.
pub fn host_addresses() -> io::Result<BTreeSet<IpAddr>> {
    let list = nix::ifaddrs::getifaddrs().map_err(io::Error::from)?;
    Ok(list
        .filter_map(|ifa| ifa.address)
        .filter_map(|a| {
            if let Some(v4) = a.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .filter(|ip| !ip.is_loopback())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_no_loopback_address() {
        let addrs = host_addresses().expect("getifaddrs");
        assert!(addrs.iter().all(|ip| !ip.is_loopback()), "{addrs:?}");
    }
}
