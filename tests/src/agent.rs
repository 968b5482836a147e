//! Running `lb` and the test backends inside a topology.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crate::{
    netns::{NetNs, Proc},
    topology::{Topology, sock},
};

/// The `lb` binary built next to the running test (tests run from
/// `target/<profile>/deps`, binaries from `target/<profile>`).
pub fn lb_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().expect("exe dir");
    let lb = [dir.join("lb"), dir.join("../lb")]
        .into_iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| dir.join("../lb"));
    assert!(
        lb.exists(),
        "{} is missing: build it with `cargo build -p lb-userspace`",
        lb.display()
    );
    // `cargo test -p lb-tests` rebuilds the library, not the binary: refuse
    // a binary whose embedded object is not the current one.
    let version = crate::netns::run(std::process::Command::new(&lb).arg("--version"));
    let version = String::from_utf8_lossy(&version.stdout);
    assert!(
        version.contains(lb_userspace::object::EXPECTED_BUILD_ID),
        "{} is stale or has no eBPF object ({}); run `cargo xtask build-ebpf --release && cargo build -p lb-userspace`",
        lb.display(),
        version.trim()
    );
    lb
}

/// A config for `topo`: a TCP and a UDP service on each VIP (v4, v6) with
/// the first `n` backends, all interfaces of the lb namespace, and the
/// control socket in `dir`; the TCP services use `tcp_scheduler`. Probes
/// are off (`kind = "none"`); see [`config_with_health`].
pub fn config(topo: &Topology, dir: &Path, tcp_scheduler: &str, n: usize) -> String {
    config_with_health(topo, dir, tcp_scheduler, n, "kind = \"none\"")
}

/// [`config`] with `health` as the `[service.health]` table of the TCP
/// services (UDP services are never probed here).
pub fn config_with_health(
    topo: &Topology,
    dir: &Path,
    tcp_scheduler: &str,
    n: usize,
    health: &str,
) -> String {
    config_with_probes(topo, dir, tcp_scheduler, n, health, "kind = \"none\"")
}

/// [`config`] with `tcp` as the `[service.health]` table of the TCP
/// services and `udp` as that of the UDP ones.
pub fn config_with_probes(
    topo: &Topology,
    dir: &Path,
    tcp_scheduler: &str,
    n: usize,
    tcp: &str,
    udp: &str,
) -> String {
    let mut s = agent_table(&topo.lb_interfaces(), dir);
    for (name, vip, backend) in [
        ("v4", crate::topology::VIP4, crate::topology::backend4 as fn(usize) -> std::net::IpAddr),
        ("v6", crate::topology::VIP6, crate::topology::backend6),
    ] {
        let vip: std::net::IpAddr = vip.parse().expect("vip");
        for (proto, port, sched) in [("tcp", 80, tcp_scheduler), ("udp", 5353, "maglev")] {
            let health = if proto == "tcp" { tcp } else { udp };
            let backends: Vec<String> = (1..=n).map(|i| sock(backend(i), port)).collect();
            s += &service(
                &format!("{proto}-{name}"),
                proto,
                &sock(vip, port),
                sched,
                health,
                &backends,
            );
        }
    }
    s
}

/// The `[agent]` table of a config: XDP mode at the native hook on
/// `interfaces`, the control socket and the pin directory in `dir`.
pub fn agent_table(interfaces: &[String], dir: &Path) -> String {
    format!(
        "[agent]\ninterfaces = {interfaces:?}\nmode = \"xdp\"\nattach = \"native\"\ncontrol_socket = \"{}\"\npin_dir = \"{}\"\n",
        dir.join("control.sock").display(),
        pin_dir(dir).display()
    )
}

/// A `[[service]]` table: `protocol` (`tcp` or `udp`) on `vip` (`ip:port`)
/// with `health` as its `[service.health]` table and `backends` (`ip:port`).
pub fn service(
    name: &str,
    protocol: &str,
    vip: &str,
    scheduler: &str,
    health: &str,
    backends: &[String],
) -> String {
    let mut s = format!(
        "\n[[service]]\nname = \"{name}\"\nvip = \"{vip}\"\nprotocol = \"{protocol}\"\nscheduler = \"{scheduler}\"\n[service.health]\n{health}\n"
    );
    for b in backends {
        s += &format!("[[service.backend]]\naddr = \"{b}\"\n");
    }
    s
}

