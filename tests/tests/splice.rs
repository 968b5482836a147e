//! The splice fallback end to end: `lb run` in splice mode proxies TCP
//! through the VIP, choosing for each connection exactly the backend the XDP
//! datapath would (same Maglev table, same flow hash). Needs root.

use std::{
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use lb_common::abi::{PROTO_TCP, PROTO_UDP};
use lb_tests::{
    agent::{TempDir, config_with_health, wait_for},
    client::{Conn, Setup, client_addr, count, vip},
    mode::Mode,
    topology::{CLIENT4, Topology, VIP4, VIP6},
};
use lb_userspace::datapath;

const SERVER: &str = env!("CARGO_BIN_EXE_lbt-server");

fn splice_setup() -> Setup {
    splice_setup_with("", "", "kind = \"none\"")
}

/// Splice mode over 3 backends, with `splice` added to the `[splice]` table,
/// `tcp` to each TCP service and `health` as the TCP services' probes.
fn splice_setup_with(splice: &'static str, tcp: &'static str, health: &'static str) -> Setup {
    let topo = Topology::new(3);
    Mode::Splice.prepare(&topo);
    splice_on(topo, splice, tcp, health)
}

fn splice_on(
    topo: Topology,
    splice: &'static str,
    tcp: &'static str,
    health: &'static str,
) -> Setup {
    Setup::with_config(SERVER, topo, TempDir::new(), splice_config(splice, tcp, health))
}

/// The config of [`splice_setup_with`].
fn splice_config(
    splice: &'static str,
    tcp: &'static str,
    health: &'static str,
) -> impl Fn(&Topology, &std::path::Path) -> String {
    move |t, d| {
        let text = Mode::Splice
            .config(&config_with_health(t, d, "maglev", 3, health))
            .replace("protocol = \"tcp\"\n", &format!("protocol = \"tcp\"\n{tcp}\n"));
        format!("[splice]\n{splice}\n{text}")
    }
}

/// True once a connection to `target` is refused (the listener is closed).
fn refused(target: SocketAddr) -> bool {
    (0..100).any(|_| {
        let r = TcpStream::connect_timeout(&target, Duration::from_secs(1));
        let gone = matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused);
        if !gone {
            std::thread::sleep(Duration::from_millis(20));
        }
        gone
    })
}

/// The backend the XDP datapath would give the flow from `client` to
/// `target`.
fn predicted(
    s: &Setup,
    service: &str,
    client: SocketAddr,
    target: SocketAddr,
    proto: u8,
) -> String {
    let plan = datapath::plan(&s.config()).expect("plan");
    let key = lb_common::abi::FlowKey::between(client, target, proto);
    lb_tests::predict::backend(&plan, service, &key)
}

#[test]
fn splice_mode_proxies_tcp_to_the_backend_xdp_would_pick() {
    let s = splice_setup();
    let status = s.lb.status();
    assert!(status.starts_with("mode splice"), "{status}");
    assert!(status.contains("(splice: --mode splice or agent.mode = \"splice\")"), "{status}");
    let target = vip(VIP4, 80);
    let _in = s.topo.client.enter();
    let mut names = Vec::new();
    for port in 41000..41300u16 {
        let got = Conn::open_from(port, target, Mode::Splice).ask();
        let client = SocketAddr::new(CLIENT4.parse().expect("ip"), port);
        let want = predicted(&s, "tcp-v4", client, target, PROTO_TCP);
        assert_eq!(got, want, "client port {port}: splice and XDP pick the same backend");
        names.push(got);
    }
    assert_eq!(count(&names).len(), 3, "{:?}", count(&names));
    // Over IPv6 too.
    let target6 = vip(VIP6, 80);
    for port in 41000..41100u16 {
        let got = Conn::open_from(port, target6, Mode::Splice).ask();
        let client = SocketAddr::new(client_addr(target6), port);
        let want = predicted(&s, "tcp-v6", client, target6, PROTO_TCP);
        assert_eq!(got, want, "client port {port} over IPv6");
    }
    // Per-backend counters: one connection each, as the names say.
    let report = s.lb.report();
    let svc = report.services.iter().find(|x| x.name == "tcp-v4").expect("tcp-v4");
    for (i, n) in (1..=3).map(|i| (i, count(&names).get(&format!("b{i}")).copied())) {
        let b = svc.backends.iter().find(|b| b.addr == format!("10.200.{i}.1:80"));
        let b = b.unwrap_or_else(|| panic!("no backend {i}: {report:?}"));
        assert_eq!(b.traffic.new_flows, n.unwrap_or(0) as u64, "backend {i} connections: {b:?}");
    }
    // Every connection is closed: the open-connection gauges fall back to 0.
    let open = || -> u64 {
        let r = s.lb.report();
        r.services.iter().flat_map(|x| &x.backends).map(|b| b.active_flows).sum()
    };
    let started = std::time::Instant::now();
    while open() != 0 && started.elapsed() < std::time::Duration::from_secs(5) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(open(), 0, "connections still counted open after they all closed");
    let status = s.lb.status();
    let at_limit = status.lines().find(|l| l.starts_with("splice_connection_limit"));
    assert_eq!(at_limit.and_then(|l| l.split_whitespace().last()), Some("0"), "{status}");
}

