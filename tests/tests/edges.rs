//! The NAT datapath at the edges of IP (issue 16), end to end in
//! namespaces: path-MTU discovery through the VIP across a 1280-byte link
//! beyond the balancer (and the same topology through nftables DNAT, which
//! completes it, to show the test is sound), an egress too small at the
//! balancer itself, direct client-to-backend traffic after heavy VIP use,
//! ECONNREFUSED through the VIP, hairpin calls and ping of a VIP. Each test
//! checks the goal and, failing, says how far it got. Needs root.
//!
//! What shows the checks are sound: `pmtu_nft_dnat_completes` runs the PMTU
//! transfers through nftables DNAT, which completes them, and checks both
//! ends learned the 1280-byte path MTU (with the router's ICMP errors
//! dropped, the same transfers stall); the splice variants, which proxy
//! and so meet none of these problems, pass the same checks; the too-big
//! and ECONNREFUSED cases send the same datagram straight to the backend as
//! a control, which must get the answer they look for.

use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use lb_tests::{
    agent::{Lb, TempDir, agent_table, config, service, start_lb, wait_for, with_flows},
    bulk,
    client::{Conn, Flow, Setup, connect_from, in_parallel, vip},
    icmp::{Icmp, path_mtu, set_pmtudisc_do},
    in_both_modes, in_kernel_modes,
    inproc::Server,
    mode::Mode,
    router::{BOTTLENECK_MTU, RouterTopology, far_backend, far_client},
    stream::BLOCK,
    topology::{CLIENT4, Topology, VIP4, VIP6, backend4, backend6, sock, unlimited_icmp},
};

const SERVER: &str = env!("CARGO_BIN_EXE_lbt-server");

/// Blocks (of [`BLOCK`] bytes, 1 MB) in each bulk transfer: 4 MB.
const TRANSFER_BLOCKS: u64 = 4;
/// How long a 4 MB transfer may take (it takes well under a second when the
/// path works; a black hole stalls it for good).
const TRANSFER_LIMIT: Duration = Duration::from_secs(30);
/// The port of the services whose only backend is the far one.
const UP_PORT: u16 = 8080;
/// The port of the services whose only backend is near backend 1.
const DOWN_PORT: u16 = 80;
/// A `[service.health]` table with probes off.
const NO_PROBES: &str = "kind = \"none\"";

in_both_modes!(
    pmtu_upload_to_the_far_backend_completes,
    pmtu_download_to_the_far_client_completes,
    a_tcp_upload_through_an_egress_smaller_than_the_path_completes,
    direct_connections_after_heavy_vip_use_are_never_hijacked,
    direct_udp_after_vip_use_is_answered_by_the_backend_itself,
    direct_udp_after_vip_flows_idled_out_is_answered_by_the_backend_itself,
    hairpin_calls_through_the_vip_all_succeed,
    ping_of_a_vip_is_answered,
    fragmented_udp_through_the_vip_is_answered_whole_from_the_vip,
);

in_kernel_modes!(
    a_datagram_too_big_for_the_egress_gets_an_icmp_quoting_the_vip_and_is_counted,
    udp_to_a_closed_backend_port_is_refused_through_the_vip,
);

/// The address of near backend `i` in the family of `v6`.
fn backend(i: usize, v6: bool) -> IpAddr {
    if v6 { backend6(i) } else { backend4(i) }
}

/// The unspecified address and any port, in the family of `v6`.
fn any(v6: bool) -> SocketAddr {
    if v6 { "[::]:0" } else { "0.0.0.0:0" }.parse().expect("any")
}

/// Panics listing every failure, if there is one.
fn assert_none(what: &str, failures: &[String]) {
    assert!(failures.is_empty(), "{what}:\n  {}", failures.join("\n  "));
}

// ---------------------------------------------------------------- PMTU

/// The router topology with one near backend, balanced by lb in a mode or
/// by nftables DNAT, and bulk servers: the far backend takes uploads on
/// [`UP_PORT`], near backend 1 sends downloads on [`DOWN_PORT`].
#[derive(Debug)]
struct Pmtu {
    _lb: Option<Lb>,
    _servers: Vec<Server>,
    /// Bytes the far backend has received.
    far_received: Arc<AtomicU64>,
    _dir: TempDir,
    rt: RouterTopology,
}

