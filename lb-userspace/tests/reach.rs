//! Every subcommand that talks to the agent finds it the same way:
//! `--control`, `--config`, `LB_CONTROL`, `LB_CONFIG`, in that order. A fake
//! agent on a socket of the test's own records what reaches it.

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixListener,
    path::{Path, PathBuf},
    process::Command,
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// A directory with a config whose `agent.control_socket` is `sock` in it.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Self {
        let d = std::env::temp_dir().join(format!("lb-reach-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("temp dir");
        let dir = Self(d);
        std::fs::write(
            dir.config(),
            format!(
                "[agent]\ncontrol_socket = \"{}\"\n[[service]]\nname = \"web\"\n\
                 vip = \"10.0.0.100:80\"\n[[service.backend]]\naddr = \"10.0.1.1:80\"\n",
                dir.socket().display()
            ),
        )
        .expect("write config");
        dir
    }

    fn socket(&self) -> PathBuf {
        self.0.join("sock")
    }

    fn config(&self) -> PathBuf {
        self.0.join("lb.toml")
    }

    /// Answers the next connection on the socket with an error quoting the
    /// request; the handle yields that request (or `None` if nothing came
    /// within 10 s).
    fn agent_once(&self) -> JoinHandle<Option<String>> {
        let _ = std::fs::remove_file(self.socket());
        let listener = UnixListener::bind(self.socket()).expect("bind the fake agent");
        listener.set_nonblocking(true).expect("nonblocking");
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut stream = loop {
                match listener.accept() {
                    Ok((s, _)) => break s,
                    Err(_) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(_) => return None,
                }
            };
            stream.set_nonblocking(false).expect("blocking");
            let mut line = String::new();
            BufReader::new(&stream).read_line(&mut line).expect("request line");
            let answer = serde_json::json!({
                "response": "error",
                "message": format!("fake agent got {}", line.trim()),
            });
            writeln!(stream, "{answer}").expect("answer");
            Some(line.trim().to_owned())
        })
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `lb args` with only `env` of the LB_ variables set: exit code and
/// stderr.
fn lb(args: &[&str], env: &[(&str, &Path)]) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lb"));
    cmd.args(args).env_remove("LB_CONTROL").env_remove("LB_CONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run lb");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Each agent command, with the request it must send.
const COMMANDS: &[(&[&str], &str)] = &[
    (&["status"], r#"{"request":"status"}"#),
    (&["status", "--json"], r#"{"request":"status"}"#),
    (&["flow", "10.0.0.2:4000", "10.0.0.100:80", "tcp"], r#""request":"flow""#),
    (&["backend", "drain", "web", "10.0.1.1:80"], r#""action":{"action":"drain"}"#),
    (&["backend", "disable", "web", "10.0.1.1:80"], r#""action":{"action":"disable"}"#),
    (&["backend", "enable", "web", "10.0.1.1:80"], r#""action":{"action":"enable"}"#),
    (&["backend", "weight", "web", "10.0.1.1:80", "3"], r#""weight":3"#),
    (&["reload"], r#""request":"reload""#),
    (&["stop"], r#"{"request":"stop"}"#),
];

/// Runs `args` + `extra` with `env`; asserts the fake agent got `request`.
fn reaches(dir: &Dir, args: &[&str], extra: &[&str], env: &[(&str, &Path)], request: &str) {
    let agent = dir.agent_once();
    let all: Vec<&str> = args.iter().chain(extra).copied().collect();
    let (code, err) = lb(&all, env);
    let got = agent.join().expect("fake agent");
    let got = got.unwrap_or_else(|| panic!("lb {all:?} {env:?} never reached the agent: {err}"));
    assert!(got.contains(request), "lb {all:?}: sent {got}, not {request}");
    assert_eq!(code, 1, "lb {all:?}: the agent's error is an error");
    assert!(err.contains("fake agent got"), "lb {all:?}: the agent's answer is shown: {err}");
}

#[test]
fn every_agent_command_takes_control_config_and_the_environment() {
    let dir = Dir::new("all");
    let (socket, config) = (dir.socket(), dir.config());
    let (socket, config) = (socket.to_str().unwrap(), config.to_str().unwrap());
    for (args, request) in COMMANDS {
        reaches(&dir, args, &["--control", socket], &[], request);
        reaches(&dir, args, &["--config", config], &[], request);
        reaches(&dir, args, &["-c", config], &[], request);
        reaches(&dir, args, &[], &[("LB_CONTROL", Path::new(socket))], request);
        reaches(&dir, args, &[], &[("LB_CONFIG", Path::new(config))], request);
    }
    // `lb backend` takes them before its action too.
    reaches(
        &dir,
        &["backend", "--config", config, "drain", "web", "10.0.1.1:80"],
        &[],
        &[],
        r#""action":"drain""#,
    );
}

#[test]
fn flags_win_over_the_environment_and_a_socket_over_a_config() {
    let live = Dir::new("live");
    let dead = Dir::new("dead");
    let (socket, config) = (live.socket(), live.config());
    let (dead_socket, dead_config) = (dead.socket(), dead.config());
    let status = &["status"][..];
    let req = r#"{"request":"status"}"#;
    let env_both = [("LB_CONTROL", dead_socket.as_path()), ("LB_CONFIG", dead_config.as_path())];
    reaches(&live, status, &["--control", socket.to_str().unwrap()], &env_both, req);
    reaches(&live, status, &["--config", config.to_str().unwrap()], &env_both, req);
    reaches(&live, status, &[], &[("LB_CONTROL", &socket), ("LB_CONFIG", &dead_config)], req);
    // Both flags at once are refused rather than ranked.
    let (code, err) = lb(
        &["status", "--control", socket.to_str().unwrap(), "--config", config.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot be used with"), "{err}");
}

#[test]
fn a_missing_agent_names_the_socket_where_it_came_from_and_how_to_point_elsewhere() {
    let dir = Dir::new("missing");
    let config = dir.config();
    for (args, env, origin) in [
        (vec!["status", "--config", config.to_str().unwrap()], vec![], "(--config)"),
        (vec!["reload"], vec![("LB_CONFIG", config.as_path())], "(LB_CONFIG)"),
    ] {
        let (code, err) = lb(&args, &env);
        assert_eq!(code, 1, "{err}");
        let socket = dir.socket();
        let expected = [
            format!("cannot reach the agent at {}", socket.display()),
            format!("agent.control_socket of {} {origin}", config.display()),
            "is `lb run` running?".into(),
            "--control PATH, --config FILE".into(),
            "LB_CONTROL / LB_CONFIG".into(),
        ];
        for word in expected {
            assert!(err.contains(&word), "lb {args:?}: {word:?} missing in {err}");
        }
    }
    // `lb stop` with a socket alone cannot know where a datapath is pinned.
    let (code, err) = lb(&["stop", "--control", dir.socket().to_str().unwrap()], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("name its config with --config FILE"), "{err}");
    // A config file that is not there is named, with the way around it.
    let (code, err) = lb(&["status", "--config", "/nonexistent/lb.toml"], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("/nonexistent/lb.toml") && err.contains("--control PATH"), "{err}");
}
