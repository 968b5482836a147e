//! Reloads of a running balancer (`lb reload`): invalid files are refused
//! with the running config untouched; valid ones apply under load without
//! breaking established flows to the backends they keep. Needs root.

use std::time::Duration;

use lb_tests::{
    agent::config,
    client::{Conn, Load, Setup, count, vip},
    topology::VIP4,
};

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
    let inside = s.topo.client.enter();
    let mut conns: Vec<Conn> = (0..90).map(|_| Conn::open(vip(VIP4, 80))).collect();
    let first: Vec<String> = conns.iter_mut().map(Conn::ask).collect();
    drop(inside);

    // Keep opening connections while the config loses backend 3.
    let load = Load::start(s.topo.client.name(), vip(VIP4, 80), Duration::from_secs(1));
    load.wait_for(20, Duration::from_secs(10));
    std::fs::write(s.dir.0.join("lb.toml"), config(&s.topo, &s.dir.0, "maglev", 2))
        .expect("config");
    let (ok, text) = lb_reload(&s);
    assert!(ok, "{text}");
    // Connections ran before the table swap and after it, without a pause.
    load.wait_for(50, Duration::from_secs(10));
    let (ok, failed) = load.stop();
    assert!(ok > 0, "no connection ran during the reload");
    assert_eq!(failed, 0, "{failed} of {} new connections failed during the reload", ok + failed);

    let _in = s.topo.client.enter();
    // Every established flow keeps its backend, the removed one's included:
    // a removal drains, it does not cut.
    assert!(first.iter().any(|n| n == "b3"), "b3 had flows before: {:?}", count(&first));
    for (c, name) in conns.iter_mut().zip(&first) {
        assert_eq!(&c.ask(), name, "an established flow keeps its backend through the reload");
    }
    let fresh: Vec<String> = (0..100).map(|_| Conn::open(vip(VIP4, 80)).ask()).collect();
    assert!(!fresh.iter().any(|n| n == "b3"), "the removed backend takes no new flows");
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
