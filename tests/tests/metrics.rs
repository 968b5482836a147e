//! The Prometheus endpoint, scraped and parsed, checked against traffic
//! actually sent over both families, in every mode (`<case>::xdp`, `::tc`,
//! `::splice`; a proxy counts streams and bytes, not packets). Needs root.

use std::{
    collections::HashMap,
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

use lb_tests::{
    agent::{TempDir, config_with_health},
    client::{Flow, Setup, vip},
    in_both_modes,
    mode::Mode,
    topology::{Topology, VIP4, VIP6, backend_sock},
};

const SERVER: &str = env!("CARGO_BIN_EXE_lbt-server");
/// Relaxed probes: a loaded CI machine must not fail a healthy backend (the
/// test asserts every backend up).
const PROBES: &str = "kind = \"tcp\"\ninterval = \"100ms\"\ntimeout = \"90ms\"";

/// `name{labels}` -> value, and the names that had HELP and TYPE lines.
fn parse(page: &str) -> (HashMap<String, f64>, Vec<String>) {
    let mut samples = HashMap::new();
    let mut typed = Vec::new();
    for line in page.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            typed.push(rest.split_whitespace().next().unwrap_or_default().to_owned());
        } else if !line.starts_with('#') && !line.is_empty() {
            let (key, value) = line.rsplit_once(' ').expect("sample line: name value");
            samples.insert(key.to_owned(), value.parse().expect("numeric value"));
        }
    }
    (samples, typed)
}

