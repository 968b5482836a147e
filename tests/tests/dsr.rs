//! Direct server return end to end (issue 13): the real `lb` serving a
//! `dsr-ipip` TCP service, a `dsr-ipip` UDP service and a `dsr-l2` TCP
//! service to three backends that hold the VIP on `lo` and run `lb decap`
//! on their link, at the XDP hook and at the tc hook (there at default veth
//! offloads, so the client's TSO super-packets are wrapped whole). The
//! backends answer from the VIP straight back along their own route; lb's
//! VIPs get no local route (`vip_routes = "none"`), so those answers cross
//! the balancer host as plain routed traffic, as they would cross a router.
//! Needs root.

use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpStream, UdpSocket},
    path::Path,
    time::{Duration, Instant},
};

use lb_tests::{
    agent::{self, Lb, TempDir, lb_binary, pin_dir, start_lb, test_bpffs},
    client::Conn,
    mode::Mode,
    netns::Proc,
    topology::{Topology, VIP4, VIP6},
};

const LIMIT: Duration = Duration::from_secs(20);
const SERVER: &str = env!("CARGO_BIN_EXE_lbt-server");

#[test]
fn dsr_at_the_xdp_hook_serves_every_backend_with_the_client_address_kept() {
    serves(Mode::Xdp);
}

#[test]
fn dsr_at_the_tc_hook_at_default_offloads_serves_every_backend() {
    serves(Mode::Tc);
}

/// The config: the agent on every lb interface, no VIP routes, and the
/// three services, probed by TCP and UDP (the probes also make the kernel
/// learn the backends' MACs, which `dsr-l2` at XDP needs). The `dsr-ipip`
/// services' probes also go through the tunnel, by default.
fn config(topo: &Topology, dir: &Path, mode: Mode) -> String {
    let mut s = mode.config(&agent::agent_table(&topo.lb_interfaces(), dir));
    s += "vip_routes = \"none\"\n";
    let backends = |port: u16| -> String {
        (1..=topo.backends.len())
            .map(|i| format!("[[service.backend]]\naddr = \"10.200.{i}.1:{port}\"\n"))
            .collect()
    };
    let health = "[service.health]\nkind = \"tcp\"\ninterval = \"500ms\"\ntimeout = \"400ms\"\n";
    s += &format!(
        "\n[[service]]\nname = \"ipip\"\nvip = \"{VIP4}:80\"\nforwarding = \"dsr-ipip\"\n\
         tunnel_source = \"10.201.9.0/28\"\n{health}{}",
        backends(80)
    );
    s += &format!(
        "\n[[service]]\nname = \"ipip-udp\"\nvip = \"{VIP4}:5353\"\nprotocol = \"udp\"\n\
         forwarding = \"dsr-ipip\"\ntunnel_source = \"10.201.9.0/28\"\n\
         [service.health]\nkind = \"udp\"\nsend = \"hello\\n\"\ninterval = \"500ms\"\n\
         timeout = \"400ms\"\n{}",
        backends(5353)
    );
    s += &format!(
        "\n[[service]]\nname = \"l2\"\nvip = \"{VIP4}:81\"\nforwarding = \"dsr-l2\"\n{health}{}",
        backends(81)
    );
    s
}

/// The backends' processes: each one's server and its `lb decap`.
struct Backends {
    servers: Vec<Proc>,
    _decaps: Vec<Proc>,
}

/// Backend `i`'s server (1-based), on the service ports.
fn server(topo: &Topology, i: usize) -> Proc {
    topo.backends[i - 1].spawn(&[SERVER, &format!("b{i}"), "80", "81", "5353"])
}

/// Readies backend namespaces as the README's DSR section says: the VIP on
/// `lo` (but for backend `without_vip`, 1-based), rp_filter loose, a
/// server on the service ports and `lb decap` on the link at the mode's
/// hook.
fn backends(topo: &Topology, dir: &Path, mode: Mode, without_vip: Option<usize>) -> Backends {
    let attach = if mode == Mode::Tc { "tc" } else { "native" };
    let mut b = Backends { servers: Vec::new(), _decaps: Vec::new() };
    for (i, ns) in topo.backends.iter().enumerate() {
        if without_vip != Some(i + 1) {
            lb_tests::decap::hold_vip(ns, VIP4, "b0");
        }
        b.servers.push(server(topo, i + 1));
        let pins = decap_pins(dir, i + 1);
        b._decaps.push(lb_tests::decap::spawn(ns, "b0", attach, &pins));
    }
    b
}

