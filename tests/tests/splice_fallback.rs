//! `lb run --mode auto` where XDP cannot load: started without the
//! capabilities BPF needs, lb serves in splice mode and says so. Needs root
//! (to drop capabilities from).

use lb_tests::{
    client::{Setup, count, vip},
    mode::Mode,
    topology::{VIP4, VIP6},
};

const SERVER: &str = env!("CARGO_BIN_EXE_lbt-server");

/// `setpriv` arguments that start lb with only CAP_NET_ADMIN (a container's
/// usual network capability, enough to attach XDP but not to load it) and
/// CAP_NET_BIND_SERVICE (the VIPs use port 80): no CAP_BPF, CAP_PERFMON or
/// CAP_SYS_ADMIN. For root, what exec grants is the bounding set (plus the
/// inheritable one, emptied too).
const WITHOUT_BPF: &[&str] = &[
    "setpriv",
    "--inh-caps=-all",
    "--ambient-caps=-all",
    "--bounding-set=-all,+net_admin,+net_bind_service",
    "--",
];

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The effective capabilities of process `pid`.
fn effective_caps(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .expect("CapEff line")
        .trim()
        .to_owned();
    u64::from_str_radix(&hex, 16).expect("CapEff hex")
}

#[test]
fn without_bpf_capabilities_auto_mode_serves_in_splice_mode_and_logs_why_once() {
    let s = Setup::splice(Some(SERVER), 3, WITHOUT_BPF, "auto");
    let caps = effective_caps(s.lb.pid());
    for (cap, name) in
        [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON"), (CAP_SYS_ADMIN, "CAP_SYS_ADMIN")]
    {
        assert_eq!(caps & (1 << cap), 0, "lb runs with {name} ({caps:#x}): the test is void");
    }
    assert_eq!(s.mode, Mode::Splice, "auto mode fell back to splice:\n{}", s.lb.status());
    let log = s.lb.log();
    let said: Vec<&str> = log.lines().filter(|l| l.contains("splice mode")).collect();
    assert_eq!(said.len(), 1, "one log line says splice mode, and why:\n{log}");
    assert!(
        said[0].contains("XDP is unavailable")
            && said[0].contains("Operation not permitted")
            && said[0].contains("CAP_BPF"),
        "the line gives the reason (XDP unavailable: permission denied): {}",
        said[0]
    );
    let pins = lb_tests::agent::pin_dir(&s.dir.0);
    assert!(!pins.exists(), "the failed XDP start leaves no empty pin directory: {pins:?}");
    // And it serves.
    let _in = s.topo.client.enter();
    for ip in [VIP4, VIP6] {
        let names: Vec<String> = (0..30).map(|_| s.conn(vip(ip, 80)).ask()).collect();
        assert_eq!(count(&names).len(), 3, "TCP via {ip}: {:?}", count(&names));
    }
}

#[test]
fn lb_status_says_why_auto_mode_fell_back_to_splice() {
    let s = Setup::splice(Some(SERVER), 1, WITHOUT_BPF, "auto");
    let status = s.lb.status();
    assert!(status.starts_with("mode splice"), "{status}");
    assert!(
        status.contains("Operation not permitted"),
        "lb status gives the reason XDP could not load:\n{status}"
    );
}

/// Auto mode falls back to splice mode where the kernel refuses BPF, not
/// where the config is wrong: an interface this host does not have, or an
/// eBPF object named on the command line that does not load, fails the
/// start, naming the fix. Before, both served in splice mode with a
/// warning whose advice (`attach = "native"`) did not apply.
#[test]
fn a_missing_interface_or_a_named_object_that_fails_is_refused_not_served_in_splice_mode() {
    let topo = lb_tests::topology::Topology::new(1);
    let dir = lb_tests::agent::TempDir::new();
    let path = dir.0.join("lb.toml");
    let text = lb_tests::agent::config(&topo, &dir.0, "maglev", 1).replacen(
        "mode = \"xdp\"",
        "mode = \"auto\"",
        1,
    );
    let typo = text.replacen("interfaces = [", "interfaces = [\"lbnope0\", ", 1);
    std::fs::write(&path, typo).expect("config");
    let said = lb_tests::agent::run_refused(&topo.lb, &path, &[]);
    assert!(said.contains("agent.interfaces lists \"lbnope0\""), "{said}");
    assert!(said.contains("fix the name"), "{said}");

    std::fs::write(&path, &text).expect("config");
    let junk = dir.0.join("junk.o");
    std::fs::write(&junk, b"not an ELF object").expect("junk object");
    let junk = junk.to_str().expect("path");
    let with_object = format!("exec \"$0\" \"$@\" --bpf-object {junk}");
    let said = lb_tests::agent::run_refused(&topo.lb, &path, &["sh", "-c", &with_object]);
    assert!(said.contains(junk), "names the object: {said}");
    assert!(!said.contains("splice mode"), "no fallback: {said}");
}
