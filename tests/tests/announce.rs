//! VIPs announced by BGP while they can be served (`[agent.announce]`): lb
//! keeps a blackhole route per servable VIP in kernel table 100, BIRD in the
//! balancer's namespace learns it and exports it by BGP (with BFD) to BIRD
//! in a router namespace, which installs it in its kernel. The router
//! learns both VIPs; loses them when every backend fails its probes and
//! learns them again when one answers; loses one whose service a reload
//! removes; keeps them while a pinned datapath outlives its agent (SIGTERM
//! or SIGKILL, kernel modes) until `lb stop` runs with no agent, or an agent
//! starts without `[agent.announce]`; loses them
//! when splice mode's agent exits; and loses them on `lb stop`. Needs root
//! and bird2.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use lb_tests::{
    agent::{TempDir, agent_table, service, start_backend, start_lb, wait_for},
    bird::{Bird, LB_LINK4, LB_LINK6, ROUTER_LINK4, ROUTER_LINK6},
    client::Setup,
    mode::Mode,
    netns::NetNs,
    topology::{Topology, VIP4, VIP6, backend4, backend6, sock},
};

const SERVER: &str = env!("CARGO_BIN_EXE_lbt-server");

/// The kernel table and protocol of the announced routes.
const TABLE: u32 = 100;
const PROTOCOL: u8 = 252;

/// How long a change may take to reach the router: the probes' fall or rise
/// (2 x 100 ms), one BGP update, and the router's kernel; generous for a
/// loaded machine.
const PROPAGATION: Duration = Duration::from_secs(5);

/// Probed TCP services only (one per VIP), so that killing the backends
/// leaves nothing usable on either VIP.
const PROBES: &str = "kind = \"tcp\"\ninterval = \"100ms\"\ntimeout = \"90ms\"\nrise = 2\nfall = 2";

lb_tests::in_both_modes!(announced_while_servable);

/// A link `lb-up` (balancer) / `r0` (router) with both families.
fn router(topo: &Topology) -> NetNs {
    topo.router_beside(
        [&format!("{LB_LINK4}/24"), &format!("{LB_LINK6}/64")],
        [&format!("{ROUTER_LINK4}/24"), &format!("{ROUTER_LINK6}/64")],
    )
}

fn config(topo: &Topology, dir: &Path, n: usize) -> String {
    let mut s = agent_table(&topo.lb_interfaces(), dir);
    s += &format!("[agent.announce]\ntable = {TABLE}\nprotocol = {PROTOCOL}\n");
    for (name, vip, backend) in
        [("v4", VIP4, backend4 as fn(usize) -> std::net::IpAddr), ("v6", VIP6, backend6)]
    {
        let vip: std::net::IpAddr = vip.parse().expect("vip");
        let backends: Vec<String> = (1..=n).map(|i| sock(backend(i), 80)).collect();
        s += &service(&format!("tcp-{name}"), "tcp", &sock(vip, 80), "maglev", PROBES, &backends);
    }
    s
}

/// The VIPs the router's kernel has a BGP route to (via the balancer).
fn learned(router: &NetNs) -> Vec<&'static str> {
    [("-4", VIP4, "/32"), ("-6", VIP6, "/128")]
        .into_iter()
        .filter(|(fam, vip, len)| {
            let out = router.exec(&["ip", fam, "route", "show", &format!("{vip}{len}")]).stdout;
            let text = String::from_utf8_lossy(&out);
            text.contains("proto bird") && text.contains("dev r0")
        })
        .map(|(_, vip, _)| vip)
        .collect()
}

/// The VIPs in lb's table (`ip route show table 100 proto 252`; `ip` shows
/// host routes without their length).
fn in_table(topo: &Topology) -> Vec<String> {
    let mut v = Vec::new();
    for fam in ["-4", "-6"] {
        let table = TABLE.to_string();
        let proto = PROTOCOL.to_string();
        let args = ["ip", fam, "route", "show", "table", &table, "proto", &proto];
        for line in String::from_utf8_lossy(&topo.lb.exec(&args).stdout).lines() {
            assert!(line.starts_with("blackhole "), "{line}");
            v.push(line.split_whitespace().nth(1).expect("destination").to_owned());
        }
    }
    v
}

