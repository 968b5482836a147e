//! The flow table end to end through the XDP datapath: a SYN is a new
//! connection even on a 5-tuple the table still holds (clients reuse ports),
//! so drains and removals hold for reused ports; a flood of other flows
//! breaks no flow opened before it; idle flows expire, and `lb status` and
//! `lb backend drain --wait` count them. Needs root.

use std::{
    net::{SocketAddr, SocketAddrV4},
    ops::Range,
    time::{Duration, Instant},
};

use lb_common::abi::DEFAULT_FLOW_CAPACITY;
use lb_tests::{
    agent::{TempDir, config, wait_for, with_flows},
    client::{Conn, Flow, Setup, count, vip},
    flood,
    mode::Mode,
    topology::{CLIENT4, Topology, VIP4, backend4},
};

const SERVER: &str = env!("CARGO_BIN_EXE_lbt-server");

/// The client ports the port-reuse tests connect from, each once a round.
const PORTS: Range<u16> = 41000..41300;

/// Closed flows stay in the table this long, so the ports of the first round
/// are still pinned when the second reuses them, however slow the machine.
const CLOSING_KEPT: &str = "tcp_closing_timeout = \"60s\"";

/// Three backends, no probes, the first `serving` of them in the config.
fn three_backends(serving: usize, flows: &str) -> Setup {
    let s = Setup::with_config(SERVER, Topology::new(3), TempDir::new(), |t, d| {
        with_flows(&config(t, d, "maglev", serving), flows)
    });
    // The tests connect from the same ports again, moments later.
    s.topo.reuse_time_wait();
    s
}

/// One connection from each port of `ports` to the IPv4 TCP VIP, asked once
/// and closed: the backend each port reached.
fn one_round(s: &Setup, ports: Range<u16>) -> Vec<(u16, String)> {
    let _in = s.topo.client.enter();
    ports.map(|p| (p, Conn::open_from(p, vip(VIP4, 80), Mode::Xdp).ask())).collect()
}

/// Connections from [`PORTS`], then `take_out` (which stops backend
/// `victim` getting new flows), then the same ports again: none of the
/// second round may reach the victim, though the flow table still pins the
/// victim's ports of the first round to it when they are reused.
fn reused_ports_avoid_a_backend_taken_out(s: &Setup, victim: usize, take_out: impl FnOnce()) {
    let name = format!("b{victim}");
    let victim_addr = SocketAddr::new(backend4(victim), 80);
    let first = one_round(s, PORTS);
    let spread = count(first.iter().map(|(_, n)| n));
    let victims: Vec<u16> = first.iter().filter(|(_, n)| *n == name).map(|&(p, _)| p).collect();
    // Not vacuous: the victim had its share, and its flows are still in the
    // table, pinned to it (a datapath that let a SYN follow the table would
    // send these ports back to it).
    assert!(victims.len() >= PORTS.len() / 10, "{name} got too few of the first round: {spread:?}");
    let client: std::net::IpAddr = CLIENT4.parse().expect("client");
    for &p in &victims {
        let f = s.lb.flow(SocketAddr::new(client, p), vip(VIP4, 80), "tcp");
        assert_eq!(
            (f.source.as_str(), f.backend.as_str()),
            ("flow-table", victim_addr.to_string().as_str()),
            "port {p}'s closed flow is still pinned to {name}: {f:?}"
        );
    }

    take_out();
    let second = one_round(s, PORTS);
    let again = count(second.iter().map(|(_, n)| n));
    eprintln!("first round {spread:?}, after taking {name} out {again:?}");
    let reached: Vec<u16> = second.iter().filter(|(_, n)| *n == name).map(|&(p, _)| p).collect();
    assert!(reached.is_empty(), "new connections from ports {reached:?} reached {name}: {again:?}");
    assert_eq!(again.len(), 2, "the two other backends share the second round: {again:?}");
}

#[test]
fn a_drained_backend_gets_no_new_connection_from_a_reused_port() {
    let s = three_backends(3, CLOSING_KEPT);
    reused_ports_avoid_a_backend_taken_out(&s, 2, || {
        s.lb.cli_ok(&["backend", "drain", "tcp-v4", "10.200.2.1:80"]);
    });
}

#[test]
fn a_backend_removed_by_reload_gets_no_new_connection_from_a_reused_port() {
    let s = three_backends(3, CLOSING_KEPT);
    reused_ports_avoid_a_backend_taken_out(&s, 3, || {
        let two = with_flows(&config(&s.topo, &s.dir.0, "maglev", 2), CLOSING_KEPT);
        std::fs::write(s.dir.0.join("lb.toml"), two).expect("config");
        s.lb.cli_ok(&["reload"]);
        assert!(!s.lb.status().contains("10.200.3.1:80 "), "b3 removed:\n{}", s.lb.status());
    });
}