/// Starts `lbt-server` in every backend namespace (name `b<i>`, ports 80 and
/// 5353).
pub fn start_backends(topo: &Topology, server: &Path) -> Vec<Proc> {
    topo.backends.iter().enumerate().map(|(i, ns)| start_backend(ns, server, i + 1)).collect()
}

/// Starts `lbt-server` as backend `i` in `ns`.
pub fn start_backend(ns: &NetNs, server: &Path, i: usize) -> Proc {
    let server = server.to_str().expect("utf-8 path");
    ns.spawn(&[server, &format!("b{i}"), "80", "5353"])
}

/// A running `lb run`; killed on drop. If the test is failing, its status
/// and log are printed first, so a red run says what the datapath saw.
#[derive(Debug)]
pub struct Lb {
    proc: Proc,
    control: PathBuf,
    log: PathBuf,
}

impl Lb {
    /// The agent's process id (`ip netns exec` execs it in place).
    pub fn pid(&self) -> u32 {
        self.proc.0.id()
    }

    /// Sends SIGTERM and waits (at most 5 s) for the agent to exit.
    pub fn terminate(&mut self) {
        self.sigterm();
        self.wait_exit(Duration::from_secs(5));
    }

    /// Sends SIGTERM, without waiting.
    pub fn sigterm(&self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid() as i32),
            nix::sys::signal::SIGTERM,
        )
        .expect("SIGTERM");
    }

    /// Waits (at most `limit`) for the agent to exit.
    pub fn wait_exit(&mut self, limit: Duration) {
        let start = std::time::Instant::now();
        while self.try_wait().is_none() {
            assert!(start.elapsed() < limit, "lb did not exit within {limit:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The exit status, if the agent has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.proc.0.try_wait().ok().flatten()
    }

    /// Everything the agent has logged so far. Panics if the log cannot be
    /// read, so a test counting lines in it cannot pass on an empty read
    /// (unless the test is already failing: then it says why instead).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_else(|e| {
            let why = format!("cannot read the lb log {}: {e}", self.log.display());
            assert!(std::thread::panicking(), "{why}");
            why
        })
    }

    /// The agent's status report, as `lb status --json` has it.
    pub fn report(&self) -> lb_userspace::control::protocol::StatusReport {
        use lb_userspace::control::{Request, Response, client};
        match client::request(&self.control, &Request::Status) {
            Ok(Response::Status(r)) => r,
            other => panic!("lb status: {other:?}"),
        }
    }

    /// Runs `lb <args> --control <its socket>`: whether it succeeded, and
    /// what it printed (stdout, then stderr).
    pub fn cli(&self, args: &[&str]) -> (bool, String) {
        self.try_cli(args).unwrap_or_else(|e| panic!("lb {args:?}: {e}"))
    }

    /// As [`Lb::cli`], or why `lb` could not be run.
    fn try_cli(&self, args: &[&str]) -> std::io::Result<(bool, String)> {
        let out = std::process::Command::new(lb_binary())
            .args(args)
            .arg("--control")
            .arg(&self.control)
            .output()?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok((out.status.success(), text))
    }

    /// As [`Lb::cli`], panicking with its output if it fails.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let (ok, text) = self.cli(args);
        assert!(ok, "lb {args:?} failed: {text}");
        text
    }

    /// The status of backend `addr` (as `lb status` writes it) of
    /// `service`, and how old its flow counts are (ms).
    pub fn backend(
        &self,
        service: &str,
        addr: &str,
    ) -> (lb_userspace::control::protocol::BackendStatus, u64) {
        let report = self.report();
        let age = report.flows_age_ms;
        let b = report
            .services
            .into_iter()
            .find(|s| s.name == service)
            .and_then(|s| s.backends.into_iter().find(|b| b.addr == addr))
            .unwrap_or_else(|| panic!("no backend {addr} in service {service}"));
        (b, age)
    }

    /// What `lb flow` says of the flow `src` -> `dst` (`"tcp"` or `"udp"`):
    /// its backend and whether the flow table pins it there.
    pub fn flow(
        &self,
        src: std::net::SocketAddr,
        dst: std::net::SocketAddr,
        protocol: &str,
    ) -> lb_userspace::control::protocol::FlowReport {
        use lb_userspace::control::{Request, Response, client};
        let req = Request::Flow {
            src: src.to_string(),
            dst: dst.to_string(),
            protocol: protocol.to_owned(),
        };
        match client::request(&self.control, &req) {
            Ok(Response::Flow(r)) => r,
            other => panic!("lb flow {src} {dst} {protocol}: {other:?}"),
        }
    }

    /// Waits (at most `limit`) until backend `addr` of `service` has
    /// `health` (`up` or `down`) in the agent's status.
    pub fn wait_health(&self, service: &str, addr: &str, health: &str, limit: Duration) {
        wait_for(limit, &format!("{service} {addr} {health}"), || {
            (self.backend(service, addr).0.health == health).then_some(())
        });
    }

    /// The health changes the agent has logged so far, oldest first.
    pub fn health_changes(&self) -> Vec<HealthChange> {
        self.log().lines().filter_map(HealthChange::parse).collect()
    }

    /// `lb status` output (table), or why there is none.
    pub fn status(&self) -> String {
        match self.try_cli(&["status"]) {
            Ok((_, text)) => text,
            Err(e) => format!("lb status failed: {e}"),
        }
    }
}

