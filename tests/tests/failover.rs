//! Failover that only the probes can find, UDP probes, UDP passive
//! detection and fail-open, end to end in every mode (`<case>::xdp`,
//! `::tc`, `::splice`), over both address families. No client traffic runs
//! while a probe-found fault is injected, so the probes alone can have
//! found it (the logged signal says so). Needs root.
//!
//! - A *hung* backend (its server stopped with SIGSTOP) still completes TCP
//!   handshakes in its kernel, so no SYN goes unanswered and a TCP probe
//!   passes: only an HTTP probe's timeout finds it.
//! - A *blackholed* backend (nft drops its input) answers nothing: its TCP
//!   or UDP probes time out.

use std::{
    collections::HashMap,
    io::{Read, Write},
    time::{Duration, Instant},
};

use lb_tests::{
    agent::wait_for,
    client::{Flow, Setup, count, vip},
    in_both_modes,
    mode::Mode,
    topology::{VIP4, VIP6, backend_sock, unlimited_icmp},
};
use nix::sys::signal::{Signal, kill};

const SERVER: &str = env!("CARGO_BIN_EXE_lbt-server");
/// Fast enough to act within a second, relaxed enough (three timeouts of
/// 180 ms in a row) that a loaded machine does not fail a healthy backend:
/// every case asserts that no other backend changed.
const TIMING: &str = "interval = \"200ms\"\ntimeout = \"180ms\"\nrise = 2\nfall = 3";
const NONE: &str = "kind = \"none\"";

in_both_modes!(
    a_hung_backend_is_taken_out_by_its_http_probes_timing_out,
    a_blackholed_backend_is_taken_out_by_its_tcp_probes_timing_out,
    udp_probes_take_a_blackholed_backend_out_and_bring_it_back,
    a_udp_backend_whose_port_closes_is_found_by_icmp_before_its_probes,
    when_every_backend_fails_its_checks_all_stay_in,
);

/// `[service.health]` of `kind` (`tcp`, `http`, ...) at [`TIMING`], with
/// `extra` lines.
fn probes(kind: &str, extra: &str) -> String {
    format!("kind = \"{kind}\"\n{TIMING}\n{extra}")
}

/// Backend `i`'s address in `proto`'s service of `family` (`v4`, `v6`).
fn backend(i: usize, proto: &str, family: &str) -> String {
    backend_sock(family, i, if proto == "tcp" { 80 } else { 5353 })
}

