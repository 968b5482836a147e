//! The end-to-end topology: a client, the balancer and N backends, each in
//! its own namespace, joined by veth pairs through the balancer, which routes
//! between them (NAT mode: backends reply through it).
//!
//! ```text
//!  client ns            lb ns                         backend ns i (1..=N)
//!  c0 10.200.0.2 ── lb-cli 10.200.0.1      lb-b<i> 10.200.i.254 ── b0 10.200.i.1
//!     fd00:200::2        fd00:200::1               fd00:200:i::fe     fd00:200:i::1
//!  VIPs 10.201.0.100 and fd00:201::100 are off-link for the client, which
//!  routes them to the lb (its default gateway).
//! ```
//!
//! Endpoints get wire-like settings (see ../shared/notes/netns.md): TX
//! checksum offload off, as a NIC delivers full checksums, and GRO on, which
//! gives their veth the NAPI context XDP_REDIRECT into it needs.

use std::net::{IpAddr, SocketAddr};

use crate::{netns::NetNs, xdp_pass};

/// The VIP of the IPv4 services.
pub const VIP4: &str = "10.201.0.100";
/// The VIP of the IPv6 services.
pub const VIP6: &str = "fd00:201::100";
/// The client ports tests connect from by choice (`Conn::open_from`):
/// reserved in the client namespace, so no ephemeral port is one of them.
pub const CHOSEN_PORTS: std::ops::Range<u16> = 40_000..45_000;
/// The client's IPv4 address.
pub const CLIENT4: &str = "10.200.0.2";
/// The client's IPv6 address.
pub const CLIENT6: &str = "fd00:200::2";

/// IPv4 address of backend `i` (1-based).
pub fn backend4(i: usize) -> IpAddr {
    format!("10.200.{i}.1").parse().expect("backend address")
}

/// IPv6 address of backend `i` (1-based).
pub fn backend6(i: usize) -> IpAddr {
    format!("fd00:200:{i}::1").parse().expect("backend address")
}

/// `ip:port` of backend `i` in the services of `family` (`"v4"`, `"v6"`,
/// as the services of [`crate::agent::config`] are suffixed).
pub fn backend_sock(family: &str, i: usize, port: u16) -> String {
    let ip = if family == "v4" { backend4(i) } else { backend6(i) };
    sock(ip, port)
}

/// IPv4 address of the balancer on backend `i`'s link.
pub fn lb_side4(i: usize) -> IpAddr {
    format!("10.200.{i}.254").parse().expect("balancer address")
}

/// IPv6 address of the balancer on backend `i`'s link.
pub fn lb_side6(i: usize) -> IpAddr {
    format!("fd00:200:{i}::fe").parse().expect("balancer address")
}

/// Client, balancer and backend namespaces. Dropping it removes them all
/// (backends first; the veths die with their namespaces).
#[derive(Debug)]
pub struct Topology {
    /// Backend namespaces; backend `i` is `backends[i - 1]`.
    pub backends: Vec<NetNs>,
    /// The client namespace.
    pub client: NetNs,
    /// The balancer namespace.
    pub lb: NetNs,
}

impl Topology {
    /// A router namespace beside the balancer, joined by a veth pair
    /// (`lb-up` on the balancer, `r0` on the router) with both families:
    /// `lb` and `router` are each end's IPv4 and IPv6 addresses with their
    /// prefix lengths. Routes are the caller's.
    pub fn router_beside(&self, lb: [&str; 2], router: [&str; 2]) -> NetNs {
        let ns = NetNs::new();
        crate::netns::run(std::process::Command::new("ip").args([
            "link",
            "add",
            "name",
            "lb-up",
            "netns",
            self.lb.name(),
            "type",
            "veth",
            "peer",
            "name",
            "r0",
            "netns",
            ns.name(),
        ]));
        for (at, iface, [v4, v6]) in [(&self.lb, "lb-up", lb), (&ns, "r0", router)] {
            at.ip(&format!("link set {iface} up"));
            at.ip(&format!("addr add {v4} dev {iface}"));
            at.ip(&format!("addr add {v6} dev {iface} nodad"));
        }
        ns
    }

