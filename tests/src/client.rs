//! Clients inside the client namespace, and a running topology with `lb`.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Write},
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    path::Path,
    time::Duration,
};

use lb_common::abi::{FlowKey, PROTO_UDP};
use lb_userspace::config as lbconfig;

use crate::{
    agent::{Lb, TempDir, config, start_backends, start_lb_via},
    mode::Mode,
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
    /// The mode `lb` serves in (from its status).
    pub mode: Mode,
}

impl Setup {
    /// `backends` backend namespaces running `server` (lbt-server), `lb`
    /// serving the first `serving` with `tcp_scheduler`, no probes.
    pub fn new(server: &str, backends: usize, serving: usize, tcp_scheduler: &str) -> Self {
        Self::in_mode(Mode::Xdp, server, backends, serving, tcp_scheduler)
    }

    /// As [`Setup::new`], with `lb` serving in `mode` (asserted from its
    /// status).
    pub fn in_mode(
        mode: Mode,
        server: &str,
        backends: usize,
        serving: usize,
        tcp_scheduler: &str,
    ) -> Self {
        let topo = Topology::new(backends);
        mode.prepare(&topo);
        let s = Self::with_config(server, topo, TempDir::new(), |t, d| {
            mode.config(&config(t, d, tcp_scheduler, serving))
        });
        assert_eq!(s.mode, mode, "lb serves in the mode asked for:\n{}", s.lb.status());
        s
    }

    /// `n` backends, all served in `mode` (asserted from its status), the
    /// TCP services probed with `tcp` and the UDP ones with `udp` (each a
    /// `[service.health]` table).
    pub fn probed(mode: Mode, server: &str, n: usize, tcp: &str, udp: &str) -> Self {
        let topo = Topology::new(n);
        mode.prepare(&topo);
        let s = Self::with_config(server, topo, TempDir::new(), |t, d| {
            mode.config(&crate::agent::config_with_probes(t, d, "maglev", n, tcp, udp))
        });
        assert_eq!(s.mode, mode, "lb serves in the mode asked for:\n{}", s.lb.status());
        s
    }

    /// As [`Setup::new`], with the config written by `cfg`.
    pub fn with_config(
        server: &str,
        topo: Topology,
        dir: TempDir,
        cfg: impl Fn(&Topology, &Path) -> String,
    ) -> Self {
        Self::launch(Some(server), topo, dir, &[], cfg)
    }

    /// `lb` with `agent.mode = agent_mode` over `backends` backend
    /// namespaces (all served), started through `wrapper`; `server` (lbt-server) in every backend
    /// namespace, or none where the test serves them itself.
    pub fn splice(
        server: Option<&str>,
        backends: usize,
        wrapper: &[&str],
        agent_mode: &str,
    ) -> Self {
        let topo = Topology::new(backends);
        Mode::Splice.prepare(&topo);
        Self::launch(server, topo, TempDir::new(), wrapper, |t, d| {
            config(t, d, "maglev", backends)
                .replace("mode = \"xdp\"", &format!("mode = \"{agent_mode}\""))
        })
    }

    /// The general form: `server` (lbt-server) in every backend namespace,
    /// or none where the test serves the backends itself; `lb run` started
    /// through `wrapper` (see [`start_lb_via`]); the config written by `cfg`.
    pub fn launch(
        server: Option<&str>,
        topo: Topology,
        dir: TempDir,
        wrapper: &[&str],
        cfg: impl Fn(&Topology, &Path) -> String,
    ) -> Self {
        std::fs::write(dir.0.join("lb.toml"), cfg(&topo, &dir.0)).expect("write config");
        let backends =
            server.map(|server| start_backends(&topo, Path::new(server))).unwrap_or_default();
        let lb = start_lb_via(&topo, &dir.0.join("lb.toml"), &dir.0, wrapper);
        let status = lb.status();
        let mode = Mode::of_status(&status)
            .unwrap_or_else(|| panic!("lb status names no known mode:\n{status}"));
        Self { lb, backends, dir, topo, mode }
    }

    /// A TCP connection to `vip` through this setup's datapath.
    pub fn conn(&self, vip: SocketAddr) -> Conn {
        Conn::open_via(vip, self.mode)
    }

    /// The backends answering `n` new flows to `ip` from the client
    /// namespace, by name: TCP connections to port 80 (`proto` `"tcp"`) or
    /// UDP flows to port 5353 (`"udp"`), the ports of [`config`]'s services.
    pub fn answering(&self, proto: &str, ip: &str, n: usize) -> HashMap<String, usize> {
        let _in = self.topo.client.enter();
        let names: Vec<String> = (0..n)
            .map(|_| match proto {
                "tcp" => self.conn(vip(ip, 80)).ask(),
                _ => Flow::open(vip(ip, 5353)).ask(),
            })
            .collect();
        count(&names)
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
    /// Decides which peer address the backend must report.
    mode: Mode,
}

impl Conn {
    /// Connects (2 s timeout) through the XDP datapath, asserting the peer
    /// is the VIP.
    pub fn open(vip: SocketAddr) -> Self {
        Self::open_via(vip, Mode::Xdp)
    }

