//! The scale-out topology (IPv4 only): a client behind a router that
//! spreads the VIP over three lb hosts by ECMP, as BIRD on each host
//! announces it by BGP (with BFD), and backends on a LAN every lb host
//! reaches, whose default route is the router, so their answers bypass the
//! lb hosts.
//!
//! ```text
//!  client ns               router ns                          lb ns k (1..=3)
//!  c0 10.210.0.2 ── r-c 10.210.0.1    r-lb<k> 10.210.k.1 ── switch ── u0 10.210.k.2
//!                          r-lan 10.220.255.254           lan 10.220.100.k
//!                               │                             │
//!                  lan ns: bridge br0 (10.220.0.0/16, MTU 1600) ──┴── backend ns i
//!                                                                  lan 10.220.i.1
//! ```
//!
//! Each uplink crosses a bridge (the switch namespace, one bridge per
//! host), so a host going away leaves the router's port up. The router
//! runs BIRD with `merge paths` (ECMP) and
//! `fib_multipath_hash_policy = 1` (the 5-tuple picks the path); each lb
//! host runs BIRD learning lb's announce table. The LAN's MTU is 1600, so a
//! 1500-byte packet still fits once wrapped in IP-in-IP. Veths keep the
//! settings a new veth has (TX checksum offload and TSO on, GRO off): lb
//! and `lb decap` run at the tc hook.

use std::path::Path;

use crate::{
    bird::{Bird, TIMERS, bfd},
    netns::NetNs,
    topology::link,
};

/// How many lb hosts.
pub const HOSTS: usize = 3;
/// The client's address.
pub const CLIENT: &str = "10.210.0.2";
/// The router's address on the backend LAN: the backends' default route.
pub const ROUTER_LAN: &str = "10.220.255.254";
/// The MTU of the backend LAN: room for the 20-byte outer header.
const LAN_MTU: u32 = 1600;
/// lb's announce table and protocol, as BIRD on each host learns them.
pub const TABLE: u32 = 100;
/// See [`TABLE`].
pub const PROTOCOL: u8 = 252;

/// lb host `k`'s (1-based) address on its link to the router.
pub fn uplink(k: usize) -> String {
    format!("10.210.{k}.2")
}

/// The router's address on its link to lb host `k`.
pub fn router_side(k: usize) -> String {
    format!("10.210.{k}.1")
}

/// lb host `k`'s address on the backend LAN (also its tunnel source).
pub fn lan_addr(k: usize) -> String {
    format!("10.220.100.{k}")
}

/// Backend `i`'s address: the third group is `i`, as
/// [`crate::predict::name`] reads it.
pub fn backend(i: usize) -> String {
    format!("10.220.{i}.1")
}

/// The namespaces; dropping it removes them all.
#[derive(Debug)]
pub struct ScaleOut {
    /// Backend namespaces; backend `i` is `backends[i - 1]`.
    pub backends: Vec<NetNs>,
    /// lb host namespaces; host `k` is `hosts[k - 1]`.
    pub hosts: Vec<NetNs>,
    /// The backend LAN's bridge.
    pub lan: NetNs,
    /// The bridges between the router and each lb host.
    pub switch: NetNs,
    /// The ECMP router.
    pub router: NetNs,
    /// The client.
    pub client: NetNs,
}

