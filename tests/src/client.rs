//! Clients inside the client namespace, and a running topology with `lb`.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Write},
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    path::Path,
    time::Duration,
};

use lb_common::abi::{Addr, FAMILY_V4, FlowKey, PROTO_UDP};
use lb_userspace::config as lbconfig;

use crate::{
    agent::{Lb, TempDir, config, start_backends, start_lb},
    netns::Proc,
    topology::{Topology, sock},
};

/// A running topology with `lb` serving the first `serving` of its backends.
#[derive(Debug)]
pub struct Setup {
    /// The running agent.
    pub lb: Lb,
    /// The backend servers, backend `i` at `i - 1`.
    pub backends: Vec<Proc>,
    /// Config, log and control socket.
    pub dir: TempDir,
    /// The namespaces.
    pub topo: Topology,
}

impl Setup {
    /// `backends` backend namespaces running `server` (lbt-server), `lb`
    /// serving the first `serving` with `tcp_scheduler`, no probes.
    pub fn new(server: &str, backends: usize, serving: usize, tcp_scheduler: &str) -> Self {
        let topo = Topology::new(backends);
        let dir = TempDir::new();
        Self::with_config(server, topo, dir, |t, d| config(t, d, tcp_scheduler, serving))
    }

    /// As [`Setup::new`], with the config written by `cfg`.
    pub fn with_config(
        server: &str,
        topo: Topology,
        dir: TempDir,
        cfg: impl Fn(&Topology, &Path) -> String,
    ) -> Self {
        std::fs::write(dir.0.join("lb.toml"), cfg(&topo, &dir.0)).expect("write config");
        let backends = start_backends(&topo, Path::new(server));
        let lb = start_lb(&topo, &dir.0.join("lb.toml"), &dir.0);
        Self { lb, backends, dir, topo }
    }

    /// The config `lb` was started with (or last given).
    pub fn config(&self) -> lbconfig::Config {
        lbconfig::load(&self.dir.0.join("lb.toml")).expect("config")
    }
}

/// `ip:port` of a VIP.
pub fn vip(ip: &str, port: u16) -> SocketAddr {
    sock(ip.parse().expect("vip"), port).parse().expect("vip")
}

/// One TCP connection to a VIP, kept open to ask again.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Conn {
    /// Connects (2 s timeout), asserting the peer is the VIP.
    pub fn open(vip: SocketAddr) -> Self {
        let stream = TcpStream::connect_timeout(&vip, Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("connect to {vip}: {e}"));
        stream.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
        assert_eq!(stream.peer_addr().expect("peer"), vip, "the client must only ever see the VIP");
        let reader = BufReader::new(stream.try_clone().expect("clone"));
        Self { stream, reader }
    }

    /// The backend's name; asserts the backend saw the client's own address.
    /// Wraps a connected stream (no peer check).
    pub fn from_stream(stream: TcpStream) -> Self {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let reader = BufReader::new(stream.try_clone().expect("clone"));
        Self { stream, reader }
    }

    /// Sends a line; the answering backend's name, or None on any failure.
    pub fn try_ask(&mut self) -> Option<String> {
        self.exchange().ok()?.split_whitespace().next().map(str::to_owned)
    }

    /// One line out, the answer line back.
    fn exchange(&mut self) -> std::io::Result<String> {
        self.stream.write_all(b"hello\n")?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        Ok(line)
    }

    /// Sends a line; returns the answering backend's name.
    pub fn ask(&mut self) -> String {
        let line = self.exchange().expect("an answer over the connection");
        let mut it = line.split_whitespace();
        let name = it.next().unwrap_or_default().to_owned();
        let seen = it.next().unwrap_or_default();
        assert_eq!(
            seen,
            self.stream.local_addr().expect("local").to_string(),
            "client address preserved"
        );
        name
    }
}

/// One UDP flow (one client socket) to a VIP.
#[derive(Debug)]
pub struct Flow {
    /// The client socket.
    pub sock: UdpSocket,
    vip: SocketAddr,
}

impl Flow {
    /// A fresh socket (new source port, so a new flow).
    pub fn open(vip: SocketAddr) -> Self {
        let sock =
            UdpSocket::bind(if vip.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).expect("bind");
        sock.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
        Self { sock, vip }
    }

    /// Sends a datagram; returns the answering backend's name.
    pub fn ask(&self) -> String {
        self.sock.send_to(b"hi", self.vip).expect("send");
        let mut buf = [0u8; 256];
        let (n, from) = self
            .sock
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("UDP reply from {}: {e}", self.vip));
        assert_eq!(from, self.vip, "UDP replies must come from the VIP");
        String::from_utf8_lossy(&buf[..n]).split_whitespace().next().unwrap_or_default().to_owned()
    }

    /// The flow's 5-tuple as the balancer sees it (IPv4 only).
    pub fn key(&self) -> FlowKey {
        let local = self.sock.local_addr().expect("local");
        let client: IpAddr = crate::topology::CLIENT4.parse().expect("client");
        FlowKey {
            src: Addr::from(client),
            dst: Addr::from(self.vip.ip()),
            src_port_be: local.port().to_be(),
            dst_port_be: self.vip.port().to_be(),
            proto: PROTO_UDP,
            family: FAMILY_V4,
            _pad: [0; 2],
        }
    }
}

/// How many times each name occurs.
pub fn count<'a>(names: impl IntoIterator<Item = &'a String>) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for n in names {
        *m.entry(n.clone()).or_insert(0) += 1;
    }
    m
}