    /// Connects (2 s timeout) through `mode`'s datapath, asserting the peer
    /// is the VIP.
    pub fn open_via(vip: SocketAddr, mode: Mode) -> Self {
        let stream = TcpStream::connect_timeout(&vip, Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("connect to {vip}: {e}"));
        stream.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
        assert_eq!(stream.peer_addr().expect("peer"), vip, "the client must only ever see the VIP");
        let reader = BufReader::new(stream.try_clone().expect("clone"));
        Self { stream, reader, mode }
    }

    /// As [`Conn::open_via`], from the client's address of `vip`'s family
    /// and port `port`: a test that predicts the backend knows the whole
    /// 5-tuple.
    pub fn open_from(port: u16, vip: SocketAddr, mode: Mode) -> Self {
        Self::open_bound(SocketAddr::new(client_addr(vip), port), vip, mode)
    }

    /// As [`Conn::open_via`], from the client address and port `client`
    /// (port 0: any), which the client namespace must have.
    pub fn open_bound(client: SocketAddr, vip: SocketAddr, mode: Mode) -> Self {
        let stream = connect_from(client, vip, Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("connect {client} to {vip}: {e}"));
        stream.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
        let reader = BufReader::new(stream.try_clone().expect("clone"));
        Self { stream, reader, mode }
    }

    /// This connection, its answers awaited for `limit` rather than 2 s.
    pub fn patient(self, limit: Duration) -> Self {
        self.stream.set_read_timeout(Some(limit)).expect("timeout");
        self
    }

    /// Wraps a stream connected through the XDP datapath (no peer check).
    pub fn from_stream(stream: TcpStream) -> Self {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let reader = BufReader::new(stream.try_clone().expect("clone"));
        Self { stream, reader, mode: Mode::Xdp }
    }

    /// The client's end of the connection.
    pub fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().expect("local address")
    }

    /// The connection itself, for a test that speaks to it directly.
    pub fn into_stream(self) -> TcpStream {
        self.stream
    }

    /// Sends a line; the answering backend's name, or None on any failure.
    pub fn try_ask(&mut self) -> Option<String> {
        self.exchange().ok()?.split_whitespace().next().map(str::to_owned)
    }

    /// One line out, the answer line back.
    fn exchange(&mut self) -> std::io::Result<String> {
        self.exchange_line("hello\n")
    }

    /// `line` (with its newline) out, the answer line back.
    pub fn exchange_line(&mut self, line: &str) -> std::io::Result<String> {
        self.stream.write_all(line.as_bytes())?;
        let mut answer = String::new();
        self.reader.read_line(&mut answer)?;
        Ok(answer)
    }

    /// Sends a line; returns the answering backend's name (`b<i>`). Asserts
    /// the backend saw the peer the mode gives it: the client's own address
    /// and port in XDP mode, the balancer's address in splice mode.
    pub fn ask(&mut self) -> String {
        let line = self.exchange().expect("an answer over the connection");
        assert!(!line.is_empty(), "the connection closed without an answer");
        let mut it = line.split_whitespace();
        let name = it.next().unwrap_or_default().to_owned();
        let seen = it.next().unwrap_or_default();
        let local = self.stream.local_addr().expect("local");
        match self.mode {
            Mode::Xdp | Mode::Tc => {
                assert_eq!(seen, local.to_string(), "client address preserved")
            }
            Mode::Splice => {
                let i = name.strip_prefix('b').and_then(|i| i.parse().ok()).unwrap_or(0);
                let seen: SocketAddr =
                    seen.parse().unwrap_or_else(|_| panic!("backend answer {line:?}"));
                assert_eq!(
                    seen.ip(),
                    Mode::Splice.peer_at_backend(local, i),
                    "in splice mode the backend sees the proxy, not the client {local}"
                );
            }
        }
        name
    }
}

/// A TCP connection from `local` (port 0: any) to `target`, bound with
/// SO_REUSEADDR (a port reused within TIME_WAIT of its last connection),
/// connecting for at most `timeout`.
pub fn connect_from(
    local: SocketAddr,
    target: SocketAddr,
    timeout: Duration,
) -> std::io::Result<TcpStream> {
    let sock =
        socket2::Socket::new(socket2::Domain::for_address(local), socket2::Type::STREAM, None)?;
    sock.set_reuse_address(true)?;
    sock.bind(&local.into())?;
    sock.connect_timeout(&target.into(), timeout)?;
    Ok(sock.into())
}

/// `f` of every item, on `threads` threads each inside namespace `ns`
/// (items taken in turn, so a slow one holds up only its thread); the
/// results in item order.
pub fn in_parallel<T: Send, R: Send>(
    ns: &str,
    items: Vec<T>,
    threads: usize,
    f: impl Fn(T) -> R + Sync,
) -> Vec<R> {
    let n = items.len();
    let queue = std::sync::Mutex::new(items.into_iter().enumerate());
    let results = std::sync::Mutex::new(Vec::with_capacity(n));
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                let _inside = crate::netns::enter(ns);
                loop {
                    let next = queue.lock().expect("queue").next();
                    let Some((i, item)) = next else { break };
                    let r = f(item);
                    results.lock().expect("results").push((i, r));
                }
            });
        }
    });
    let mut results = results.into_inner().expect("results");
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// One UDP flow (one client socket) to a VIP.
#[derive(Debug)]
pub struct Flow {
    /// The client socket.
    pub sock: UdpSocket,
    vip: SocketAddr,
}

