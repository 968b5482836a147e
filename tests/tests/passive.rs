//! Passive failure detection end to end through the XDP datapath, under load
//! from a client that reuses its ports (so nearly every SYN arrives on a
//! 5-tuple the flow table still holds): a backend whose port closes is
//! found by the refusal of a forwarded SYN, a blackholed one by SYNs left
//! unanswered, each before its probes could. Needs root.

use std::time::{Duration, Instant};

use lb_tests::{
    agent::{HealthChange, TempDir, config_with_health, start_backend, wait_for},
    client::{Conn, Load, Setup, count, vip},
    topology::{Topology, VIP4},
};

const SERVER: &str = env!("CARGO_BIN_EXE_lbt-server");

/// Three backends probed with `probes`, and connections opened continuously
/// by `threads` clients (each waiting at most `limit` to connect and as long
/// for its answer) from 200 client ports.
fn under_port_reusing_load(probes: &str, threads: usize, limit: Duration) -> (Setup, Vec<Load>) {
    let s = Setup::with_config(SERVER, Topology::new(3), TempDir::new(), |t, d| {
        config_with_health(t, d, "maglev", 3, probes)
    });
    s.topo.reuse_client_ports(50000, 50199);
    let loads =
        (0..threads).map(|_| Load::start(s.topo.client.name(), vip(VIP4, 80), limit)).collect();
    // Long enough for every port to have been used, and so reused from now.
    std::thread::sleep(Duration::from_secs(1));
    (s, loads)
}

/// Stops the loads: (answered, failed) connections in all.
fn stop(loads: Vec<Load>) -> (u64, u64) {
    loads.into_iter().map(Load::stop).fold((0, 0), |(a, b), (c, d)| (a + c, b + d))
}

/// The first health change of `backend` in the IPv4 TCP service to `to`
/// logged after the first `seen` changes, waiting for it at most `limit`.
fn next_change(s: &Setup, seen: usize, backend: &str, to: &str, limit: Duration) -> HealthChange {
    wait_for(limit, &format!("tcp-v4 {backend} to={to:?}"), || {
        s.lb.health_changes()
            .into_iter()
            .skip(seen)
            .find(|c| c.service == "tcp-v4" && c.backend == backend && c.to == to)
    })
}

#[test]
fn each_of_twenty_crashes_under_port_reuse_is_found_by_the_refusal() {
    // Probes need three failures 450 ms apart: the refusal of the next
    // connection comes first. Rise 1: back after one good probe.
    let probes = "kind = \"tcp\"\ninterval = \"500ms\"\ntimeout = \"250ms\"\nrise = 1\nfall = 3";
    let (mut s, loads) = under_port_reusing_load(probes, 2, Duration::from_secs(1));
    for crash in 0..20 {
        let i = crash % 3 + 1;
        let backend = format!("10.200.{i}.1:80");
        let seen = s.lb.health_changes().len();
        // Killed: its ports close.
        drop(s.backends.remove(i - 1));
        let down = next_change(&s, seen, &backend, "down", Duration::from_secs(5));
        assert_eq!(down.signal, "refused", "crash {crash} of b{i} was found by {}", down.line);
        // A probe confirms the verdict before the backend returns (one
        // starts within 1.1 intervals of the last, and a refused connect
        // ends at once); a probe that found it well would hold passive
        // signals off for a while.
        std::thread::sleep(Duration::from_secs(1));
        s.backends.insert(i - 1, start_backend(&s.topo.backends[i - 1], SERVER.as_ref(), i));
        next_change(&s, seen, &backend, "up", Duration::from_secs(5));
    }
    let (ok, failed) = stop(loads);
    eprintln!("{ok} connections answered, {failed} failed over 20 crashes");
    // Not vacuous: 200 ports used over and over.
    assert!(ok >= 10 * 200, "only {ok} connections answered: ports barely reused");
}

#[test]
fn a_blackholed_backend_is_found_by_unanswered_syns_before_any_probe() {
    // Probes would need three failures at least 1.8 s apart: 3.6 s.
    let probes = "kind = \"tcp\"\ninterval = \"2s\"\ntimeout = \"1s\"\nrise = 1\nfall = 3";
    // Only SYNs sent after the backend's last answer count, and clients
    // whose connections hang on it (each up to 300 ms) send none: eight, so
    // some are still connecting when the link goes.
    let (s, loads) = under_port_reusing_load(probes, 8, Duration::from_millis(300));
    let seen = s.lb.health_changes().len();
    let cut = Instant::now();
    s.topo.backends[0].ip("link set b0 down");
    let down = next_change(&s, seen, "10.200.1.1:80", "down", Duration::from_secs(10));
    let detected = cut.elapsed();
    let (ok, failed) = stop(loads);
    eprintln!(
        "blackholed b1 found after {detected:?}: {}; load {ok} answered, {failed} failed",
        down.line
    );
    assert_eq!(down.signal, "unanswered", "{}", down.line);
    assert!(
        detected < Duration::from_secs(2),
        "found after {detected:?}, not within a probe interval"
    );

    // Taken out: new connections go to the others, all answered.
    let _in = s.topo.client.enter();
    let names: Vec<String> = (0..60).map(|_| Conn::open(vip(VIP4, 80)).ask()).collect();
    let spread = count(&names);
    assert!(!spread.contains_key("b1"), "{spread:?}");
}