fn serves(mode: Mode) {
    let topo = Topology::new(3);
    if mode == Mode::Tc {
        topo.default_offloads();
    }
    let dir = TempDir::new();
    test_bpffs();
    let _backends = backends(&topo, &dir.0, mode, None);
    let cfg = dir.0.join("lb.toml");
    std::fs::write(&cfg, config(&topo, &dir.0, mode)).expect("config");
    let lb = start_lb(&topo, &cfg, &dir.0);
    for b in 1..=3 {
        for svc in ["ipip", "ipip-udp", "l2"] {
            lb.wait_health(svc, &format!("10.200.{b}.1:{}", port(svc)), "up", LIMIT);
        }
    }

    let _client = topo.client.enter();
    for (svc, port) in [("ipip", 80), ("l2", 81)] {
        let vip: SocketAddr = format!("{VIP4}:{port}").parse().expect("vip");
        // The first connection may wait for the decap programs to attach.
        wait_answered(vip);
        // New connections spread over every backend, each seeing the
        // client's own address (`ask` asserts it), and each answered.
        let mut seen = BTreeSet::new();
        for _ in 0..150 {
            seen.insert(Conn::open_via(vip, mode).ask());
        }
        assert_eq!(seen.len(), 3, "{svc}: every backend answers, saw {seen:?}");
        // 4 MB in one line: at default offloads, TSO super-packets.
        big_line(vip);
    }
    udp_answered(format!("{VIP4}:5353").parse().expect("vip"));

    // Every probe, through the tunnel too, kept succeeding all along.
    for b in 1..=3 {
        for svc in ["ipip", "ipip-udp", "l2"] {
            let (status, _) = lb.backend(svc, &format!("10.200.{b}.1:{}", port(svc)));
            assert_eq!((status.health.as_str(), status.transitions), ("up", 0), "{svc} b{b}");
        }
    }
    let report = lb.report();
    let count = |reason: &str| {
        report.exceptions.iter().find(|e| e.reason == reason).map_or(0, |e| e.packets)
    };
    for reason in ["encap_failed", "no_neighbour", "no_route"] {
        assert_eq!(count(reason), 0, "{reason}");
    }
    // Full-size segments do not fit the 1500-byte link once wrapped: at
    // XDP they are answered "fragmentation needed" for 1480 and the client
    // lowers its segments (the 4 MB lines above got through). At tc the
    // client's TSO super-packets have their segments cut 20 bytes shorter
    // by the kernel instead.
    if mode == Mode::Xdp {
        assert!(count("too_big") > 0, "path MTU discovery through the tunnel");
    }
    drop(_client);
    // Every backend unwrapped packets, and none was malformed.
    let lb_bin = lb_binary();
    let lb_bin = lb_bin.to_string_lossy();
    for (i, ns) in topo.backends.iter().enumerate() {
        let pins = decap_pins(&dir.0, i + 1);
        let out = ns.exec(&[&lb_bin, "decap", "--status", "--pin-dir", &pins]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let count = |name: &str| -> u64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
                .unwrap_or_else(|| panic!("no {name} in {text:?}"))
        };
        assert!(count("decapsulated ") > 0, "backend {}: {text}", i + 1);
        assert_eq!(count("malformed "), 0, "backend {}: {text}", i + 1);
        ns.exec(&[&lb_bin, "decap", "--stop", "--pin-dir", &pins]);
    }
    drop::<Lb>(lb);
}

/// Backend `i`'s decap pin directory: named after the test's own (a killed
/// run's are removed by the next run, as the agent's are).
fn decap_pins(dir: &Path, i: usize) -> String {
    format!("{}-decap{i}", pin_dir(dir).display())
}

fn port(svc: &str) -> u16 {
    match svc {
        "l2" => 81,
        "ipip-udp" => 5353,
        _ => 80,
    }
}

