//! Flood mode's SYN challenge with real TCP stacks, through a NAT gateway:
//! during a bounded spoofed SYN flood (hping3 from the client namespace at
//! the test VIP, stopped by the test), a client the balancer has never
//! seen, behind a gateway that masquerades it and drops what conntrack
//! finds invalid (as home routers and carrier NATs do), connects through
//! the real `lb`: its kernel refuses the challenge, resets, sends its SYN
//! again, and is served. The gateway must have let the challenge and the
//! reset through (in the window conntrack allows) and dropped nothing of
//! them. Kernel modes only: in splice mode the kernel's own SYN cookies
//! answer floods. Needs root, hping3 and nft.

use std::{
    net::TcpStream,
    time::{Duration, Instant},
};

use lb_tests::{
    agent::{TempDir, config, wait_for, with_flows},
    client::{Conn, Setup, allow_open_files, connect_from, in_parallel, vip},
    flood::SynFlood,
    in_kernel_modes,
    mode::Mode,
    topology::{Topology, VIP4, VIP6},
};

const SERVER: &str = env!("CARGO_BIN_EXE_lbt-server");
const FLOWS: &str = "capacity = 4096\nflood_threshold = 2000";
/// New connections the home client makes during the flood, one after the
/// other: the first is challenged, the others find its source verified.
const CONNECTIONS: usize = 5;

in_kernel_modes!(
    a_new_client_behind_a_nat_gateway_is_challenged_and_served_during_a_flood,
    a_spoofed_ack_flood_reaches_no_backend_and_keeps_flood_mode_on,
    a_thousand_connections_at_once_from_new_clients_during_a_flood,
);

/// New flows over every service so far.
fn new_flows(s: &Setup) -> u64 {
    s.lb.report().services.iter().map(|v| v.traffic.new_flows).sum()
}

fn exception(s: &Setup, reason: &str) -> u64 {
    s.lb.report().exceptions.iter().find(|e| e.reason == reason).map_or(0, |e| e.packets)
}

