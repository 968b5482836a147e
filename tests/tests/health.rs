//! Health checks and operator control, end to end in every mode
//! (`<case>::xdp`, `::tc`, `::splice`) and over both address families: a
//! dead backend stops getting new flows, comes back to exactly its own
//! slots, a refused connection takes it out before its next probe, and
//! drain / disable / weight do what they say. These tests assert the
//! behaviour; `cargo xtask bench failover` measures the timing. Needs root.

use std::time::{Duration, Instant};

use lb_tests::{
    agent::start_backend,
    client::{Conn, Flow, Setup, count, vip},
    in_both_modes,
    mode::Mode,
    topology::{VIP4, VIP6},
};

const SERVER: &str = env!("CARGO_BIN_EXE_lbt-server");
/// Fast enough for the tests to see changes within a second, relaxed enough
/// (timeout 90 ms) that a loaded CI machine does not fail a healthy backend.
const PROBES: &str = "kind = \"tcp\"\ninterval = \"100ms\"\ntimeout = \"90ms\"\nrise = 3\nfall = 2";
/// The two families: (service suffix, VIP, backend 1's address).
const FAMILIES: [(&str, &str, &str); 2] =
    [("v4", VIP4, "10.200.1.1"), ("v6", VIP6, "[fd00:200:1::1]")];

in_both_modes!(
    a_killed_backend_stops_getting_flows_and_returns_to_its_own_slots,
    drain_keeps_established_flows_and_sends_new_ones_elsewhere,
    disable_moves_even_established_udp_flows_and_weight_changes_shares,
    a_refused_connection_takes_the_backend_out_before_its_next_probe,
);

fn with_probes(mode: Mode, n: usize) -> Setup {
    Setup::probed(mode, SERVER, n, PROBES, "kind = \"none\"")
}