impl Pmtu {
    /// lb in `mode`, or nftables DNAT in the lb namespace for `None`.
    fn new(mode: Option<Mode>) -> Self {
        let rt = RouterTopology::new(1);
        let dir = TempDir::new();
        let far_received = Arc::new(AtomicU64::new(0));
        let mut servers = Vec::new();
        for v6 in [false, true] {
            let far = SocketAddr::new(far_backend(v6), UP_PORT);
            servers.push(Server::start(&rt.far, far, bulk::server(0, far_received.clone())));
            let near = SocketAddr::new(backend(1, v6), DOWN_PORT);
            let download = bulk::server(TRANSFER_BLOCKS, Default::default());
            servers.push(Server::start(&rt.near.backends[0], near, download));
        }
        let lb = mode.map(|mode| {
            rt.prepare(mode);
            let path = dir.0.join("lb.toml");
            std::fs::write(&path, mode.config(&pmtu_config(&rt, &dir.0))).expect("write config");
            let lb = start_lb(&rt.near, &path, &dir.0);
            let status = lb.status();
            assert_eq!(Mode::of_status(&status), Some(mode), "lb serves in {mode:?}:\n{status}");
            lb
        });
        if mode.is_none() {
            nft_dnat(&rt, &dir);
        }
        Self { _lb: lb, _servers: servers, far_received, _dir: dir, rt }
    }

    /// 4 MB from the near client through `ip`'s VIP to the far backend.
    fn upload(&self, ip: &str) -> Result<(), String> {
        let _inside = self.rt.near.client.enter();
        let target = vip(ip, UP_PORT);
        let before = self.far_received.load(Relaxed);
        let mut c = connect_from(any(target.is_ipv6()), target, Duration::from_secs(2))
            .map_err(|e| format!("connect to {target}: {e}"))?;
        bulk::transfer(&mut c, TRANSFER_BLOCKS, 0, TRANSFER_LIMIT).map_err(|e| {
            let got = self.far_received.load(Relaxed) - before;
            format!(
                "upload via {target}: {e}; the far backend received {got} of {} bytes",
                TRANSFER_BLOCKS * BLOCK as u64
            )
        })
    }

    /// 4 MB from near backend 1 through `ip`'s VIP to the far client.
    fn download(&self, ip: &str) -> Result<(), String> {
        let _inside = self.rt.far.enter();
        let target = vip(ip, DOWN_PORT);
        let me = SocketAddr::new(far_client(target.is_ipv6()), 0);
        let mut c = connect_from(me, target, Duration::from_secs(2))
            .map_err(|e| format!("connect from {me} to {target}: {e}"))?;
        bulk::transfer(&mut c, 0, TRANSFER_BLOCKS, TRANSFER_LIMIT)
            .map_err(|e| format!("download via {target} to the far client: {e}"))
    }
}

/// The PMTU services: on each VIP, [`UP_PORT`] to the far backend only and
/// [`DOWN_PORT`] to near backend 1 only.
fn pmtu_config(rt: &RouterTopology, dir: &std::path::Path) -> String {
    let mut s = agent_table(&rt.lb_interfaces(), dir);
    for (name, v6, ip) in [("v4", false, VIP4), ("v6", true, VIP6)] {
        let ip: IpAddr = ip.parse().expect("vip");
        let far = [sock(far_backend(v6), UP_PORT)];
        s += &service(&format!("up-{name}"), "tcp", &sock(ip, UP_PORT), "maglev", NO_PROBES, &far);
        let near = [sock(backend(1, v6), DOWN_PORT)];
        let vip = sock(ip, DOWN_PORT);
        s += &service(&format!("down-{name}"), "tcp", &vip, "maglev", NO_PROBES, &near);
    }
    s
}

