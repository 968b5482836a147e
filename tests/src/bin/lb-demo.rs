//! `cargo xtask demo`: the balancer's main job, once, on this machine.
//!
//! Builds a client, a balancer and three backend namespaces, runs `lb` in
//! the kernel datapath with config/demo.toml, sends 3000 TCP connections and 3000 UDP
//! flows to the VIP, prints where they went and the balancer's counters,
//! and removes everything (also on failure or Ctrl-C: the guards drop).

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpStream, UdpSocket},
    path::Path,
    time::{Duration, Instant},
};

use lb_tests::{
    agent::{start_backends, start_lb},
    topology::Topology,
};

const FLOWS: usize = 3000;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let config = root.join("config/demo.toml");
    let server = std::env::current_exe().expect("exe").with_file_name("lbt-server");
    let control_dir = Path::new("/run/lb-demo");

    println!("building the topology: client, lb and 3 backend namespaces");
    let topo = Topology::new(3);
    let _backends = start_backends(&topo, &server);
    std::fs::create_dir_all(control_dir).expect("control dir");
    println!(
        "starting `lb run --config config/demo.toml` (the kernel datapath; on these veths at the tc hook) in the lb namespace"
    );
    let lb = start_lb(&topo, &config, control_dir);

    let inside = topo.client.enter();
    let vip_tcp: SocketAddr = "10.201.0.100:80".parse().expect("vip");
    let vip_udp: SocketAddr = "10.201.0.100:5353".parse().expect("vip");
    let t = Instant::now();
    let tcp = tally((0..FLOWS).map(|_| tcp_ask(vip_tcp)));
    let tcp_time = t.elapsed();
    let t = Instant::now();
    let udp = tally((0..FLOWS).map(|_| udp_ask(vip_udp)));
    let udp_time = t.elapsed();
    drop(inside);

    println!(
        "\n{FLOWS} TCP connections to {vip_tcp} ({:.1} s) and {FLOWS} UDP flows to {vip_udp} ({:.1} s):",
        tcp_time.as_secs_f64(),
        udp_time.as_secs_f64()
    );
    println!("{:<10} {:>8} {:>8}", "backend", "tcp", "udp");
    for name in tcp.keys().chain(udp.keys()).collect::<std::collections::BTreeSet<_>>() {
        let (t, u) = (tcp.get(name).copied().unwrap_or(0), udp.get(name).copied().unwrap_or(0));
        println!("{name:<10} {t:>8} {u:>8}   ({:.1}% / {:.1}%)", pct(t), pct(u));
    }
    println!("\n`lb status`:\n{}", lb.status());
    println!("tearing down (namespaces, processes and the pinned datapath are removed)");
    let _ = std::fs::remove_dir_all("/sys/fs/bpf/lb-demo");
}

fn pct(n: usize) -> f64 {
    100.0 * n as f64 / FLOWS as f64
}

fn tally(names: impl Iterator<Item = String>) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for n in names {
        *m.entry(n).or_insert(0) += 1;
    }
    m
}

fn tcp_ask(vip: SocketAddr) -> String {
    let Ok(mut s) = TcpStream::connect_timeout(&vip, Duration::from_secs(2)) else {
        return "(failed)".into();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut line = String::new();
    if s.write_all(b"hello\n").is_err() || BufReader::new(&s).read_line(&mut line).is_err() {
        return "(failed)".into();
    }
    line.split_whitespace().next().unwrap_or("(empty)").to_owned()
}

fn udp_ask(vip: SocketAddr) -> String {
    let Ok(s) = UdpSocket::bind("0.0.0.0:0") else {
        return "(failed)".into();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = [0u8; 256];
    match s.send_to(b"hi", vip).and_then(|_| s.recv_from(&mut buf)) {
        Ok((n, _)) => String::from_utf8_lossy(&buf[..n])
            .split_whitespace()
            .next()
            .unwrap_or("(empty)")
            .to_owned(),
        Err(_) => "(failed)".into(),
    }
}