/// Waits (at most 5 s) until the `lb status` row of `backend` contains
/// `needle`.
fn wait_row(s: &Setup, backend: &str, needle: &str) {
    let start = Instant::now();
    let row =
        |st: String| st.lines().find(|l| l.trim_start().starts_with(backend)).map(str::to_owned);
    while !row(s.lb.status()).is_some_and(|r| r.contains(needle)) {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{backend} never {needle:?}:\n{}",
            s.lb.status()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn lb_backend(s: &Setup, args: &[&str]) {
    s.lb.cli_ok(&[&["backend"], args].concat());
}

fn a_killed_backend_stops_getting_flows_and_returns_to_its_own_slots(mode: Mode) {
    let mut s = with_probes(mode, 3);
    let before = s.lb.status();
    // Kill backend 1's server: its ports close.
    drop(s.backends.remove(0));
    for (_, ip, b1) in FAMILIES {
        wait_row(&s, &format!("{b1}:80 "), "down");
        let spread = s.answering("tcp", ip, 150);
        assert!(
            !spread.contains_key("b1"),
            "{ip}: no new flow may reach the dead backend: {spread:?}"
        );
        assert_eq!(spread.len(), 2, "{ip}: {spread:?}");
    }

    // Bring it back: after `rise` good probes it takes new flows again, with
    // exactly the slots it had (the TCP rows of both families).
    s.backends.insert(0, start_backend(&s.topo.backends[0], SERVER.as_ref(), 1));
    let slots = |st: &str| -> Vec<String> {
        st.lines()
            .filter(|l| l.contains(":80 w1"))
            .map(|l| l.split_whitespace().nth(5).unwrap_or("").to_owned())
            .collect()
    };
    assert_eq!(slots(&before).len(), 6, "{before}");
    let start = Instant::now();
    while slots(&s.lb.status()) != slots(&before) {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "Maglev gives a returning backend its own slots: {:?} vs {:?}",
            slots(&s.lb.status()),
            slots(&before)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    for (_, ip, _) in FAMILIES {
        assert_eq!(s.answering("tcp", ip, 60).len(), 3, "{ip}: b1 serves again");
    }
    let log = s.lb.log();
    if std::env::var_os("LBT_SHOW_LOG").is_some() {
        eprintln!("{log}");
    }
    assert!(log.contains("backend health changed") && log.contains("detection_ms"), "{log}");
}

fn drain_keeps_established_flows_and_sends_new_ones_elsewhere(mode: Mode) {
    let s = with_probes(mode, 3);
    for (family, ip, b1) in FAMILIES {
        let (svc, b1) = (format!("tcp-{family}"), format!("{b1}:80"));
        let inside = s.topo.client.enter();
        let mut conns: Vec<Conn> = (0..60).map(|_| s.conn(vip(ip, 80))).collect();
        let first: Vec<String> = conns.iter_mut().map(Conn::ask).collect();
        assert!(first.iter().any(|n| n == "b1"), "{ip}: some connection must be on b1: {first:?}");
        drop(inside);

        lb_backend(&s, &["drain", &svc, &b1]);
        let inside = s.topo.client.enter();
        let again: Vec<String> = conns.iter_mut().map(Conn::ask).collect();
        assert_eq!(again, first, "{ip}: established flows stay, b1's included");
        drop(inside);
        let fresh = s.answering("tcp", ip, 200);
        assert!(!fresh.contains_key("b1"), "{ip}: no new flow to a draining backend: {fresh:?}");

        lb_backend(&s, &["enable", &svc, &b1]);
        assert!(s.answering("tcp", ip, 200).contains_key("b1"), "{ip}: enabled again");
    }
}

fn disable_moves_even_established_udp_flows_and_weight_changes_shares(mode: Mode) {
    let s = with_probes(mode, 3);
    for (family, ip, b1) in FAMILIES {
        let (svc, b1) = (format!("udp-{family}"), format!("{b1}:5353"));
        let inside = s.topo.client.enter();
        let flows: Vec<Flow> = (0..90).map(|_| Flow::open(vip(ip, 5353))).collect();
        let first: Vec<String> = flows.iter().map(Flow::ask).collect();
        assert!(first.iter().any(|n| n == "b1"), "{ip}: some flow must be on b1: {first:?}");
        drop(inside);

        lb_backend(&s, &["disable", &svc, &b1]);
        let inside = s.topo.client.enter();
        let after: Vec<String> = flows.iter().map(Flow::ask).collect();
        for (a, b) in first.iter().zip(&after) {
            assert_ne!(b, "b1", "{ip}: a disabled backend gets nothing");
            if a != "b1" {
                assert_eq!(a, b, "{ip}: flows of other backends stay put");
            }
        }
        drop(inside);

        lb_backend(&s, &["enable", &svc, &b1]);
        let b2 = b1.replace("200.1.", "200.2.").replace("200:1::", "200:2::");
        lb_backend(&s, &["weight", &svc, &b2, "4"]);
        let _in = s.topo.client.enter();
        let names: Vec<String> = (0..1200).map(|_| Flow::open(vip(ip, 5353)).ask()).collect();
        let spread = count(&names);
        // Weights 1:4:1 of 1200 -> about 200 / 800 / 200 (σ ≈ 16: ±6σ).
        let on_b2 = spread.get("b2").copied().unwrap_or(0);
        assert!((700..=900).contains(&on_b2), "{ip}: {spread:?}");
    }
}

fn a_refused_connection_takes_the_backend_out_before_its_next_probe(mode: Mode) {
    // Probes this slow need ~4 s to notice; the passive signal must not.
    let slow = "kind = \"tcp\"\ninterval = \"2s\"\ntimeout = \"1s\"\nrise = 1\nfall = 2";
    let mut s = Setup::probed(mode, SERVER, 3, slow, "kind = \"none\"");
    drop(s.backends.remove(0));
    for (family, ip, b1) in FAMILIES {
        let b1 = format!("{b1}:80");
        let start = Instant::now();
        let inside = s.topo.client.enter();
        // Connect until b1 is out (status polled between connections), at
        // most 10 s: no rate or time threshold, the log says what found it.
        let (mut refused, mut served) = (0, 0);
        let b1_down =
            |s: &Setup| s.lb.health_changes().iter().any(|c| c.backend == b1 && c.to == "down");
        while start.elapsed() < Duration::from_secs(10) && !b1_down(&s) {
            match std::net::TcpStream::connect_timeout(&vip(ip, 80), Duration::from_secs(1)) {
                Ok(_) => served += 1,
                Err(_) => refused += 1,
            }
        }
        drop(inside);
        eprintln!("{ip} passive: {refused} refused, {served} served");
        let change = s.lb.health_changes().into_iter().find(|c| c.backend == b1);
        let change = change.unwrap_or_else(|| panic!("{b1} never changed health:\n{}", s.lb.log()));
        assert_eq!(
            (change.service.as_str(), change.to.as_str(), change.signal.as_str()),
            (format!("tcp-{family}").as_str(), "down", "refused"),
            "{}",
            change.line
        );
        // XDP forwards b1's reset to the client; the proxy takes the
        // refusal itself and tries the next backend.
        match mode {
            Mode::Xdp | Mode::Tc => assert!(refused > 0, "{ip}: the client saw no refusal"),
            Mode::Splice => assert_eq!(refused, 0, "{ip}: the proxy tries the next backend"),
        }
        // From now on every new connection is served by b2 or b3.
        let spread = s.answering("tcp", ip, 50);
        assert!(!spread.contains_key("b1"), "{ip}: {spread:?}");
    }
    let log = s.lb.log();
    assert!(log.contains("refused a forwarded connection"), "{log}");
}

#[test]
fn a_restart_keeps_what_the_operator_set_and_what_the_checks_found() {
    let mut s = with_probes(Mode::Xdp, 3);
    lb_backend(&s, &["disable", "tcp-v4", "10.200.2.1:80"]);
    lb_backend(&s, &["weight", "tcp-v6", "[fd00:200:2::1]:80", "3"]);
    drop(s.backends.remove(2)); // backend 3's server: its ports close
    wait_row(&s, "10.200.3.1:80 ", "down");
    wait_row(&s, "[fd00:200:3::1]:80 ", "down");
    wait_row(&s, "10.200.2.1:80 ", "disabled");

    // A new agent takes the pinned datapath over.
    s.lb.terminate();
    s.lb = lb_tests::agent::start_lb(&s.topo, &s.dir.0.join("lb.toml"), &s.dir.0);
    // Restored at takeover, not re-found by probes: the log says how many
    // backends came back out of service (one disabled, two down).
    let log = std::fs::read_to_string(s.dir.0.join("lb.log")).unwrap_or_default();
    assert!(log.contains("backends_not_in_service=3"), "{log}");
    let status = s.lb.status();
    let row = |b: &str| {
        status.lines().find(|l| l.trim_start().starts_with(b)).unwrap_or_default().to_owned()
    };
    assert!(row("10.200.2.1:80 ").contains("disabled"), "{status}");
    assert!(row("[fd00:200:2::1]:80 w3").contains("enabled"), "{status}");
    assert!(row("10.200.3.1:80 ").contains("down"), "{status}");
    // New flows avoid both: only backend 1 answers on the v4 service.
    let _in = s.topo.client.enter();
    let names: Vec<String> = (0..60).map(|_| Conn::open(vip(VIP4, 80)).ask()).collect();
    assert_eq!(count(&names).keys().collect::<Vec<_>>(), vec!["b1"], "{names:?}");
}