/// The same services as kernel NAT: nftables DNAT in the lb namespace, its
/// conntrack translating the ICMP errors related to each connection.
fn nft_dnat(rt: &RouterTopology, dir: &TempDir) {
    let mut rules = String::from(
        "table inet lbt_dnat {\n chain prerouting {\n  type nat hook prerouting priority dstnat; policy accept;\n",
    );
    for (v6, ip) in [(false, VIP4), (true, VIP6)] {
        let family = if v6 { "ip6" } else { "ip" };
        for (port, to) in [(UP_PORT, far_backend(v6)), (DOWN_PORT, backend(1, v6))] {
            rules += &format!(
                "  {family} daddr {ip} tcp dport {port} dnat {family} to {}\n",
                sock(to, port)
            );
        }
    }
    rules += " }\n}\n";
    let path = dir.0.join("dnat.nft");
    std::fs::write(&path, rules).expect("write the nftables rules");
    rt.near.lb.exec(&["nft", "-f", path.to_str().expect("utf-8 path")]);
}

fn pmtu_upload_to_the_far_backend_completes(mode: Mode) {
    let s = Pmtu::new(Some(mode));
    let failures: Vec<String> = [VIP4, VIP6].iter().filter_map(|ip| s.upload(ip).err()).collect();
    assert_none("4 MB uploads through a 1280-byte link beyond the balancer", &failures);
}

fn pmtu_download_to_the_far_client_completes(mode: Mode) {
    let s = Pmtu::new(Some(mode));
    let failures: Vec<String> = [VIP4, VIP6].iter().filter_map(|ip| s.download(ip).err()).collect();
    assert_none("4 MB downloads through a 1280-byte link beyond the balancer", &failures);
}

/// The soundness check of the two above: the same topology, servers and
/// transfers through nftables DNAT instead of lb complete both ways in
/// both families (as the issue found), so the topology is right and a
/// failure above is the balancer's. The transfers must also really have
/// met the bottleneck: the router's link reports its 1280-byte MTU, the
/// client's kernel learned a 1280-byte path MTU for the upload and the
/// backend's for the download.
#[test]
fn pmtu_nft_dnat_completes() {
    let s = Pmtu::new(None);
    let mut failures = Vec::new();
    for ip in [VIP4, VIP6] {
        failures.extend(s.upload(ip).err());
        failures.extend(s.download(ip).err());
    }
    assert_none("4 MB transfers through nftables DNAT", &failures);
    let link = s.rt.router.exec(&["ip", "link", "show", "r-far"]);
    let link = String::from_utf8_lossy(&link.stdout);
    assert!(link.contains(&format!("mtu {BOTTLENECK_MTU}")), "{link}");
    // The client's cached path MTU (conntrack translated the router's
    // errors into ones about the VIP, so that is where the client has it).
    // The backend's likewise, toward the far client.
    for (v6, ip) in [(false, VIP4), (true, VIP6)] {
        let family = if v6 { "-6" } else { "-4" };
        for (ns, to) in [
            (&s.rt.near.client, ip.to_owned()),
            (&s.rt.near.backends[0], far_client(v6).to_string()),
        ] {
            let route = ns.exec(&["ip", family, "route", "get", &to]);
            let route = String::from_utf8_lossy(&route.stdout);
            assert!(route.contains(&format!("mtu {BOTTLENECK_MTU}")), "no learned PMTU: {route}");
        }
    }
}

// ------------------------------------------------ a too-small egress at lb

/// One backend behind lb in `mode`, the balancer's end of its link at MTU
/// 1280 (the backend's end stays 1500), and a bulk server on port 80 of
/// the backend (counting what it received).
fn small_egress(mode: Mode) -> (Setup, Vec<Server>, Arc<AtomicU64>) {
    let topo = Topology::new(1);
    topo.lb.ip(&format!("link set lb-b1 mtu {BOTTLENECK_MTU}"));
    unlimited_icmp(&topo.lb);
    mode.prepare(&topo);
    let s = Setup::launch(None, topo, TempDir::new(), &[], |t, d| {
        mode.config(&config(t, d, "maglev", 1))
    });
    assert_eq!(s.mode, mode, "lb serves in the mode asked for:\n{}", s.lb.status());
    let received = Arc::new(AtomicU64::new(0));
    let servers = [backend4(1), backend6(1)]
        .into_iter()
        .map(|ip| {
            let handler = bulk::server(0, received.clone());
            Server::start(&s.topo.backends[0], SocketAddr::new(ip, 80), handler)
        })
        .collect();
    (s, servers, received)
}

