//! Restarts of the kernel datapath's agent that take the pinned datapath
//! over with a changed config (a backend added, one removed, a weight
//! changed) under load, and a pinned datapath from another build, which is
//! replaced. Splice mode has nothing to take over: its agent is the
//! datapath (see e2e.rs). Needs root.

use std::{net::SocketAddr, time::Duration};

use lb_common::abi::{FlowKey, PROTO_TCP};
use lb_tests::{
    agent::{config, start_lb},
    client::{Conn, Flow, Load, Setup, client_addr, count, vip},
    in_kernel_modes,
    mode::Mode,
    predict,
    topology::{VIP4, VIP6, backend4, backend6, sock},
};
use lb_userspace::datapath;

const SERVER: &str = env!("CARGO_BIN_EXE_lbt-server");

in_kernel_modes!(
    a_takeover_with_a_changed_config_drops_nothing_and_applies_the_new_plan,
    a_datapath_pinned_by_another_build_is_replaced_and_logged,
);

/// Every service of [`config`] over backends 1, 2 and 4 of four, backend 2
/// at weight 3: backend 3 removed, 4 added, a weight changed.
fn changed_config(s: &Setup) -> String {
    let mut text = config(&s.topo, &s.dir.0, "maglev", 4);
    for port in [80, 5353] {
        for addr in [sock(backend4(3), port), sock(backend6(3), port)] {
            text = text.replace(&format!("[[service.backend]]\naddr = \"{addr}\"\n"), "");
        }
        for addr in [sock(backend4(2), port), sock(backend6(2), port)] {
            let line = format!("addr = \"{addr}\"\n");
            text = text.replace(&line, &format!("{line}weight = 3\n"));
        }
    }
    s.mode.config(&text)
}

/// 30 connections to each VIP, asked once: (connection, its backend).
fn established(s: &Setup) -> Vec<(Conn, String)> {
    let _in = s.topo.client.enter();
    [VIP4, VIP6]
        .into_iter()
        .flat_map(|ip| (0..30).map(move |_| ip))
        .map(|ip| {
            let mut c = s.conn(vip(ip, 80));
            let name = c.ask();
            (c, name)
        })
        .collect()
}

fn a_takeover_with_a_changed_config_drops_nothing_and_applies_the_new_plan(mode: Mode) {
    // Four backend namespaces (lb on all four links), three served.
    let mut s = Setup::in_mode(mode, SERVER, 4, 3, "maglev");
    // Ports reused at once, as a busy client does (the predictions' own,
    // in `CHOSEN_PORTS`, are reserved: no held connection takes one).
    s.topo.reuse_client_ports(45000, 65535);
    let mut conns = established(&s);
    let names: Vec<String> = conns.iter().map(|(_, n)| n.clone()).collect();
    assert!(names.iter().any(|n| n == "b3"), "b3 had connections: {:?}", count(&names));

    // New connections to both VIPs all through the restart.
    let loads: Vec<Load> = [VIP4, VIP6]
        .into_iter()
        .map(|ip| Load::start(s.topo.client.name(), vip(ip, 80), Duration::from_secs(2)))
        .collect();
    let wait = |n| loads.iter().for_each(|l| l.wait_for(n, Duration::from_secs(10)));
    wait(20);
    s.lb.terminate();
    let path = s.dir.0.join("lb.toml");
    std::fs::write(&path, changed_config(&s)).expect("write config");
    // No agent at all for a while: the pinned datapath serves.
    wait(20);
    s.lb = start_lb(&s.topo, &path, &s.dir.0);
    wait(30);
    for (ip, load) in [VIP4, VIP6].into_iter().zip(loads) {
        let (ok, failed) = load.stop();
        assert_eq!(failed, 0, "{ip}: {failed} of {} new connections failed", ok + failed);
    }
    let status = s.lb.status();
    assert!(status.contains("taken over"), "the datapath was taken over:\n{status}");

    // Established flows keep their backends, b3's included: removing a
    // backend drains it, in a restart as in a reload.
    let _in = s.topo.client.enter();
    for (c, name) in &mut conns {
        assert_eq!(&c.ask(), name, "an established flow keeps its backend through the takeover");
    }
    // New flows get exactly what the new config's plan says, both families,
    // TCP and UDP: b3 none, b4 and b2 (weight 3 of 5) theirs.
    let plan = datapath::plan(&s.config()).expect("plan");
    let mut got = Vec::new();
    for ip in [VIP4, VIP6] {
        let family = if ip == VIP4 { "v4" } else { "v6" };
        let target = vip(ip, 80);
        for port in 43000..43200u16 {
            let name = Conn::open_from(port, target, mode).ask();
            let key =
                FlowKey::between(SocketAddr::new(client_addr(target), port), target, PROTO_TCP);
            let want = predict::backend(&plan, &format!("tcp-{family}"), &key);
            assert_eq!(name, want, "tcp-{family} from port {port}");
            got.push(name);
        }
        for _ in 0..200 {
            let f = Flow::open(vip(ip, 5353));
            let name = f.ask();
            assert_eq!(name, predict::backend(&plan, &format!("udp-{family}"), &f.key()));
            got.push(name);
        }
    }
    let spread = count(&got);
    eprintln!("800 new flows after the takeover: {spread:?}");
    assert!(!spread.contains_key("b3"), "{spread:?}");
    // Binomial(800, 3/5): σ ≈ 13.9; ±75 is 5.4σ, while weight 1 (160) or
    // the old table (b2 at 1/3) is far outside.
    let b2 = spread.get("b2").copied().unwrap_or(0);
    assert!((405..=555).contains(&b2), "b2 at weight 3 of 5 got {b2} of 800: {spread:?}");
    assert!(spread.get("b4").copied().unwrap_or(0) > 0, "{spread:?}");
}