/// One scrape of the test's metrics endpoint, parsed.
fn scrape() -> (HashMap<String, f64>, Vec<String>) {
    let mut c = TcpStream::connect("127.0.0.1:9911").expect("metrics endpoint");
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: lb\r\n\r\n").expect("request");
    let mut resp = String::new();
    c.read_to_string(&mut resp).expect("response");
    let (head, body) = resp.split_once("\r\n\r\n").expect("HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    parse(body)
}

in_both_modes!(metrics_count_the_traffic_actually_sent);

fn metrics_count_the_traffic_actually_sent(mode: Mode) {
    let topo = Topology::new(3);
    mode.prepare(&topo);
    let s = Setup::with_config(SERVER, topo, TempDir::new(), |t, d| {
        mode.config(&config_with_health(t, d, "maglev", 3, PROBES)).replacen(
            "[agent]\n",
            "[agent]\nmetrics_addr = \"127.0.0.1:9911\"\n",
            1,
        )
    });
    assert_eq!(s.mode, mode);
    let families = [("v4", VIP4), ("v6", VIP6)];
    let inside = s.topo.client.enter();
    for (_, ip) in families {
        for _ in 0..50 {
            Flow::open(vip(ip, 5353)).ask();
        }
        for _ in 0..20 {
            s.conn(vip(ip, 80)).ask();
        }
    }
    drop(inside);

    let _in_lb = s.topo.lb.enter();
    // In XDP mode flows are counted by a sweep of the flow table about
    // every second: scrape until one taken after the traffic has seen it
    // all. Closed connections are closing flows there; a proxy has none.
    let closing = if mode.kernel() { 20.0 } else { 0.0 };
    let held = |m: &HashMap<String, f64>, metric: &str, svc: &str, port: u16| -> f64 {
        let family = &svc[svc.len() - 2..];
        (1..=3)
            .map(|i| {
                m[&format!(
                    r#"{metric}{{service="{svc}",backend="{}"}}"#,
                    backend_sock(family, i, port)
                )]
            })
            .sum()
    };
    let started = std::time::Instant::now();
    let (m, typed) = loop {
        let (m, typed) = scrape();
        let seen = families.iter().all(|(f, _)| {
            held(&m, "lb_backend_flows", &format!("udp-{f}"), 5353) == 50.0
                && held(&m, "lb_backend_flows", &format!("tcp-{f}"), 80) == 0.0
                && held(&m, "lb_backend_closing_flows", &format!("tcp-{f}"), 80) == closing
        });
        if seen || started.elapsed() > Duration::from_secs(10) {
            break (m, typed);
        }
        std::thread::sleep(Duration::from_millis(100));
    };

    for (f, ip) in families {
        let (udp, tcp) = (format!("udp-{f}"), format!("tcp-{f}"));
        let svc = |metric: &str, name: &str, port: u16, proto: &str| {
            m[&format!(
                r#"{metric}{{service="{name}",vip="{}",protocol="{proto}"}}"#,
                vip(ip, port)
            )]
        };
        // The kernel counts packets, one datagram per UDP flow; a proxy
        // sees streams, not packets, and counts bytes only.
        let packets = if mode.kernel() { 50.0 } else { 0.0 };
        assert_eq!(svc("lb_service_packets_total", &udp, 5353, "udp"), packets, "{udp} packets");
        assert!(svc("lb_service_bytes_total", &udp, 5353, "udp") > 0.0, "{udp} bytes");
        assert!(svc("lb_service_bytes_total", &tcp, 80, "tcp") > 0.0, "{tcp} bytes");
        assert_eq!(svc("lb_service_new_flows_total", &udp, 5353, "udp"), 50.0, "{udp}");
        assert_eq!(svc("lb_service_new_flows_total", &tcp, 80, "tcp"), 20.0, "{tcp}");
        assert_eq!(
            held(&m, "lb_backend_new_flows_total", &udp, 5353),
            50.0,
            "{udp}: backend counters add up to the service's"
        );
        assert_eq!(held(&m, "lb_backend_flows", &udp, 5353), 50.0, "{udp}: every UDP flow is live");
        // The TCP connections were closed: not active.
        assert_eq!(
            held(&m, "lb_backend_flows", &tcp, 80),
            0.0,
            "{tcp}: closed connections are active"
        );
        assert_eq!(held(&m, "lb_backend_closing_flows", &tcp, 80), closing, "{tcp}: closing");
        for i in 1..=3 {
            let up =
                format!(r#"lb_backend_up{{service="{tcp}",backend="{}"}}"#, backend_sock(f, i, 80));
            assert_eq!(m[&up], 1.0, "{up}");
        }
    }
    // Every packet was forwarded: every exception row is there, at 0.
    for reason in lb_common::abi::DropReason::ALL {
        let row = m.iter().find(|(k, _)| {
            k.starts_with(&format!("lb_exceptions_total{{reason=\"{}\"", reason.name()))
        });
        let (_, &value) = row.unwrap_or_else(|| panic!("no exception row {}", reason.name()));
        assert_eq!(value, 0.0, "{}", reason.name());
    }
    let probes = m[r#"lb_probe_duration_seconds_count{service="tcp-v4"}"#];
    assert!(probes > 0.0, "probes are timed");
    assert_eq!(m[r#"lb_probe_duration_seconds_bucket{service="tcp-v4",le="+Inf"}"#], probes);
    // No lists or limits here: the refusal counters are there, at 0.
    for metric in ["lb_service_acl_denied_total", "lb_service_rate_limited_total"] {
        let key = format!(r#"{metric}{{service="tcp-v4",vip="10.201.0.100:80",protocol="tcp"}}"#);
        assert_eq!(m[&key], 0.0, "{key}");
    }
    for name in [
        "lb_service_packets_total",
        "lb_service_acl_denied_total",
        "lb_service_rate_limited_total",
        "lb_backend_up",
        "lb_backend_flows",
        "lb_exceptions_total",
        "lb_probe_duration_seconds",
    ] {
        assert!(typed.iter().any(|t| t == name), "{name} has HELP/TYPE");
    }
    // Every metric every dashboard query names is one the endpoint serves.
    let dashboard = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/grafana-dashboard.json"
    ))
    .expect("deploy/grafana-dashboard.json");
    let served: Vec<&str> = typed.iter().map(String::as_str).collect();
    let mut queries = 0;
    for expr in dashboard.split("\"expr\": \"").skip(1) {
        let expr = expr.split('"').next().unwrap_or_default();
        queries += 1;
        let names = metric_names(expr);
        assert!(!names.is_empty(), "dashboard query {expr:?} names no lb metric");
        for name in names {
            let family = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .filter(|base| served.contains(base))
                .unwrap_or(&name);
            assert!(served.contains(&family), "dashboard query {expr:?}: {name} is not served");
        }
    }
    assert!(queries > 0, "the dashboard has no queries");
}

/// The `lb_*` metric names in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("lb_") {
        let word = &rest[at..];
        let end =
            word.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(word.len());
        // Not part of a longer identifier (a label such as `...lb_x`).
        let before = rest[..at].chars().last();
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            names.push(word[..end].to_owned());
        }
        rest = &word[end..];
    }
    names
}

#[test]
fn status_rates_show_traffic_per_second() {
    let s = Setup::with_config(SERVER, Topology::new(3), TempDir::new(), |t, d| {
        config_with_health(t, d, "maglev", 3, "kind = \"none\"")
    });
    let ns = s.topo.client.name().to_owned();
    let sender = std::thread::spawn(move || {
        let _inside = lb_tests::netns::enter(&ns);
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(1800) {
            Flow::open(vip(VIP4, 5353)).ask();
        }
    });
    std::thread::sleep(Duration::from_millis(200));
    let text = s.lb.cli_ok(&["status", "--rates"]);
    sender.join().expect("sender");
    let rates = text.split("RATES over").nth(1).expect("a rates table");
    let udp = rates.lines().find(|l| l.starts_with("udp-v4")).expect("udp-v4 rates");
    let pps: f64 = udp.split_whitespace().nth(3).and_then(|v| v.parse().ok()).expect("packets/s");
    assert!(pps > 10.0, "{text}");
}
