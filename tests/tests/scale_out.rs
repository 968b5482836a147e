//! Scaling out (issue 13): three lb hosts behind a router that spreads the
//! VIP over them by ECMP, each host's BIRD announcing it by BGP with BFD
//! (100 ms x 3), backends on a LAN answering straight to the router
//! (topology: `lb_tests::scale_out`; IPv4 only, lb and `lb decap` at the tc
//! hook at default veth offloads).
//!
//! Direct server return (`dsr-ipip`): the router has three next hops and
//! new connections spread over all hosts; every host gives 10 000 flows the
//! backend the userspace plan predicts, and 300 real connections land
//! there whichever host carried them; losing host 2 (its uplink down: BFD
//! notices) and getting it back breaks none of 50 established connections,
//! and new connections fail only until the router drops the lost path; a
//! backend crash is seen by every host, and how long they disagree is
//! measured. NAT mode on the same topology shows why it does not scale out
//! this way: a reply must come back through the host holding the flow's
//! reverse-NAT state. Needs root and bird2; prints the measured numbers.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::Path,
    sync::Mutex,
    time::{Duration, Instant},
};

use lb_common::abi::{FlowKey, PROTO_TCP};
use lb_tests::{
    agent::{HealthChange, Lb, TempDir, agent_table, pin_dir, start_lb_in, test_bpffs, wait_for},
    client::{Conn, in_parallel},
    mode::Mode,
    netns::{NetNs, Proc},
    predict,
    scale_out::{self, CLIENT, HOSTS, PROTOCOL, ROUTER_LAN, ScaleOut, TABLE},
    topology::VIP4,
    under_load::UnderLoad,
};

const SERVER: &str = env!("CARGO_BIN_EXE_lbt-server");
/// The service's probes: a crashed backend is down after 2 failed probes.
const PROBES: &str = "kind = \"tcp\"\ninterval = \"100ms\"\ntimeout = \"90ms\"\nrise = 2\nfall = 2";
/// The goal for new connections after a host is lost: BFD's 300 ms, the
/// BGP withdrawal and the router's kernel, within a second.
const RECOVERY_GOAL: Duration = Duration::from_secs(1);
/// Both tests measure time: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn vip() -> SocketAddr {
    format!("{VIP4}:80").parse().expect("vip")
}

/// Host `k`'s config: the same service (same backends, same order) on
/// every host, so the Maglev tables match; its own tunnel source.
fn config(k: usize, dir: &Path, forwarding: &str) -> String {
    let mut s = Mode::Tc.config(&agent_table(&["u0".into(), "lan".into()], dir));
    s += "vip_routes = \"none\"\n";
    s += &format!("[agent.announce]\ntable = {TABLE}\nprotocol = {PROTOCOL}\n");
    s += &format!(
        "\n[[service]]\nname = \"web\"\nvip = \"{VIP4}:80\"\nforwarding = \"{forwarding}\"\n"
    );
    if forwarding == "dsr-ipip" {
        s += &format!("tunnel_source = \"{}/32\"\n", scale_out::lan_addr(k));
    }
    s += &format!("[service.health]\n{PROBES}\n");
    for i in 1..=3 {
        s += &format!("[[service.backend]]\naddr = \"{}:80\"\n", scale_out::backend(i));
    }
    s
}

/// The running pieces, dropped before the namespaces (declared after them).
struct Hosts {
    lbs: Vec<Lb>,
    _birds: Vec<lb_tests::bird::Bird>,
    _decaps: Vec<Proc>,
    servers: Vec<Option<Proc>>,
    dirs: Vec<TempDir>,
}