    /// Builds the topology with `n` backends.
    pub fn new(n: usize) -> Self {
        let client = NetNs::new();
        let lb = NetNs::new();
        lb.sysctl("net.ipv4.ip_forward", "1");
        lb.sysctl("net.ipv6.conf.all.forwarding", "1");
        // Per interface too: bpf_fib_lookup checks the ingress interface's.
        lb.sysctl("net.ipv6.conf.default.forwarding", "1");
        link(&client, "c0", &lb, "lb-cli");
        addr(&client, "c0", "10.200.0.2/24", "fd00:200::2/64");
        addr(&lb, "lb-cli", "10.200.0.1/24", "fd00:200::1/64");
        endpoint(&client, "c0");
        // A load generator opens thousands of connections a second and
        // closes first, so its TIME_WAIT sockets would exhaust the default
        // ephemeral range within seconds.
        client.sysctl("net.ipv4.ip_local_port_range", "1024 65535");
        client.sysctl("net.ipv4.tcp_tw_reuse", "1");
        // Tests that predict a backend connect from ports they choose; a
        // connection from an ephemeral port (a held one, a load) that took
        // one first made that bind fail (EADDRINUSE, seen in reload.rs).
        // Reserved, those ports are never handed out as ephemeral.
        client.sysctl(
            "net.ipv4.ip_local_reserved_ports",
            &format!("{}-{}", CHOSEN_PORTS.start, CHOSEN_PORTS.end - 1),
        );
        client.ip("route add default via 10.200.0.1");
        client.ip("-6 route add default via fd00:200::1");
        let mut topo = Self { backends: Vec::new(), client, lb };
        for _ in 0..n {
            topo.add_backend();
        }
        topo
    }

    /// Gives the client `n` more IPv4 addresses (10.200.0.10 on) and returns
    /// them: clients that differ by address, not only by port.
    pub fn more_client_addresses(&self, n: u8) -> Vec<std::net::IpAddr> {
        (10..10 + n)
            .map(|last| {
                self.client.ip(&format!("addr add 10.200.0.{last}/24 dev c0"));
                std::net::IpAddr::from([10, 200, 0, last])
            })
            .collect()
    }

    /// A home network behind the client namespace, which becomes its NAT
    /// gateway as a home router or a carrier NAT is: it masquerades the
    /// home namespace (192.168.77.2, default route via 192.168.77.1) and
    /// drops what conntrack finds invalid, counting what it dropped of the
    /// packets addressed to itself (`nft list chain ip home input`:
    /// answers it could not translate back). It forwards home traffic only,
    /// so the answers to a spoofed flood's sources are not sent on again.
    pub fn nat_home(&self) -> NetNs {
        let home = NetNs::new();
        link(&self.client, "c-home", &home, "h0");
        self.client.ip("addr add 192.168.77.1/24 dev c-home");
        home.ip("addr add 192.168.77.2/24 dev h0");
        home.ip("route add default via 192.168.77.1");
        self.client.sysctl("net.ipv4.ip_forward", "1");
        for rule in [
            "add table ip home",
            "add chain ip home post { type nat hook postrouting priority 100 ; }",
            "add rule ip home post ip saddr 192.168.77.0/24 oifname c0 masquerade",
            "add chain ip home forward { type filter hook forward priority 0 ; policy drop ; }",
            "add rule ip home forward ct state invalid counter drop",
            "add rule ip home forward iifname c-home accept",
            "add rule ip home forward oifname c-home accept",
            "add chain ip home input { type filter hook input priority 0 ; }",
            "add rule ip home input ct state invalid counter drop",
        ] {
            let args: Vec<&str> = std::iter::once("nft").chain(rule.split(' ')).collect();
            self.client.exec(&args);
        }
        home
    }

    /// Adds one more backend namespace and returns its 1-based index.
    pub fn add_backend(&mut self) -> usize {
        let i = self.backends.len() + 1;
        let ns = NetNs::new();
        let lb_if = format!("lb-b{i}");
        link(&ns, "b0", &self.lb, &lb_if);
        addr(&ns, "b0", &format!("10.200.{i}.1/24"), &format!("fd00:200:{i}::1/64"));
        addr(&self.lb, &lb_if, &format!("10.200.{i}.254/24"), &format!("fd00:200:{i}::fe/64"));
        endpoint(&ns, "b0");
        default_routes(&ns, i);
        self.backends.push(ns);
        i
    }

    /// Takes backend `i`'s link down (1-based): it can neither send nor
    /// receive, as if unplugged.
    pub fn backend_link_down(&self, i: usize) {
        self.backends[i - 1].ip("link set b0 down");
    }

    /// Brings backend `i`'s link back up. Taking it down removed its IPv6
    /// address and both default routes, without which it would pass the
    /// balancer's probes (same subnet) yet never answer a client.
    pub fn backend_link_up(&self, i: usize) {
        let ns = &self.backends[i - 1];
        ns.ip("link set b0 up");
        ns.ip(&format!("-6 addr replace fd00:200:{i}::1/64 dev b0 nodad"));
        default_routes(ns, i);
    }