#[test]
fn flows_opened_before_a_flood_of_new_flows_survive_it() {
    let s = three_backends(3, "");
    let inside = s.topo.client.enter();
    let mut long: Vec<Conn> = (0..30).map(|_| Conn::open(vip(VIP4, 80))).collect();
    let first: Vec<String> = long.iter_mut().map(Conn::ask).collect();
    drop(inside);
    let ports = 42000..42300;
    let before = one_round(&s, ports.clone());

    // Two and a half times the flow table's capacity of new UDP flows, each
    // from its own source (about 5 s on a 2-core machine). There is no
    // setting for a smaller table, so the flood fills the real one.
    let capacity = u64::from(DEFAULT_FLOW_CAPACITY);
    let to = SocketAddrV4::new(VIP4.parse().expect("vip"), 5353);
    // The flood's flows are never answered, so they wait in the pending
    // table and turn it over; the answered flows opened before stay pinned
    // in the flow table, not one of them evicted (before the two tables, a
    // flood of new flows pushed them out and `lb flow` placed them by
    // Maglev).
    let flooded =
        flood::udp_flows(s.topo.client.name(), to, capacity * 5 / 2, Duration::from_secs(60));
    let new_flows =
        s.lb.report()
            .services
            .iter()
            .find(|s| s.name == "udp-v4")
            .expect("udp-v4")
            .traffic
            .new_flows;
    let evicted: Vec<String> = long
        .iter()
        .map(|c| s.lb.flow(c.local_addr(), vip(VIP4, 80), "tcp").source)
        .filter(|source| source == "maglev")
        .collect();
    eprintln!(
        "flood: {flooded:?}, {new_flows} new flows in the datapath; {} of {} long-lived flows \
         evicted",
        evicted.len(),
        long.len()
    );
    assert!(new_flows >= 2 * capacity, "the flood made only {new_flows} new flows");
    assert!(evicted.is_empty(), "the flood evicted {} flows opened before it", evicted.len());

    let inside = s.topo.client.enter();
    let after: Vec<String> = long.iter_mut().map(Conn::ask).collect();
    assert_eq!(after, first, "connections opened before the flood answer, from their backend");
    drop(inside);
    // A SYN takes the Maglev choice, which the flood did not change.
    assert_eq!(one_round(&s, ports), before, "every port used before the flood connects again");
}

/// The address of backend `name` (`b<i>`) of the IPv4 UDP service.
fn udp_backend(name: &str) -> String {
    let i = name.strip_prefix('b').and_then(|i| i.parse().ok()).expect("backend name");
    SocketAddr::new(backend4(i), 5353).to_string()
}

/// Asks over `flow` every 500 ms until `lb status` counts it as an active
/// flow of `backend` (in a count made after an answer), for at most 10 s.
fn ask_until_counted(s: &Setup, flow: &Flow, backend: &str) {
    wait_for(Duration::from_secs(10), "the UDP flow counted in lb status", || {
        let sent = Instant::now();
        let _in = s.topo.client.enter();
        flow.ask();
        drop(_in);
        std::thread::sleep(Duration::from_millis(500));
        let (b, age) = s.lb.backend("udp-v4", backend);
        (Duration::from_millis(age) < sent.elapsed() && b.active_flows >= 1).then_some(())
    })
}

#[test]
fn an_idle_udp_flow_expires_and_then_a_drain_waits_for_nothing() {
    let s = three_backends(3, "udp_idle_timeout = \"2s\"");
    let inside = s.topo.client.enter();
    let flow = Flow::open(vip(VIP4, 5353));
    let backend = udp_backend(&flow.ask());
    drop(inside);
    ask_until_counted(&s, &flow, &backend);
    // The datapath rewrites a flow's time only when it is older than about
    // 1.07 s: after this pause the next datagram surely sets it.
    std::thread::sleep(Duration::from_millis(1200));
    let last_sent = Instant::now();
    let inside = s.topo.client.enter();
    assert_eq!(udp_backend(&flow.ask()), backend, "the flow keeps its backend");
    drop(inside);

    // Idle from now: within a few seconds no count holds it, and no count
    // made before its 2 s were up dropped it.
    let swept_at = wait_for(Duration::from_secs(15), "the idle flow expired", || {
        let (b, age) = s.lb.backend("udp-v4", &backend);
        let swept = Instant::now().checked_sub(Duration::from_millis(age))?;
        (swept > last_sent && b.active_flows == 0).then_some(swept)
    });
    let idle = swept_at - last_sent;
    eprintln!("the flow was gone from a count made {idle:?} after its last datagram");
    // Coarse clock: the datapath's idea of its last packet may be a few ms
    // older than ours.
    assert!(idle >= Duration::from_millis(1950), "expired after only {idle:?}, before its 2 s");

    let start = Instant::now();
    let text = s.lb.cli_ok(&["backend", "drain", "udp-v4", &backend, "--wait", "20s"]);
    assert!(text.contains("drained after"), "{text}");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "drain --wait took {:?}: {text}",
        start.elapsed()
    );
}

#[test]
fn drain_wait_gives_up_naming_the_flow_kept_alive() {
    let s = three_backends(3, "udp_idle_timeout = \"2s\"");
    let inside = s.topo.client.enter();
    let flow = Flow::open(vip(VIP4, 5353));
    let name = flow.ask();
    drop(inside);
    let backend = udp_backend(&name);
    ask_until_counted(&s, &flow, &backend);

    // Kept alive through the drain (every 250 ms: the datapath notes a
    // flow's time only once it is ~1.07 s old, so the 2 s timeout leaves
    // ample room), it stays on its backend.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let keep_alive = {
        let (stop, ns, sock) =
            (stop.clone(), s.topo.client.name().to_owned(), flow.sock.try_clone().expect("clone"));
        std::thread::spawn(move || {
            let _in = lb_tests::netns::enter(&ns);
            let flow = Flow::from_socket(sock, vip(VIP4, 5353));
            let mut names = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                names.push(flow.ask());
                std::thread::sleep(Duration::from_millis(250));
            }
            names
        })
    };
    let start = Instant::now();
    let (ok, text) = s.lb.cli(&["backend", "drain", "udp-v4", &backend, "--wait", "3s"]);
    let waited = start.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let names = keep_alive.join().expect("keep-alive thread");
    assert!(!ok, "drain --wait must fail while a flow lives: {text}");
    assert!(text.contains("still 1 active flows after 3 s"), "{text}");
    assert!(waited >= Duration::from_secs(3), "gave up after {waited:?}: {text}");
    assert!(names.iter().all(|n| *n == name), "a draining backend keeps its flows: {names:?}");
}