/// Backends (servers, and for DSR the VIP on `lo` and `lb decap`), the lb
/// hosts and BIRD, up with every backend healthy on every host and the
/// router holding all three paths.
fn start(net: &ScaleOut, forwarding: &str) -> Hosts {
    test_bpffs();
    let dirs: Vec<TempDir> = (0..HOSTS * 2 + 1).map(|_| TempDir::new()).collect();
    let mut servers = Vec::new();
    let mut decaps = Vec::new();
    for (i, ns) in (1..).zip(&net.backends) {
        servers.push(Some(server(ns, i)));
        if forwarding == "dsr-ipip" {
            lb_tests::decap::hold_vip(ns, VIP4, "lan");
            let pins = pin_dir(&dirs[HOSTS + i - 1].0).to_string_lossy().into_owned();
            decaps.push(lb_tests::decap::spawn(ns, "lan", "tc", &pins));
        }
    }
    let mut lbs = Vec::new();
    for (k, ns) in (1..).zip(&net.hosts) {
        let dir: &Path = &dirs[k - 1].0;
        std::fs::write(dir.join("lb.toml"), config(k, dir, forwarding)).expect("config");
        lbs.push(start_lb_in(ns, &dir.join("lb.toml"), dir, &[]));
    }
    for lb in &lbs {
        for i in 1..=3 {
            lb.wait_health(
                "web",
                &format!("{}:80", scale_out::backend(i)),
                "up",
                Duration::from_secs(20),
            );
        }
    }
    let birds = net.start_bird(&dirs[HOSTS * 2].0);
    let started = Instant::now();
    wait_for(Duration::from_secs(30), "three next hops for the VIP at the router", || {
        (net.next_hops(VIP4).len() == HOSTS).then_some(())
    });
    eprintln!("BGP up, the router holds 3 paths: {:?}", started.elapsed());
    Hosts { lbs, _birds: birds, _decaps: decaps, servers, dirs }
}

fn server(ns: &NetNs, i: usize) -> Proc {
    ns.spawn(&[SERVER, &format!("b{i}"), "80"])
}

impl Hosts {
    /// The host (1-based) whose flow table holds the TCP flow from
    /// `client`, if exactly one does.
    fn carrier(&self, client: SocketAddr) -> Option<usize> {
        let pinned = self.pinning(client);
        (pinned.len() == 1).then(|| pinned[0])
    }

    /// The hosts (1-based) whose flow tables hold the TCP flow from
    /// `client`.
    fn pinning(&self, client: SocketAddr) -> Vec<usize> {
        (1..)
            .zip(&self.lbs)
            .filter(|(_, lb)| lb.flow(client, vip(), "tcp").source == "flow-table")
            .map(|(k, _)| k)
            .collect()
    }

    /// Every host's count of new flows of the service.
    fn new_flows(&self) -> Vec<u64> {
        self.lbs
            .iter()
            .map(|lb| {
                let report = lb.report();
                report.services.iter().find(|s| s.name == "web").map_or(0, |s| s.traffic.new_flows)
            })
            .collect()
    }
}

/// `b<i>` of a backend `ip:port` as `lb flow` writes it (see
/// [`scale_out::backend`]).
fn name_of(addr: &str) -> String {
    let third = addr.split('.').nth(2).unwrap_or_default();
    format!("b{third}")
}

#[test]
fn dsr_spreads_over_three_lb_hosts_and_survives_losing_one() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let net = ScaleOut::new(3, ROUTER_LAN);
    let hosts = start(&net, "dsr-ipip");
    let hops = net.next_hops(VIP4);
    let want: Vec<String> = (1..=HOSTS).map(scale_out::uplink).collect();
    assert_eq!(hops, want, "the router's ECMP route to the VIP");

    // 1 and 2: 300 connections from chosen ports, each at its predicted
    // backend, spread over every host.
    let cfg = lb_userspace::config::load(&hosts.dirs[0].0.join("lb.toml")).expect("config");
    let plan = lb_userspace::datapath::plan(&cfg).expect("plan");
    let client: std::net::IpAddr = CLIENT.parse().expect("client");
    let before = hosts.new_flows();
    let ports: Vec<u16> = (40_000..40_300).collect();
    let conns = in_parallel(net.client.name(), ports.clone(), 6, |port| {
        let mut c = Conn::open_bound(SocketAddr::new(client, port), vip(), Mode::Tc);
        let name = c.ask();
        (c, name)
    });
    let mut per_host = [0usize; HOSTS];
    for ((_, name), port) in conns.iter().zip(&ports) {
        let from = SocketAddr::new(client, *port);
        let key = FlowKey::between(from, vip(), PROTO_TCP);
        assert_eq!(*name, predict::backend(&plan, "web", &key), "connection from {from}");
        let k = hosts.carrier(from).unwrap_or_else(|| panic!("no single host pins {from}"));
        per_host[k - 1] += 1;
    }
    drop(conns);
    let after = hosts.new_flows();
    let counted: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    eprintln!(
        "300 connections per lb host (flow tables): {per_host:?}, new flows counted: {counted:?}"
    );
    assert!(per_host.iter().all(|&n| n > 0), "ECMP spreads over every host: {per_host:?}");
    assert!(counted.iter().all(|&n| n > 0), "every host counted new flows: {counted:?}");

    // 2: the same backend for 10 000 flows on every host, as predicted.
    same_backend_everywhere(&hosts, &plan);

    // 3: host 2 lost under load, then back.
    failover(&net, &hosts);

    // 4: a backend crash, seen by every host.
    let mut hosts = hosts;
    backend_crash(&net, &mut hosts);
    for (k, lb) in (1..).zip(&hosts.lbs) {
        for reason in ["encap_failed", "no_route", "no_neighbour", "too_big"] {
            assert_eq!(exception(lb, reason), 0, "host {k}: {reason}");
        }
    }
    drop(hosts);
}

