//! The config module against files on disk: one fixture per rule in
//! `tests/fixtures/config/`, plus the shipped `config/example.toml` and
//! `config/demo.toml`. Each refused fixture must yield a message naming the
//! file, the service and backend at fault, and the key words of the fix.

use std::path::{Path, PathBuf};

use std::time::Duration;

use lb_userspace::config::{
    self, ConfigError, Flows, HealthKind, Mode, Protocol, Scheduler, defaults,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config").join(name)
}

fn shipped(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config").join(name)
}

fn error_text(name: &str) -> (ConfigError, String) {
    match config::load(&fixture(name)) {
        Ok(_) => panic!("{name} was accepted"),
        Err(error) => {
            let text = error.to_string();
            (error, text)
        }
    }
}

/// `(fixture, words the message must contain)`; the file name is always
/// checked too.
const INVALID: &[(&str, &[&str])] = &[
    (
        "duplicate_vip.toml",
        &[
            "service \"web-copy\"",
            "vip 10.0.0.100:80 (tcp) is also used by service \"web\"",
            "own address, port or protocol",
        ],
    ),
    ("duplicate_service_name.toml", &["service \"web\"", "also used by service #1", "unique name"]),
    (
        "bad_service_name.toml",
        &["service #1", "name \"web server\" contains ' '", "letters, digits"],
    ),
    ("empty_service_name.toml", &["service #2", "name is empty", "e.g. name = \"web\""]),
    (
        "backend_is_vip.toml",
        &[
            "service \"api\" backend \"10.0.0.100:80\"",
            "VIP of service \"web\"",
            "loop",
            "real server",
        ],
    ),
    (
        "weight_zero.toml",
        &[
            "service \"web\" backend \"10.0.1.1:80\"",
            "weight = 0 is below the minimum 1",
            "remove it",
        ],
    ),
    (
        "weight_negative.toml",
        &["backend \"10.0.1.1:80\"", "weight = -1 is below", "set weight = 1 or more"],
    ),
    (
        "weight_too_large.toml",
        &["backend \"10.0.1.1:80\"", "above the maximum 65535", "set weight = 65535 or less"],
    ),
    (
        "bad_vip.toml",
        &[
            "service \"web\"",
            "vip \"10.0.0.100\" is not an IP address and port",
            "\"10.0.0.100:80\"",
            "[2001:db8::1]:80",
        ],
    ),
    (
        "bad_backend_addr.toml",
        &["service \"web\" backend #2", "addr \"backend-2:80\"", "\"10.0.1.1:80\""],
    ),
    ("vip_port_zero.toml", &["service \"web\"", "port 0", "give the real port"]),
    ("backend_port_zero.toml", &["backend \"10.0.1.1:0\"", "port 0", "give the real port"]),
    (
        "table_size_not_prime.toml",
        &["service \"web\"", "table_size = 65536 is not prime", "table_size = 65537"],
    ),
    (
        "table_size_too_small.toml",
        &["service \"web\"", "smaller than its 3 backends", "table_size = 307"],
    ),
    (
        "timeout_not_below_interval.toml",
        &[
            "service \"web\"",
            "health.timeout 100ms is not below health.interval 50ms",
            "lower the timeout",
        ],
    ),
    ("rise_zero.toml", &["service \"web\"", "health.rise = 0", "set health.rise = 1 or more"]),
    ("fall_zero.toml", &["service \"web\"", "health.fall = 0", "set health.fall = 1 or more"]),
    ("interval_zero.toml", &["service \"web\"", "health.interval is zero", "interval = \"50ms\""]),
    (
        "bad_duration.toml",
        &[
            "service \"web\"",
            "health.interval \"1.5s\" is not a duration",
            "ns, us, ms, s or m",
            "\"50ms\"",
        ],
    ),
    (
        "mixed_family.toml",
        &[
            "service \"web\" backend \"[2001:db8::1]:80\"",
            "IPv6 but the VIP 10.0.0.100:80 is IPv4",
            "use an IPv4 backend",
        ],
    ),
    ("no_backends.toml", &["service \"web\"", "no backends", "[[service.backend]]"]),
    (
        "no_services.toml",
        &["no [[service]] is defined", "almost certainly a mistake", "config/example.toml"],
    ),
    (
        "duplicate_backend.toml",
        &[
            "service \"web\" backend \"10.0.1.1:80\"",
            "listed twice",
            "also backend #1",
            "remove one entry",
        ],
    ),
    (
        "xdp_without_interfaces.toml",
        &["agent.mode = \"xdp\"", "interfaces is empty", "interfaces = [\"eth0\"]"],
    ),
    (
        "interface_name_too_long.toml",
        &["agent.interfaces[1] \"a-very-long-ifname\"", "IFNAMSIZ", "ip link"],
    ),
    ("interface_name_empty.toml", &["agent.interfaces[0] is an empty string", "ip link"]),
    (
        "http_bad_status.toml",
        &["service \"web\"", "expect_status = 700 is not an HTTP status", "100..=599"],
    ),
    (
        "http_bad_path.toml",
        &["service \"web\"", "health.path \"healthz\" does not start with '/'", "\"/healthz\""],
    ),
    ("udp_without_send.toml", &["service \"dns\"", "no send payload", "add send = \"ping\""]),
    (
        "flows_timeout_too_short.toml",
        &[
            "flows.tcp_closing_timeout 500ms is below the minimum 2s",
            "set flows.tcp_closing_timeout = \"2s\" or more",
            "no finer than",
        ],
    ),
    (
        "flows_timeout_too_long.toml",
        &[
            "flows.tcp_idle_timeout 20000m is above the maximum 10080m",
            "set flows.tcp_idle_timeout = \"10080m\" or less",
            "at most 7 days",
        ],
    ),
    ("flows_timeout_zero.toml", &["flows.udp_idle_timeout is zero", "\"2s\" or more"]),
    (
        "syn_timeout_on_udp.toml",
        &["service \"dns\"", "health.syn_timeout applies to TCP services only", "remove it"],
    ),
    (
        "syn_timeout_too_long.toml",
        &["service \"web\"", "health.syn_timeout 1m is above the maximum 10s", "or less"],
    ),
    (
        "syn_timeout_zero.toml",
        &["service \"web\"", "health.syn_timeout is zero", "positive duration"],
    ),
    (
        "syn_unanswered_too_large.toml",
        &[
            "service \"web\"",
            "health.syn_unanswered = 1001 is above the maximum 1000",
            "set health.syn_unanswered = 1000 or less",
        ],
    ),
    (
        "syn_unanswered_without_probes.toml",
        &[
            "service \"web\"",
            "health.syn_unanswered = 3",
            "kind = \"none\" runs no probe",
            "set it to 0",
        ],
    ),
    (
        "backend_in_five_services.toml",
        &[
            "service \"web5\" backend \"10.0.1.1:80\"",
            "is a backend of 5 services (service \"web1\" (#1),",
            "service \"web5\" (#5)), more than the 4",
            "let at most 4 services use 10.0.1.1:80",
        ],
    ),
];

