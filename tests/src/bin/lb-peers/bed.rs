//! The test bed: the harness's topology with one backend (iperf3 needs all
//! of a test's connections on one backend, and one backend keeps every peer
//! comparable), the backend's servers, and the settings every figure uses.
//!
//! ```text
//!  client ns  c0 10.200.0.2 ── lb-cli | lb ns | lb-b1 ── b0 10.200.1.1  backend ns
//!  VIP 10.201.0.100 routed to the lb ns (kernel paths, XDP) or local there (proxies)
//!  c0r 10.210.0.2 ─────────── return link ─────────── b0r 10.210.0.1  (lb-dsr's answers)
//! ```

use std::path::PathBuf;

use anyhow::{Context, Result};
use lb_tests::{
    netns::{NetNs, Proc},
    topology::{Topology, VIP4, backend4},
};

/// Ports: iperf3, short connections (lb-rr), UDP sink.
pub const IPERF_PORT: u16 = 5201;
/// lb-rr's port.
pub const RR_PORT: u16 = 8080;
/// The UDP sink's port (nothing listens: the backend's kernel drops them).
pub const SINK_PORT: u16 = 9;

/// Interfaces whose offloads the report lists, with their namespace role.
pub const IFACES: [(&str, &str); 6] = [
    ("client", "c0"),
    ("lb", "lb-cli"),
    ("lb", "lb-b1"),
    ("backend", "b0"),
    ("backend", "b0r"),
    ("client", "c0r"),
];

/// The running bed; drops servers before namespaces.
#[derive(Debug)]
pub struct Bed {
    /// iperf3 -s and lb-rr serve in the backend, killed on drop.
    _servers: Vec<Proc>,
    /// The namespaces.
    pub topo: Topology,
    /// Where the workspace is (scripts/bench, target/release).
    pub root: PathBuf,
}

impl Bed {
    /// Builds the topology and starts the backend's servers.
    pub fn new(root: PathBuf) -> Result<Self> {
        let topo = Topology::new(1);
        // LB_PEERS_OFFLOADS=default: every interface as a new veth has it
        // (TX checksum offload and TSO on, GRO off: super-packets, partial
        // checksums, no NAPI), where users first try lb.
        if std::env::var("LB_PEERS_OFFLOADS").is_ok_and(|v| v == "default") {
            topo.default_offloads();
            return Self::serve(topo, root, false);
        }
        // Wire-like: every frame on a veth at most MTU (1500) bytes, as on a
        // real link. Endpoints: TX checksum off (from the harness: a NIC
        // puts full checksums on the wire, veth would leave them partial),
        // TSO off (GSO stays on: the stack still sends 64 KB buffers, cut
        // into MTU frames in software, where a NIC would do it in hardware),
        // GRO on. The balancer's interfaces: TSO off for the same reason,
        // GRO on as a router's NIC has it, which also gives them the NAPI
        // context that frames sent into a veth by XDP need.
        topo.client.exec(&["ethtool", "-K", "c0", "tso", "off"]);
        topo.backends[0].exec(&["ethtool", "-K", "b0", "tso", "off"]);
        for iface in ["lb-cli", "lb-b1"] {
            topo.lb.exec(&["ethtool", "-K", iface, "tso", "off", "gro", "on"]);
        }
        Self::serve(topo, root, true)
    }

    /// Starts the backend's servers on `topo`, after adding the return link
    /// that lb-dsr's backend answers the client over (no other path routes
    /// by it: the backend's route to the client through it exists only
    /// while lb-dsr runs).
    /// `wire_like`: the return link's ends get the endpoints' settings.
    fn serve(topo: Topology, root: PathBuf, wire_like: bool) -> Result<Self> {
        let backend = &topo.backends[0];
        backend.ip(&format!("link add b0r type veth peer name c0r netns {}", topo.client.name()));
        backend.ip("addr add 10.210.0.1/24 dev b0r");
        backend.ip("link set b0r up");
        topo.client.ip("addr add 10.210.0.2/24 dev c0r");
        topo.client.ip("link set c0r up");
        if wire_like {
            backend.exec(&["ethtool", "-K", "b0r", "tx", "off", "tso", "off", "gro", "on"]);
            topo.client.exec(&["ethtool", "-K", "c0r", "tx", "off", "tso", "off", "gro", "on"]);
        }
        // The answers arrive from the VIP on c0r, while the client's route
        // to the VIP is c0: a strict reverse-path check would drop them.
        for key in ["all", "default", "c0", "c0r"] {
            topo.client.sysctl(&format!("net.ipv4.conf.{key}.rp_filter"), "0");
        }
        // Proxies open a backend connection per client connection and close
        // it first: widen their port range and reuse TIME_WAIT ports, as the
        // harness does for the client.
        topo.lb.sysctl("net.ipv4.ip_local_port_range", "1024 65535");
        topo.lb.sysctl("net.ipv4.tcp_tw_reuse", "1");
        let rr = root.join("target/release/lb-rr");
        let servers = vec![
            quiet(backend, &["iperf3", "-s", "-p", &IPERF_PORT.to_string()])?,
            quiet(backend, &[rr.to_str().context("utf-8 path")?, "serve", &RR_PORT.to_string()])?,
        ];
        Ok(Self { _servers: servers, topo, root })
    }