impl Drop for Lb {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- lb status at failure ---\n{}", self.status());
            eprintln!("--- lb log ---\n{}", self.log());
            // LBT_HOLD=<seconds> keeps a failing topology up for inspection.
            if let Some(secs) = std::env::var("LBT_HOLD").ok().and_then(|s| s.parse().ok()) {
                eprintln!("holding the topology for {secs} s (LBT_HOLD)");
                std::thread::sleep(Duration::from_secs(secs));
            }
        }
        let _ = &self.proc;
    }
}

/// One `backend health changed` line of the agent's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthChange {
    /// The service's name.
    pub service: String,
    /// The backend, `ip:port`.
    pub backend: String,
    /// `up` or `down`.
    pub to: String,
    /// What found it: `probe`, `refused`, `unreachable` or `unanswered`.
    pub signal: String,
    /// The whole line.
    pub line: String,
}

impl HealthChange {
    /// Reads a log line; `None` if it is not a health change.
    pub fn parse(line: &str) -> Option<Self> {
        if !line.contains("backend health changed") {
            return None;
        }
        // Fields are ` key=value`, strings quoted; these four hold no spaces.
        let field = |key: &str| -> Option<String> {
            let rest = line.split(&format!(" {key}=")).nth(1)?;
            Some(rest.split_whitespace().next()?.trim_matches('"').to_owned())
        };
        Some(Self {
            service: field("service")?,
            backend: field("backend")?,
            to: field("to")?,
            signal: field("signal")?,
            line: line.to_owned(),
        })
    }
}