#[test]
fn every_invalid_fixture_is_refused_with_a_precise_message() {
    for (name, words) in INVALID {
        let (error, text) = error_text(name);
        assert!(matches!(error, ConfigError::Invalid { .. }), "{name}: {text}");
        let ConfigError::Invalid { problems, .. } = &error else {
            continue;
        };
        assert_eq!(problems.len(), 1, "{name} should break exactly one rule:\n{text}");
        let line = problems[0].to_string();
        assert!(line.contains(&format!("{name}: ")), "{name}: file not named in {line}");
        assert!(!line.contains('\n'), "{name}: problem spans lines: {line}");
        for word in *words {
            assert!(line.contains(word), "{name}: missing {word:?} in\n{line}");
        }
    }
}

#[test]
fn every_fixture_is_covered() {
    let dir = fixture("");
    let mut listed: Vec<&str> = INVALID.iter().map(|(name, _)| *name).collect();
    listed.extend([
        "unknown_field.toml",
        "unknown_table.toml",
        "syntax_error.toml",
        "many_problems.toml",
    ]);
    for entry in std::fs::read_dir(&dir).expect("fixture directory") {
        let name = entry.expect("entry").file_name().to_string_lossy().into_owned();
        assert!(
            name.starts_with("valid_") || listed.contains(&name.as_str()),
            "untested fixture {name}"
        );
    }
}

