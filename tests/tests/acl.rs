//! Source lists and per-source new-flow limits (issue 14) through the real
//! `lb` in every mode: allow and deny for IPv4 and IPv6, TCP and UDP, also
//! across a reload; a source over its limit is limited while another is
//! not, and its established connections never are. Needs root.
//!
//! What differs by mode: the kernel datapath drops a refused packet, so a
//! refused connect times out, and a reload that denies a source stops its
//! established connections too; the splice proxy checks TCP at accept and
//! refuses with a reset, so a connection it already relays goes on.

use std::{
    io::{BufRead, BufReader, Write},
    net::{IpAddr, SocketAddr, UdpSocket},
    time::Duration,
};

use lb_tests::{
    agent::config,
    client::{Conn, Setup, connect_from, vip},
    in_both_modes,
    mode::Mode,
    topology::{CLIENT4, CLIENT6, VIP4, VIP6},
};

const SERVER: &str = env!("CARGO_BIN_EXE_lbt-server");
/// How long a refused attempt is waited for: a dropped SYN or datagram
/// gets no answer at all.
const PATIENCE: Duration = Duration::from_millis(700);

in_both_modes!(
    allow_and_deny_for_v4_and_v6_hold_across_a_reload,
    a_source_over_its_limit_is_limited_while_others_are_not,
);

/// `cfg` with `keys` added to service `name`.
fn with_keys(cfg: &str, name: &str, keys: &str) -> String {
    let at = cfg.find(&format!("name = \"{name}\"")).expect("the service");
    let health = at + cfg[at..].find("[service.health]").expect("its health table");
    format!("{}{keys}\n{}", &cfg[..health], &cfg[health..])
}

/// The topology's config (one backend) with each (service, keys) added.
fn config_with(s: &Setup, mode: Mode, keys: &[(&str, &str)]) -> String {
    let base = mode.config(&config(&s.topo, &s.dir.0, "maglev", 1));
    keys.iter().fold(base, |cfg, (name, k)| with_keys(&cfg, name, k))
}

fn reload(s: &Setup, cfg: &str) {
    std::fs::write(s.dir.0.join("lb.toml"), cfg).expect("write config");
    let (ok, text) = s.lb.cli(&["reload"]);
    assert!(ok, "reload: {text}");
}

/// Whether a TCP connection from `from` to `vip` gets an answer.
fn tcp_answered(from: IpAddr, vip: SocketAddr) -> bool {
    let Ok(mut stream) = connect_from(SocketAddr::new(from, 0), vip, PATIENCE) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(PATIENCE));
    if stream.write_all(b"hello\n").is_err() {
        return false;
    }
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).is_ok_and(|n| n > 0)
}