/// A 1400-byte datagram (DF, PMTUDISC_DO, a connected socket) from the
/// client to `target` (the UDP service on a VIP, or the backend itself),
/// which fits the client's link but not lb-b1: what went wrong, if
/// anything. The ICMP must quote `target` itself.
fn too_big_datagram(s: &Setup, target: SocketAddr) -> Vec<String> {
    let _inside = s.topo.client.enter();
    let icmp = Icmp::open(&s.topo.client, target.is_ipv6());
    let sock = UdpSocket::bind(any(target.is_ipv6())).expect("udp socket");
    sock.connect(target).expect("connect");
    set_pmtudisc_do(&sock);
    if let Err(e) = sock.send(&[0u8; 1400]) {
        return vec![format!("{target}: the first 1400-byte send failed: {e}")];
    }
    let seen = icmp.errors(Duration::from_secs(2), |seen| seen.iter().any(|e| e.too_big()));
    let mut failures = Vec::new();
    match seen.iter().find(|e| e.too_big()) {
        None => failures.push(format!(
            "{target}: no fragmentation-needed / packet-too-big within 2 s of a 1400-byte \
             datagram (ICMP errors seen: {seen:?})"
        )),
        Some(e) => {
            if (e.inner_dst, e.inner_ports.1) != (target.ip(), target.port()) {
                failures.push(format!(
                    "{target}: the ICMP quotes a packet to {}:{}, not {target}: {e:?}",
                    e.inner_dst, e.inner_ports.1
                ));
            }
            if e.mtu != BOTTLENECK_MTU {
                failures
                    .push(format!("{target}: the ICMP names MTU {}, not {BOTTLENECK_MTU}", e.mtu));
            }
        }
    }
    // The socket learned it: its path MTU, or a second send refused.
    let mtu = path_mtu(&sock);
    if mtu.as_ref().ok() != Some(&BOTTLENECK_MTU) {
        let again = sock.send(&[0u8; 1400]);
        let refused = matches!(&again, Err(e) if e.raw_os_error() == Some(nix::libc::EMSGSIZE));
        if !refused {
            failures.push(format!(
                "{target}: after it the socket's path MTU is {mtu:?} and a second 1400-byte send \
                 gave {again:?}, not {BOTTLENECK_MTU} or EMSGSIZE"
            ));
        }
    }
    failures
}

