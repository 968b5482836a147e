//! The datapath's hooks in namespaces at the settings a new veth has (TX
//! checksum offload and TSO on, GRO off, no XDP program: no NAPI): at the
//! tc hook, bulk transfers both ways, checked end to end, carried as
//! super-packets with partial checksums; at the XDP hook, the frames such a
//! veth loses are counted and explained; both hooks in one agent. Needs
//! root.

use std::{
    net::UdpSocket,
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use lb_tests::{
    agent::{TempDir, config, pin_dir},
    client::{Conn, Flow, Setup, vip},
    inproc::Server,
    mode::Mode,
    stream::BLOCK,
    topology::{Topology, VIP4, VIP6, backend4, backend6, sock},
};

const SERVER: &str = env!("CARGO_BIN_EXE_lbt-server");

/// Blocks (of [`BLOCK`] bytes) sent each way.
const BLOCKS: u64 = 32;

/// lb at the tc hook in front of one backend the test serves itself: it
/// reads what the client sends, answers with its digest, then sends
/// `download` blocks of its own.
fn one_backend(download: u64) -> (Setup, Vec<Server>) {
    let topo = Topology::new(1);
    Mode::Tc.prepare(&topo);
    let s = Setup::launch(None, topo, TempDir::new(), &[], |t, d| {
        Mode::Tc.config(&config(t, d, "maglev", 1))
    });
    assert_eq!(s.mode, Mode::Tc, "lb serves at the tc hook:\n{}", s.lb.status());
    let serve = lb_tests::bulk::server(download, Default::default());
    let servers = [backend4(1), backend6(1)]
        .into_iter()
        .map(|ip| {
            let addr: SocketAddr = sock(ip, 80).parse().expect("backend address");
            Server::start(&s.topo.backends[0], addr, serve.clone())
        })
        .collect();
    (s, servers)
}

/// Sends `up` blocks to `target` and receives `down`, checking both by
/// digest.
fn transfer(target: SocketAddr, up: u64, down: u64) {
    let mut c = TcpStream::connect_timeout(&target, Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("connect to {target}: {e}"));
    lb_tests::bulk::transfer(&mut c, up, down, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{target}: {e}"));
}

/// 32 MB each way over IPv4 and IPv6 with default veth offloads: the
/// endpoints hand the balancer TSO super-packets with partial checksums,
/// and the backend and the client accept every byte. The balancer's own
/// counters show it forwarded them whole (on average larger than a
/// 1500-byte frame), not one frame at a time.
#[test]
fn bulk_transfers_at_default_veth_offloads_arrive_intact_as_super_packets() {
    let (s, _servers) = one_backend(BLOCKS);
    {
        let _inside = s.topo.client.enter();
        for ip in [VIP4, VIP6] {
            transfer(vip(ip, 80), BLOCKS, BLOCKS);
        }
    }
    let report = s.lb.report();
    let backend = report
        .services
        .iter()
        .find(|svc| svc.name == "tcp-v4")
        .and_then(|svc| svc.backends.first())
        .expect("the tcp-v4 service's backend");
    let t = backend.traffic;
    let sent = BLOCKS * BLOCK as u64;
    assert!(t.bytes >= sent, "{} bytes counted for {sent} sent", t.bytes);
    let mean = t.bytes / t.packets.max(1);
    assert!(
        mean > 1514,
        "the tc hook should see super-packets at default offloads: {} packets, {} bytes (mean {mean})",
        t.packets,
        t.bytes
    );
}

/// XDP at default veth settings, the first thing a newcomer tries: every
/// frame redirected into the backend's veth is lost, because its peer has
/// no NAPI. `lb status` (whose report the metrics render) and the log must
/// say so, and what to do about it.
#[test]
fn frames_lost_after_an_xdp_redirect_are_counted_and_explained() {
    let topo = Topology::new(1);
    topo.default_offloads();
    let s = Setup::launch(None, topo, TempDir::new(), &[], |t, d| config(t, d, "maglev", 1));
    assert_eq!(s.mode, Mode::Xdp, "{}", s.lb.status());
    let sent = 50u64;
    {
        let _inside = s.topo.client.enter();
        let sock = UdpSocket::bind("0.0.0.0:0").expect("udp socket");
        // The first frame finds no neighbour entry for the backend and goes
        // through the kernel, which resolves it; the rest take XDP_REDIRECT.
        sock.send_to(b"resolve", vip(VIP4, 5353)).expect("send");
        std::thread::sleep(Duration::from_millis(300));
        for _ in 0..sent {
            sock.send_to(b"lost?", vip(VIP4, 5353)).expect("send");
        }
    }
    // Where the kernel counts them depends on the driver and its version:
    // on the target (xdp_xmit errors) or the interface they came in on.
    let lost = || s.lb.report().interfaces.iter().map(|i| i.lost.total()).sum::<u64>();
    let deadline = Instant::now() + Duration::from_secs(5);
    while lost() < sent && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let ethtool = s.topo.lb.exec(&["ethtool", "-S", "lb-b1"]);
    assert!(
        lost() >= sent,
        "{} lost for {sent} frames redirected into lb-b1; ethtool -S lb-b1:\n{}\n{}",
        lost(),
        String::from_utf8_lossy(&ethtool.stdout),
        s.lb.status()
    );
    let status = s.lb.status();
    assert!(status.contains("lost frames:") && status.contains("attach = \"tc\""), "{status}");
    // The log names the fix, within a sweep or two.
    while !s.lb.log().contains("frames lost") && Instant::now() < deadline + Duration::from_secs(3)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = s.lb.log();
    let line = log.lines().find(|l| l.contains("frames lost")).unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains("gro on") && line.contains("attach = \"tc\""), "{line}");
}

/// Veths come and go (pods do): one made after the agent started is
/// recorded for `bpf_redirect_peer` within a sweep or two, and forgotten
/// once it is gone.
#[test]
fn veths_made_after_start_are_recorded_for_redirect_peer() {
    let topo = Topology::new(1);
    Mode::Tc.prepare(&topo);
    let s = Setup::launch(None, topo, TempDir::new(), &[], |t, d| {
        Mode::Tc.config(&config(t, d, "maglev", 1))
    });
    assert_eq!(s.mode, Mode::Tc, "{}", s.lb.status());
    let pin = pin_dir(&s.dir.0).join("maps").join(lb_common::abi::MAP_PEER_DEVICES);
    let recorded = || -> Vec<u32> {
        let data = aya::maps::MapData::from_pin(&pin).expect("the pinned peer-device map");
        let map: aya::maps::HashMap<_, u32, u32> =
            aya::maps::HashMap::try_from(aya::maps::Map::HashMap(data)).expect("a hash map");
        map.keys().filter_map(Result::ok).collect()
    };
    let wait = |what: &str, ok: &dyn Fn(&[u32]) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let now = recorded();
            if ok(&now) {
                return;
            }
            assert!(Instant::now() < deadline, "{what}: recorded {now:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let old = s.topo.lb.ifindex("lb-b1");
    wait("the veths at start", &|r| r.contains(&old));
    s.topo.lb.ip("link add lbt-new type veth peer name lbt-newp");
    let new = s.topo.lb.ifindex("lbt-new");
    wait("a veth made after start", &|r| r.contains(&new) && r.contains(&old));
    s.topo.lb.ip("link del lbt-new");
    wait("a veth removed", &|r| !r.contains(&new) && r.contains(&old));
}

/// One agent, two hooks (a NIC uplink at XDP and veths at tc, as a gateway
/// in front of pods runs): the client side at native XDP by
/// `[agent.attach_by_interface]`, the backend veths at tc by `auto`. Every
/// request over TCP and UDP, both families, is answered, by both backends;
/// status says which hook each interface has and why; nothing is lost.
#[test]
fn an_xdp_uplink_and_tc_veths_serve_together() {
    let topo = Topology::new(2);
    // The backends' veths receive what XDP redirects from the uplink.
    topo.peer_xdp();
    let s = Setup::launch(Some(SERVER), topo, TempDir::new(), &[], |t, d| {
        let cfg = config(t, d, "maglev", 2).replacen("attach = \"native\"", "attach = \"auto\"", 1);
        let at = cfg.find("\n[[service]]").expect("a service table");
        format!("{}\n[agent.attach_by_interface]\nlb-cli = \"native\"\n{}", &cfg[..at], &cfg[at..])
    });
    let report = s.lb.report();
    let hooks: Vec<(String, String)> =
        report.interfaces.iter().map(|i| (i.name.clone(), i.attach.clone())).collect();
    assert_eq!(
        hooks,
        [("lb-cli", "native"), ("lb-b1", "tc"), ("lb-b2", "tc")]
            .map(|(i, h)| (i.to_owned(), h.to_owned())),
        "{}",
        s.lb.status()
    );
    let why = &report.interfaces[0].why;
    assert!(why.contains("agent.attach_by_interface.lb-cli = \"native\""), "{why}");
    let mut failures = Vec::new();
    {
        let _inside = s.topo.client.enter();
        for ip in [VIP4, VIP6] {
            let mut tcp: Vec<String> = (0..40).map(|_| Conn::open(vip(ip, 80)).ask()).collect();
            let mut udp: Vec<String> = (0..40).map(|_| Flow::open(vip(ip, 5353)).ask()).collect();
            for (what, names) in [("tcp", &mut tcp), ("udp", &mut udp)] {
                names.sort();
                names.dedup();
                if names.as_slice() != ["b1", "b2"] {
                    failures.push(format!("{what} to {ip}: answered by {names:?}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:?}\n{}", s.lb.status());
    let lost: u64 = s.lb.report().interfaces.iter().map(|i| i.lost.total()).sum();
    assert_eq!(lost, 0, "{}", s.lb.status());
}