    /// Makes the client reuse its ports as a busy one does: connections
    /// take ephemeral ports from `lo..=hi` only, and reuse them at once (see
    /// [`Topology::reuse_time_wait`]), so the balancer meets the same
    /// 5-tuples again within moments, while their flows are still in its
    /// table.
    pub fn reuse_client_ports(&self, lo: u16, hi: u16) {
        self.client.sysctl("net.ipv4.ip_local_port_range", &format!("{lo} {hi}"));
        self.reuse_time_wait();
    }

    /// Lets the client connect again at once from a port whose last
    /// connection to the same place is in TIME_WAIT (`tcp_tw_reuse`, with
    /// no delay where the kernel has `tcp_tw_reuse_delay`).
    pub fn reuse_time_wait(&self) {
        self.client.sysctl("net.ipv4.tcp_tw_reuse", "1");
        // Kernels before 6.13 wait a fixed second; the test still reuses.
        let _ = self
            .client
            .command(&["sysctl", "-qw", "net.ipv4.tcp_tw_reuse_delay=1"])
            .stderr(std::process::Stdio::null())
            .status();
    }

    /// Gives every endpoint back the settings a new veth has (TX checksum
    /// offload and TSO on, GRO off): partial checksums and super-packets
    /// reach the balancer, and no endpoint has NAPI.
    pub fn default_offloads(&self) {
        default_offload(&self.client, "c0");
        for ns in &self.backends {
            default_offload(ns, "b0");
        }
    }

    /// Gives every endpoint an XDP program that passes all (see
    /// [`crate::xdp_pass`]): the NAPI an XDP-on-veth deployment needs at the
    /// far end of each veth, on top of GRO.
    pub fn peer_xdp(&self) {
        xdp_pass::attach(&self.client, "c0");
        for ns in &self.backends {
            xdp_pass::attach(ns, "b0");
        }
    }

    /// The balancer's interfaces: the client side first, then one per backend.
    pub fn lb_interfaces(&self) -> Vec<String> {
        let mut v = vec!["lb-cli".to_owned()];
        v.extend((1..=self.backends.len()).map(|i| format!("lb-b{i}")));
        v
    }
}

/// Backend `i`'s default routes, through the balancer.
fn default_routes(ns: &NetNs, i: usize) {
    ns.ip(&format!("route replace default via 10.200.{i}.254"));
    ns.ip(&format!("-6 route replace default via fd00:200:{i}::fe"));
}

/// A veth pair with one end in each namespace, both up.
pub(crate) fn link(a: &NetNs, a_if: &str, b: &NetNs, b_if: &str) {
    crate::netns::run(std::process::Command::new("ip").args([
        "link",
        "add",
        "name",
        a_if,
        "netns",
        a.name(),
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "netns",
        b.name(),
    ]));
    a.ip(&format!("link set {a_if} up"));
    b.ip(&format!("link set {b_if} up"));
}

/// Adds an IPv4 and an IPv6 address (`a.b.c.d/len`) to `iface`.
pub(crate) fn addr(ns: &NetNs, iface: &str, v4: &str, v6: &str) {
    ns.ip(&format!("addr add {v4} dev {iface}"));
    // nodad: usable at once, instead of after ~2 s of duplicate detection.
    ns.ip(&format!("addr add {v6} dev {iface} nodad"));
}

/// Wire-like settings for an endpoint's veth (see the module docs).
pub(crate) fn endpoint(ns: &NetNs, iface: &str) {
    ns.exec(&["ethtool", "-K", iface, "tx", "off", "gro", "on"]);
}

/// The settings a new veth has: TX checksum offload and TSO on, GRO off.
pub(crate) fn default_offload(ns: &NetNs, iface: &str) {
    ns.exec(&["ethtool", "-K", iface, "tx", "on", "tso", "on", "gro", "off"]);
}

/// Lets `ns` send every ICMP error it means to: no per-destination rate
/// limit (`icmp_ratelimit` is 1 s in IPv4, 100 ms in IPv6 by default, which
/// holds back port unreachables), and a global budget no test reaches.
/// Fragmentation needed and packet too big are exempt from both anyway.
pub fn unlimited_icmp(ns: &NetNs) {
    ns.sysctl("net.ipv4.icmp_ratelimit", "0");
    ns.sysctl("net.ipv6.icmp.ratelimit", "0");
    ns.sysctl("net.ipv4.icmp_msgs_per_sec", "100000");
    ns.sysctl("net.ipv4.icmp_msgs_burst", "10000");
}

/// `ip:port` of a socket address for config files (IPv6 bracketed).
pub fn sock(ip: IpAddr, port: u16) -> String {
    SocketAddr::new(ip, port).to_string()
}