/// Packets the gateway dropped as invalid that were addressed to itself:
/// answers to its home client that conntrack could not translate back.
fn gateway_invalid_drops(topo: &Topology) -> String {
    let out = topo.client.exec(&["nft", "list", "chain", "ip", "home", "input"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.contains("invalid"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn a_new_client_behind_a_nat_gateway_is_challenged_and_served_during_a_flood(mode: Mode) {
    let topo = Topology::new(2);
    mode.prepare(&topo);
    let s = Setup::with_config(SERVER, topo, TempDir::new(), |t, d| {
        with_flows(&mode.config(&config(t, d, "maglev", 2)), FLOWS)
    });
    assert_eq!(s.mode, mode, "lb serves in the mode asked for:\n{}", s.lb.status());
    // Answers to the flood's spoofed sources leave by the default route
    // and end in the client namespace, as they would on the internet.
    s.topo.lb.ip("route replace default via 10.200.0.2");
    let home = s.topo.nat_home();
    let to = vip(VIP4, 80);

    let flood = SynFlood::start(s.topo.client.name(), VIP4.parse().expect("VIP"), 80);
    wait_for(Duration::from_secs(10), "flood mode on", || s.lb.report().flood.on.then_some(()));
    // The status may say "on" a moment before the flood's next SYN meets
    // the datapath's new setting (one full run saw none yet).
    wait_for(Duration::from_secs(3), "a SYN challenged", || {
        Some(exception(&s, "syn_challenged")).filter(|&n| n > 0)
    });
    assert!(s.lb.report().flood.challenging, "status does not say SYNs are challenged");
    let status = s.lb.status();
    assert!(status.contains("SYNs from sources not verified are challenged"), "{status}");

    let inside = home.enter();
    let mut took = Vec::new();
    for i in 0..CONNECTIONS {
        let started = Instant::now();
        let stream = TcpStream::connect_timeout(&to, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connection {i} from behind the gateway: {e}"));
        took.push(started.elapsed());
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let answer = Conn::from_stream(stream).try_ask();
        assert!(answer.is_some(), "connection {i} from behind the gateway got no answer");
    }
    drop(inside);
    // An IPv6 client lb has not seen (the client namespace's address: its
    // connections so far were IPv4) is challenged and served the same way.
    let inside = s.topo.client.enter();
    let to6 = vip(VIP6, 80);
    let started = Instant::now();
    let stream = TcpStream::connect_timeout(&to6, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("IPv6 connection during the flood: {e}"));
    let took6 = started.elapsed();
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    assert!(Conn::from_stream(stream).try_ask().is_some(), "the IPv6 connection got no answer");
    drop(inside);
    let on_throughout = s.lb.report().flood.on;

    // `flows.syn_challenge = false`, by reload during the flood: flood
    // mode stays on, and SYNs are forwarded again, not challenged.
    let cfg = with_flows(
        &mode.config(&config(&s.topo, &s.dir.0, "maglev", 2)),
        &format!("{FLOWS}\nsyn_challenge = false"),
    );
    std::fs::write(s.dir.0.join("lb.toml"), cfg).expect("write config");
    let (ok, text) = s.lb.cli(&["reload"]);
    assert!(ok, "reload: {text}");
    let (off, forwarded) = (exception(&s, "syn_challenged"), new_flows(&s));
    std::thread::sleep(Duration::from_millis(500));
    let (still, forwarded_since) = (exception(&s, "syn_challenged"), new_flows(&s) - forwarded);
    let report = s.lb.report();
    let (flood_on, still_challenging) = (report.flood.on, report.flood.challenging);
    flood.stop();
    assert!(!still_challenging, "status says SYNs are challenged after syn_challenge = false");
    assert_eq!(still, off, "SYNs challenged after syn_challenge = false");
    assert!(forwarded_since > 100, "only {forwarded_since} of the flood's SYNs forwarded");
    assert!(flood_on, "flood mode is still on, without challenges");

    let answered = exception(&s, "challenge_answered");
    let challenged = exception(&s, "syn_challenged");
    let invalid = gateway_invalid_drops(&s.topo);
    eprintln!(
        "{mode:?}: connect times {took:?}, IPv6 {took6:?}; {challenged} SYNs challenged, \
         {answered} answered; gateway: {invalid}\n{}",
        s.lb.status()
    );
    assert!(on_throughout, "flood mode turned off during the flood");
    assert!(answered >= 2, "the clients' resets never verified them:\n{}", s.lb.status());
    // The flood's sources never answer: only the home client's gateway and
    // the IPv6 client did (once each, or again if a challenge or reset was
    // lost in the flood).
    assert!(answered <= 4, "{answered} challenges answered; only two clients could");
    assert!(
        invalid.contains("packets 0 "),
        "the gateway dropped answers to its client as invalid: {invalid}"
    );
    // The first connection waited for one more round trip (Linux sends
    // its SYN again at once after the reset: 8-18 ms here); the others
    // found the gateway's address verified. Within 3 s: one frame the
    // flood crowds out of a queue (the client namespace's backlog, which
    // lb does not see) costs a 1 s retransmission, two would cost 3 s.
    assert!(took[0] < Duration::from_secs(3), "the challenged connect took {:?}", took[0]);
}

/// The next attack once SYNs are challenged: spoofed ACKs, which a flow
/// table would pick up as connections it lost and send to a backend. The
/// ACK flood alone turns flood mode on (as new flows, picked up), and in
/// flood mode its ACKs are dropped at the hook (`no_flow_unverified`) and
/// still counted into the rate: flood mode stays on past its 5 s of calm
/// while the flood goes on, and a client that connected before keeps
/// opening connections.
fn a_spoofed_ack_flood_reaches_no_backend_and_keeps_flood_mode_on(mode: Mode) {
    let topo = Topology::new(2);
    mode.prepare(&topo);
    let s = Setup::with_config(SERVER, topo, TempDir::new(), |t, d| {
        with_flows(&mode.config(&config(t, d, "maglev", 2)), FLOWS)
    });
    s.topo.lb.ip("route replace default via 10.200.0.2");
    let to = vip(VIP4, 80);
    let client = s.topo.client.name().to_owned();
    // A client that completed a handshake through lb: verified.
    {
        let _inside = s.topo.client.enter();
        s.conn(to).ask();
    }
    let acks = SynFlood::with_flag(&client, VIP4.parse().expect("VIP"), 80, "-A");
    wait_for(Duration::from_secs(10), "flood mode on", || s.lb.report().flood.on.then_some(()));
    let before = new_flows(&s);
    let inside = s.topo.client.enter();
    let started = Instant::now();
    let mut answered = 0;
    // Longer than flood mode's 5 s of calm: were the dropped ACKs not
    // counted, it would turn off in this time.
    while started.elapsed() < Duration::from_secs(7) {
        let stream = TcpStream::connect_timeout(&to, Duration::from_secs(3)).expect("connect");
        let _ = stream.set_read_timeout(Some(Duration::from_secs(3)));
        assert!(Conn::from_stream(stream).try_ask().is_some(), "no answer during the ACK flood");
        answered += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(inside);
    let flood = s.lb.report().flood;
    acks.stop();
    let dropped = exception(&s, "no_flow_unverified");
    let picked_up = new_flows(&s) - before;
    eprintln!(
        "{mode:?}: {answered} connections answered during the ACK flood; {dropped} ACKs dropped, \
         {picked_up} new flows; {flood:?}\n{}",
        s.lb.status()
    );
    assert!(flood.on && flood.episodes == 1, "flood mode turned off during the ACK flood");
    assert!(dropped > 10_000, "only {dropped} of the ACK flood dropped");
    // The client's own connections are the only new flows.
    assert!(picked_up <= answered as u64 + 10, "{picked_up} new flows for {answered} connections");
}

/// Not one polite client but a crowd: during the flood, 1 000 connections
/// held open at once from 200 addresses lb has never seen, several
/// connections of each address racing their first SYNs through the
/// challenge. Every one is served; each address answers a challenge at
/// least once (a connection whose SYN went out before its address was
/// verified is challenged too), none is left out.
fn a_thousand_connections_at_once_from_new_clients_during_a_flood(mode: Mode) {
    const N: usize = 1000;
    const ADDRESSES: u8 = 200;
    allow_open_files(4 * N as u64);
    let topo = Topology::new(2);
    mode.prepare(&topo);
    let sources = topo.more_client_addresses(ADDRESSES);
    let s = Setup::with_config(SERVER, topo, TempDir::new(), |t, d| {
        with_flows(&mode.config(&config(t, d, "maglev", 2)), FLOWS)
    });
    s.topo.lb.ip("route replace default via 10.200.0.2");
    let to = vip(VIP4, 80);
    let flood = SynFlood::start(s.topo.client.name(), VIP4.parse().expect("VIP"), 80);
    wait_for(Duration::from_secs(10), "flood mode on", || s.lb.report().flood.on.then_some(()));
    let answered_before = exception(&s, "challenge_answered");
    let items: Vec<_> = (0..N).map(|i| sources[i % sources.len()]).collect();
    let opened = in_parallel(s.topo.client.name(), items, 100, |src| {
        connect_from(std::net::SocketAddr::new(src, 0), to, Duration::from_secs(10))
    });
    let failed = opened.iter().filter(|c| c.is_err()).count();
    // Native XDP on veth: under the flood, frames redirected into a veth
    // whose XDP ring is full are lost (counted by lb as lost frames, the
    // reason `attach = "auto"` picks tc there), and a lost request waits for
    // TCP's retransmissions (0.2 s, then 0.4, 0.8...): on a loaded machine
    // more than the usual 2 s. Served late is still served.
    let mut conns: Vec<Conn> = opened
        .into_iter()
        .flatten()
        .map(|s| Conn::from_stream(s).patient(Duration::from_secs(8)))
        .collect();
    let unanswered = conns.iter_mut().map(Conn::try_ask).filter(Option::is_none).count();
    let on = s.lb.report().flood.on;
    flood.stop();
    let answered = exception(&s, "challenge_answered") - answered_before;
    eprintln!(
        "{mode:?}: {} of {N} connections held at once, {failed} failed to connect, {unanswered} \
         unanswered; {answered} challenges answered for {ADDRESSES} new addresses\n{}",
        conns.len(),
        s.lb.status()
    );
    assert!(on, "flood mode turned off during the test");
    assert_eq!((failed, unanswered), (0, 0), "new clients left out during the flood");
    assert!(answered >= u64::from(ADDRESSES), "{answered} challenges answered");
    assert!(answered <= N as u64 + 50, "{answered} challenges answered for {N} connections");
}
