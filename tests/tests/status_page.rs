//! The status page at `/` of the metrics address, loaded in headless
//! Chromium: after its script ran it must show every service, backend and
//! exception the agent reports, with the states an operator and a failed
//! backend gave them. Keeps a screenshot in target/test-output/. Needs root
//! and Debian's chromium (`cargo xtask test` installs it).

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use lb_tests::{
    agent::{TempDir, config_with_health},
    browser::Chromium,
    client::{Conn, Flow, Load, Setup, vip},
    topology::{Topology, VIP4},
};
use lb_userspace::control::protocol::StatusReport;

const SERVER: &str = env!("CARGO_BIN_EXE_lbt-server");
const ADDR: &str = "127.0.0.1:9912";
/// Relaxed probes: a loaded machine must not fail a healthy backend.
const PROBES: &str = "kind = \"tcp\"\ninterval = \"100ms\"\ntimeout = \"90ms\"";
/// Virtual time for the page: its script polls every second, so this is
/// several refreshes.
const BUDGET: Duration = Duration::from_secs(5);

/// Where screenshots are kept: target/test-output/.
fn output_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target")));
    let dir = target.join("test-output");
    std::fs::create_dir_all(&dir).expect("test output dir");
    dir
}

/// The text of the element that `id="<id>"` opens, up to `</tr>`.
fn row<'a>(dom: &'a str, id: &str) -> &'a str {
    let at = dom.find(&format!("id=\"{id}\"")).unwrap_or_else(|| panic!("no row {id}"));
    let end = dom[at..].find("</tr>").expect("row end");
    &dom[at..at + end]
}

/// The text of the cell whose class list starts with `class` in `row`
/// (markup stripped).
fn cell(row: &str, class: &str) -> String {
    let at = row
        .find(&format!("class=\"{class}\""))
        .or_else(|| row.find(&format!("class=\"text {class}\"")))
        .unwrap_or_else(|| panic!("no cell {class} in {row}"));
    let open = at + row[at..].find('>').expect("tag end") + 1;
    let close = open + row[open..].find("</td>").expect("cell end");
    html_text(&row[open..close])
}

/// `html` without tags, entities decoded (the few serialisation uses).
fn html_text(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
}

/// A number as the page writes rates ("950", "8.1 k", "1.2 M").
fn si_value(text: &str) -> Option<f64> {
    let (num, scale) = match text.split_once(' ') {
        Some((n, "k")) => (n, 1e3),
        Some((n, "M")) => (n, 1e6),
        Some((n, "G")) => (n, 1e9),
        Some(_) => return None,
        None => (text, 1.0),
    };
    num.parse::<f64>().ok().map(|n| n * scale)
}