fn a_datapath_pinned_by_another_build_is_replaced_and_logged(mode: Mode) {
    let mut s = Setup::in_mode(mode, SERVER, 3, 3, "maglev");
    let inside = s.topo.client.enter();
    let names: Vec<String> = (0..30).map(|_| Flow::open(vip(VIP4, 5353)).ask()).collect();
    drop(inside);
    assert_eq!(count(&names).len(), 3);
    let new_flows = |s: &Setup| {
        s.lb.report()
            .services
            .into_iter()
            .find(|x| x.name == "udp-v4")
            .expect("udp-v4")
            .traffic
            .new_flows
    };
    assert_eq!(new_flows(&s), 30, "counted in the datapath's maps");
    s.lb.terminate();

    // The saved state names the build whose maps are pinned: make it
    // another's, as after an upgrade whose eBPF object changed.
    let state = lb_userspace::datapath::pins::state_file(&s.dir.0.join("control.sock"));
    let text = std::fs::read_to_string(&state).expect("saved state");
    let ours = format!("\"build_id\":\"{}\"", lb_userspace::object::EXPECTED_BUILD_ID);
    assert!(text.contains(&ours), "the state names this build: {text}");
    std::fs::write(&state, text.replace(&ours, "\"build_id\":\"another-build\"")).expect("write");

    s.lb = start_lb(&s.topo, &s.dir.0.join("lb.toml"), &s.dir.0);
    let log = s.lb.log();
    let line = log.lines().find(|l| l.contains("cannot be taken over")).unwrap_or_else(|| {
        panic!("the replacement is logged:\n{log}");
    });
    assert!(line.contains("another build") && line.contains("another-build"), "{line}");
    assert!(line.contains("replacing it"), "{line}");
    let status = s.lb.status();
    assert!(!status.contains("taken over"), "replaced, not taken over:\n{status}");
    // New maps: the counters start again, and the new datapath serves.
    assert_eq!(new_flows(&s), 0, "the replaced datapath's counters");
    let _in = s.topo.client.enter();
    let names: Vec<String> = (0..30).map(|_| Flow::open(vip(VIP4, 5353)).ask()).collect();
    assert_eq!(count(&names).len(), 3, "{:?}", count(&names));
}
