//! The tc hook as kernels without tcx links (before Linux 6.6) get it: a
//! cls_bpf filter in a clsact qdisc, attached over netlink, forced here
//! with `LB_TC_LINK=netlink` (this kernel has tcx). Such a filter outlives
//! the agent unpinned: restarts (clean or after SIGKILL) must take lb's own
//! filter over, never add a second one; `lb stop` must delete it; a filter
//! of another program in lb's slot is left alone and named in the error.
//! (`lb decap`'s filter: decap.rs.) Needs root.

use std::time::Duration;

use lb_tests::{
    agent::{TempDir, config, lb_binary, run_refused, start_lb_via},
    client::{Load, Setup, vip},
    mode::Mode,
    topology::{Topology, VIP4, VIP6},
};
use lb_userspace::datapath::tc_netlink::RUN;

const SERVER: &str = env!("CARGO_BIN_EXE_lbt-server");
/// `lb run` with the netlink filter forced.
const NETLINK: [&str; 2] = ["env", "LB_TC_LINK=netlink"];
/// lb's slot at tc ingress (`lb_userspace::datapath::tc_netlink::RUN`).
const PREF: u16 = RUN.priority;

/// Every interface of the setup holds exactly one lb filter, in lb's slot;
/// returns the program ids they hold.
fn one_filter_each(s: &Setup, when: &str) -> Vec<String> {
    s.topo
        .lb_interfaces()
        .iter()
        .map(|iface| {
            let f = s.topo.lb.tc_filters(iface, RUN.program);
            assert_eq!(f.len(), 1, "{when}: one lb filter on {iface}: {f:?}");
            assert!(f[0].contains(&format!("pref {PREF} ")), "{when}: lb's slot: {}", f[0]);
            assert!(f[0].contains("handle 0x1 "), "{when}: lb's handle: {}", f[0]);
            let id = f[0].split_whitespace().skip_while(|w| *w != "id").nth(1);
            id.unwrap_or_else(|| panic!("{when}: no program id in {}", f[0])).to_owned()
        })
        .collect()
}

/// New flows to both VIPs reach every one of the `n` backends.
fn balanced(s: &Setup, n: usize, when: &str) {
    for ip in [VIP4, VIP6] {
        for proto in ["tcp", "udp"] {
            let got = s.answering(proto, ip, 60);
            assert_eq!(got.len(), n, "{when}: {proto} to {ip} reaches every backend: {got:?}");
        }
    }
}

/// lb at the tc hook with the netlink filter forced, in front of `n`
/// backends.
fn launch(n: usize) -> Setup {
    let topo = Topology::new(n);
    Mode::Tc.prepare(&topo);
    let s = Setup::launch(Some(SERVER), topo, TempDir::new(), &NETLINK, |t, d| {
        Mode::Tc.config(&config(t, d, "maglev", n))
    });
    assert_eq!(s.mode, Mode::Tc, "{}", s.lb.status());
    s
}

/// A new agent for `s`, the netlink filter forced.
fn start(s: &Setup) -> lb_tests::agent::Lb {
    start_lb_via(&s.topo, &s.dir.0.join("lb.toml"), &s.dir.0, &NETLINK)
}