/// Polls the agent until `ok` holds of its report (10 s at most).
fn until(s: &Setup, what: &str, ok: impl Fn(&StatusReport) -> bool) -> StatusReport {
    let start = Instant::now();
    loop {
        let r = s.lb.report();
        if ok(&r) {
            return r;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{what}: {r:#?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn backend<'a>(
    r: &'a StatusReport,
    svc: &str,
    addr: &str,
) -> &'a lb_userspace::control::protocol::BackendStatus {
    r.services
        .iter()
        .find(|s| s.name == svc)
        .and_then(|s| s.backends.iter().find(|b| b.addr == addr))
        .unwrap_or_else(|| panic!("no backend {addr} in {svc}"))
}

#[test]
fn the_status_page_shows_what_the_agent_reports() {
    let dir = TempDir::new();
    // Chromium first: without it there is nothing to test, and the reason
    // is said before any topology is built.
    let chromium = match Chromium::find(&dir.0) {
        Ok(c) => c,
        Err(why) => {
            eprintln!(
                "SKIPPED the_status_page_shows_what_the_agent_reports: chromium cannot run: {why}"
            );
            return;
        }
    };
    let mut s = Setup::with_config(SERVER, Topology::new(3), dir, |t, d| {
        config_with_health(t, d, "maglev", 3, PROBES).replacen(
            "[agent]\n",
            &format!("[agent]\nmetrics_addr = \"{ADDR}\"\n"),
            1,
        )
    });
    until(&s, "every probed backend up", |r| {
        r.services
            .iter()
            .filter(|s| s.protocol == "tcp")
            .all(|s| s.backends.iter().all(|b| b.health == "up"))
    });
    let inside = s.topo.client.enter();
    for _ in 0..30 {
        Flow::open(vip(VIP4, 5353)).ask();
    }
    for _ in 0..10 {
        Conn::open(vip(VIP4, 80)).ask();
    }
    drop(inside);
    // An operator drains one backend, disables another, re-weights a
    // third; backend 3's server dies, so its probes take it down.
    s.lb.cli_ok(&["backend", "drain", "tcp-v4", "10.200.2.1:80"]);
    s.lb.cli_ok(&["backend", "disable", "tcp-v4", "10.200.3.1:80"]);
    s.lb.cli_ok(&["backend", "weight", "udp-v4", "10.200.1.1:5353", "5"]);
    drop(s.backends.remove(2));
    let report = until(&s, "backend 3 down by its probes, flows counted", |r| {
        backend(r, "tcp-v6", "[fd00:200:3::1]:80").health == "down"
            && r.flows_age_ms < u64::MAX
            && r.services
                .iter()
                .find(|s| s.name == "udp-v4")
                .is_some_and(|s| s.backends.iter().map(|b| b.active_flows).sum::<u64>() == 30)
    });

    // Traffic while the page refreshes, so its rates have something to show.
    let load = Load::start(s.topo.client.name(), vip(VIP4, 80), Duration::from_secs(1));
    let url = format!("http://{ADDR}/");
    let dom = chromium.dump_dom(&s.topo.lb, &url, BUDGET);
    let out = output_dir();
    std::fs::write(out.join("status-page.html"), &dom).expect("keep the DOM");
    let shot = out.join("status-page.png");
    chromium.screenshot(&s.topo.lb, &url, BUDGET, (1700, 1300), &shot);
    let (answered, _) = load.stop();
    assert!(answered > 0, "the load ran");

    assert!(dom.contains("<b id=\"mode\">xdp</b>"), "the mode: {dom}");
    // Every interface, with how the program is attached to it.
    for i in &report.interfaces {
        let r = row(&dom, &format!("if:{}", i.name));
        assert_eq!(cell(r, "attach"), i.attach, "interface {}", i.name);
    }
    assert_eq!(report.interfaces.len(), 4, "lb-cli and one per backend");
    // Every service and backend, with the report's values.
    for svc in &report.services {
        let r = row(&dom, &format!("svc:{}", svc.name));
        assert!(cell(r, "name").contains(&svc.vip), "{} shows its VIP", svc.name);
        for (class, n) in [("acl_denied", svc.acl_denied), ("rate_limited", svc.rate_limited)] {
            assert_eq!(cell(r, class).replace(',', ""), n.to_string(), "{} {class}", svc.name);
        }
        for b in &svc.backends {
            let r = row(&dom, &format!("be:{}:{}", svc.name, b.addr));
            let what = format!("{} {}", svc.name, b.addr);
            assert_eq!(cell(r, "state"), b.state, "{what}");
            assert_eq!(cell(r, "health"), b.health, "{what}");
            assert_eq!(cell(r, "admin"), b.admin, "{what}");
            assert_eq!(cell(r, "weight"), b.weight.to_string(), "{what}");
            assert_eq!(cell(r, "slots").replace(',', ""), b.slots.to_string(), "{what}");
            // Refreshed after the report above: traffic can only have grown.
            let new_flows: u64 = cell(r, "new_flows").replace(',', "").parse().expect("count");
            assert!(new_flows >= b.traffic.new_flows, "{what}: {new_flows}");
        }
    }
    // The states the test set up, as a person reads them.
    let b2 = row(&dom, "be:tcp-v4:10.200.2.1:80");
    assert_eq!((cell(b2, "state"), cell(b2, "admin")), ("draining".into(), "draining".into()));
    let b3 = row(&dom, "be:tcp-v4:10.200.3.1:80");
    assert_eq!((cell(b3, "state"), cell(b3, "admin")), ("down".into(), "disabled".into()));
    let b3v6 = row(&dom, "be:tcp-v6:[fd00:200:3::1]:80");
    assert_eq!((cell(b3v6, "state"), cell(b3v6, "health")), ("down".into(), "down".into()));
    assert_eq!(cell(row(&dom, "be:udp-v4:10.200.1.1:5353"), "weight"), "5");
    let udp_active: u64 = (1..=3)
        .map(|i| {
            let r = row(&dom, &format!("be:udp-v4:10.200.{i}.1:5353"));
            cell(r, "active").parse::<u64>().expect("active flows")
        })
        .sum();
    assert_eq!(udp_active, 30, "every UDP flow is live");
    // Rates need two reports (the script refreshed), and the load ran
    // between every two.
    let rate = cell(row(&dom, "svc:tcp-v4"), "packets_rate");
    let pps = si_value(&rate);
    assert!(pps.is_some_and(|p| p > 0.0), "tcp-v4 packets/s under load, after a refresh: {rate:?}");
    // Every exception counter, with its action.
    assert!(!report.exceptions.is_empty());
    for e in &report.exceptions {
        let r = row(&dom, &format!("ex:{}", e.reason));
        assert_eq!(cell(r, "action"), e.action, "{}", e.reason);
    }
    assert!(dom.contains("id=\"error\" hidden"), "no refresh failed");

    let png = std::fs::read(&shot).expect("screenshot");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "a real screenshot");
    eprintln!("screenshot: {} ({} bytes)", shot.display(), png.len());
}