/// Calls `f` every 20 ms until it gives something, for at most `limit`;
/// panics saying it never saw `what`.
pub fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(start.elapsed() < limit, "{what}: not seen within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `cfg` (a config file as [`config`] writes it) with a `[flows]` table
/// holding `settings` (`key = value` lines).
pub fn with_flows(cfg: &str, settings: &str) -> String {
    format!("{cfg}\n[flows]\n{settings}\n")
}

/// Starts `lb run` in the balancer namespace (log in `dir/lb.log`) and waits
/// (at most 30 s) until it answers on its control socket `dir/control.sock`.
pub fn start_lb(topo: &Topology, config: &Path, dir: &Path) -> Lb {
    start_lb_via(topo, config, dir, &[])
}

/// [`start_lb`] with `lb run` started through `wrapper`, a command that sets
/// something up and execs the rest of its arguments in place (`prlimit`,
/// `setpriv`), so the guard's process id stays lb's.
pub fn start_lb_via(topo: &Topology, config: &Path, dir: &Path, wrapper: &[&str]) -> Lb {
    start_lb_in(&topo.lb, config, dir, wrapper)
}

/// [`start_lb_via`] in namespace `ns`: for topologies with several
/// balancer hosts.
pub fn start_lb_in(ns: &NetNs, config: &Path, dir: &Path, wrapper: &[&str]) -> Lb {
    let log = dir.join("lb.log");
    let control = dir.join("control.sock");
    let lb = Lb { proc: spawn_run(ns, config, wrapper, &log), control, log };
    // Ready when it answers: the socket exists from the start, but the agent
    // serves it only once the datapath is loaded and attached.
    let start = Instant::now();
    loop {
        let ready = lb.control.exists()
            && matches!(
                lb_userspace::control::client::request(
                    &lb.control,
                    &lb_userspace::control::Request::Status
                ),
                Ok(lb_userspace::control::Response::Status(_))
            );
        if ready {
            break;
        }
        // The verifier's time for the two copies of the datapath (plain and
        // traced) grows with what else the machine runs: two tests of a full
        // run missed 10 s (load average 7, other sessions building).
        assert!(start.elapsed() < Duration::from_secs(30), "lb did not start within 30 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    lb
}

/// Runs `lb run --config <config>` in `ns` through `wrapper` (see
/// [`start_lb_via`]) where it must refuse to start: asserts that it exits
/// (within 30 s) and fails, and returns what it wrote (stdout and stderr).
pub fn run_refused(ns: &NetNs, config: &Path, wrapper: &[&str]) -> String {
    let path = config.with_extension("refused.log");
    let mut child = spawn_run(ns, config, wrapper, &path);
    let status = wait_for(Duration::from_secs(30), "lb run to exit", || child.0.try_wait().ok()?);
    let said = std::fs::read_to_string(&path).expect("lb's output");
    assert!(!status.success(), "lb run must refuse to start:\n{said}");
    said
}

/// `lb run --config <config>` in `ns` through `wrapper`, its output to the
/// file `log` (not a pipe, which could fill while nobody reads it).
fn spawn_run(ns: &NetNs, config: &Path, wrapper: &[&str], log: &Path) -> Proc {
    let lb = lb_binary();
    let run =
        [lb.to_str().expect("utf-8 path"), "run", "--config", config.to_str().expect("utf-8 path")];
    let cmd: Vec<&str> = wrapper.iter().copied().chain(run).collect();
    let file = std::fs::File::create(log).expect("log file");
    let child = ns
        .command(&cmd)
        .stdin(std::process::Stdio::null())
        .stdout(file.try_clone().expect("log file"))
        .stderr(file)
        .spawn()
        .expect("spawn lb");
    Proc(child)
}

/// Where tests pin: a BPF file system mounted on the host, outside /sys
/// (which `ip netns exec` replaces), so an agent's pins outlive it and its
/// successor sees them.
pub const TEST_BPFFS: &str = "/run/lbt-bpffs";

/// The pin directory of the agent whose scratch directory is `dir` (one per
/// test: the file system is shared), mounting [`TEST_BPFFS`] if needed.
pub fn pin_dir(dir: &Path) -> PathBuf {
    test_bpffs().join(dir.file_name().unwrap_or_default())
}

/// [`TEST_BPFFS`], mounted on first use.
pub fn test_bpffs() -> &'static Path {
    static MOUNT: std::sync::Once = std::sync::Once::new();
    MOUNT.call_once(|| {
        if !lb_userspace::datapath::pins::is_bpffs(Path::new(TEST_BPFFS)) {
            std::fs::create_dir_all(TEST_BPFFS).expect("create the test bpffs mount point");
            crate::netns::run(
                std::process::Command::new("mount").args(["-t", "bpf", "bpf", TEST_BPFFS]),
            );
        }
    });
    Path::new(TEST_BPFFS)
}

/// A scratch directory, removed on drop (with its agent's pins).
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A new empty directory under the system temp dir.
    pub fn new() -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("lbt-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).expect("temp dir");
        Self(p)
    }
}

impl Default for TempDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(pin_dir(&self.0));
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