impl Flow {
    /// A fresh socket on a source port this process has not used yet, so
    /// a new flow: the kernel's own choice may repeat a port a moment later,
    /// which the balancer rightly takes for the same, still live, UDP flow.
    pub fn open(vip: SocketAddr) -> Self {
        use std::sync::atomic::{AtomicU16, Ordering::Relaxed};
        /// The next port to try; cycles through `FIRST..LAST` (12 000
        /// ports, more than any test opens flows).
        const FIRST: u16 = 20_000;
        const LAST: u16 = 32_000;
        static NEXT: AtomicU16 = AtomicU16::new(FIRST);
        let any: std::net::IpAddr = if vip.is_ipv4() { [0u8; 4].into() } else { [0u16; 8].into() };
        let sock = (0..100)
            .find_map(|_| {
                let port = NEXT.fetch_add(1, Relaxed);
                if port >= LAST {
                    NEXT.store(FIRST, Relaxed);
                }
                UdpSocket::bind(SocketAddr::new(any, port)).ok()
            })
            .expect("a free UDP port");
        sock.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
        Self { sock, vip }
    }

    /// A flow over an existing socket (a clone of another flow's, to ask
    /// from another thread).
    pub fn from_socket(sock: UdpSocket, vip: SocketAddr) -> Self {
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

    /// The flow's 5-tuple as the balancer sees it (the socket is bound to
    /// the wildcard address, so the client's address of the VIP's family).
    pub fn key(&self) -> FlowKey {
        let local = self.sock.local_addr().expect("local");
        FlowKey::between(SocketAddr::new(client_addr(self.vip), local.port()), self.vip, PROTO_UDP)
    }
}

/// The client namespace's address of `vip`'s family (IPv4 or IPv6).
pub fn client_addr(vip: SocketAddr) -> IpAddr {
    let client = if vip.is_ipv4() { crate::topology::CLIENT4 } else { crate::topology::CLIENT6 };
    client.parse().expect("client address")
}

/// How many times each name occurs.
pub fn count<'a>(names: impl IntoIterator<Item = &'a String>) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for n in names {
        *m.entry(n.clone()).or_insert(0) += 1;
    }
    m
}

/// New connections to a VIP, one after another from the client namespace,
/// each asked once, until stopped (or dropped, as when a test fails):
/// traffic running through a change.
#[derive(Debug)]
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Connections finished so far, answered or not.
    done: std::sync::Arc<std::sync::atomic::AtomicU64>,
    thread: Option<std::thread::JoinHandle<(u64, u64)>>,
}

impl Load {
    /// Starts it in namespace `ns`; each connect may take `timeout`, and
    /// so may its answer.
    pub fn start(ns: &str, vip: SocketAddr, timeout: Duration) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (stopped, finished, ns) = (stop.clone(), done.clone(), ns.to_owned());
        let thread = std::thread::spawn(move || {
            let _inside = crate::netns::enter(&ns);
            let (mut ok, mut failed) = (0, 0);
            while !stopped.load(Relaxed) {
                let answered = TcpStream::connect_timeout(&vip, timeout)
                    .ok()
                    .and_then(|c| {
                        let mut c = Conn::from_stream(c);
                        c.stream.set_read_timeout(Some(timeout)).ok()?;
                        c.try_ask()
                    })
                    .is_some();
                if answered {
                    ok += 1
                } else {
                    failed += 1
                }
                finished.fetch_add(1, Relaxed);
            }
            (ok, failed)
        });
        Self { stop, done, thread: Some(thread) }
    }

    /// Returns once `more` connections have finished after this call (so
    /// they ran through whatever happens meanwhile), or panics after
    /// `within`.
    pub fn wait_for(&self, more: u64, within: Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        let target = self.done.load(Relaxed) + more;
        let deadline = std::time::Instant::now() + within;
        while self.done.load(Relaxed) < target {
            assert!(
                std::time::Instant::now() < deadline,
                "only {} of {more} connections finished within {within:?}",
                more + self.done.load(Relaxed) - target
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops it: (answered, failed) connections.
    pub fn stop(mut self) -> (u64, u64) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().map(|t| t.join().expect("load thread")).unwrap_or_default()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        // The thread ends after its current connection.
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Raises this process's open-file limit to at least `n` (a test holding
/// many connections open at once: two descriptors per [`Conn`]).
pub fn allow_open_files(n: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if soft < n {
        setrlimit(Resource::RLIMIT_NOFILE, n.max(hard), n.max(hard))
            .unwrap_or_else(|e| panic!("raising RLIMIT_NOFILE to {n} (now {soft}/{hard}): {e}"));
    }
}