#[test]
fn splice_mode_relays_udp_from_the_vip_to_the_backend_xdp_would_pick() {
    let s = splice_setup();
    let target = vip(VIP4, 5353);
    let _in = s.topo.client.enter();
    let mut names = Vec::new();
    for port in 42000..42090u16 {
        let sock = std::net::UdpSocket::bind((CLIENT4, port)).expect("bind");
        sock.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
        let mut buf = [0u8; 256];
        sock.send_to(b"hi", target).expect("send");
        let (n, from) = sock
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("no UDP reply for client port {port}: {e}"));
        assert_eq!(from, target, "replies come from the VIP");
        let got =
            String::from_utf8_lossy(&buf[..n]).split_whitespace().next().unwrap_or("").to_owned();
        let client = SocketAddr::new(CLIENT4.parse().expect("ip"), port);
        let want = predicted(&s, "udp-v4", client, target, PROTO_UDP);
        assert_eq!(got, want, "client port {port}");
        names.push(got);
    }
    assert_eq!(count(&names).len(), 3, "{:?}", count(&names));
}

#[test]
fn proxy_protocol_v2_tells_backends_the_client_address() {
    // Probes on, so their LOCAL headers are exercised too.
    let s = splice_setup_with("", "proxy_protocol = \"v2\"", "kind = \"http\"");
    let target = vip(VIP4, 80);
    let _in = s.topo.client.enter();
    let mut names = Vec::new();
    for _ in 0..30 {
        // `ask` asserts the backend saw this client's own address and port.
        names.push(Conn::open(target).ask());
    }
    assert_eq!(count(&names).len(), 3, "{:?}", count(&names));
}

/// `lbt-server` as backend `i` in `ns`, closing unanswered any connection
/// that does not start with a PROXY or LOCAL v2 header.
fn strict_backend(ns: &lb_tests::netns::NetNs, i: usize) -> lb_tests::netns::Proc {
    ns.spawn(&[SERVER, "--require-proxy-v2", &format!("b{i}"), "80", "5353"])
}