fn a_datagram_too_big_for_the_egress_gets_an_icmp_quoting_the_vip_and_is_counted(mode: Mode) {
    let (s, _servers, _) = small_egress(mode);
    let mut failures: Vec<String> =
        [VIP4, VIP6].iter().flat_map(|ip| too_big_datagram(&s, vip(ip, 5353))).collect();
    // Counted, under a reason of its own: one datagram per family.
    let deadline = Instant::now() + Duration::from_secs(2);
    let counted = loop {
        let report = s.lb.report();
        let found = report.exceptions.iter().find(|e| e.reason == "too_big").map(|e| e.packets);
        if found.is_some_and(|n| n >= 2) || Instant::now() >= deadline {
            break found.ok_or_else(|| {
                let names: Vec<&str> =
                    report.exceptions.iter().map(|e| e.reason.as_str()).collect();
                format!("lb status has no too_big counter (its reasons: {names:?})")
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    match counted {
        Err(e) => failures.push(e),
        Ok(n) if n < 2 => {
            failures.push(format!("too_big counted {n} packets for 2 datagrams too big for lb-b1"))
        }
        Ok(_) => {}
    }
    // The control: sent to the backend itself, which the balancer's kernel
    // forwards, the same datagram gets the same answer about the backend,
    // so the socket options and the capture above work.
    for v6 in [false, true] {
        let direct = SocketAddr::new(backend(1, v6), 5353);
        failures.extend(too_big_datagram(&s, direct).into_iter().map(|f| format!("control: {f}")));
    }
    assert_none("a datagram larger than the balancer's egress MTU", &failures);
}

fn a_tcp_upload_through_an_egress_smaller_than_the_path_completes(mode: Mode) {
    let (s, _servers, received) = small_egress(mode);
    let _inside = s.topo.client.enter();
    let mut failures = Vec::new();
    for ip in [VIP4, VIP6] {
        let target = vip(ip, 80);
        let before = received.load(Relaxed);
        let result = connect_from(any(target.is_ipv6()), target, Duration::from_secs(2))
            .map_err(|e| format!("connect to {target}: {e}"))
            .and_then(|mut c| bulk::transfer(&mut c, TRANSFER_BLOCKS, 0, TRANSFER_LIMIT));
        if let Err(e) = result {
            let got = received.load(Relaxed) - before;
            failures.push(format!(
                "upload via {target}: {e}; the backend received {got} of {} bytes",
                TRANSFER_BLOCKS * BLOCK as u64
            ));
        }
    }
    assert_none("4 MB uploads through a 1280-byte egress at the balancer", &failures);
}

// ------------------------------------- direct traffic after heavy VIP use

/// Client ports the VIP connections come from: 400, each used 10 times.
const TCP_PORTS: std::ops::Range<u16> = 41_000..41_400;
/// Direct connections to backend 1 afterwards.
const DIRECT: usize = 400;

fn direct_connections_after_heavy_vip_use_are_never_hijacked(mode: Mode) {
    let s = Setup::in_mode(mode, SERVER, 3, 3, "maglev");
    s.topo.reuse_time_wait();
    let target = vip(VIP4, 80);
    // 4 000 short connections through the VIP, each from a port bound
    // explicitly (SO_REUSEADDR); the ports that reach b1.
    let mut pinned = Vec::new();
    {
        let _inside = s.topo.client.enter();
        for round in 0..10 {
            for port in TCP_PORTS {
                let name = Conn::open_from(port, target, mode).ask();
                if round == 0 && name == "b1" {
                    pinned.push(port);
                }
            }
        }
    }
    assert!(pinned.len() >= 50, "only {} of {} ports went to b1", pinned.len(), TCP_PORTS.len());
    if mode.kernel() {
        let client: IpAddr = CLIENT4.parse().expect("client");
        let in_table = pinned
            .iter()
            .filter(|&&p| {
                s.lb.flow(SocketAddr::new(client, p), target, "tcp").source == "flow-table"
            })
            .count();
        eprintln!(
            "{in_table} of the {} ports pinned to b1 still have a flow-table entry",
            pinned.len()
        );
    }
    // 400 direct connections to b1 itself from those ports, each asking once.
    let b1 = SocketAddr::new(backend4(1), 80);
    let ports: Vec<u16> = pinned.iter().cycle().take(DIRECT).copied().collect();
    let failures = in_parallel(s.topo.client.name(), ports, 8, |port| {
        let me = SocketAddr::new(CLIENT4.parse().expect("client"), port);
        match call(me, b1) {
            Ok(name) if name == "b1" => None,
            Ok(name) => Some(format!("port {port}: answered by {name}, not b1")),
            Err(e) => Some(format!("port {port}: {e}")),
        }
    });
    let what = format!(
        "direct connections to {b1}, from ports pinned to b1 through the VIP by 4 000 earlier \
         connections, failed"
    );
    assert_all_ok(&what, failures);
}

/// One TCP call: connects from `from` to `target` (1 s), asks once; the
/// answering backend's name.
fn call(from: SocketAddr, target: SocketAddr) -> Result<String, String> {
    let c =
        connect_from(from, target, Duration::from_secs(1)).map_err(|e| format!("connect: {e}"))?;
    Conn::from_stream(c).try_ask().ok_or_else(|| "no answer".to_owned())
}

/// Panics unless every try went well (`None`), saying how many of them did
/// not, and the first ten.
fn assert_all_ok(what: &str, tries: Vec<Option<String>>) {
    let n = tries.len();
    let failed: Vec<String> = tries.into_iter().flatten().collect();
    assert!(
        failed.is_empty(),
        "{} of {n} {what}: first {:?}",
        failed.len(),
        &failed[..failed.len().min(10)]
    );
}

/// Client ports the UDP flows through the VIP come from.
const UDP_PORTS: std::ops::Range<u16> = 42_000..42_300;

/// The UDP flows through the VIP idle out of the kernel datapath's flow
/// table (`[flows]`) after this, in the variant that waits for them to.
const UDP_IDLE: &str = "udp_idle_timeout = \"2s\"";

/// Direct exchanges from the ports of UDP flows through the VIP that are
/// still live: the reply of a direct exchange has the very 5-tuple of a
/// live flow's reply, so only the direct datagram that went out first (it
/// crossed the balancer) can tell the datapath it is not the flow's.
fn direct_udp_after_vip_use_is_answered_by_the_backend_itself(mode: Mode) {
    direct_udp_from_ports_used_through_the_vip(mode, false);
}

/// The same once the flows through the VIP have idled out (2 s): what
/// they left must no longer match anything.
fn direct_udp_after_vip_flows_idled_out_is_answered_by_the_backend_itself(mode: Mode) {
    direct_udp_from_ports_used_through_the_vip(mode, true);
}

fn direct_udp_from_ports_used_through_the_vip(mode: Mode, idle_out: bool) {
    let topo = Topology::new(3);
    mode.prepare(&topo);
    let s = Setup::with_config(SERVER, topo, TempDir::new(), |t, d| {
        let cfg = config(t, d, "maglev", 3);
        mode.config(&if idle_out { with_flows(&cfg, UDP_IDLE) } else { cfg })
    });
    assert_eq!(s.mode, mode, "{}", s.lb.status());
    let target = vip(VIP4, 5353);
    let bind = |port: u16| {
        let sock = UdpSocket::bind(SocketAddr::new([0, 0, 0, 0].into(), port))
            .unwrap_or_else(|e| panic!("bind UDP port {port}: {e}"));
        sock.set_read_timeout(Some(Duration::from_secs(1))).expect("timeout");
        sock
    };
    // One datagram through the VIP from each port (answered from the VIP,
    // Flow::ask checks); the ports that reach b1.
    let pinned: Vec<u16> = {
        let _inside = s.topo.client.enter();
        UDP_PORTS.filter(|&p| Flow::from_socket(bind(p), target).ask() == "b1").collect()
    };
    assert!(pinned.len() >= 40, "only {} of {} ports went to b1", pinned.len(), UDP_PORTS.len());
    if idle_out && mode.kernel() {
        // Gone from the flow table (a sweep about every second).
        let client: IpAddr = CLIENT4.parse().expect("client");
        wait_for(Duration::from_secs(10), "the UDP flows through the VIP idling out", || {
            let live = pinned.iter().any(|&p| {
                s.lb.flow(SocketAddr::new(client, p), target, "udp").source == "flow-table"
            });
            (!live).then_some(())
        });
    } else if idle_out {
        std::thread::sleep(Duration::from_secs(4));
    }
    // From each of them, an exchange with b1 itself: the answer must come
    // from b1's own address.
    let b1 = SocketAddr::new(backend4(1), 5353);
    let failures = in_parallel(s.topo.client.name(), pinned, 4, |port| {
        let sock = bind(port);
        sock.send_to(b"direct", b1).expect("send");
        let mut buf = [0u8; 256];
        match sock.recv_from(&mut buf) {
            Ok((n, from)) if from == b1 && buf[..n].starts_with(b"b1 ") => None,
            Ok((n, from)) => Some(format!(
                "port {port}: answer {:?} from {from}",
                String::from_utf8_lossy(&buf[..n])
            )),
            Err(e) => Some(format!("port {port}: no answer: {e}")),
        }
    });
    let what = format!(
        "direct UDP exchanges with {b1}, from ports that had used the VIP, were not answered by \
         b1 itself"
    );
    assert_all_ok(&what, failures);
}

// ------------------------------------------------------------- ECONNREFUSED

/// The UDP port of a service whose backend listens on nothing there.
const CLOSED: u16 = 6000;

fn udp_to_a_closed_backend_port_is_refused_through_the_vip(mode: Mode) {
    let topo = Topology::new(1);
    mode.prepare(&topo);
    unlimited_icmp(&topo.backends[0]);
    let s = Setup::with_config(SERVER, topo, TempDir::new(), |t, d| {
        let mut c = config(t, d, "maglev", 1);
        for (name, ip, b) in [("v4", VIP4, backend4(1)), ("v6", VIP6, backend6(1))] {
            let vip = sock(ip.parse().expect("vip"), CLOSED);
            let backends = [sock(b, CLOSED)];
            c += &service(
                &format!("udp-closed-{name}"),
                "udp",
                &vip,
                "maglev",
                NO_PROBES,
                &backends,
            );
        }
        mode.config(&c)
    });
    assert_eq!(s.mode, mode, "{}", s.lb.status());
    let mut failures = Vec::new();
    for v6 in [false, true] {
        let ip = if v6 { VIP6 } else { VIP4 };
        failures.extend(refused(&s, vip(ip, CLOSED), Some(backend(1, v6))));
    }
    // The control: straight to the backend's closed port, the same socket
    // calls are refused, so the backend answers and the checks see it.
    for v6 in [false, true] {
        let direct = SocketAddr::new(backend(1, v6), CLOSED);
        failures.extend(refused(&s, direct, None).into_iter().map(|f| format!("control: {f}")));
    }
    assert_none("UDP to a closed backend port through the VIP", &failures);
}

/// A datagram from a connected client socket to `target`, then a receive:
/// what went wrong, if it was not refused within 2 s by a port unreachable
/// quoting `target`, or if an ICMP error told the client of `hidden`.
fn refused(s: &Setup, target: SocketAddr, hidden: Option<IpAddr>) -> Vec<String> {
    let _inside = s.topo.client.enter();
    let icmp = Icmp::open(&s.topo.client, target.is_ipv6());
    let sock = UdpSocket::bind(any(target.is_ipv6())).expect("udp socket");
    sock.connect(target).expect("connect");
    sock.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    sock.send(b"anyone?").expect("send");
    let start = Instant::now();
    let got = sock.recv(&mut [0u8; 256]);
    let took = start.elapsed();
    // Whatever ICMP errors reached the client meanwhile.
    let seen = icmp.errors(Duration::from_millis(200), |_| false);
    let mut failures = Vec::new();
    if !matches!(&got, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused) {
        failures.push(format!(
            "{target}: recv gave {got:?} after {took:?}, not ECONNREFUSED within 2 s \
             (ICMP errors the client got: {seen:?})"
        ));
    }
    if let Some(hidden) = hidden {
        for e in seen.iter().filter(|e| e.mentions(hidden)) {
            failures
                .push(format!("{target}: the client learned the backend address {hidden}: {e:?}"));
        }
    }
    let quotes_target = |e: &lb_tests::icmp::IcmpError| {
        e.port_unreachable() && (e.inner_dst, e.inner_ports.1) == (target.ip(), target.port())
    };
    if !seen.iter().any(quotes_target) {
        failures.push(format!(
            "{target}: no port unreachable quoting {target} reached the client (seen: {seen:?})"
        ));
    }
    failures
}

// ------------------------------------------------------------------ hairpin

/// Calls each backend makes to each VIP.
const HAIRPIN_CALLS: u16 = 100;

fn hairpin_calls_through_the_vip_all_succeed(mode: Mode) {
    let s = Setup::in_mode(mode, SERVER, 3, 3, "maglev");
    let mut failures = Vec::new();
    for ip in [VIP4, VIP6] {
        let target = vip(ip, 80);
        for i in 1..=3 {
            let me = backend(i, target.is_ipv6());
            let name = format!("b{i}");
            // Each call from a port of its own, so a failed one can be
            // looked up with `lb flow`.
            let calls: Vec<SocketAddr> =
                (0..HAIRPIN_CALLS).map(|n| SocketAddr::new(me, 43_000 + n)).collect();
            let results = in_parallel(s.topo.backends[i - 1].name(), calls, 10, |from| {
                call(from, target).map_err(|e| (from, e))
            });
            let on_self = results.iter().filter(|r| r.as_ref().is_ok_and(|n| *n == name)).count();
            let failed: Vec<&(SocketAddr, String)> =
                results.iter().filter_map(|r| r.as_ref().err()).collect();
            eprintln!(
                "{name} -> {target}: {} of {HAIRPIN_CALLS} answered, {on_self} of them by {name} itself",
                results.len() - failed.len()
            );
            if failed.is_empty() {
                continue;
            }
            // Where the failed calls were meant to go, as lb says.
            let meant_for_self = if mode.kernel() {
                let own = sock(me, 80);
                let n = failed
                    .iter()
                    .filter(|(from, _)| s.lb.flow(*from, target, "tcp").backend == own)
                    .count();
                format!("{n} of them hashed to {name} itself")
            } else {
                "splice mode: no flow query".to_owned()
            };
            failures.push(format!(
                "{name} -> {target}: {} of {HAIRPIN_CALLS} calls failed ({meant_for_self}; \
                 {on_self} answered by {name} itself): first {:?}",
                failed.len(),
                &failed[..failed.len().min(5)]
            ));
        }
    }
    assert_none("hairpin calls from the backends through the VIP", &failures);
}

// ---------------------------------------------------------------- fragments

/// Bytes of each request (and so of each reply): three fragments at the
/// topology's MTU of 1500, each way.
const FRAGMENTED_LEN: usize = 4_000;
/// Client ports the fragmented datagrams come from.
const FRAGMENT_PORTS: std::ops::Range<u16> = 44_000..44_060;

/// Datagrams over the MTU through the VIP, as DNS over UDP with EDNS, or a
/// game or VPN protocol sends them: the client's kernel fragments each
/// request, the backend's each reply. Every reply must come back whole and
/// from the VIP (a later fragment left with the backend's address would
/// never reassemble at the client, and one that leaked would show it), and
/// the requests must spread over the backends (each later fragment followed
/// its first fragment's choice).
fn fragmented_udp_through_the_vip_is_answered_whole_from_the_vip(mode: Mode) {
    let s = Setup::in_mode(mode, SERVER, 3, 3, "maglev");
    let mut failures = Vec::new();
    for ip in [VIP4, VIP6] {
        let target = vip(ip, 5353);
        let any_port = |port: u16| SocketAddr::new(any(target.is_ipv6()).ip(), port);
        let answers = in_parallel(s.topo.client.name(), FRAGMENT_PORTS.collect(), 6, |port| {
            let sock = UdpSocket::bind(any_port(port)).map_err(|e| format!("bind {port}: {e}"))?;
            sock.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
            let mut request = b"echo:".to_vec();
            request.extend((0..FRAGMENTED_LEN).map(|i| (i as u16 ^ port) as u8));
            sock.send_to(&request, target).map_err(|e| format!("port {port}: send: {e}"))?;
            let mut buf = vec![0u8; 65_536];
            let (n, from) =
                sock.recv_from(&mut buf).map_err(|e| format!("port {port}: no answer: {e}"))?;
            let reply = &buf[..n];
            let name = String::from_utf8_lossy(reply).split(' ').next().unwrap_or("").to_owned();
            if from != target {
                Err(format!("port {port}: answer from {from}, not the VIP"))
            } else if !reply.ends_with(&request) {
                Err(format!(
                    "port {port}: answer of {n} bytes is not the echo of {}",
                    request.len()
                ))
            } else {
                Ok(name)
            }
        });
        let mut by: Vec<String> = answers.iter().filter_map(|a| a.as_ref().ok().cloned()).collect();
        failures.extend(answers.into_iter().filter_map(Result::err).take(5));
        by.sort();
        by.dedup();
        if by.len() < 2 {
            failures.push(format!("{target}: answered by {by:?} only, not spread over backends"));
        }
    }
    assert_none("fragmented datagrams through the VIP", &failures);
    if mode.kernel() {
        // Each later fragment followed its first: none passed unbalanced.
        let report = s.lb.report();
        let unmatched =
            report.exceptions.iter().find(|e| e.reason == "fragment").map(|e| e.packets);
        assert_eq!(unmatched, Some(0), "later fragments with no first fragment seen");
    }
}

// --------------------------------------------------------------------- ping

fn ping_of_a_vip_is_answered(mode: Mode) {
    let s = Setup::in_mode(mode, SERVER, 1, 1, "maglev");
    let mut failures = Vec::new();
    for ip in [VIP4, VIP6] {
        let icmp = Icmp::open(&s.topo.client, ip.contains(':'));
        let answered = icmp.ping(ip.parse().expect("vip"), 3, Duration::from_secs(1));
        if answered != 3 {
            failures.push(format!("{answered} of 3 echo requests to {ip} answered by it"));
        }
    }
    assert_none("ping of the VIPs from the client", &failures);
}
