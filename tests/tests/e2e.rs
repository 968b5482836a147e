//! End to end through the XDP datapath: a client namespace, the balancer
//! namespace running `lb run`, and backend namespaces running `lbt-server`.
//! Needs root.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpStream, UdpSocket},
    path::Path,
    time::Duration,
};

use lb_tests::{
    agent::{TempDir, config, start_backends, start_lb},
    topology::{Topology, VIP4, VIP6, sock},
};

const SERVER: &str = env!("CARGO_BIN_EXE_lbt-server");

/// Asks over one TCP connection; returns (backend name, client address the
/// backend saw, the peer address the client saw).
fn tcp_ask(vip: SocketAddr) -> (String, String, SocketAddr) {
    let mut s = TcpStream::connect_timeout(&vip, Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("connect to {vip}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let peer = s.peer_addr().expect("peer");
    writeln!(s, "hello").expect("write");
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).expect("read");
    let mut it = line.split_whitespace();
    let (name, seen) = (
        it.next().unwrap_or("").to_owned(),
        it.next().unwrap_or("").to_owned(),
    );
    let local = s.local_addr().expect("local").to_string();
    assert_eq!(seen, local, "the backend must see the client's own address");
    (name, seen, peer)
}

fn udp_ask(vip: SocketAddr) -> (String, SocketAddr) {
    let bind = if vip.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let s = UdpSocket::bind(bind).expect("bind");
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    s.send_to(b"hi", vip).expect("send");
    let mut buf = [0u8; 256];
    let (n, from) = s.recv_from(&mut buf).expect("UDP reply through the VIP");
    let text = String::from_utf8_lossy(&buf[..n]);
    (
        text.split_whitespace().next().unwrap_or("").to_owned(),
        from,
    )
}

#[test]
fn tcp_and_udp_over_v4_and_v6_reach_every_backend() {
    let topo = Topology::new(3);
    let dir = TempDir::new();
    let cfg_path = dir.0.join("lb.toml");
    std::fs::write(&cfg_path, config(&topo, &dir.0, "maglev")).expect("write config");
    let _backends = start_backends(&topo, Path::new(SERVER));
    let _lb = start_lb(&topo, &cfg_path, &dir.0);
    let _in_client = topo.client.enter();

    for vip_ip in [VIP4, VIP6] {
        let vip: SocketAddr = sock(vip_ip.parse().unwrap(), 80).parse().unwrap();
        let mut seen = HashMap::new();
        for _ in 0..60 {
            let (name, _, peer) = tcp_ask(vip);
            assert_eq!(peer, vip, "the client must only ever see the VIP");
            *seen.entry(name).or_insert(0) += 1;
        }
        assert_eq!(seen.len(), 3, "TCP {vip}: {seen:?}");

        let vip: SocketAddr = sock(vip_ip.parse().unwrap(), 5353).parse().unwrap();
        let mut seen = HashMap::new();
        for _ in 0..60 {
            let (name, from) = udp_ask(vip);
            assert_eq!(from, vip, "UDP replies must come from the VIP");
            *seen.entry(name).or_insert(0) += 1;
        }
        assert_eq!(seen.len(), 3, "UDP {vip}: {seen:?}");
    }
}
