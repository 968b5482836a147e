//! An established TCP connection whose backend is taken out (disabled, or
//! down by its probes) gets a reset within about a second instead of
//! hanging until a read times out: in XDP mode from the backend its next
//! packet is re-hashed to, in splice mode from the proxy, which ends it.
//! Connections to the other backends keep answering. Needs root.

use std::{
    io::{ErrorKind, Read, Write},
    time::{Duration, Instant},
};

use lb_tests::{
    agent::{TempDir, config_with_health, wait_for},
    client::{Conn, Setup, count, vip},
    in_both_modes,
    mode::Mode,
    topology::{Topology, VIP4},
};

const SERVER: &str = env!("CARGO_BIN_EXE_lbt-server");

in_both_modes!(
    a_disabled_backends_connections_are_reset_and_the_others_answer,
    a_failed_backends_connections_are_reset_and_the_others_answer,
);

fn a_disabled_backends_connections_are_reset_and_the_others_answer(mode: Mode) {
    let s = Setup::in_mode(mode, SERVER, 3, 3, "maglev");
    resets_when_taken_out(&s, || {
        s.lb.cli_ok(&["backend", "disable", "tcp-v4", "10.200.1.1:80"]);
    });
}

fn a_failed_backends_connections_are_reset_and_the_others_answer(mode: Mode) {
    let topo = Topology::new(3);
    mode.prepare(&topo);
    let probes = "kind = \"tcp\"\ninterval = \"100ms\"\ntimeout = \"90ms\"\nrise = 3\nfall = 2";
    let s = Setup::with_config(SERVER, topo, TempDir::new(), |t, d| {
        mode.config(&config_with_health(t, d, "maglev", 3, probes))
    });
    assert_eq!(s.mode, mode);
    resets_when_taken_out(&s, || {
        // b1 refuses new connections (its probes fail) while those it has
        // go on: a backend going down under established connections.
        let nft =
            |rule: &str| lb_tests::netns::run(&mut s.topo.backends[0].command(&["nft", rule]));
        nft("add table inet lbt");
        nft("add chain inet lbt in { type filter hook input priority 0; }");
        nft("add rule inet lbt in tcp dport 80 tcp flags & (syn|ack) == syn reject with tcp reset");
        wait_for(Duration::from_secs(5), "b1 down by its probes", || {
            (s.lb.backend("tcp-v4", "10.200.1.1:80").0.health == "down").then_some(())
        });
    });
}

/// Opens 60 connections through `s`, runs `take_out` (which takes b1 out
/// of tcp-v4), then asserts each of b1's connections is reset within a
/// second and the others still answer from their backend.
fn resets_when_taken_out(s: &Setup, take_out: impl FnOnce()) {
    let inside = s.topo.client.enter();
    let mut conns: Vec<Conn> = (0..60).map(|_| s.conn(vip(VIP4, 80))).collect();
    let first: Vec<String> = conns.iter_mut().map(Conn::ask).collect();
    drop(inside);
    assert!(first.iter().any(|n| n == "b1"), "b1 had connections: {:?}", count(&first));

    take_out();
    let _in = s.topo.client.enter();
    for (conn, was) in conns.into_iter().zip(&first) {
        if was != "b1" {
            let mut conn = conn;
            assert_eq!(&conn.ask(), was, "a connection to {was} keeps answering");
            continue;
        }
        let mut stream = conn.into_stream();
        stream.set_read_timeout(Some(Duration::from_secs(3))).expect("timeout");
        let asked = Instant::now();
        // The write may already fail if the reset came first.
        let got = stream.write_all(b"hello\n").and_then(|()| stream.read(&mut [0u8; 64]));
        let took = asked.elapsed();
        match got {
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            other => panic!("a connection to b1, taken out, got {other:?} after {took:?}"),
        }
        assert!(took < Duration::from_secs(1), "reset after {took:?}, not within a second");
    }
}