/// The backends answering 60 new `proto` flows (TCP connections or UDP
/// flows) to each VIP, by family.
fn answering(s: &Setup, proto: &str) -> [(&'static str, HashMap<String, usize>); 2] {
    [("v4", VIP4), ("v6", VIP6)].map(|(family, ip)| (family, s.answering(proto, ip, 60)))
}

/// With every backend up, runs `fault` on backend 1, asserts its probes
/// (the only signal: no traffic runs) take it out of `proto`'s services in
/// both families and new flows go to the other two; then runs `repair` and
/// asserts the probes bring it back and new flows reach it again.
fn out_by_probes_and_back(s: &Setup, proto: &str, fault: impl FnOnce(), repair: impl FnOnce()) {
    let limit = Duration::from_secs(5);
    let families = ["v4", "v6"];
    for f in families {
        s.lb.wait_health(&format!("{proto}-{f}"), &backend(1, proto, f), "up", limit);
    }
    fault();
    for f in families {
        s.lb.wait_health(&format!("{proto}-{f}"), &backend(1, proto, f), "down", limit);
    }
    for (family, spread) in answering(s, proto) {
        assert!(!spread.contains_key("b1"), "{proto} {family}: b1 is out: {spread:?}");
        assert_eq!(spread.len(), 2, "{proto} {family}: the other two serve: {spread:?}");
    }
    repair();
    for f in families {
        s.lb.wait_health(&format!("{proto}-{f}"), &backend(1, proto, f), "up", limit);
    }
    for (family, spread) in answering(s, proto) {
        assert_eq!(spread.len(), 3, "{proto} {family}: b1 is back: {spread:?}");
    }
    let changes = s.lb.health_changes();
    let b1 = families.map(|f| backend(1, proto, f));
    let of_b1: Vec<_> = changes.iter().filter(|c| b1.contains(&c.backend)).collect();
    assert_eq!(of_b1.len(), 4, "down and up in both families: {changes:?}");
    assert!(of_b1.iter().all(|c| c.signal == "probe"), "found by its probes: {of_b1:?}");
    assert!(changes.len() == of_b1.len(), "no other backend changed: {changes:?}");
}

/// An `nft` table `lbt` on backend 1 dropping its `proto` input to `port`
/// (both families).
fn blackhole(s: &Setup, proto: &str, port: u16) {
    let ns = &s.topo.backends[0];
    for rule in [
        "add table inet lbt".to_owned(),
        "add chain inet lbt in { type filter hook input priority 0; }".to_owned(),
        format!("add rule inet lbt in {proto} dport {port} drop"),
    ] {
        lb_tests::netns::run(&mut ns.command(&["nft", &rule]));
    }
}

/// Removes [`blackhole`]'s table.
fn unblackhole(s: &Setup) {
    lb_tests::netns::run(&mut s.topo.backends[0].command(&["nft", "delete table inet lbt"]));
}

fn a_hung_backend_is_taken_out_by_its_http_probes_timing_out(mode: Mode) {
    let s = Setup::probed(mode, SERVER, 3, &probes("http", ""), NONE);
    let server = nix::unistd::Pid::from_raw(s.backends[0].0.id() as i32);
    out_by_probes_and_back(
        &s,
        "tcp",
        || {
            kill(server, Signal::SIGSTOP).expect("SIGSTOP b1's server");
            // Hung, not dead: its kernel still completes a handshake, and
            // nothing answers on the connection.
            let _in = s.topo.lb.enter();
            let mut c = std::net::TcpStream::connect_timeout(
                &"10.200.1.1:80".parse().expect("addr"),
                Duration::from_secs(1),
            )
            .expect("a hung server's kernel still accepts");
            c.set_read_timeout(Some(Duration::from_millis(300))).expect("timeout");
            c.write_all(b"hello\n").expect("write");
            let read = c.read(&mut [0u8; 64]);
            assert!(read.is_err(), "a stopped server answered: {read:?}");
        },
        || kill(server, Signal::SIGCONT).expect("SIGCONT b1's server"),
    );
}

fn a_blackholed_backend_is_taken_out_by_its_tcp_probes_timing_out(mode: Mode) {
    let s = Setup::probed(mode, SERVER, 3, &probes("tcp", ""), NONE);
    out_by_probes_and_back(&s, "tcp", || blackhole(&s, "tcp", 80), || unblackhole(&s));
}

fn udp_probes_take_a_blackholed_backend_out_and_bring_it_back(mode: Mode) {
    let s = Setup::probed(mode, SERVER, 3, NONE, &probes("udp", "send = \"probe\""));
    out_by_probes_and_back(&s, "udp", || blackhole(&s, "udp", 5353), || unblackhole(&s));
}

fn a_udp_backend_whose_port_closes_is_found_by_icmp_before_its_probes(mode: Mode) {
    // Probes this slow need three failures 1.8 s apart at least: 3.6 s.
    let slow =
        "kind = \"udp\"\nsend = \"probe\"\ninterval = \"2s\"\ntimeout = \"1s\"\nrise = 1\nfall = 3";
    let mut s = Setup::probed(mode, SERVER, 3, NONE, slow);
    unlimited_icmp(&s.topo.backends[0]);
    let b1 = backend(1, "udp", "v4");
    // Killed: its UDP port closes, and its kernel answers each datagram
    // with an ICMP port unreachable.
    drop(s.backends.remove(0));
    let killed = Instant::now();
    let down = || s.lb.health_changes().into_iter().find(|c| c.backend == b1 && c.to == "down");
    let inside = s.topo.client.enter();
    // New flows, one datagram each (unanswered by b1), until b1 is out.
    let mut sent = 0;
    let change = wait_for(Duration::from_secs(10), "udp-v4 b1 down", || {
        let f = Flow::open(vip(VIP4, 5353));
        f.sock.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
        f.sock.send_to(b"hi", vip(VIP4, 5353)).expect("send");
        sent += 1;
        let _ = f.sock.recv_from(&mut [0u8; 256]);
        down()
    });
    drop(inside);
    let took = killed.elapsed();
    eprintln!("{mode:?}: b1 found after {took:?} and {sent} datagrams: {}", change.line);
    assert_eq!(change.signal, "unreachable", "{}", change.line);
    assert!(took < Duration::from_secs(3), "found after {took:?}, later than its probes could");
    // From now on every new flow is served by b2 or b3.
    let _in = s.topo.client.enter();
    let names: Vec<String> = (0..60).map(|_| Flow::open(vip(VIP4, 5353)).ask()).collect();
    assert!(!count(&names).contains_key("b1"), "{:?}", count(&names));
}

fn when_every_backend_fails_its_checks_all_stay_in(mode: Mode) {
    // lbt-server answers every GET with 200: every probe fails, while every
    // backend serves.
    let s = Setup::probed(mode, SERVER, 3, &probes("http", "expect_status = 404"), NONE);
    for f in ["v4", "v6"] {
        for i in 1..=3 {
            s.lb.wait_health(
                &format!("tcp-{f}"),
                &backend(i, "tcp", f),
                "down",
                Duration::from_secs(5),
            );
        }
    }
    for f in ["v4", "v6"] {
        let svc = format!("tcp-{f}");
        for i in 1..=3 {
            let (b, _) = s.lb.backend(&svc, &backend(i, "tcp", f));
            assert_eq!(b.state, "active", "{svc}: failing open keeps {} in: {b:?}", b.addr);
        }
    }
    let log = s.lb.log();
    for f in ["v4", "v6"] {
        let said =
            log.lines().any(|l| l.contains("failing open") && l.contains(&format!("tcp-{f}")));
        assert!(said, "tcp-{f}: failing open is logged:\n{log}");
    }
    for (family, spread) in answering(&s, "tcp") {
        assert_eq!(spread.len(), 3, "{family}: every backend still serves: {spread:?}");
    }
}