/// A backend that answers on its own address but lacks the VIP passes
/// direct probes and would drop every packet of the service: its probes
/// through the tunnel take it out (TCP and UDP), and giving it the VIP
/// brings it back. The probes leave no half-open connection behind.
#[test]
fn a_backend_without_the_vip_is_taken_out_by_its_tunnel_probes() {
    let mode = Mode::Tc;
    let topo = Topology::new(3);
    let dir = TempDir::new();
    test_bpffs();
    let _backends = backends(&topo, &dir.0, mode, Some(2));
    let cfg = dir.0.join("lb.toml");
    std::fs::write(&cfg, config(&topo, &dir.0, mode)).expect("config");
    let lb = start_lb(&topo, &cfg, &dir.0);
    for svc in ["ipip", "ipip-udp"] {
        for b in [1, 3] {
            lb.wait_health(svc, &format!("10.200.{b}.1:{}", port(svc)), "up", LIMIT);
        }
        let lacking = format!("10.200.2.1:{}", port(svc));
        lb.wait_health(svc, &lacking, "down", LIMIT);
        let change = lb
            .health_changes()
            .into_iter()
            .find(|c| c.service == svc && c.backend == lacking && c.to == "down")
            .unwrap_or_else(|| panic!("{svc}: no health change logged for {lacking}"));
        assert!(change.line.contains("through the tunnel"), "{svc}: {}", change.line);
    }
    for svc in ["ipip", "ipip-udp"] {
        for b in [1, 3] {
            let (status, _) = lb.backend(svc, &format!("10.200.{b}.1:{}", port(svc)));
            assert_eq!(status.transitions, 0, "{svc} b{b} stayed up");
        }
    }
    // One packet socket reads every probe's answers (IPv4 services only
    // here): closing one per probe would stall the agent an RCU grace
    // period each time.
    let sockets = topo.lb.exec(&["cat", "/proc/net/packet"]);
    let open = String::from_utf8_lossy(&sockets.stdout).lines().count() - 1;
    assert_eq!(open, 1, "packet sockets in the balancer's namespace");
    // dsr-l2 has no tunnel: its probes reach backend 2's own address.
    assert_eq!(lb.backend("l2", "10.200.2.1:81").0.health, "up");

    let vip: SocketAddr = format!("{VIP4}:80").parse().expect("vip");
    let spread = || {
        let _client = topo.client.enter();
        wait_answered(vip);
        (0..150).map(|_| Conn::open_via(vip, mode).ask()).collect::<BTreeSet<_>>()
    };
    let seen = spread();
    assert_eq!(seen, ["b1", "b3"].map(String::from).into(), "backend 2 gets nothing");

    lb_tests::decap::hold_vip(&topo.backends[1], VIP4, "b0");
    for svc in ["ipip", "ipip-udp"] {
        lb.wait_health(svc, &format!("10.200.2.1:{}", port(svc)), "up", LIMIT);
    }
    assert_eq!(spread().len(), 3, "backend 2 is back");

    // Each SYN-ACK to a probe is reset through the tunnel. Unreset, every
    // probe would leave a half-open connection for about a minute of
    // SYN-ACK retries (over 100 at two probes a second).
    for ns in &topo.backends {
        let out = ns.exec(&["ss", "-Htn", "state", "syn-recv"]);
        let half_open = String::from_utf8_lossy(&out.stdout).lines().count();
        assert!(half_open <= 1, "{half_open} half-open connections on {}", ns.name());
    }
}

