//! `lb trace` end to end, at both hooks of the kernel datapath: a filter
//! for one client port while several ports connect; only the traced flow's
//! records arrive, they name its backend and why, `--count` ends the trace
//! and the agent clears the filter (status and the pinned map say so), also
//! on Ctrl-C, when the client is killed, and when the agent was killed and
//! the next one takes the datapath over. Splice mode refuses, naming the
//! mode. Needs root.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use aya::maps::{Array, Map, MapData};
use lb_common::abi::{MAP_TRACE, TraceFilter};
use lb_tests::{
    agent::{Lb, lb_binary, pin_dir, start_lb, wait_for},
    client::{Conn, Setup, vip},
    mode::Mode,
    netns::Proc,
    topology::{VIP4, backend4},
};
use nix::sys::signal::Signal;

const SERVER: &str = env!("CARGO_BIN_EXE_lbt-server");

/// The port traced, and others connecting at the same time (all in the
/// client namespace's reserved range, so no ephemeral connection takes one).
const TRACED: u16 = 43_210;
const OTHERS: [u16; 3] = [43_211, 43_212, 43_213];

/// Records of a new connection's SYN: packet, service, backend, action.
const SYN_RECORDS: usize = 4;

/// `lb trace <args>` against the agent at `control`, its output piped.
fn trace(control: &Path, args: &[&str]) -> Proc {
    let child = Command::new(lb_binary())
        .arg("trace")
        .args(args)
        .arg("--control")
        .arg(control)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn lb trace");
    Proc(child)
}

/// Waits until the agent reports a trace session running (`true`) or none.
fn until_running(lb: &Lb, running: bool) -> Option<String> {
    wait_for(Duration::from_secs(10), "the agent's trace state", || {
        let t = lb.report().trace;
        (t.is_some() == running).then_some(t)
    })
}

