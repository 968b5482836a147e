//! The splice fallback end to end: `lb run` in splice mode proxies TCP
//! through the VIP, choosing for each connection exactly the backend the XDP
//! datapath would (same Maglev table, same flow hash). Needs root.

use std::{
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use lb_common::{
    abi::PROTO_TCP,
    hash::{flow_hash, slot_for},
};
use lb_tests::{
    agent::{TempDir, config},
    client::{Setup, count, vip},
    topology::{CLIENT4, Topology, VIP4},
};
use lb_userspace::datapath;

const SERVER: &str = env!("CARGO_BIN_EXE_lbt-server");

fn splice_setup() -> Setup {
    let topo = Topology::new(3);
    // The VIP reaches the balancer as a local address.
    topo.lb.ip(&format!("route add local {VIP4}/32 dev lo"));
    Setup::with_config(SERVER, topo, TempDir::new(), |t, d| {
        config(t, d, "maglev", 3).replace("mode = \"xdp\"", "mode = \"splice\"")
    })
}

fn ask_from(port: u16, target: SocketAddr) -> String {
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    sock.set_reuse_address(true).expect("reuse");
    sock.bind(&SocketAddr::new(CLIENT4.parse().expect("client"), port).into()).expect("bind");
    sock.connect_timeout(&target.into(), Duration::from_secs(2))
        .expect("connect through the proxy");
    let mut s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    s.write_all(b"hello\n").expect("write");
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).expect("read");
    line.split_whitespace().next().unwrap_or_default().to_owned()
}

#[test]
fn splice_mode_proxies_tcp_to_the_backend_xdp_would_pick() {
    let s = splice_setup();
    assert!(s.lb.status().starts_with("mode splice"), "{}", s.lb.status());
    let plan = datapath::plan(&s.config()).expect("plan");
    let svc = plan.services.iter().find(|p| p.name == "tcp-v4").expect("service");
    let target = vip(VIP4, 80);
    let _in = s.topo.client.enter();
    let mut names = Vec::new();
    for port in 41000..41300u16 {
        let got = ask_from(port, target);
        let client = SocketAddr::new(CLIENT4.parse().expect("ip"), port);
        let key = lb_userspace::splice::pick::flow_key(client, target, PROTO_TCP);
        let slot = slot_for(flow_hash(&key), svc.record.table_size).expect("slot");
        let id = svc.table[slot as usize];
        let want = format!("b{}", plan.backends[id as usize].addr.to_bytes()[2]);
        assert_eq!(got, want, "client port {port}: splice and XDP pick the same backend");
        names.push(got);
    }
    assert_eq!(count(&names).len(), 3, "{:?}", count(&names));
}

#[test]
fn splice_mode_relays_udp_from_the_vip_to_the_backend_xdp_would_pick() {
    let s = splice_setup();
    let plan = datapath::plan(&s.config()).expect("plan");
    let svc = plan.services.iter().find(|p| p.name == "udp-v4").expect("service");
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
        let key = lb_userspace::splice::pick::flow_key(client, target, lb_common::abi::PROTO_UDP);
        let slot = slot_for(flow_hash(&key), svc.record.table_size).expect("slot");
        let want =
            format!("b{}", plan.backends[svc.table[slot as usize] as usize].addr.to_bytes()[2]);
        assert_eq!(got, want, "client port {port}");
        names.push(got);
    }
    assert_eq!(count(&names).len(), 3, "{:?}", count(&names));
}
