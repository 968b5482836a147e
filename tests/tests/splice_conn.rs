//! Connections through the splice proxy (`lb run --mode splice`) against
//! `lbt-server` backends: a thousand at once, and a backend that refuses.
//! Needs root.

use std::{
    collections::HashMap,
    io::{Read, Write},
    time::{Duration, Instant},
};

use lb_tests::{
    agent::{TempDir, config_with_health, wait_for},
    client::{Conn, Setup, count, vip},
    mode::Mode,
    topology::{Topology, VIP4, backend4},
};
use lb_userspace::{
    datapath,
    splice::pick::{candidates, hash},
};

const SERVER: &str = env!("CARGO_BIN_EXE_lbt-server");

#[test]
fn a_thousand_concurrent_connections_are_all_served() {
    const N: usize = 1000;
    // The client's sockets here, and lb's six descriptors a connection.
    lb_tests::client::allow_open_files(8 * N as u64);
    // lb as a service manager starts it: systemd's default soft limit of
    // 1024 open files (the hard limit stays what this process has). Each
    // relayed connection takes two sockets and two pipes.
    let s = Setup::splice(Some(SERVER), 3, &["prlimit", "--nofile=1024:"], "splice");
    let inside = s.topo.client.enter();
    let mut conns: Vec<Conn> = (0..N).map(|_| s.conn(vip(VIP4, 80))).collect();
    // All are open at once; each is answered by a backend (and the backend
    // saw the proxy, which `ask` checks).
    let names: Vec<String> = conns.iter_mut().map(Conn::ask).collect();
    let spread = count(&names);
    assert_eq!(spread.len(), 3, "{spread:?}");
    // And once more each: no connection was dropped while the others opened.
    let again: Vec<String> = conns.iter_mut().map(Conn::ask).collect();
    assert_eq!(again, names, "each connection keeps its backend");
    drop(inside);
    let t = s.lb.report().services.iter().find(|x| x.name == "tcp-v4").expect("tcp-v4").traffic;
    assert_eq!(t.new_flows, N as u64, "each connection counted once: {t:?}");
}

/// The backends a splice connection from `port` tries, in order (ids).
fn tries(plan: &datapath::Plan, port: u16) -> Vec<u32> {
    let svc = plan.services.iter().find(|p| p.name == "tcp-v4").expect("service");
    let client = std::net::SocketAddr::new(lb_tests::topology::CLIENT4.parse().expect("ip"), port);
    let key = lb_common::abi::FlowKey::between(client, vip(VIP4, 80), lb_common::abi::PROTO_TCP);
    candidates(&svc.table, hash(&key, false), plan.backends.len())
}

#[test]
fn connections_a_backend_refuses_go_to_the_next_backend_in_maglev_order() {
    let mut s = Setup::splice(Some(SERVER), 3, &[], "splice");
    // Backend 2's server stops: its port refuses (a reset to the SYN). No
    // probes run (kind = "none"), so only the proxy's own retry helps.
    drop(s.backends.remove(1));
    let plan = datapath::plan(&s.config()).expect("plan");
    let mut rerouted = 0;
    let mut got = Vec::new();
    let inside = s.topo.client.enter();
    for port in 43000..43300u16 {
        let order: Vec<String> =
            tries(&plan, port).iter().map(|&id| lb_tests::predict::name(&plan, id)).collect();
        let want = order.iter().find(|n| *n != "b2").expect("a live backend");
        rerouted += usize::from(order[0] == "b2");
        let answer = Conn::open_from(port, vip(VIP4, 80), Mode::Splice).ask();
        assert_eq!(&answer, want, "client port {port}: tries {order:?}, b2 refuses");
        got.push(answer);
    }
    drop(inside);
    eprintln!("300 connections, {rerouted} first offered to the refusing b2: {:?}", count(&got));
    assert!(rerouted > 50, "only {rerouted} of 300 connections had b2 first: the case is untested");
    // Every connection ended and was counted as relayed.
    wait_for(Duration::from_secs(5), "300 relayed connections counted", || {
        (relayed(&s) >= 300).then_some(())
    });
    // Each one offered to b2 first failed exactly one connect.
    assert_eq!(connect_failures(&s), rerouted as u64, "splice_backend_connect_failed");
}

/// Connections the tcp-v4 service relayed to a backend.
fn relayed(s: &Setup) -> u64 {
    s.lb.report().services.iter().find(|x| x.name == "tcp-v4").expect("tcp-v4").traffic.new_flows
}

/// The `splice_backend_connect_failed` exception row's count.
fn connect_failures(s: &Setup) -> u64 {
    let report = s.lb.report();
    let row = report.exceptions.iter().find(|e| e.reason == "splice_backend_connect_failed");
    row.unwrap_or_else(|| panic!("no splice_backend_connect_failed row: {report:?}")).packets
}

