//! Reloads of a running balancer (`lb reload`): invalid files are refused
//! with the running config untouched; valid ones apply under load, over
//! both families, without breaking established flows, and new flows get
//! exactly what the new plan says. Needs root.

use std::{net::SocketAddr, time::Duration};

use lb_common::abi::{FlowKey, PROTO_TCP};
use lb_tests::{
    agent::config,
    client::{Conn, Load, Setup, client_addr, count, vip},
    mode::Mode,
    predict,
    topology::{VIP4, VIP6},
};
use lb_userspace::datapath;

const SERVER: &str = env!("CARGO_BIN_EXE_lbt-server");

fn lb_reload(s: &Setup) -> (bool, String) {
    s.lb.cli(&["reload"])
}

#[test]
fn an_invalid_reload_is_refused_and_the_running_config_stays() {
    let s = Setup::new(SERVER, 3, 3, "maglev");
    let before = s.lb.status();
    let path = s.dir.0.join("lb.toml");
    let good = std::fs::read_to_string(&path).expect("config");
    std::fs::write(
        &path,
        good.replacen("addr = \"10.200.1.1:80\"", "addr = \"10.200.1.1:80\"\nweight = 0", 1),
    )
    .expect("write");
    let (ok, text) = lb_reload(&s);
    assert!(!ok, "an invalid file must be refused");
    assert!(text.contains("weight = 0") && text.contains("running config stays"), "{text}");
    // Same services, backends and slots; traffic still reaches every backend.
    let slots = |st: &str| {
        st.lines().filter(|l| l.contains(" w1 ")).map(str::to_owned).collect::<Vec<_>>().len()
    };
    assert_eq!(slots(&s.lb.status()), slots(&before));
    let _in = s.topo.client.enter();
    let names: Vec<String> = (0..60).map(|_| Conn::open(vip(VIP4, 80)).ask()).collect();
    assert_eq!(count(&names).len(), 3);
}

#[test]
fn a_reload_under_load_breaks_no_established_flow_even_to_a_removed_backend() {
    let s = Setup::new(SERVER, 3, 3, "maglev");
    // Ports reused at once, as a busy client does (the predictions' own,
    // in `CHOSEN_PORTS`, are reserved: no held connection takes one).
    s.topo.reuse_client_ports(45000, 65535);
    let inside = s.topo.client.enter();
    let mut conns: Vec<Conn> =
        [VIP4, VIP6].iter().flat_map(|ip| (0..60).map(|_| Conn::open(vip(ip, 80)))).collect();
    let first: Vec<String> = conns.iter_mut().map(Conn::ask).collect();
    drop(inside);

    // Keep opening connections to both VIPs while the config loses backend
    // 3.
    let loads: Vec<Load> = [VIP4, VIP6]
        .into_iter()
        .map(|ip| Load::start(s.topo.client.name(), vip(ip, 80), Duration::from_secs(1)))
        .collect();
    loads.iter().for_each(|l| l.wait_for(20, Duration::from_secs(10)));
    std::fs::write(s.dir.0.join("lb.toml"), config(&s.topo, &s.dir.0, "maglev", 2))
        .expect("config");
    let (ok, text) = lb_reload(&s);
    assert!(ok, "{text}");
    // Connections ran before the table swap and after it, without a pause.
    loads.iter().for_each(|l| l.wait_for(50, Duration::from_secs(10)));
    for (ip, load) in [VIP4, VIP6].into_iter().zip(loads) {
        let (ok, failed) = load.stop();
        assert!(ok > 0, "{ip}: no connection ran during the reload");
        assert_eq!(failed, 0, "{ip}: {failed} of {} new connections failed", ok + failed);
    }

    let _in = s.topo.client.enter();
    // Every established flow keeps its backend, the removed one's included:
    // a removal drains, it does not cut.
    for half in first.chunks(60) {
        assert!(half.iter().any(|n| n == "b3"), "b3 had flows before: {:?}", count(half));
    }
    for (c, name) in conns.iter_mut().zip(&first) {
        assert_eq!(&c.ask(), name, "an established flow keeps its backend through the reload");
    }
    // New flows get exactly what the new plan says: b3 none.
    let plan = datapath::plan(&s.config()).expect("plan");
    for (ip, svc) in [(VIP4, "tcp-v4"), (VIP6, "tcp-v6")] {
        let target = vip(ip, 80);
        for port in 43000..43100u16 {
            let got = Conn::open_from(port, target, Mode::Xdp).ask();
            let client = SocketAddr::new(client_addr(target), port);
            let want = predict::backend(&plan, svc, &FlowKey::between(client, target, PROTO_TCP));
            assert_eq!(got, want, "{svc} from port {port}");
            assert_ne!(got, "b3", "the removed backend takes no new flows");
        }
    }
}