#[test]
fn a_netlink_filter_balances_survives_restarts_and_crashes_once_and_goes_on_stop() {
    let n = 3;
    let mut s = launch(n);
    let status = s.lb.status();
    for iface in s.topo.lb_interfaces() {
        let line = status
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{iface} at tc:")))
            .unwrap_or_else(|| panic!("no reason line for {iface}:\n{status}"));
        assert!(
            line.contains(&format!("netlink filter (clsact ingress, pref {PREF} handle 1)"))
                && line.contains("LB_TC_LINK=netlink"),
            "{line}"
        );
    }
    let log = s.lb.log();
    let attached: Vec<&str> = log.lines().filter(|l| l.contains("datapath attached")).collect();
    assert_eq!(attached.len(), s.topo.lb_interfaces().len(), "one line per interface:\n{log}");
    assert!(attached.iter().all(|l| l.contains("link=\"netlink\"")), "{attached:#?}");
    // No tcx link: nothing pinned for the tc hook.
    let pins = lb_tests::agent::pin_dir(&s.dir.0);
    let links: Vec<_> = std::fs::read_dir(pins.join("links"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(links.is_empty(), "no link pinned with the netlink filter: {links:?}");
    let first = one_filter_each(&s, "started");
    balanced(&s, n, "started");

    // A clean restart under load: the filter serves with no agent, and the
    // next one swaps its program into the same filter.
    let load = Load::start(s.topo.client.name(), vip(VIP4, 80), Duration::from_secs(2));
    load.wait_for(20, Duration::from_secs(10));
    s.lb.terminate();
    assert_eq!(one_filter_each(&s, "no agent"), first, "the filter stays as it was");
    load.wait_for(20, Duration::from_secs(10));
    s.lb = start(&s);
    load.wait_for(20, Duration::from_secs(10));
    let (ok, failed) = load.stop();
    assert_eq!(failed, 0, "{failed} of {} connections failed through the restart", ok + failed);
    let status = s.lb.status();
    assert!(status.contains("taken over"), "{status}");
    let second = one_filter_each(&s, "restarted");
    assert!(
        first.iter().zip(&second).all(|(a, b)| a != b),
        "the new program runs in the filters: {first:?} -> {second:?}"
    );
    balanced(&s, n, "restarted");

    // A crash: SIGKILL, then a new agent. Still one filter each.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(s.lb.pid() as i32),
        nix::sys::signal::SIGKILL,
    )
    .expect("SIGKILL");
    s.lb.wait_exit(Duration::from_secs(5));
    s.lb = start(&s);
    let third = one_filter_each(&s, "after a crash");
    assert!(second.iter().zip(&third).all(|(a, b)| a != b), "{second:?} -> {third:?}");
    balanced(&s, n, "after a crash");

    // lb stop: no lb filter left; the clsact qdisc stays (others' filters
    // may use it).
    let out = s.lb.cli_ok(&["stop"]);
    s.lb.wait_exit(Duration::from_secs(10));
    for iface in s.topo.lb_interfaces() {
        let left = s.topo.lb.tc_filters(&iface, RUN.program);
        assert!(left.is_empty(), "lb stop ({out}) left a filter on {iface}: {left:?}");
        let qdisc = s.topo.lb.exec(&["tc", "qdisc", "show", "dev", &iface]);
        assert!(String::from_utf8_lossy(&qdisc.stdout).contains("clsact"), "{iface}: clsact kept");
    }
    assert!(!pins.exists(), "{} left behind", pins.display());
}

/// Another program's filter in lb's slot (a classic BPF one: this kernel
/// has cls_bpf but no matchall): lb leaves it and fails, naming the
/// interface, what holds the slot and the command that frees it.
#[test]
fn a_foreign_filter_in_lbs_slot_is_left_and_named() {
    let topo = Topology::new(1);
    Mode::Tc.prepare(&topo);
    topo.lb.exec(&["tc", "qdisc", "add", "dev", "lb-cli", "clsact"]);
    let pref = PREF.to_string();
    topo.lb.exec(&[
        "tc",
        "filter",
        "add",
        "dev",
        "lb-cli",
        "ingress",
        "pref",
        &pref,
        "handle",
        "1",
        "protocol",
        "all",
        "bpf",
        "bytecode",
        "1,6 0 0 0,",
    ]);
    let dir = TempDir::new();
    let path = dir.0.join("lb.toml");
    std::fs::write(&path, Mode::Tc.config(&config(&topo, &dir.0, "maglev", 1))).expect("config");
    let text = run_refused(&topo.lb, &path, &NETLINK);
    assert!(
        text.contains("lb-cli")
            && text.contains("an unnamed bpf filter")
            && text.contains(&format!("tc filter del dev lb-cli ingress pref {PREF}")),
        "{text}"
    );
    let kept = topo.lb.exec(&["tc", "filter", "show", "dev", "lb-cli", "ingress"]);
    let kept = String::from_utf8_lossy(&kept.stdout).into_owned();
    assert!(kept.contains("bytecode"), "the foreign filter stays: {kept}");
    assert!(topo.lb.tc_filters("lb-cli", RUN.program).is_empty(), "{kept}");
}

/// Restarts that change how the tc hook attaches (the variable set, unset,
/// set again) leave one attachment per interface each time: the new one
/// runs before the old one goes. With no agent running, `lb stop --config`
/// deletes the filters too.
#[test]
fn restarts_between_the_netlink_filter_and_tcx_links_leave_one_attachment() {
    let n = 2;
    let mut s = launch(n);
    let links = lb_tests::agent::pin_dir(&s.dir.0).join("links");
    let tcx = |s: &Setup| {
        s.topo.lb_interfaces().iter().filter(|i| links.join(format!("tc-{i}")).exists()).count()
    };
    one_filter_each(&s, "netlink");
    assert_eq!(tcx(&s), 0);

    // Both switches under load: the attachment left by the old agent serves
    // while none runs, and the new one takes over with no gap.
    let load = Load::start(s.topo.client.name(), vip(VIP4, 80), Duration::from_secs(2));
    load.wait_for(20, Duration::from_secs(10));
    s.lb.terminate();
    s.lb = start_lb_via(&s.topo, &s.dir.0.join("lb.toml"), &s.dir.0, &[]);
    load.wait_for(20, Duration::from_secs(10));
    let (ok, failed) = load.stop();
    assert_eq!(failed, 0, "{failed} of {} connections failed, netlink to tcx", ok + failed);
    assert_eq!(tcx(&s), s.topo.lb_interfaces().len(), "tcx links once the variable is unset");
    for iface in s.topo.lb_interfaces() {
        let left = s.topo.lb.tc_filters(&iface, RUN.program);
        assert!(left.is_empty(), "the netlink filter went from {iface}: {left:?}");
    }
    assert!(s.lb.log().contains("removed the tc filter"), "{}", s.lb.log());
    balanced(&s, n, "tcx");

    let load = Load::start(s.topo.client.name(), vip(VIP4, 80), Duration::from_secs(2));
    load.wait_for(20, Duration::from_secs(10));
    s.lb.terminate();
    s.lb = start(&s);
    load.wait_for(20, Duration::from_secs(10));
    let (ok, failed) = load.stop();
    assert_eq!(failed, 0, "{failed} of {} connections failed, tcx to netlink", ok + failed);
    one_filter_each(&s, "netlink again");
    assert_eq!(tcx(&s), 0, "the tcx links went");
    balanced(&s, n, "netlink again");

    s.lb.terminate();
    let lb = lb_binary();
    let config = s.dir.0.join("lb.toml");
    let out = s.topo.lb.exec(&[
        lb.to_str().expect("utf-8"),
        "stop",
        "--config",
        config.to_str().expect("utf-8"),
    ]);
    for iface in s.topo.lb_interfaces() {
        let left = s.topo.lb.tc_filters(&iface, RUN.program);
        assert!(
            left.is_empty(),
            "lb stop with no agent left a filter on {iface}: {left:?}\n{out:?}"
        );
    }
}