/// Whether a datagram from `from` (a fresh port: a new flow) to `vip` gets
/// an answer.
fn udp_answered(from: IpAddr, vip: SocketAddr) -> bool {
    let sock = UdpSocket::bind(SocketAddr::new(from, 0)).expect("bind");
    sock.set_read_timeout(Some(PATIENCE)).expect("timeout");
    sock.send_to(b"hi", vip).expect("send");
    let mut buf = [0u8; 256];
    sock.recv_from(&mut buf).is_ok()
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

/// (acl_denied, rate_limited) of `service` as `lb status --json` reports.
fn refused(s: &Setup, service: &str) -> (u64, u64) {
    let r = s.lb.report();
    let svc = r.services.iter().find(|x| x.name == service).expect("service");
    (svc.acl_denied, svc.rate_limited)
}

fn allow_and_deny_for_v4_and_v6_hold_across_a_reload(mode: Mode) {
    let s = Setup::in_mode(mode, SERVER, 1, 1, "maglev");
    let (c2, c10, c11) = (ip(CLIENT4), ip("10.200.0.10"), ip("10.200.0.11"));
    s.topo.more_client_addresses(2);
    s.topo.client.ip("addr add fd00:200::10/64 dev c0 nodad");
    let (d2, d10) = (ip(CLIENT6), ip("fd00:200::10"));
    let first = config_with(
        &s,
        mode,
        &[
            ("tcp-v4", "deny = [\"10.200.0.10\"]"),
            ("tcp-v6", "allow = [\"fd00:200::2\"]"),
            // Deny wins over the allow that covers it.
            ("udp-v4", "allow = [\"10.200.0.0/24\"]\ndeny = [\"10.200.0.11/32\"]"),
        ],
    );
    reload(&s, &first);
    let inside = s.topo.client.enter();
    let (t4, t6, u4, u6) = (vip(VIP4, 80), vip(VIP6, 80), vip(VIP4, 5353), vip(VIP6, 5353));
    assert!(tcp_answered(c2, t4) && tcp_answered(c11, t4), "not on tcp-v4's deny list");
    assert!(!tcp_answered(c10, t4), "denied on tcp-v4");
    assert!(tcp_answered(d2, t6), "on tcp-v6's allow list");
    assert!(!tcp_answered(d10, t6), "not on tcp-v6's allow list");
    assert!(udp_answered(c2, u4) && udp_answered(c10, u4), "allowed on udp-v4");
    assert!(!udp_answered(c11, u4), "deny wins on udp-v4");
    assert!(udp_answered(d10, u6), "udp-v6 has no list");
    // A connection of a source the reload is about to deny.
    let mut kept = Conn::open_bound(SocketAddr::new(c11, 0), t4, mode);
    assert!(kept.try_ask().is_some());
    drop(inside);
    let (denied4, _) = refused(&s, "tcp-v4");
    assert!(denied4 >= 1, "tcp-v4 counted its refusals");
    assert!(refused(&s, "udp-v4").0 >= 1, "udp-v4 counted its refusals");
    let status = s.lb.status();
    assert!(status.contains("deny 10.200.0.10/32") && status.contains("acl_denied"), "{status}");
    if mode.kernel() {
        let flow = s.lb.flow(SocketAddr::new(c10, 40000), t4, "tcp");
        assert_eq!((flow.source.as_str(), flow.backend.as_str()), ("refused", ""), "{flow:?}");
        assert!(flow.why.contains("deny 10.200.0.10/32"), "{flow:?}");
    }

    // The lists change places.
    let second = config_with(
        &s,
        mode,
        &[("tcp-v4", "deny = [\"10.200.0.11\"]"), ("tcp-v6", "deny = [\"fd00:200::2\"]")],
    );
    reload(&s, &second);
    let _inside = s.topo.client.enter();
    assert!(tcp_answered(c10, t4), "no longer denied");
    assert!(!tcp_answered(c11, t4), "denied by the reload");
    assert!(tcp_answered(d10, t6), "the allow list is gone");
    assert!(!tcp_answered(d2, t6), "denied by the reload");
    assert!(udp_answered(c11, u4), "udp-v4's lists are gone");
    match mode {
        // Every packet is checked: the established connection stops.
        Mode::Xdp | Mode::Tc => assert_eq!(kept.try_ask(), None, "a denied source's connection"),
        // The proxy checks at accept: a connection it relays goes on.
        Mode::Splice => assert!(kept.try_ask().is_some(), "splice checks at accept only"),
    }
}

fn a_source_over_its_limit_is_limited_while_others_are_not(mode: Mode) {
    let s = Setup::in_mode(mode, SERVER, 1, 1, "maglev");
    let (c10, c11) = (ip("10.200.0.10"), ip("10.200.0.11"));
    s.topo.more_client_addresses(2);
    s.topo.client.ip("addr add fd00:200::10/64 dev c0 nodad");
    let (d2, d10) = (ip(CLIENT6), ip("fd00:200::10"));
    // One new flow a second after a burst: each check runs well within a
    // second of the burst.
    let cfg = config_with(
        &s,
        mode,
        &[
            ("tcp-v4", "new_flow_limit = { rate = 1, burst = 5 }"),
            ("udp-v6", "new_flow_limit = { rate = 1, burst = 2, prefix_v6 = 128 }"),
        ],
    );
    reload(&s, &cfg);
    let _inside = s.topo.client.enter();
    let t4 = vip(VIP4, 80);
    let mut open: Vec<Conn> =
        (0..5).map(|_| Conn::open_bound(SocketAddr::new(c10, 0), t4, mode)).collect();
    for c in &mut open {
        assert!(c.try_ask().is_some(), "the burst's connections are served");
    }
    assert!(!tcp_answered(c10, t4), "the sixth new connection at once is over the limit");
    assert!(tcp_answered(c11, t4), "another source is not limited");
    for c in &mut open {
        assert!(c.try_ask().is_some(), "established connections are never limited");
    }
    assert!(refused(&s, "tcp-v4").1 >= 1, "tcp-v4 counted the limited connection");

    let u6 = vip(VIP6, 5353);
    assert!(udp_answered(d10, u6) && udp_answered(d10, u6), "the burst of 2");
    assert!(!udp_answered(d10, u6), "a third new flow at once");
    assert!(udp_answered(d2, u6), "another /128");
    assert!(refused(&s, "udp-v6").1 >= 1, "udp-v6 counted the limited flow");
}