#[test]
fn unknown_field_is_a_parse_error_naming_the_field_and_line() {
    let (error, text) = error_text("unknown_field.toml");
    let ConfigError::Parse { line, column, .. } = error else {
        panic!("not a parse error: {text}")
    };
    assert_eq!((line, column), (7, 1), "{text}");
    assert!(text.contains("unknown_field.toml:7:1: "), "{text}");
    assert!(text.contains("key `wieght`: unknown field `wieght`"), "{text}");
    assert!(text.contains("check its spelling"), "{text}");
    assert!(text.contains("config/example.toml"), "{text}");

    let (_, text) = error_text("unknown_table.toml");
    assert!(text.contains("unknown_table.toml:1:3: unknown field `services`"), "{text}");
}

#[test]
fn syntax_error_points_at_the_position() {
    let (error, text) = error_text("syntax_error.toml");
    assert!(matches!(error, ConfigError::Parse { line: 1, column: 7, .. }), "{text}");
    assert_eq!(text.lines().count(), 1, "{text}");
}

#[test]
fn all_problems_are_reported_at_once() {
    let (error, text) = error_text("many_problems.toml");
    let ConfigError::Invalid { problems, .. } = error else { panic!("{text}") };
    let expected = [
        "agent.mode = \"xdp\"",
        "service \"web\": table_size = 100 is not prime",
        "service \"web\" backend \"10.0.1.1:80\": weight = 0",
        "service \"web\" backend \"[2001:db8::1]:80\": addr is IPv6",
        "service \"web\": the name is also used by service #1",
        "service \"web\": vip 10.0.0.100:80 (tcp) is also used",
    ];
    assert_eq!(problems.len(), expected.len(), "{text}");
    for words in expected {
        assert!(text.contains(words), "missing {words:?} in\n{text}");
    }
    assert!(text.lines().next().is_some_and(|l| l.contains("6 problems")), "{text}");
}

#[test]
fn missing_file_is_an_io_error_naming_it() {
    let error = config::load(&fixture("does_not_exist.toml")).expect_err("missing");
    assert!(matches!(error, ConfigError::Io { .. }));
    assert!(error.to_string().contains("does_not_exist.toml"));
    assert!(std::error::Error::source(&error).is_some());
}

#[test]
fn valid_fixtures_load() {
    let minimal = config::load(&fixture("valid_minimal.toml")).expect("valid_minimal");
    assert_eq!(minimal.agent.mode, Mode::Auto);
    assert_eq!(minimal.services[0].health.kind, HealthKind::Tcp);
    assert_eq!(minimal.flows, Flows::default());
    assert_eq!(minimal.flows.tcp_idle_timeout, Duration::from_secs(300));
    assert_eq!(minimal.flows.tcp_closing_timeout, Duration::from_secs(10));
    assert_eq!(minimal.flows.udp_idle_timeout, Duration::from_secs(30));
    assert_eq!(minimal.services[0].health.syn_timeout, Duration::from_millis(25));
    assert_eq!(minimal.services[0].health.syn_unanswered, 3);

    let full = config::load(&fixture("valid_full.toml")).expect("valid_full");
    assert_eq!(full.source, fixture("valid_full.toml"));
    assert_eq!(full.agent.interfaces, ["eth0", "eth1"]);
    assert_eq!(full.services.len(), 3);
    assert_eq!(full.services[0].scheduler, Scheduler::MaglevClientIp);
    assert_eq!(full.services[0].backends[0].weight, 65535);
    assert_eq!(full.services[1].protocol, Protocol::Udp);
    assert!(full.services[1].vip.is_ipv6());
    assert_eq!(full.services[2].health.kind, HealthKind::None);
    assert_eq!(full.services[2].health.syn_unanswered, 0);
    assert_eq!(full.services[0].health.timeout, Duration::from_millis(1), "the shortest");
    assert_eq!(full.services[0].health.syn_timeout, Duration::from_secs(10));
    assert_eq!(full.services[0].health.syn_unanswered, 1000);
    assert_eq!(
        full.flows,
        Flows {
            tcp_idle_timeout: Duration::from_secs(60),
            tcp_closing_timeout: Duration::from_secs(2),
            udp_idle_timeout: Duration::from_secs(7 * 24 * 3600),
            capacity: 1 << 20,
            flood_threshold: 20_000,
            syn_challenge: true,
        }
    );

    let small = config::load(&fixture("valid_small_table.toml")).expect("valid_small_table");
    assert_eq!(small.services[0].table_size, 7);
}