/// Waits until the router has exactly `want`; returns how long it took.
fn until_router_has(router: &NetNs, want: &[&str], what: &str) -> Duration {
    let started = Instant::now();
    wait_for(PROPAGATION, what, || (learned(router) == want).then_some(()));
    let took = started.elapsed();
    eprintln!("{what}: {took:?}");
    took
}

fn announced_while_servable(mode: Mode) {
    let topo = Topology::new(2);
    mode.prepare(&topo);
    // Declared before the setup, so removed after lb and BIRD are gone.
    let router_ns = router(&topo);
    let dir = TempDir::new();
    let bird_dir = TempDir::new();
    let mut s = Setup::with_config(SERVER, topo, dir, |t, d| mode.config(&config(t, d, 2)));
    assert_eq!(s.mode, mode, "{}", s.lb.status());
    assert_eq!(in_table(&s.topo), [VIP4, VIP6]);
    let lb_bird = Bird::lb(&s.topo.lb, &bird_dir.0, "lb-up", TABLE, PROTOCOL);
    let router_bird = Bird::router(&router_ns, &bird_dir.0, "r0");
    // The sessions come up first (a second or two: BIRD's connect delay).
    let started = Instant::now();
    while learned(&router_ns) != [VIP4, VIP6] {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the router did not learn both VIPs within 30 s\n--- lb's BIRD ---\n{}{}\n--- the \
             router's BIRD ---\n{}{}",
            lb_bird.birdc(&["show", "protocols", "all"]),
            lb_bird.log(),
            router_bird.birdc(&["show", "protocols", "all"]),
            router_bird.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("sessions up and both VIPs learned: {:?}", started.elapsed());
    let bfd = router_bird.birdc(&["show", "bfd", "sessions"]);
    assert!(bfd.matches(" Up ").count() >= 2, "BFD sessions:\n{bfd}");
    let status = s.lb.status();
    assert!(status.contains(&format!("announce table {TABLE} proto {PROTOCOL}")), "{status}");
    assert!(status.contains("announced: tcp-v4 2 of 2 usable"), "{status}");

    // Every backend stops answering: both VIPs withdrawn.
    s.backends.clear();
    until_router_has(&router_ns, &[], "every backend down: both VIPs withdrawn at the router");
    assert!(in_table(&s.topo).is_empty());
    let status = s.lb.status();
    assert!(status.contains("withdrawn: tcp-v4 0 of 2 usable (2 down)"), "{status}");
    let report = s.lb.report();
    let announce = report.announce.expect("the announce status");
    assert!(announce.vips.iter().all(|v| !v.announced && !v.servable), "{announce:?}");

    // One comes back: both VIPs learned again.
    s.backends.push(start_backend(&s.topo.backends[0], Path::new(SERVER), 1));
    until_router_has(&router_ns, &[VIP4, VIP6], "one backend back: both VIPs learned again");
    assert!(s.lb.status().contains("announced: tcp-v4 1 of 2 usable (1 down)"));

    // A reload that removes the IPv6 VIP's service withdraws that VIP alone;
    // the file as it was announces it again.
    let path = s.dir.0.join("lb.toml");
    let text = std::fs::read_to_string(&path).expect("config");
    let v4_only: Vec<&str> =
        text.split("\n[[service]]").filter(|part| !part.contains("name = \"tcp-v6\"")).collect();
    std::fs::write(&path, v4_only.join("\n[[service]]")).expect("write config");
    s.lb.cli_ok(&["reload"]);
    until_router_has(&router_ns, &[VIP4], "a reload without the IPv6 VIP: it alone withdrawn");
    std::fs::write(&path, &text).expect("write config");
    s.lb.cli_ok(&["reload"]);
    until_router_has(&router_ns, &[VIP4, VIP6], "a reload with it again: learned again");

    if mode.kernel() {
        // SIGTERM leaves the pinned datapath forwarding, and its
        // announcements with it; the next agent takes both over.
        s.lb.terminate();
        std::thread::sleep(Duration::from_secs(1));
        assert_eq!(learned(&router_ns), [VIP4, VIP6], "announcements stay with the datapath");
        s.lb = start_lb(&s.topo, &path, &s.dir.0);
        assert_eq!(in_table(&s.topo), [VIP4, VIP6]);
        // A restart without [agent.announce] withdraws what the last agent
        // announced (its note says where); with it again, announced again.
        let announce = format!("[agent.announce]\ntable = {TABLE}\nprotocol = {PROTOCOL}\n");
        std::fs::write(&path, text.replace(&announce, "")).expect("write config");
        s.lb.terminate();
        s.lb = start_lb(&s.topo, &path, &s.dir.0);
        until_router_has(&router_ns, &[], "a restart without [agent.announce]: withdrawn");
        assert!(s.lb.log().contains("withdrew what the previous agent announced"));
        std::fs::write(&path, &text).expect("write config");
        s.lb.terminate();
        s.lb = start_lb(&s.topo, &path, &s.dir.0);
        until_router_has(&router_ns, &[VIP4, VIP6], "a restart with it again: learned again");
        // A crash removes nothing either.
        let pid = nix::unistd::Pid::from_raw(s.lb.pid() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::SIGKILL).expect("SIGKILL");
        s.lb.wait_exit(Duration::from_secs(5));
        std::thread::sleep(Duration::from_secs(1));
        assert_eq!(learned(&router_ns), [VIP4, VIP6], "a crashed agent leaves its announcements");
        // `lb stop` with no agent running withdraws what the config names.
        let lb = lb_tests::agent::lb_binary();
        let args = [lb.to_str().expect("utf-8"), "stop", "--config", path.to_str().expect("utf-8")];
        let said = String::from_utf8_lossy(&s.topo.lb.exec(&args).stdout).into_owned();
        assert!(said.contains("withdrew 2 announced VIP(s) (table 100, proto 252)"), "{said}");
        until_router_has(&router_ns, &[], "lb stop with no agent running: both VIPs withdrawn");
    } else {
        // The proxy is the datapath: its exit withdraws.
        s.lb.terminate();
        until_router_has(&router_ns, &[], "SIGTERM in splice mode: both VIPs withdrawn");
        assert!(in_table(&s.topo).is_empty());
    }
    // A fresh start announces again.
    s.lb = start_lb(&s.topo, &path, &s.dir.0);
    until_router_has(&router_ns, &[VIP4, VIP6], "a fresh start: both VIPs learned again");
    let log = s.lb.log();
    let syncs: Vec<&str> = log.lines().filter_map(|l| l.split("sync_us=").nth(1)).collect();
    eprintln!("announced-route syncs of the last agent, us: {syncs:?}");

    // `lb stop`: withdrawn.
    s.lb.cli_ok(&["stop"]);
    s.lb.wait_exit(Duration::from_secs(5));
    until_router_has(&router_ns, &[], "lb stop: both VIPs withdrawn at the router");
    assert!(in_table(&s.topo).is_empty(), "announced routes left after lb stop");
    drop(router_bird);
    drop(lb_bird);
}

/// A table lb cannot use is refused at `lb check` with the field and the fix.
#[test]
fn an_invalid_announce_table_names_the_field_and_the_fix() {
    let dir = TempDir::new();
    let path = dir.0.join("lb.toml");
    let text = "[agent]\n[agent.announce]\ntable = 255\n\n[[service]]\nname = \"s\"\n\
                vip = \"10.0.0.1:80\"\n[[service.backend]]\naddr = \"10.0.1.1:80\"\n";
    std::fs::write(&path, text).expect("write config");
    let out = std::process::Command::new(lb_tests::agent::lb_binary())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("lb check");
    let said =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("agent.announce.table = 255"), "{said}");
    assert!(said.contains("e.g. table = 100"), "{said}");
}

/// The BIRD example shipped in config/ parses (`bird -p`).
#[test]
fn the_shipped_bird_example_parses() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/bird.conf.example");
    let out = std::process::Command::new("bird")
        .arg("-p")
        .arg("-c")
        .arg(&example)
        .output()
        .expect("bird (Debian bird2) is installed");
    assert!(
        out.status.success(),
        "bird -p -c {}: {}",
        example.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}
