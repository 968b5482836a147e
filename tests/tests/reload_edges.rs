//! Reload edge cases: tables read only at startup, a service whose identity
//! changes, an operator's weight across a reload, and the backend ids a long
//! run of reloads uses up (never reused while the agent runs). Needs root.

use lb_tests::{agent::config, client::Setup, topology::VIP4};
use lb_userspace::control::protocol::ServiceStatus;

const SERVER: &str = env!("CARGO_BIN_EXE_lbt-server");

fn service(s: &Setup, name: &str) -> ServiceStatus {
    s.lb.report().services.into_iter().find(|x| x.name == name).expect("service")
}

/// Writes `text` as the config and reloads: whether it applied, and what
/// `lb reload` printed.
fn reload_with(s: &Setup, text: &str) -> (bool, String) {
    std::fs::write(s.dir.0.join("lb.toml"), text).expect("write config");
    s.lb.cli(&["reload"])
}

#[test]
fn a_change_to_agent_or_splice_is_refused_and_the_running_config_stays() {
    let s = Setup::new(SERVER, 3, 3, "maglev");
    let good = std::fs::read_to_string(s.dir.0.join("lb.toml")).expect("config");
    let changes = [
        ("[agent]", "mode", good.replacen("mode = \"xdp\"", "mode = \"splice\"", 1)),
        ("[splice]", "shutdown_timeout", format!("[splice]\nshutdown_timeout = \"3s\"\n{good}")),
    ];
    for (table, key, text) in changes {
        let (ok, out) = reload_with(&s, &text);
        assert!(!ok, "a change to {table} must be refused: {out}");
        assert!(out.contains(&format!("the {table} table changed ({key})")), "{table}: {out}");
        assert!(out.contains("restart lb"), "{table}: the message names the fix: {out}");
        let status = s.lb.status();
        assert!(status.starts_with("mode xdp"), "{table}: still in XDP mode:\n{status}");
        assert_eq!(
            s.answering("tcp", VIP4, 60).len(),
            3,
            "{table}: the running config still serves"
        );
    }
    let (ok, out) = reload_with(&s, &good);
    assert!(ok, "the unchanged file reloads: {out}");
}

#[test]
fn a_scheduler_or_table_size_change_replaces_the_service() {
    let s = Setup::new(SERVER, 3, 3, "maglev");
    let before = s.answering("tcp", VIP4, 60);
    assert_eq!(service(&s, "tcp-v4").traffic.new_flows, 60);
    // A new scheduler: the service is removed and added again, with a new
    // service id and new backend ids, so its counters start from 0, and the
    // new table hashes the client address only.
    let affinity = config(&s.topo, &s.dir.0, "maglev-client-ip", 3);
    let (ok, out) = reload_with(&s, &affinity);
    assert!(ok, "{out}");
    let svc = service(&s, "tcp-v4");
    assert_eq!(svc.scheduler, "maglev-client-ip");
    assert_eq!(svc.traffic.new_flows, 0, "a new service's counters: {svc:?}");
    assert!(svc.backends.iter().all(|b| b.traffic.new_flows == 0), "new backend ids: {svc:?}");
    let after = s.answering("tcp", VIP4, 60);
    assert_eq!(after.len(), 1, "one client address, one backend: {after:?} (was {before:?})");
    // A new table size: removed and added again too, with a table of that
    // size.
    let sized = affinity.replace(
        "scheduler = \"maglev-client-ip\"",
        "scheduler = \"maglev-client-ip\"\ntable_size = 1031",
    );
    let (ok, out) = reload_with(&s, &sized);
    assert!(ok, "{out}");
    let svc = service(&s, "tcp-v4");
    assert_eq!(svc.traffic.new_flows, 0, "a new service's counters after a resize: {svc:?}");
    assert_eq!(svc.backends.iter().map(|b| b.slots).sum::<u32>(), 1031, "{svc:?}");
    assert_eq!(s.answering("tcp", VIP4, 60).len(), 1);
}