fn wait_answered(vip: SocketAddr) {
    let deadline = Instant::now() + LIMIT;
    loop {
        let answered = TcpStream::connect_timeout(&vip, Duration::from_millis(500))
            .ok()
            .and_then(|s| Conn::from_stream(s).try_ask());
        if answered.is_some() {
            return;
        }
        assert!(Instant::now() < deadline, "no answer from {vip} within {LIMIT:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sends a 4 MB line to `vip` and reads the one-line answer.
fn big_line(vip: SocketAddr) {
    let mut s = TcpStream::connect_timeout(&vip, Duration::from_secs(2)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut line = vec![b'x'; 4 << 20];
    line.push(b'\n');
    s.write_all(&line).expect("send 4 MB");
    let mut answer = String::new();
    BufReader::new(s).read_line(&mut answer).expect("answer");
    assert!(answer.starts_with('b'), "answer to 4 MB: {answer:?}");
}

/// Datagrams from 60 client ports all answered, from the VIP, by every
/// backend between them.
fn udp_answered(vip: SocketAddr) {
    let mut names = BTreeSet::new();
    for _ in 0..60 {
        let sock = UdpSocket::bind("0.0.0.0:0").expect("bind");
        sock.set_read_timeout(Some(Duration::from_millis(500))).expect("timeout");
        let mut buf = [0u8; 256];
        let deadline = Instant::now() + LIMIT;
        let (n, from) = loop {
            sock.send_to(b"hello\n", vip).expect("send");
            if let Ok(got) = sock.recv_from(&mut buf) {
                break got;
            }
            assert!(Instant::now() < deadline, "no UDP answer from {vip}");
        };
        assert_eq!(from, vip, "the answer comes from the VIP");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        names.insert(text.split_whitespace().next().unwrap_or_default().to_owned());
    }
    assert_eq!(names.len(), 3, "every backend answers UDP: {names:?}");
}

/// The tunnel probe on its own, from the balancer's namespace with no lb
/// running but the VIPs local there: each answer the backends can give is
/// told apart, in both kinds and both families, and a backend without the
/// VIP gives none.
#[test]
fn tunnel_probes_tell_each_answer_apart() {
    use lb_userspace::{
        config::HealthKind,
        health::{
            probe::ProbeError,
            tunnel::{Tunnel, answers::Answers, probe},
        },
    };
    let topo = Topology::new(2);
    let dir = TempDir::new();
    test_bpffs();
    let _backends = backends(&topo, &dir.0, Mode::Tc, Some(2));
    // Backend 1 holds the IPv6 VIP too.
    topo.backends[0].ip(&format!("-6 addr add {VIP6}/128 dev lo"));
    // The VIPs are local on the balancer, as lb's default VIP routes make
    // them: answers from them are martians to its kernel, and must still
    // be seen.
    topo.lb.ip(&format!("route add local {VIP4}/32 dev lo table local"));
    topo.lb.ip(&format!("-6 route add local {VIP6}/128 dev lo table local"));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let _lb = topo.lb.enter();
    let answers = {
        let _in = rt.enter();
        Answers::start(true, true).expect("the answers' packet sockets")
    };
    let run = |kind: &HealthKind, port: u16, backend: &str| {
        let v6 = backend.contains(':');
        let tunnel = Tunnel {
            vip: SocketAddr::new(if v6 { VIP6 } else { VIP4 }.parse().expect("vip"), port),
            source: if v6 { "fd00:201:9::/120" } else { "10.201.9.0/28" }.parse().expect("prefix"),
        };
        let backend = SocketAddr::new(backend.parse().expect("backend"), port);
        let limit = Duration::from_millis(400);
        rt.block_on(async {
            tokio::time::timeout(limit, probe(kind, &tunnel, backend, &answers)).await
        })
        .unwrap_or(Err(ProbeError::Timeout(limit)))
    };
    let udp = HealthKind::Udp { send: b"hello\n".to_vec(), expect: None };
    // The decap programs may still be loading: the first success may wait.
    agent::wait_for(LIMIT, "a TCP probe through the tunnel", || {
        run(&HealthKind::Tcp, 80, "10.200.1.1").ok()
    });
    let r = run(&udp, 5353, "10.200.1.1");
    assert!(r.is_ok(), "UDP through the tunnel: {r:?}");
    let r = run(&HealthKind::Tcp, 7, "10.200.1.1");
    assert!(matches!(r, Err(ProbeError::Refused)), "a port nothing serves: {r:?}");
    for (kind, port) in [(&HealthKind::Tcp, 80), (&udp, 5353)] {
        let r = run(kind, port, "fd00:200:1::1");
        assert!(r.is_ok(), "IPv6 in IPv6, {kind:?}: {r:?}");
        for lacking in ["10.200.2.1", "fd00:200:2::1"] {
            let r = run(kind, port, lacking);
            assert!(matches!(r, Err(ProbeError::Timeout(_))), "no VIP on {lacking}: {r:?}");
        }
    }
}

/// Direct server return under traffic as the world sends it, at the tc
/// hook at default veth offloads: IPv4 and IPv6, 1 000 connections open at
/// once, clients reusing their ports, and backends killed in turn, one of
/// them twice.
#[test]
fn dsr_holds_under_concurrency_port_reuse_and_rotating_kills() {
    const N: usize = 1000;
    lb_tests::client::allow_open_files(4 * N as u64);
    let mode = Mode::Tc;
    let topo = Topology::new(3);
    topo.default_offloads();
    topo.reuse_time_wait();
    let dir = TempDir::new();
    test_bpffs();
    let mut procs = backends(&topo, &dir.0, mode, None);
    for ns in &topo.backends {
        ns.ip(&format!("-6 addr add {VIP6}/128 dev lo"));
    }
    let mut cfg = mode.config(&agent::agent_table(&topo.lb_interfaces(), &dir.0));
    cfg += "vip_routes = \"none\"\n";
    let health = "[service.health]\nkind = \"tcp\"\ninterval = \"200ms\"\ntimeout = \"150ms\"\n";
    for (name, vip, source, fmt) in [
        ("v4", format!("{VIP4}:80"), "10.201.9.0/28", "10.200.{i}.1:80"),
        ("v6", format!("[{VIP6}]:80"), "fd00:201:9::/120", "[fd00:200:{i}::1]:80"),
    ] {
        cfg += &format!(
            "\n[[service]]\nname = \"{name}\"\nvip = \"{vip}\"\nforwarding = \"dsr-ipip\"\n\
             tunnel_source = \"{source}\"\n{health}"
        );
        for i in 1..=3 {
            cfg += &format!(
                "[[service.backend]]\naddr = \"{}\"\n",
                fmt.replace("{i}", &i.to_string())
            );
        }
    }
    let path = dir.0.join("lb.toml");
    std::fs::write(&path, cfg).expect("config");
    let lb = start_lb(&topo, &path, &dir.0);
    let v4: SocketAddr = format!("{VIP4}:80").parse().expect("vip");
    let v6: SocketAddr = format!("[{VIP6}]:80").parse().expect("vip");
    let client = topo.client.enter();
    wait_answered(v4);
    wait_answered(v6);

    // 1 000 connections open at once over IPv4 and 200 over IPv6, each
    // answered by the backend it keeps, all three backends between them.
    for (vip, n) in [(v4, N), (v6, 200)] {
        let mut conns: Vec<Conn> = (0..n).map(|_| Conn::open_via(vip, mode)).collect();
        let names: Vec<String> = conns.iter_mut().map(Conn::ask).collect();
        assert_eq!(names.iter().collect::<BTreeSet<_>>().len(), 3, "{vip}: spread over 3");
        let again: Vec<String> = conns.iter_mut().map(Conn::ask).collect();
        assert_eq!(again, names, "{vip}: each connection keeps its backend");
    }

    // Clients reuse their ports: each round opens a new connection from
    // each of 150 ports. Until something changes, a port keeps its backend.
    let ports =
        lb_tests::topology::CHOSEN_PORTS.start..lb_tests::topology::CHOSEN_PORTS.start + 150;
    let round =
        || -> Vec<String> { ports.clone().map(|p| Conn::open_from(p, v4, mode).ask()).collect() };
    let first = round();
    assert_eq!(round(), first, "a reused port keeps its backend");
    // Established connections on the other backends live through the kills.
    let mut held: Vec<Conn> = (0..60).map(|_| Conn::open_via(v4, mode)).collect();
    let held_on: Vec<String> = held.iter_mut().map(Conn::ask).collect();
    drop(client);

    // Failures rotate and repeat: backend 2 dies and comes back, then
    // backend 3, then backend 2 again.
    let mut dead_once = BTreeSet::new();
    for (kill, victim) in (1..).zip([2usize, 3, 2]) {
        let name = format!("b{victim}");
        let addrs =
            [("v4", format!("10.200.{victim}.1:80")), ("v6", format!("[fd00:200:{victim}::1]:80"))];
        // Killed (a Proc is killed when dropped); a placeholder holds its place.
        let placeholder = topo.backends[victim - 1].spawn(&["sleep", "600"]);
        drop(std::mem::replace(&mut procs.servers[victim - 1], placeholder));
        dead_once.insert(name.clone());
        for (svc, addr) in &addrs {
            lb.wait_health(svc, addr, "down", LIMIT);
        }
        let client = topo.client.enter();
        let now = round();
        for (port, (before, after)) in ports.clone().zip(first.iter().zip(&now)) {
            assert_ne!(*after, name, "kill {kill}: port {port} reached the dead backend");
            if *before != name {
                assert_eq!(after, before, "kill {kill}: port {port} moved off a live backend");
            }
        }
        // Connections held on a backend that never died are unbroken.
        for (c, on) in held.iter_mut().zip(&held_on).filter(|(_, n)| !dead_once.contains(*n)) {
            assert_eq!(&c.ask(), on, "kill {kill}: an established connection broke");
        }
        drop(client);
        drop(std::mem::replace(&mut procs.servers[victim - 1], server(&topo, victim)));
        for (svc, addr) in &addrs {
            lb.wait_health(svc, addr, "up", LIMIT);
        }
        let _client = topo.client.enter();
        assert_eq!(round(), first, "kill {kill}: back up, every port has its backend again");
    }
}