    /// The backend namespace.
    pub fn backend(&self) -> &NetNs {
        &self.topo.backends[0]
    }

    /// The backend's address.
    pub fn backend_ip(&self) -> String {
        backend4(1).to_string()
    }

    /// Readies the backend for lb-dsr: the VIP on `lo`, a loose reverse-path
    /// check, its route to the client over the return link, and `lb decap`
    /// at the tc hook of its link to the balancer (pins in `dir`), whose
    /// process is returned.
    pub fn dsr_backend(&self, dir: &std::path::Path) -> Result<Proc> {
        let b = self.backend();
        lb_tests::decap::hold_vip(b, VIP4, "b0");
        b.ip("route add 10.200.0.2/32 via 10.210.0.2 dev b0r");
        let pins = decap_pins(dir);
        let cmd = lb_tests::decap::command("b0", "tc", pins.to_str().context("utf-8 path")?);
        quiet(b, &cmd.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// Reads a counter file of an interface inside its namespace.
    pub fn iface_stat(ns: &NetNs, iface: &str, stat: &str) -> u64 {
        let out = ns.exec(&["cat", &format!("/sys/class/net/{iface}/statistics/{stat}")]);
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
    }

    /// Fills a template from scripts/bench: @VIP@, @BACKEND@ and `extra`.
    pub fn template(&self, name: &str, extra: &[(&str, &str)]) -> Result<String> {
        let path = self.root.join("scripts/bench").join(name);
        let mut s = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .replace("@VIP@", VIP4)
            .replace("@BACKEND@", &self.backend_ip());
        for (k, v) in extra {
            s = s.replace(k, v);
        }
        Ok(s)
    }

    /// MTU and the offloads that matter, per interface, as `ethtool -k`
    /// reports them now.
    pub fn settings(&self) -> Vec<(String, String)> {
        IFACES
            .iter()
            .map(|(role, iface)| {
                let ns = match *role {
                    "client" => &self.topo.client,
                    "lb" => &self.topo.lb,
                    _ => self.backend(),
                };
                let k = ns.exec(&["ethtool", "-k", iface]);
                let k = String::from_utf8_lossy(&k.stdout);
                let feature = |name: &str| {
                    k.lines()
                        .find_map(|l| l.trim().strip_prefix(&format!("{name}: ")))
                        .map_or("?", |v| v.split_whitespace().next().unwrap_or("?"))
                        .to_owned()
                };
                let mtu = ns.exec(&["cat", &format!("/sys/class/net/{iface}/mtu")]);
                let text = format!(
                    "mtu {}, tx-checksum {}, tso {}, gso {}, gro {}",
                    String::from_utf8_lossy(&mtu.stdout).trim(),
                    feature("tx-checksumming"),
                    feature("tcp-segmentation-offload"),
                    feature("generic-segmentation-offload"),
                    feature("generic-receive-offload"),
                );
                (format!("{role} {iface}"), text)
            })
            .collect()
    }
}

/// Starts a server in `ns` with its output discarded (iperf3 reports every
/// test).
fn quiet(ns: &NetNs, cmd: &[&str]) -> Result<Proc> {
    let child = ns
        .command(cmd)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("spawning {cmd:?}"))?;
    Ok(Proc(child))
}

/// Undoes [`Bed::dsr_backend`] in the backend namespace `ns` (pins in
/// `dir`): the decap detached, the route and the VIP removed.
pub fn undo_dsr_backend(ns: &str, dir: &std::path::Path) {
    let lb = lb_tests::agent::lb_binary();
    let _ = std::process::Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(&lb)
        .args(["decap", "--stop", "--pin-dir"])
        .arg(decap_pins(dir))
        .output();
    for args in [
        "route del 10.200.0.2/32 via 10.210.0.2 dev b0r".to_owned(),
        format!("addr del {VIP4}/32 dev lo"),
    ] {
        let _ = std::process::Command::new("ip")
            .args(["-n", ns])
            .args(args.split_whitespace())
            .output();
    }
}

/// Where lb-dsr's `lb decap` pins: beside the agent's own pins for `dir`
/// (a BPF file system; a killed run's are removed by the next).
fn decap_pins(dir: &std::path::Path) -> std::path::PathBuf {
    let agent = lb_tests::agent::pin_dir(dir);
    agent.with_file_name(format!(
        "{}-decap",
        agent.file_name().unwrap_or_default().to_string_lossy()
    ))
}