#[test]
fn an_operator_weight_lasts_until_the_next_reload() {
    let s = Setup::new(SERVER, 3, 3, "maglev");
    let b1_share = |s: &Setup| {
        let svc = service(s, "tcp-v4");
        let total: u32 = svc.backends.iter().map(|b| b.slots).sum();
        let b1 = svc.backends.iter().find(|b| b.addr == "10.200.1.1:80").expect("b1");
        f64::from(b1.slots) / f64::from(total)
    };
    let even = b1_share(&s);
    assert!((even - 1.0 / 3.0).abs() < 0.05, "equal weights: b1 has {even:.3} of the slots");
    s.lb.cli_ok(&["backend", "weight", "tcp-v4", "10.200.1.1:80", "4"]);
    let weighted = b1_share(&s);
    assert!((weighted - 4.0 / 6.0).abs() < 0.05, "weight 4 of 6: b1 has {weighted:.3}");
    // The same file again: the config's weight (1) is back.
    let text = std::fs::read_to_string(s.dir.0.join("lb.toml")).expect("config");
    let (ok, out) = reload_with(&s, &text);
    assert!(ok, "{out}");
    let reloaded = b1_share(&s);
    assert!(
        (reloaded - 1.0 / 3.0).abs() < 0.05,
        "after the reload b1 has {reloaded:.3} of the slots (weight 4 would give 0.667)"
    );
}

/// `base` with one more TCP service (VIP port 9000) of `n` backends on
/// `port`, addresses that exist nowhere (XDP mode never connects to them).
fn with_many_backends(base: &str, n: usize, port: u16) -> String {
    let mut s = format!(
        "{base}\n[[service]]\nname = \"many\"\nvip = \"{VIP4}:9000\"\nprotocol = \"tcp\"\n[service.health]\nkind = \"none\"\n"
    );
    for i in 0..n {
        s +=
            &format!("[[service.backend]]\naddr = \"10.250.{}.{}:{port}\"\n", i / 250, i % 250 + 1);
    }
    s
}

#[test]
fn reloads_that_use_up_the_backend_ids_are_refused_and_the_running_config_stays() {
    const MANY: usize = 1000;
    let s = Setup::new(SERVER, 3, 3, "maglev");
    let base = config(&s.topo, &s.dir.0, "maglev", 3);
    // Every reload moves the 1 000 backends to a port they never had: new
    // backends, new ids, while the ones before keep theirs. (Back on a port
    // they had, they would get their old ids again.)
    let limit = lb_common::abi::MAX_BACKENDS as usize;
    let mut used = 12; // the 4 services of 3 backends
    let mut refused = None;
    for n in 0..20 {
        let (ok, out) = reload_with(&s, &with_many_backends(&base, MANY, 80 + n as u16));
        if !ok {
            refused = Some((n, out));
            break;
        }
        used += MANY;
        assert_eq!(service(&s, "many").backends.len(), MANY);
    }
    let (n, out) = refused.expect("20 reloads of 1 000 new backends each all applied");
    eprintln!("reload {n} refused with {used} backend ids in use: {out}");
    assert!(used + MANY > limit && used <= limit, "refused at {used} ids, limit {limit}");
    // Refused by the plan, before any map is written, naming the limit,
    // why ids run out with a config far below it, and what frees them.
    for says in [
        format!("no backend id left: all {limit} have been handed out"),
        format!("the config has {} backends", MANY + 12),
        "`lb stop`, then start it again".to_owned(),
    ] {
        assert!(out.contains(&says), "the plan refuses it, saying {says:?}: {out}");
    }
    // The running config stays: the old "many" and every TCP backend.
    assert_eq!(service(&s, "many").backends.len(), MANY);
    assert_eq!(s.answering("tcp", VIP4, 60).len(), 3, "the running config still serves");
}

#[test]
fn an_operator_action_on_a_service_that_does_not_exist_names_the_service() {
    let s = Setup::new(SERVER, 3, 3, "maglev");
    let (ok, out) = s.lb.cli(&["backend", "drain", "nosuch", "10.200.1.1:80"]);
    assert!(!ok, "{out}");
    assert!(out.contains("no service \"nosuch\""), "{out}");
    let (ok, out) = s.lb.cli(&["backend", "drain", "tcp-v4", "10.200.9.9:80"]);
    assert!(!ok, "{out}");
    assert!(out.contains("no backend 10.200.9.9:80 in service \"tcp-v4\""), "{out}");
}