#[test]
fn shipped_configs_validate() {
    for name in ["example.toml", "demo.toml"] {
        let path = shipped(name);
        if let Err(error) = config::load(&path) {
            panic!("{}: {error}", path.display());
        }
    }
    let demo = config::load(&shipped("demo.toml")).expect("demo");
    assert_eq!(demo.agent.interfaces, ["lb-cli", "lb-b1", "lb-b2", "lb-b3"]);
    let vips: Vec<String> =
        demo.services.iter().map(|s| format!("{}/{}", s.vip, s.protocol)).collect();
    assert_eq!(vips, ["10.201.0.100:80/tcp", "10.201.0.100:5353/udp"]);
    assert_eq!(demo.backend_count(), 6);
}

/// The example states each default next to the key; its first service sets
/// those keys to the stated values, so this fails if a default changes and
/// the example is not updated.
#[test]
fn example_states_the_real_defaults() {
    let example = config::load(&shipped("example.toml")).expect("example");
    let web = &example.services[0];
    assert_eq!(web.table_size, defaults::TABLE_SIZE);
    assert_eq!(web.health.interval, defaults::INTERVAL);
    assert_eq!(web.health.timeout, defaults::TIMEOUT);
    assert_eq!(web.health.rise, defaults::RISE);
    assert_eq!(web.health.fall, defaults::FALL);
    assert_eq!(web.backends[0].weight, defaults::WEIGHT);
    assert_eq!(web.health.syn_timeout, defaults::SYN_TIMEOUT);
    assert_eq!(web.health.syn_unanswered, defaults::SYN_UNANSWERED);
    assert_eq!(example.flows, Flows::default());
    assert_eq!(example.agent.control_socket, Path::new(defaults::CONTROL_SOCKET));
    assert_eq!(example.agent.mode, Mode::Auto);
    assert_eq!(example.agent.vip_routes, config::VipRoutes::Local);
    assert_eq!(web.protocol, Protocol::Tcp);
    assert_eq!(web.scheduler, Scheduler::Maglev);
    let text = std::fs::read_to_string(shipped("example.toml")).expect("example text");
    for stated in [
        "Default: \"local\".".to_owned(),
        format!("Default: \"{}\".", defaults::CONTROL_SOCKET),
        format!("Default: {}.", defaults::TABLE_SIZE),
        format!("Default: {}.", defaults::RISE),
        format!("Default: {}.", defaults::FALL),
        format!("Default: {}.", defaults::WEIGHT),
        format!("Default: {}.", defaults::SYN_UNANSWERED),
        format!("Default: {}.", defaults::HTTP_EXPECT_STATUS),
        format!("Default: \"{}\".", defaults::HTTP_PATH),
        "Default: \"50ms\".".to_owned(),
        "Default: \"40ms\".".to_owned(),
        "Default: \"25ms\".".to_owned(),
        "Default: \"300s\".".to_owned(),
        "Default: \"10s\".".to_owned(),
        "Default: \"30s\".".to_owned(),
    ] {
        assert!(text.contains(&stated), "example.toml does not say {stated:?}");
    }
}

#[test]
fn summary_lists_agent_services_and_backends() {
    let config = config::load(&shipped("example.toml")).expect("example");
    let summary = config.summary().to_string();
    for words in [
        "mode            auto (attach auto)",
        "interfaces      eth0",
        "metrics         127.0.0.1:9100",
        "control socket  /run/lb/control.sock",
        "vip routes      local (one per VIP address, dev lo table local proto 252)",
        "flows (XDP)\n  idle timeouts   TCP 5m, TCP closing 10s, UDP 30s",
        "passive: RST to SYN; 3 unanswered SYNs after 25ms",
        "SERVICE",
        "web ",
        "10.0.0.100:80",
        "maglev-client-ip",
        "65537",
        "http GET /healthz -> 200 every 50ms timeout 40ms rise 3 fall 2",
        "udp \"ping\" -> \"pong\" every 100ms timeout 80ms",
        "backend 10.0.1.2:80",
        "weight 2",
        "[2001:db8:1::1]:443",
    ] {
        assert!(summary.contains(words), "missing {words:?} in\n{summary}");
    }
    assert!(summary.ends_with("config OK: 3 services, 6 backends\n"), "{summary}");

    let minimal = config::load(&fixture("valid_minimal.toml")).expect("valid_minimal");
    let summary = minimal.summary().to_string();
    assert!(summary.contains("metrics         off"), "{summary}");
    assert!(summary.ends_with("config OK: 1 service, 1 backend\n"), "{summary}");
}