/// The filter in the pinned `LB_TRACE` map.
fn pinned_filter(dir: &Path) -> TraceFilter {
    let path = pin_dir(dir).join("maps").join(MAP_TRACE);
    let map = MapData::from_pin(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let array: Array<MapData, TraceFilter> = Array::try_from(Map::Array(map)).expect("an array");
    array.get(&0, 0).expect("element 0")
}

/// Waits (at most `limit`) for `child` to exit; its stdout lines.
fn finish(child: &mut Child, limit: Duration) -> (bool, Vec<String>, String) {
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        assert!(start.elapsed() < limit, "lb trace did not stop within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = BufReader::new(child.stdout.take().expect("stdout"));
    let lines = out.lines().map_while(Result::ok).collect();
    let mut err = String::new();
    let _ = std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err);
    (status.success(), lines, err)
}

fn only_the_filtered_flow_is_traced(mode: Mode) {
    let s = Setup::in_mode(mode, SERVER, 2, 2, "maglev");
    trace_one_connection(&s, mode, TRACED);
}

/// Traces port `traced` (`--count` the SYN's records) while [`OTHERS`] and
/// then `traced` connect: only its records arrive, naming its backend, and
/// the filter is cleared once the count is reached.
fn trace_one_connection(s: &Setup, mode: Mode, traced: u16) {
    let control = s.dir.0.join("control.sock");
    assert_eq!(pinned_filter(&s.dir.0), TraceFilter::default(), "no filter before a trace");
    let port = traced.to_string();
    let count = SYN_RECORDS.to_string();
    let mut t = trace(&control, &["--port", &port, "--proto", "tcp", "--count", &count]);
    let what = until_running(&s.lb, true).expect("running");
    assert_eq!(what, format!("port {traced} tcp"));
    assert_eq!(u16::from_be(pinned_filter(&s.dir.0).port_be), traced, "the filter is set");

    // The other ports first: a filter that let them through would put
    // their records ahead of the traced flow's.
    let backend = {
        let _in = s.topo.client.enter();
        for p in OTHERS {
            Conn::open_from(p, vip(VIP4, 80), mode).ask();
        }
        Conn::open_from(traced, vip(VIP4, 80), mode).ask()
    };
    let (ok, lines, err) = finish(&mut t.0, Duration::from_secs(10));
    assert!(ok, "lb trace failed: {err}\n{}", lines.join("\n"));
    eprintln!("{}\n{err}", lines.join("\n"));
    assert_eq!(lines.len(), SYN_RECORDS, "--count {SYN_RECORDS}: {lines:?}");
    assert!(
        lines[0].starts_with(&format!("packet: 10.200.0.2:{traced} > 10.201.0.100:80 tcp [S]")),
        "the first record is the traced port's SYN: {lines:?}"
    );
    assert!(lines[1].starts_with("service: tcp-v4"), "{lines:?}");
    let i: usize = backend.trim_start_matches('b').parse().expect("backend name b<i>");
    let expected = format!("backend {}:80: new flow, Maglev slot", backend4(i));
    assert!(lines[2].starts_with(&expected), "names the backend it reached ({backend}): {lines:?}");
    assert!(lines[3].starts_with("action: redirect"), "{lines:?}");
    for other in OTHERS {
        assert!(
            !lines.iter().any(|l| l.contains(&format!(":{other}"))),
            "{other} traced: {lines:?}"
        );
    }
    assert!(err.contains("filter cleared"), "the agent confirmed the end: {err}");

    until_running(&s.lb, false);
    assert_eq!(pinned_filter(&s.dir.0), TraceFilter::default(), "the filter is cleared");
}

#[test]
fn only_the_filtered_flow_is_traced_at_the_xdp_hook() {
    only_the_filtered_flow_is_traced(Mode::Xdp);
}

#[test]
fn only_the_filtered_flow_is_traced_at_the_tc_hook() {
    only_the_filtered_flow_is_traced(Mode::Tc);
}

#[test]
fn an_agent_that_took_over_a_datapath_traces_it() {
    let mut s = Setup::in_mode(Mode::Tc, SERVER, 2, 2, "maglev");
    let control = s.dir.0.join("control.sock");
    // The first agent is killed while a session runs: its program keeps
    // forwarding, its switch still on, the pinned filter still set.
    let mut orphan = trace(&control, &["--port", "43300"]);
    until_running(&s.lb, true);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(s.lb.pid() as i32), Signal::SIGKILL)
        .expect("SIGKILL lb");
    s.lb.wait_exit(Duration::from_secs(5));
    let (ok, _, err) = finish(&mut orphan.0, Duration::from_secs(10));
    assert!(!ok && err.contains("the agent closed the trace"), "{err}");
    assert_eq!(u16::from_be(pinned_filter(&s.dir.0).port_be), 43300, "left set");

    s.lb = start_lb(&s.topo, &s.dir.0.join("lb.toml"), &s.dir.0);
    assert!(s.lb.log().contains("took over the running datapath"), "{}", s.lb.log());
    assert_eq!(pinned_filter(&s.dir.0), TraceFilter::default(), "the new agent cleared it");
    assert_eq!(s.lb.report().trace, None);
    trace_one_connection(&s, Mode::Tc, TRACED + 100);
}

#[test]
fn a_killed_or_interrupted_trace_client_leaves_no_filter_and_a_second_waits_its_turn() {
    let s = Setup::in_mode(Mode::Tc, SERVER, 1, 1, "maglev");
    let control = s.dir.0.join("control.sock");
    let mut first = trace(&control, &["--src", "10.200.0.0/24"]);
    until_running(&s.lb, true);
    assert_eq!(pinned_filter(&s.dir.0).src_len, 24);
    // One session at a time: the datapath holds one filter.
    let (ok, text) = s.lb.cli(&["trace", "--port", "80"]);
    assert!(!ok && text.contains("another lb trace session is running"), "{text}");

    first.0.kill().expect("kill lb trace");
    let _ = first.0.wait();
    until_running(&s.lb, false);
    assert_eq!(pinned_filter(&s.dir.0), TraceFilter::default(), "the filter is cleared");

    // Ctrl-C: the client ends the session itself and waits for the agent.
    let mut second = trace(&control, &["--dst", "10.201.0.100"]);
    until_running(&s.lb, true);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(second.0.id() as i32), Signal::SIGINT)
        .expect("SIGINT lb trace");
    let (ok, _, err) = finish(&mut second.0, Duration::from_secs(10));
    assert!(ok && err.contains("(interrupted)") && err.contains("filter cleared"), "{err}");
    assert_eq!(s.lb.report().trace, None, "cleared before the client exits");
}

#[test]
fn splice_mode_says_trace_is_for_the_kernel_datapath() {
    let s = Setup::in_mode(Mode::Splice, SERVER, 1, 1, "maglev");
    let (ok, text) = s.lb.cli(&["trace", "--count", "1"]);
    assert!(!ok, "{text}");
    assert!(text.contains("kernel datapath") && text.contains("splice mode"), "{text}");
}