impl ScaleOut {
    /// Builds it with `n` backends whose default route is `backend_gateway`
    /// (the router for direct server return, an lb host for NAT).
    pub fn new(n: usize, backend_gateway: &str) -> Self {
        let client = NetNs::new();
        let router = NetNs::new();
        // Answers come from the VIP over the LAN while the VIP's route
        // points at the lb hosts: no reverse-path filter on the router.
        for key in ["all", "default"] {
            router.sysctl(&format!("net.ipv4.conf.{key}.rp_filter"), "0");
        }
        router.sysctl("net.ipv4.ip_forward", "1");
        router.sysctl("net.ipv4.fib_multipath_hash_policy", "1");
        link(&client, "c0", &router, "r-c");
        client.ip(&format!("addr add {CLIENT}/24 dev c0"));
        router.ip("addr add 10.210.0.1/24 dev r-c");
        client.ip("route add default via 10.210.0.1");
        // Many short connections (TIME_WAIT) and ports tests choose.
        client.sysctl("net.ipv4.ip_local_port_range", "1024 65535");
        client.sysctl("net.ipv4.tcp_tw_reuse", "1");
        let chosen = crate::topology::CHOSEN_PORTS;
        client.sysctl(
            "net.ipv4.ip_local_reserved_ports",
            &format!("{}-{}", chosen.start, chosen.end - 1),
        );

        let lan = NetNs::new();
        lan.ip("link add br0 type bridge");
        let to_lan = |ns: &NetNs, iface: &str, port: &str, addr: &str| {
            link(ns, iface, &lan, port);
            for (n, i) in [(ns, iface), (&lan, port)] {
                n.ip(&format!("link set {i} mtu {LAN_MTU}"));
            }
            lan.ip(&format!("link set {port} master br0"));
            ns.ip(&format!("addr add {addr}/16 dev {iface}"));
        };
        to_lan(&router, "r-lan", "l-r", ROUTER_LAN);

        // Each uplink crosses a switch (a bridge of its own), so a lost
        // host takes only the switch's port down: the router's keeps its
        // carrier, as with a host behind a real switch, and only BFD tells.
        let switch = NetNs::new();
        let mut hosts = Vec::new();
        for k in 1..=HOSTS {
            let ns = NetNs::new();
            ns.sysctl("net.ipv4.ip_forward", "1");
            switch.ip(&format!("link add br{k} type bridge"));
            link(&ns, "u0", &switch, &format!("s-lb{k}"));
            link(&router, &format!("r-lb{k}"), &switch, &format!("s-r{k}"));
            for port in [format!("s-lb{k}"), format!("s-r{k}")] {
                switch.ip(&format!("link set {port} master br{k}"));
            }
            switch.ip(&format!("link set br{k} up"));
            ns.ip(&format!("addr add {}/24 dev u0", uplink(k)));
            router.ip(&format!("addr add {}/24 dev r-lb{k}", router_side(k)));
            to_lan(&ns, "lan", &format!("l-lb{k}"), &lan_addr(k));
            ns.ip(&format!("route add default via {}", router_side(k)));
            hosts.push(ns);
        }
        let mut backends = Vec::new();
        for i in 1..=n {
            let ns = NetNs::new();
            to_lan(&ns, "lan", &format!("l-b{i}"), &backend(i));
            ns.ip(&format!("route add default via {backend_gateway}"));
            backends.push(ns);
        }
        lan.ip(&format!("link set br0 mtu {LAN_MTU}"));
        lan.ip("link set br0 up");
        Self { backends, hosts, lan, switch, router, client }
    }

    /// lb host `k` is lost to the router: its uplink goes down at the
    /// host's end; the router's link to the switch stays up, so only BFD
    /// tells BIRD.
    pub fn host_lost(&self, k: usize) {
        self.hosts[k - 1].ip("link set u0 down");
    }

    /// lb host `k`'s uplink is back (and its default route, which the
    /// kernel removed with the link).
    pub fn host_back(&self, k: usize) {
        let ns = &self.hosts[k - 1];
        ns.ip("link set u0 up");
        ns.ip(&format!("route replace default via {}", router_side(k)));
    }

    /// The lb hosts the router's kernel sends `vip` to (the next hops of
    /// its BIRD route), sorted.
    pub fn next_hops(&self, vip: &str) -> Vec<String> {
        let out = self.router.exec(&["ip", "-4", "route", "show", &format!("{vip}/32")]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !text.contains("proto bird") {
            return Vec::new();
        }
        let mut hops: Vec<String> = text
            .split("via ")
            .skip(1)
            .filter_map(|rest| rest.split_whitespace().next().map(str::to_owned))
            .collect();
        hops.sort();
        hops
    }

    /// Starts BIRD on the router (one BGP session with BFD per lb host,
    /// every equal path installed) and on each lb host (exporting lb's
    /// announced routes), files in `dir`. The router's comes first.
    pub fn start_bird(&self, dir: &Path) -> Vec<Bird> {
        let mut conf = "router id 10.210.0.1;\nprotocol device { scan time 10; }\n\
                        protocol kernel { ipv4 { export all; }; merge paths yes limit 16; }\n"
            .to_owned();
        conf += &bfd("r-lb*");
        for k in 1..=HOSTS {
            conf += &format!(
                "protocol bgp lb{k} {{\n  local {} as 65000;\n  neighbor {} as 65001;\n  \
                 {TIMERS}\n  ipv4 {{ import all; export none; }};\n}}\n",
                router_side(k),
                uplink(k)
            );
        }
        let mut birds = vec![Bird::start(&self.router, dir, "router", &conf)];
        for (k, ns) in (1..).zip(&self.hosts) {
            let mut conf = format!(
                "router id {};\nprotocol device {{ scan time 10; }}\nipv4 table lb4;\n",
                uplink(k)
            );
            conf += &bfd("u0");
            conf += &format!(
                "protocol kernel {{\n  kernel table {TABLE};\n  learn;\n  scan time 10;\n  \
                 ipv4 {{ table lb4; import where krt_source = {PROTOCOL}; export none; }};\n}}\n\
                 protocol bgp uplink {{\n  local {} as 65001;\n  neighbor {} as 65000;\n  \
                 {TIMERS}\n  ipv4 {{ table lb4; import none; export all; next hop self; }};\n}}\n",
                uplink(k),
                router_side(k)
            );
            birds.push(Bird::start(ns, dir, &format!("lb{k}"), &conf));
        }
        birds
    }
}