#[test]
fn the_counters_show_which_backend_refused_and_where_connections_went() {
    let mut s = Setup::splice(Some(SERVER), 3, &[], "splice");
    drop(s.backends.remove(1));
    let plan = datapath::plan(&s.config()).expect("plan");
    let inside = s.topo.client.enter();
    let mut first_b2 = 0;
    let names: Vec<String> = (0..60)
        .map(|_| {
            let mut c = s.conn(vip(VIP4, 80));
            let first = tries(&plan, c.local_addr().port())[0];
            first_b2 += usize::from(lb_tests::predict::name(&plan, first) == "b2");
            c.ask()
        })
        .collect();
    drop(inside);
    wait_for(Duration::from_secs(5), "60 relayed connections counted", || {
        (relayed(&s) >= 60).then_some(())
    });
    let report = s.lb.report();
    let svc = report.services.iter().find(|x| x.name == "tcp-v4").expect("tcp-v4");
    let per_backend: HashMap<String, u64> =
        svc.backends.iter().map(|b| (b.addr.clone(), b.traffic.new_flows)).collect();
    let served = count(&names);
    for (i, addr) in [(1, "10.200.1.1:80"), (2, "10.200.2.1:80"), (3, "10.200.3.1:80")] {
        let want = served.get(&format!("b{i}")).copied().unwrap_or(0) as u64;
        assert_eq!(per_backend[addr], want, "connections relayed to {addr}: {per_backend:?}");
    }
    // The refusals show as failed connects: one for each connection that
    // tried b2 first.
    assert!(first_b2 > 0, "no connection had b2 first: the case is untested");
    assert_eq!(connect_failures(&s), first_b2 as u64, "{}", s.lb.status());
}

/// The wrapper that starts lb under a hard open-file limit of 1024, which
/// it cannot raise: room for under 512 relayed connections (a client and a
/// backend socket each, and pipes only for those that move more than a
/// small message).
const LIMITED: [&str; 2] = ["prlimit", "--nofile=1024:1024"];

/// `s`'s lb given 700 client connections, all completed by the kernel,
/// accepted or not: more than its open-file limit lets it relay.
fn beyond_the_open_file_limit(s: &Setup) -> Vec<Conn> {
    lb_tests::client::allow_open_files(4096);
    let _inside = s.topo.client.enter();
    (0..700).map(|_| s.conn(vip(VIP4, 80))).collect()
}

/// User and system CPU seconds process `pid` has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command's closing parenthesis: utime is the 12th,
    // stime the 13th (ticks of 1/100 s).
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<u64> = rest.split(' ').skip(11).take(2).map(|x| x.parse().expect("ticks")).collect();
    (f[0] + f[1]) as f64 / 100.0
}

/// What lb logs when splice mode has taken every descriptor its budget
/// allows (`splice::budget`).
const AT_BUDGET: &str = "splice mode holds all the descriptors its open-file limit allows";

#[test]
fn at_its_open_file_limit_lb_does_not_spin_on_accept_nor_flood_its_log() {
    let s = Setup::splice(Some(SERVER), 3, &LIMITED, "splice");
    let _held = beyond_the_open_file_limit(&s);
    // Measured once lb holds its budget: accepting up to it is work, not
    // the spin this test looks for.
    wait_for(Duration::from_secs(10), "lb to reach its budget", || {
        s.lb.report().descriptors.filter(|d| d.used + 2 > d.budget).map(|_| ())
    });
    let before = cpu_seconds(s.lb.pid());
    let mark = s.lb.log().len();
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_seconds(s.lb.pid()) - before;
    // Each thread looks at the budget every 10 ms: a few ms of CPU a
    // second. A busy loop burns the whole 2 s on each core.
    assert!(used < 0.5, "lb used {used:.2} CPU s in 2 s at its open-file limit: a busy loop");
    let log = s.lb.log();
    let warned = log[mark..].matches(AT_BUDGET).count();
    // None logged would mean the limit was never reached: nothing tested.
    assert!(warned > 0, "lb never reached its descriptor budget: nothing tested");
    assert!(log.contains("descriptors for connections"), "the budget is reported at start");
    // One warning a second, however many threads wait how often.
    assert!(warned <= 3, "{warned} warnings in 2 s: the log is flooded");
    assert!(log.contains("more since the last"), "the warning counts those left out");
    // The budget keeps lb short of the limit itself: no accept fails.
    assert!(!log.contains("accept failed"), "an accept met the open-file limit");
}