#[test]
fn probes_of_proxy_protocol_backends_pass_with_their_local_header() {
    let topo = Topology::new(3);
    Mode::Splice.prepare(&topo);
    let servers: Vec<_> =
        topo.backends.iter().enumerate().map(|(i, ns)| strict_backend(ns, i + 1)).collect();
    let probes = "kind = \"http\"\ninterval = \"100ms\"\ntimeout = \"90ms\"\nrise = 2\nfall = 2";
    let mut s = Setup::launch(
        None,
        topo,
        TempDir::new(),
        &[],
        splice_config("", "proxy_protocol = \"v2\"", probes),
    );
    s.backends = servers;
    let b2 = "10.200.2.1:80";
    let health = |s: &Setup| s.lb.backend("tcp-v4", b2).0.health;
    // b2 goes down (its server stops), then only passing probes bring it
    // back: a probe without its LOCAL header, or with a wrong one, is closed
    // unanswered by the restarted server and keeps it down.
    drop(s.backends.remove(1));
    wait_for(Duration::from_secs(5), "b2 down once its server stopped", || {
        (health(&s) == "down").then_some(())
    });
    s.backends.insert(1, strict_backend(&s.topo.backends[1], 2));
    wait_for(Duration::from_secs(5), "b2 up again through its probes", || {
        (health(&s) == "up").then_some(())
    });
    let changes = s.lb.health_changes();
    let up = changes.iter().find(|c| c.backend == b2 && c.to == "up").expect("b2's return logged");
    assert_eq!(up.signal, "probe", "{changes:?}");
    // The other two were probed through the same header all along and
    // never failed (b2 changes in both families: it serves the v6 VIP too).
    let of_b2 = [b2, "[fd00:200:2::1]:80"];
    assert!(changes.iter().all(|c| of_b2.contains(&c.backend.as_str())), "{changes:?}");
    let _in = s.topo.client.enter();
    let names: Vec<String> = (0..30).map(|_| Conn::open(vip(VIP4, 80)).ask()).collect();
    assert_eq!(count(&names).len(), 3, "{:?}", count(&names));
}

#[test]
fn shutdown_stops_accepting_and_lets_open_connections_finish() {
    let mut s = splice_setup_with("shutdown_timeout = \"20s\"", "", "kind = \"none\"");
    let target = vip(VIP4, 80);
    let inside = s.topo.client.enter();
    let mut open = s.conn(target);
    let first = open.ask();
    s.lb.sigterm();
    assert!(refused(target), "after SIGTERM new connections are refused");
    for _ in 0..5 {
        assert_eq!(open.ask(), first, "the open connection goes on, on its backend");
    }
    drop(open);
    drop(inside);
    s.lb.wait_exit(Duration::from_secs(10));
    let log = s.lb.log();
    assert!(log.contains("every open connection finished"), "{log}");
}