#[test]
fn a_reload_adds_and_removes_a_vip() {
    let s = Setup::new(SERVER, 3, 3, "maglev");
    let path = s.dir.0.join("lb.toml");
    let base = std::fs::read_to_string(&path).expect("config");
    let extra = "\n[[service]]\nname = \"alt\"\nvip = \"10.201.0.100:8080\"\n[service.health]\nkind = \"none\"\n\
                 [[service.backend]]\naddr = \"10.200.2.1:80\"\n";
    std::fs::write(&path, format!("{base}{extra}")).expect("write");
    let (ok, text) = lb_reload(&s);
    assert!(ok, "{text}");
    let inside = s.topo.client.enter();
    let names: Vec<String> = (0..20).map(|_| Conn::open(vip(VIP4, 8080)).ask()).collect();
    assert!(names.iter().all(|n| n == "b2"), "the added VIP serves at once: {names:?}");
    drop(inside);

    std::fs::write(&path, base).expect("write");
    let (ok, text) = lb_reload(&s);
    assert!(ok, "{text}");
    assert!(!s.lb.status().contains("alt"), "removed from status");
    let _in = s.topo.client.enter();
    let gone = std::net::TcpStream::connect_timeout(
        &vip(VIP4, 8080),
        std::time::Duration::from_millis(500),
    );
    assert!(gone.is_err(), "a removed VIP is no longer balanced");
    // The others never stopped.
    let names: Vec<String> = (0..30).map(|_| Conn::open(vip(VIP4, 80)).ask()).collect();
    assert_eq!(count(&names).len(), 3);
}

lb_tests::in_both_modes!(a_service_a_reload_recreates_keeps_counting);

/// A reload that renames a service re-creates it under a new id, past the
/// number of services: its counters (and the new-flow rate flood mode is
/// judged by) must still be read. Before, they were read for ids below the
/// service count only, and stayed 0 for good. And it counts from zero, in
/// every mode: splice mode, which keeps the VIP's listener, had carried
/// the old service's counts over.
fn a_service_a_reload_recreates_keeps_counting(mode: lb_tests::mode::Mode) {
    let s = Setup::in_mode(mode, SERVER, 3, 3, "maglev");
    let path = s.dir.0.join("lb.toml");
    let base = std::fs::read_to_string(&path).expect("config");
    let inside = s.topo.client.enter();
    let before: Vec<String> = (0..10).map(|_| s.conn(vip(VIP4, 80)).ask()).collect();
    drop(inside);
    assert_eq!(before.len(), 10);
    for name in ["web-v4", "tcp-v4"] {
        let renamed = base.replace("name = \"tcp-v4\"", &format!("name = \"{name}\""));
        std::fs::write(&path, renamed).expect("write");
        let (ok, text) = lb_reload(&s);
        assert!(ok, "{text}");
    }
    let inside = s.topo.client.enter();
    let names: Vec<String> = (0..20).map(|_| s.conn(vip(VIP4, 80)).ask()).collect();
    drop(inside);
    assert_eq!(names.len(), 20);
    let report = s.lb.report();
    let web = report.services.iter().find(|v| v.name == "tcp-v4").expect("tcp-v4 in status");
    assert!(web.traffic.new_flows >= 20, "the re-created service counts: {:?}", web.traffic);
    assert!(
        web.traffic.new_flows < 30,
        "from zero, not on from the old service's 10: {:?}",
        web.traffic
    );
    let backends: u64 = web.backends.iter().map(|b| b.traffic.new_flows).sum();
    assert!(backends >= 20, "and so do its backends: {backends}");
}

/// `lb reload --config FILE` re-reads the agent's own file, so naming
/// another one is refused and says which file the agent runs; naming its
/// own file (by another path) reloads it and says so. Before, the other
/// file was answered with "config reloaded" and never read.
#[test]
fn a_reload_naming_another_file_is_refused() {
    let s = Setup::new(SERVER, 3, 3, "maglev");
    let path = s.dir.0.join("lb.toml");
    let other = s.dir.0.join("other.toml");
    let text = std::fs::read_to_string(&path).expect("config");
    std::fs::write(&other, text.replacen("name = \"tcp-v4\"", "name = \"renamed\"", 1))
        .expect("write");
    let reload = |file: &std::path::Path| {
        let out = std::process::Command::new(lb_tests::agent::lb_binary())
            .args(["reload", "--config"])
            .arg(file)
            .output()
            .expect("lb reload");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let (ok, text) = reload(&other);
    assert!(!ok, "another file must be refused: {text}");
    assert!(text.contains(&format!("runs {}", path.display())), "names the agent's file: {text}");
    assert!(!s.lb.status().contains("renamed"), "nothing of the other file applied");
    let via = s.dir.0.join(".").join("lb.toml");
    let (ok, text) = reload(&via);
    assert!(ok, "its own file, by another path, reloads: {text}");
    assert!(text.contains(&format!("reloaded from {}", path.display())), "{text}");
}