/// At its open-file limit, lb keeps descriptors for its own work: health
/// probes (which, failing to open a socket, would take every backend out
/// and turn being busy into an outage; a probe that meets EMFILE anyway is
/// skipped, not counted) and the operator's `lb status`, needed most when
/// lb is busiest.
#[test]
fn at_its_open_file_limit_lb_keeps_its_backends_up_and_answers_its_status() {
    // Probes every 100 ms, two failures take a backend out.
    const PROBES: &str =
        "kind = \"tcp\"\ninterval = \"100ms\"\ntimeout = \"90ms\"\nrise = 2\nfall = 2";
    let topo = Topology::new(3);
    Mode::Splice.prepare(&topo);
    let s = Setup::launch(Some(SERVER), topo, TempDir::new(), &LIMITED, |t, d| {
        config_with_health(t, d, "maglev", 3, PROBES).replace("mode = \"xdp\"", "mode = \"splice\"")
    });
    for i in 1..=3 {
        s.lb.wait_health("tcp-v4", &format!("{}:80", backend4(i)), "up", Duration::from_secs(5));
    }
    let held = beyond_the_open_file_limit(&s);
    // The clients' connects complete in the listen queue; lb accepts them
    // (and connects to their backends) at its own pace, up to the budget.
    let at_budget = |d: &lb_userspace::control::protocol::DescriptorStatus| d.used + 2 > d.budget;
    wait_for(Duration::from_secs(10), "lb to reach its budget", || {
        s.lb.report().descriptors.filter(at_budget).map(|_| ())
    });
    // 20 probe intervals at the limit: ten times what takes a backend out.
    // Meanwhile the operator asks for the status, again and again.
    let until = Instant::now() + Duration::from_secs(2);
    let mut asked = 0;
    while Instant::now() < until {
        let report = s.lb.report();
        let tcp = report.services.iter().find(|x| x.name == "tcp-v4").expect("tcp-v4");
        assert!(tcp.backends.iter().all(|b| b.health == "up"), "at the limit: {:?}", tcp.backends);
        // The status shows how close lb is: no room for one more connection
        // of a budget somewhat under the limit of 1024.
        let d = report.descriptors.expect("splice mode reports its descriptors");
        assert!(at_budget(&d) && (700..1024).contains(&d.budget), "{d:?}");
        asked += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("lb status answered {asked} times at its open-file limit");
    // A request every 20 ms for 2 s: about 90 if each answers at once.
    assert!(asked >= 40, "lb status answered only {asked} times in 2 s at the limit");
    assert!(s.lb.log().contains(AT_BUDGET), "lb never reached its budget: nothing tested");
    drop(held);
    let changes = s.lb.health_changes();
    assert!(changes.is_empty(), "backends changed health at the open-file limit: {changes:#?}");
    assert_eq!(s.answering("tcp", VIP4, 30).len(), 3, "all three serve again");
}

/// Pipes kept for reuse hold descriptors: at the budget they are closed
/// for connections waiting, or 300 finished bulk connections would leave
/// so few that held connections wait for good.
#[test]
fn at_the_budget_idle_pipes_give_way_to_waiting_connections() {
    let s = Setup::splice(Some(SERVER), 3, &LIMITED, "splice");
    lb_tests::client::allow_open_files(4096);
    let _inside = s.topo.client.enter();
    // A request longer than the copy buffer: its direction splices, and
    // its pipe goes to the pool when the connection ends.
    let long = format!("{}\n", "x".repeat(3000));
    for round in 0..3 {
        let mut batch: Vec<Conn> =
            (0..100).map(|_| s.conn(vip(VIP4, 80)).patient(Duration::from_secs(10))).collect();
        for (i, c) in batch.iter_mut().enumerate() {
            let answer =
                c.exchange_line(&long).unwrap_or_else(|e| panic!("round {round}, {i}: {e}"));
            assert!(answer.starts_with('b'), "round {round}, {i}: {answer:?}");
        }
    }
    // 400 connections held open at once: 800 descriptors, within the
    // budget only if the pool's 600 are given back.
    let mut held: Vec<Conn> =
        (0..400).map(|_| s.conn(vip(VIP4, 80)).patient(Duration::from_secs(10))).collect();
    for (i, c) in held.iter_mut().enumerate() {
        assert!(c.try_ask().is_some(), "held connection {i} of 400 was never served");
    }
}

#[test]
fn at_its_open_file_limit_lb_serves_every_connection_once_others_close() {
    let s = Setup::splice(Some(SERVER), 3, &LIMITED, "splice");
    let held = beyond_the_open_file_limit(&s);
    let _inside = s.topo.client.enter();
    // Every connection asks at once; each answered one closes, freeing
    // descriptors for those still waiting, in whatever order lb serves them.
    let mut waiting: Vec<(usize, std::net::TcpStream)> = held
        .into_iter()
        .map(Conn::into_stream)
        .enumerate()
        .map(|(i, mut c)| {
            c.write_all(b"hello\n").unwrap_or_else(|e| panic!("connection {i}: {e}"));
            c.set_read_timeout(Some(Duration::from_millis(5))).expect("timeout");
            (i, c)
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !waiting.is_empty() {
        assert!(Instant::now() < deadline, "{} connections still unanswered", waiting.len());
        waiting.retain_mut(|(i, c)| match c.read(&mut [0u8; 64]) {
            Ok(0) => panic!("connection {i} closed unanswered"),
            Ok(_) => false,
            Err(_) => true,
        });
    }
}