#[test]
fn shutdown_closes_what_is_still_open_at_the_timeout() {
    let mut s = splice_setup_with("shutdown_timeout = \"1s\"", "", "kind = \"none\"");
    let _in = s.topo.client.enter();
    let mut open = s.conn(vip(VIP4, 80));
    let first = open.ask();
    s.lb.sigterm();
    let sent = std::time::Instant::now();
    // Within the timeout the connection is still served, by a live lb.
    while sent.elapsed() < Duration::from_millis(700) {
        assert_eq!(open.try_ask().as_ref(), Some(&first), "answered before the timeout");
        assert!(s.lb.try_wait().is_none(), "lb exited before its shutdown_timeout");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Then lb closes it, at the timeout rather than later.
    let closed = wait_for(Duration::from_secs(5), "the connection closed", || {
        open.try_ask().is_none().then(|| sent.elapsed())
    });
    assert!(closed >= Duration::from_millis(900), "closed {closed:?} after SIGTERM, before 1 s");
    assert!(closed < Duration::from_millis(2500), "closed {closed:?} after SIGTERM (timeout 1 s)");
    s.lb.wait_exit(Duration::from_secs(5));
    let log = s.lb.log();
    assert!(log.contains("splice.shutdown_timeout reached"), "{log}");
}

#[test]
fn a_reload_keeps_open_connections_even_to_a_removed_backend() {
    let s = splice_setup();
    let target = vip(VIP4, 80);
    let inside = s.topo.client.enter();
    let mut conns: Vec<Conn> = (0..30).map(|_| s.conn(target)).collect();
    let first: Vec<String> = conns.iter_mut().map(Conn::ask).collect();
    drop(inside);
    assert!(first.iter().any(|n| n == "b3"), "{first:?}");
    // Backend 3 leaves the TCP service on 10.201.0.100.
    let path = s.dir.0.join("lb.toml");
    let text = std::fs::read_to_string(&path).expect("config");
    std::fs::write(&path, text.replacen("[[service.backend]]\naddr = \"10.200.3.1:80\"\n", "", 1))
        .expect("write");
    s.lb.cli_ok(&["reload"]);
    let _in = s.topo.client.enter();
    for (conn, was) in conns.iter_mut().zip(&first) {
        assert_eq!(&conn.ask(), was, "an open connection keeps its backend across the reload");
    }
    let after: Vec<String> = (0..60).map(|_| s.conn(target).ask()).collect();
    assert!(!after.iter().any(|n| n == "b3"), "new connections avoid the removed one: {after:?}");
}

#[test]
fn a_vip_that_is_not_a_local_address_is_served_with_ip_transparent() {
    let topo = Topology::new(3);
    // Policy routing delivers the VIP's traffic locally without making it a
    // local address (the main local table does not have it).
    topo.lb.ip(&format!("rule add to {VIP4}/32 lookup 100"));
    topo.lb.ip(&format!("route add local {VIP4}/32 dev lo table 100"));
    // lb adds no VIP route of its own, which would make the VIP local.
    let cfg = splice_config("", "", "kind = \"none\"");
    let s = Setup::with_config(SERVER, topo, TempDir::new(), |t, d| {
        cfg(t, d).replace("[agent]\n", "[agent]\nvip_routes = \"none\"\n")
    });
    let log = std::fs::read_to_string(s.dir.0.join("lb.log")).unwrap_or_default();
    assert!(log.contains("listening with IP_TRANSPARENT"), "{log}");
    let _in = s.topo.client.enter();
    let names: Vec<String> = (0..30).map(|_| s.conn(vip(VIP4, 80)).ask()).collect();
    assert_eq!(count(&names).len(), 3, "{:?}", count(&names));
}

#[test]
fn a_vip_port_another_process_holds_with_so_reuseport_is_refused_with_the_fix() {
    // lb serves a TCP VIP from one thread per CPU; another proxy that sets
    // SO_REUSEPORT and already listens on the VIP's port must not end up
    // sharing it with lb: lb refuses to start, naming the fix.
    let topo = Topology::new(3);
    let foreign = {
        let _in = topo.lb.enter();
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        s.set_reuse_port(true).expect("SO_REUSEPORT");
        s.set_freebind(true).expect("IP_FREEBIND");
        s.bind(&vip(VIP4, 80).into()).expect("bind the VIP's port");
        s.listen(8).expect("listen");
        s
    };
    let dir = TempDir::new();
    let path = dir.0.join("lb.toml");
    std::fs::write(&path, splice_config("", "", "kind = \"none\"")(&topo, &dir.0)).expect("config");
    let said = lb_tests::agent::run_refused(&topo.lb, &path, &[]);
    assert!(said.contains(&format!("cannot listen on {VIP4}:80")), "{said}");
    assert!(said.contains("another process holds it"), "{said}");
    drop(foreign);
}

#[test]
fn a_metrics_port_in_use_fails_the_start_and_leaves_no_vip_route() {
    // The metrics address is bound before anything on the host changes.
    // Before, the VIP routes were added first, and the failed start left
    // them behind.
    let topo = Topology::new(3);
    let held = {
        let _in = topo.lb.enter();
        std::net::TcpListener::bind("127.0.0.1:9915").expect("hold the metrics port")
    };
    let dir = TempDir::new();
    let path = dir.0.join("lb.toml");
    let text = splice_config("", "", "kind = \"none\"")(&topo, &dir.0).replacen(
        "[agent]\n",
        "[agent]\nmetrics_addr = \"127.0.0.1:9915\"\n",
        1,
    );
    std::fs::write(&path, text).expect("config");
    let said = lb_tests::agent::run_refused(&topo.lb, &path, &[]);
    assert!(said.contains("binding the metrics address 127.0.0.1:9915"), "{said}");
    let out = topo.lb.exec(&["ip", "route", "show", "table", "local", "proto", "252"]);
    let routes = String::from_utf8_lossy(&out.stdout);
    assert!(routes.trim().is_empty(), "no VIP route left: {routes}");
    drop(held);
}
