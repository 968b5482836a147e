//! Addresses that name no single host, and so can be neither a VIP nor a
//! backend: the unspecified address (a listener on it takes every address
//! of the host, and a local route for it claims them all), the limited
//! broadcast address and multicast groups. Loopback is not among them:
//! splice mode may well relay to a service on the same host.

use std::net::IpAddr;

/// Why `ip` names no single host, or `None` when it names one. An IPv4
/// address written in its IPv4-mapped IPv6 form (`::ffff:0.0.0.0`) is
/// judged as the IPv4 address it stands for.
pub(crate) fn not_one_host(ip: IpAddr) -> Option<&'static str> {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    };
    if ip.is_unspecified() {
        return Some("the unspecified address, which stands for any address of a host");
    }
    if let IpAddr::V4(v4) = ip
        && v4.is_broadcast()
    {
        return Some("the limited broadcast address, which reaches every host of a link");
    }
    if ip.is_multicast() {
        return Some("a multicast address, which reaches a group of hosts");
    }
    None
}

/// Why `ip` cannot be the source of a packet sent to another host (a
/// `tunnel_source`: the backend's kernel drops it as a martian), or
/// `None`: the addresses of [`not_one_host`], loopback, and IPv4's
/// 0.0.0.0/8 ("this network", never a source off the host).
pub(crate) fn not_a_source(ip: IpAddr) -> Option<&'static str> {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    };
    if let Some(why) = not_one_host(ip) {
        return Some(why);
    }
    if ip.is_loopback() {
        return Some("a loopback address, which never leaves its host");
    }
    match ip {
        IpAddr::V4(v4) if v4.octets()[0] == 0 => {
            Some("in 0.0.0.0/8, which stands for this network and names no sender")
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judged(text: &str) -> Option<&'static str> {
        not_one_host(text.parse().expect("an address"))
    }

    #[test]
    fn unspecified_broadcast_and_multicast_in_every_form() {
        for unspecified in ["0.0.0.0", "::", "::ffff:0.0.0.0"] {
            assert!(
                judged(unspecified).is_some_and(|w| w.contains("unspecified")),
                "{unspecified}"
            );
        }
        for broadcast in ["255.255.255.255", "::ffff:255.255.255.255"] {
            assert!(judged(broadcast).is_some_and(|w| w.contains("broadcast")), "{broadcast}");
        }
        for multicast in ["224.0.0.1", "239.255.255.255", "ff02::1", "ff0e::1", "::ffff:224.0.0.1"]
        {
            assert!(judged(multicast).is_some_and(|w| w.contains("multicast")), "{multicast}");
        }
    }

    #[test]
    fn hosts_pass_loopback_included() {
        for host in [
            "10.0.0.1",
            "0.0.0.1",
            "223.255.255.255",
            "240.0.0.1",
            "255.255.255.254",
            "127.0.0.1",
            "::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
            "2001:db8::1",
            "fe80::1",
            "feff::1",
        ] {
            assert_eq!(judged(host), None, "{host}");
        }
    }

    #[test]
    fn a_source_must_be_a_host_that_can_send() {
        for (ip, why) in [
            ("0.0.0.0", "unspecified"),
            ("0.0.0.1", "0.0.0.0/8"),
            ("127.0.0.1", "loopback"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.9", "loopback"),
            ("255.255.255.255", "broadcast"),
            ("ff02::1", "multicast"),
        ] {
            let judged = not_a_source(ip.parse().expect("an address"));
            assert!(judged.is_some_and(|w| w.contains(why)), "{ip}: {judged:?}");
        }
        for ip in ["10.9.0.1", "1.0.0.0", "2001:db8::1"] {
            assert_eq!(not_a_source(ip.parse().expect("an address")), None, "{ip}");
        }
    }
}
