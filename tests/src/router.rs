//! The path-MTU topology: [`Topology`] (client, balancer, near backends)
//! plus a router beyond the balancer whose link to a far namespace has a
//! 1280-byte MTU at the router's end, as a tunnel or VPN would. Every
//! endpoint's own link is 1500 bytes, so they negotiate MSS 1460 and must
//! rely on path-MTU discovery: ICMP "fragmentation needed" (IPv4) or
//! "packet too big" (IPv6) from the router, about packets the balancer
//! rewrote.
//!
//! ```text
//!  lb ns                  router ns                          far ns
//!  lb-rt 10.202.0.1 ── r-lb 10.202.0.2   r-far 10.203.0.1 ── f0 10.203.0.2 far backend
//!        fd00:202::1        fd00:202::2        fd00:203::1      10.203.0.3 far client
//!  mtu   1500               1500               1280             fd00:203::2, fd00:203::3
//!                                                               mtu 1500
//! ```
//!
//! The balancer routes the far prefixes via the router; the router routes
//! the VIPs and the near subnets back via the balancer; the far namespace's
//! default route is the router. The router sends ICMP errors without rate
//! limits ([`crate::topology::unlimited_icmp`]).

use std::net::IpAddr;

use crate::{
    mode::Mode,
    netns::NetNs,
    topology::{Topology, addr, default_offload, endpoint, link, unlimited_icmp},
    xdp_pass,
};

/// The MTU of the router's end of its link to the far namespace.
pub const BOTTLENECK_MTU: u32 = 1280;

/// The far backend's address in the family of `v6`.
pub fn far_backend(v6: bool) -> IpAddr {
    if v6 { "fd00:203::2" } else { "10.203.0.2" }.parse().expect("far backend")
}

/// The far client's address in the family of `v6`.
pub fn far_client(v6: bool) -> IpAddr {
    if v6 { "fd00:203::3" } else { "10.203.0.3" }.parse().expect("far client")
}

/// [`Topology`] with a router and a far namespace behind the balancer.
/// Dropping it removes them all (far and router first).
#[derive(Debug)]
pub struct RouterTopology {
    /// The far namespace: a backend address and a client address.
    pub far: NetNs,
    /// The router between the balancer and the far namespace.
    pub router: NetNs,
    /// Client, balancer and `n` near backends.
    pub near: Topology,
}

impl RouterTopology {
    /// Builds it with `n` near backends.
    pub fn new(n: usize) -> Self {
        let near = Topology::new(n);
        let router = NetNs::new();
        let far = NetNs::new();
        router.sysctl("net.ipv4.ip_forward", "1");
        router.sysctl("net.ipv6.conf.all.forwarding", "1");
        router.sysctl("net.ipv6.conf.default.forwarding", "1");
        unlimited_icmp(&router);

        link(&near.lb, "lb-rt", &router, "r-lb");
        addr(&near.lb, "lb-rt", "10.202.0.1/24", "fd00:202::1/64");
        addr(&router, "r-lb", "10.202.0.2/24", "fd00:202::2/64");
        // The router takes frames the balancer redirects (XDP_REDIRECT into
        // lb-rt needs NAPI at r-lb) and hands it full checksums, as an
        // endpoint does.
        endpoint(&router, "r-lb");

        link(&router, "r-far", &far, "f0");
        router.ip(&format!("link set r-far mtu {BOTTLENECK_MTU}"));
        addr(&router, "r-far", "10.203.0.1/24", "fd00:203::1/64");
        addr(&far, "f0", "10.203.0.2/24", "fd00:203::2/64");
        addr(&far, "f0", "10.203.0.3/24", "fd00:203::3/64");
        endpoint(&far, "f0");

        near.lb.ip("route add 10.203.0.0/24 via 10.202.0.2");
        near.lb.ip("-6 route add fd00:203::/64 via fd00:202::2");
        for prefix in ["10.201.0.0/24", "10.200.0.0/16"] {
            router.ip(&format!("route add {prefix} via 10.202.0.1"));
        }
        for prefix in ["fd00:201::/64", "fd00:200::/32"] {
            router.ip(&format!("-6 route add {prefix} via fd00:202::1"));
        }
        far.ip("route add default via 10.203.0.1");
        far.ip("-6 route add default via fd00:203::1");
        Self { far, router, near }
    }

    /// The balancer's interfaces: the near ones, then the router's link.
    pub fn lb_interfaces(&self) -> Vec<String> {
        let mut v = self.near.lb_interfaces();
        v.push("lb-rt".to_owned());
        v
    }

    /// Gives every endpoint, and the router's end toward the balancer, the
    /// settings a new veth has (see [`Topology::default_offloads`]).
    pub fn default_offloads(&self) {
        self.near.default_offloads();
        default_offload(&self.router, "r-lb");
        default_offload(&self.far, "f0");
    }

    /// Readies it for `mode` as [`Mode::prepare`] does a [`Topology`]: at
    /// the tc hook, the router and the far end get default offloads too; at
    /// XDP, the router's end toward the balancer an XDP program.
    pub fn prepare(&self, mode: Mode) {
        mode.prepare(&self.near);
        match mode {
            Mode::Tc => self.default_offloads(),
            Mode::Xdp => xdp_pass::attach(&self.router, "r-lb"),
            Mode::Splice => {}
        }
    }
}