/// Packets `lb` counted under exception `reason`.
fn exception(lb: &Lb, reason: &str) -> u64 {
    lb.report().exceptions.iter().find(|e| e.reason == reason).map_or(0, |e| e.packets)
}

/// 10 000 flows (100 client addresses x 100 ports): `lb flow` on every
/// host names the backend the userspace plan predicts.
fn same_backend_everywhere(hosts: &Hosts, plan: &lb_userspace::datapath::Plan) {
    let flows: Vec<SocketAddr> = (0..10_000u32)
        .map(|i| {
            let ip = std::net::Ipv4Addr::new(
                10,
                210,
                50 + (i / 100 / 50) as u8,
                1 + (i / 100 % 50) as u8 * 5,
            );
            SocketAddr::new(ip.into(), 10_000 + (i % 100) as u16 * 7 + (i / 100) as u16)
        })
        .collect();
    let started = Instant::now();
    let answers: Vec<Vec<String>> = std::thread::scope(|scope| {
        let threads: Vec<_> = hosts
            .lbs
            .iter()
            .map(|lb| {
                let flows = &flows;
                scope.spawn(move || {
                    flows.iter().map(|f| name_of(&lb.flow(*f, vip(), "tcp").backend)).collect()
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().expect("lb flow thread")).collect()
    });
    let mut spread = BTreeMap::new();
    for (i, from) in flows.iter().enumerate() {
        let want = predict::backend(plan, "web", &FlowKey::between(*from, vip(), PROTO_TCP));
        for (k, host) in (1..).zip(&answers) {
            assert_eq!(host[i], want, "flow from {from} on host {k}");
        }
        *spread.entry(want).or_insert(0) += 1;
    }
    eprintln!(
        "10 000 flows: the same backend on all 3 hosts, as predicted ({spread:?}), asked in {:?}",
        started.elapsed()
    );
}

/// Host 2 lost under load (50 established connections asking every 20-50
/// ms, a new connection every 5 ms), then back.
fn failover(net: &ScaleOut, hosts: &Hosts) {
    let client: std::net::IpAddr = CLIENT.parse().expect("client");
    let ports: Vec<u16> = (41_000..41_050).collect();
    let conns = in_parallel(net.client.name(), ports.clone(), 5, |port| {
        let mut c = Conn::open_bound(SocketAddr::new(client, port), vip(), Mode::Tc);
        let name = c.ask();
        (c, name)
    });
    let via_2: Vec<SocketAddr> = ports
        .iter()
        .map(|p| SocketAddr::new(client, *p))
        .filter(|from| hosts.carrier(*from) == Some(2))
        .collect();
    let on_2 = via_2.len();
    assert!(on_2 > 0, "some of the 50 connections go through host 2");
    let every = Duration::from_millis(5);
    let load = UnderLoad::start(net.client.name(), conns, vip(), every, Duration::from_millis(300));
    std::thread::sleep(Duration::from_secs(1));
    let t_down = Instant::now();
    net.host_lost(2);
    let two: Vec<String> = [1, 3].map(scale_out::uplink).to_vec();
    wait_for(Duration::from_secs(10), "the router drops host 2's path", || {
        (net.next_hops(VIP4) == two).then_some(())
    });
    let t_route_down = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    // Host 2's connections went on through another host, which took their
    // first packet there (no SYN) for a new flow of the same backend, and
    // pinned it.
    for from in &via_2 {
        let pinned = hosts.pinning(*from);
        assert!(pinned.contains(&1) || pinned.contains(&3), "{from} moved: {pinned:?}");
    }
    let t_up = Instant::now();
    net.host_back(2);
    wait_for(Duration::from_secs(30), "the router takes host 2's path back", || {
        (net.next_hops(VIP4).len() == HOSTS).then_some(())
    });
    let t_route_up = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let (outcomes, attempts) = load.stop();
    let ms = |d: Duration| d.as_millis();
    let since = |t: Instant, from: Instant| t.saturating_duration_since(from);
    eprintln!(
        "host 2 lost: the router dropped its path after {} ms; back: path again after {} ms \
         (BGP reconnect)",
        ms(t_route_down - t_down),
        ms(t_route_up - t_up)
    );
    let requests: u64 = outcomes.iter().map(|o| o.requests).sum();
    let slowest = outcomes.iter().map(|o| o.slowest).max_by_key(|s| s.0).unwrap_or_default();
    eprintln!(
        "50 established connections ({on_2} through host 2): {requests} requests, slowest {} ms \
         (started {} ms after the loss)",
        ms(slowest.0),
        slowest.1.map_or(0, |t| ms(since(t, t_down)))
    );
    let broken: Vec<String> = outcomes
        .iter()
        .enumerate()
        .filter_map(|(i, o)| o.broke.map(|t| format!("conn {i} at {} ms", ms(since(t, t_down)))))
        .collect();
    assert!(broken.is_empty(), "established connections broken: {broken:?}");

    let failed = |from: Instant, to: Instant| -> Vec<Instant> {
        attempts.iter().filter(|(t, ok)| !ok && *t >= from && *t < to).map(|(t, _)| *t).collect()
    };
    let start = attempts.first().map_or(t_down, |a| a.0);
    let end = Instant::now();
    // An attempt a moment before the loss may have been cut by it: its
    // connect and its answer may take 300 ms each.
    let early = failed(start, t_down - Duration::from_millis(600));
    assert!(early.is_empty(), "{} new connections failed before the loss", early.len());
    let lost = failed(t_down, t_up);
    let back = failed(t_up, end);
    let window = lost.last().map(|t| since(*t, t_down)).unwrap_or_default();
    eprintln!(
        "new connections: {} attempts; while host 2 was lost {} failed, the first {} ms and the \
         last {} ms after the loss (recovered within {} ms); after it came back {} failed",
        attempts.len(),
        lost.len(),
        lost.first().map_or(0, |t| ms(since(*t, t_down))),
        ms(window),
        ms(window),
        back.len()
    );
    assert!(window <= RECOVERY_GOAL, "new connections failed until {window:?} after the loss");
    assert!(back.is_empty(), "new connections failed after host 2 came back: {}", back.len());
}

/// Backend 3's server killed, then started again: when each host's status
/// has it down (up), and how long the hosts disagree.
fn backend_crash(net: &ScaleOut, hosts: &mut Hosts) {
    let addr = format!("{}:80", scale_out::backend(3));
    for (what, health) in [("crashed", "down"), ("restarted", "up")] {
        let t0 = Instant::now();
        if health == "down" {
            hosts.servers[2] = None;
        } else {
            hosts.servers[2] = Some(server(&net.backends[2], 3));
        }
        let seen: Vec<Duration> = std::thread::scope(|scope| {
            let threads: Vec<_> = hosts
                .lbs
                .iter()
                .map(|lb| {
                    let addr = &addr;
                    scope.spawn(move || {
                        wait_for(Duration::from_secs(5), &format!("{addr} {health}"), || {
                            (lb.backend("web", addr).0.health == health).then(|| t0.elapsed())
                        })
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().expect("status thread")).collect()
        });
        let spread = seen.iter().max().copied().unwrap_or_default()
            - seen.iter().min().copied().unwrap_or_default();
        // What told each host, and when it logged the change (the hosts
        // share a clock): the exact disagreement, which polling only bounds.
        let changes: Vec<HealthChange> = hosts
            .lbs
            .iter()
            .map(|lb| {
                let changes = lb.health_changes();
                let last = changes.into_iter().rev().find(|c| c.backend == addr && c.to == health);
                last.unwrap_or_else(|| panic!("no change of {addr} to {health} logged"))
            })
            .collect();
        let logged: Vec<u64> = changes.iter().map(|c| logged_at_us(&c.line)).collect();
        let logged_spread = logged.iter().max().unwrap_or(&0) - logged.iter().min().unwrap_or(&0);
        let signals: Vec<&str> = changes.iter().map(|c| c.signal.as_str()).collect();
        eprintln!(
            "backend 3 {what}: {health} in the hosts' status after {:?} ms (polled every 20 ms; \
             found by {signals:?}); the hosts disagreed for {} ms by their logs ({} ms polled)",
            seen.iter().map(Duration::as_millis).collect::<Vec<_>>(),
            logged_spread / 1000,
            spread.as_millis()
        );
    }
}

/// When lb logged `line`, in microseconds since the start of its month
/// (the line starts with an RFC 3339 UTC time, `2026-12-06T22:44:01.073032Z`).
fn logged_at_us(line: &str) -> u64 {
    let num = |range: std::ops::Range<usize>| -> u64 {
        line.get(range).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("time of {line:?}"))
    };
    let secs = ((num(8..10) * 24 + num(11..13)) * 60 + num(14..16)) * 60 + num(17..19);
    secs * 1_000_000 + num(20..26)
}

#[test]
fn nat_behind_ecmp_needs_the_replies_back_through_the_flows_host() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // The backends answer through host 2: NAT needs the answers back
    // through a balancer, and a backend can route through one only.
    let net = ScaleOut::new(3, &scale_out::lan_addr(2));
    let hosts = start(&net, "nat");
    let client: std::net::IpAddr = CLIENT.parse().expect("client");
    let ports: Vec<u16> = (42_000..42_150).collect();
    let opened = in_parallel(net.client.name(), ports.clone(), 12, |port| {
        let s = lb_tests::client::connect_from(
            SocketAddr::new(client, port),
            vip(),
            Duration::from_millis(500),
        )
        .ok()?;
        let mut c = Conn::from_stream(s);
        c.try_ask().map(|_| c)
    });
    let mut conns = Vec::new();
    for (c, port) in opened.into_iter().zip(&ports) {
        let Some(c) = c else { continue };
        let from = SocketAddr::new(client, *port);
        assert_eq!(hosts.carrier(from), Some(2), "{from} answered, so host 2 carried it");
        conns.push(c);
    }
    eprintln!(
        "NAT: {} of {} new connections answered (those the router sent to host 2, which the \
         backends answer through; host 1 and 3's have no reverse-NAT state there)",
        conns.len(),
        ports.len()
    );
    assert!(!conns.is_empty() && conns.len() < ports.len(), "only host 2's flows work");
    let no_route_before = exception(&hosts.lbs[1], "no_route");
    net.host_lost(2);
    let two: Vec<String> = [1, 3].map(scale_out::uplink).to_vec();
    wait_for(Duration::from_secs(10), "the router drops host 2's path", || {
        (net.next_hops(VIP4) == two).then_some(())
    });
    let n = conns.len();
    let broken = in_parallel(net.client.name(), conns, 12, |mut c| c.try_ask().is_none())
        .into_iter()
        .filter(|b| *b)
        .count();
    let no_route = exception(&hosts.lbs[1], "no_route") - no_route_before;
    eprintln!(
        "NAT, host 2 lost: {broken} of {n} established connections broken (hosts 1 and 3 send \
         them to the same backend, whose answers go to host 2, which has no route to the client \
         any more: {no_route} answers dropped there, counted no_route)"
    );
    assert_eq!(broken, n, "every established connection depends on host 2");
    assert!(no_route > 0, "host 2 drops the answers it cannot send on");
    drop(hosts);
}
