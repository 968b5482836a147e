//! Network namespaces and processes for tests, removed on drop even when the
//! test fails (drop runs during unwinding).
//!
//! Names are `lbt-<pid>-<n>`: unique per process and per namespace, and
//! recognisable, so `cargo xtask test` can remove what a killed run left.

use std::{
    fs::File,
    os::fd::AsFd,
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

use nix::sched::{CloneFlags, setns};

/// Prefix of every namespace tests create.
pub const PREFIX: &str = "lbt-";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A named network namespace, deleted on drop.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates a namespace with a unique name and its loopback up.
    pub fn new() -> Self {
        static CLEAN: std::sync::Once = std::sync::Once::new();
        CLEAN.call_once(remove_stale);
        let name =
            format!("{PREFIX}{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Self { name };
        ns.ip("link set lo up");
        // Interfaces made later inherit `default`: no duplicate address
        // detection, so their addresses (link-local ones too, which NDP uses)
        // work at once instead of after a second or two.
        ns.sysctl("net.ipv6.conf.default.accept_dad", "0");
        ns.sysctl("net.ipv6.conf.all.accept_dad", "0");
        ns
    }

    /// The namespace's name, for `ip netns exec` and `ip link ... netns`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n <ns> <args>` and panics with its stderr on failure.
    pub fn ip(&self, args: &str) {
        run(Command::new("ip").args(["-n", &self.name]).args(args.split_whitespace()));
    }

    /// The tc ingress filters of `iface` that hold the BPF program
    /// `program`, as `tc filter show dev IF ingress` prints them (one line
    /// each: `... pref P bpf chain 0 handle 0x1 lb_tc direct-action
    /// not_in_hw id N ...`).
    pub fn tc_filters(&self, iface: &str, program: &str) -> Vec<String> {
        let out = self.exec(&["tc", "filter", "show", "dev", iface, "ingress"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.split_whitespace().any(|w| w == program))
            .map(str::to_owned)
            .collect()
    }

    /// Sets a sysctl inside the namespace.
    pub fn sysctl(&self, key: &str, value: &str) {
        self.exec(&["sysctl", "-qw", &format!("{key}={value}")]);
    }

    /// Runs a command inside the namespace, panicking on failure.
    pub fn exec(&self, cmd: &[&str]) -> Output {
        run(&mut self.command(cmd))
    }

    /// A command that will run inside the namespace.
    pub fn command(&self, cmd: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(cmd);
        c
    }

    /// Starts a long-running process inside the namespace; it is killed when
    /// the returned guard drops.
    pub fn spawn(&self, cmd: &[&str]) -> Proc {
        let child = self
            .command(cmd)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd:?} in {}: {e}", self.name));
        Proc(child)
    }

    /// Moves the calling thread into the namespace until the guard drops.
    /// (Namespaces are per thread, so parallel tests do not interfere.)
    pub fn enter(&self) -> Entered {
        enter(&self.name)
    }

    /// The index of an interface inside the namespace.
    pub fn ifindex(&self, iface: &str) -> u32 {
        let out = self.exec(&["cat", &format!("/sys/class/net/{iface}/ifindex")]);
        String::from_utf8_lossy(&out.stdout).trim().parse().expect("ifindex")
    }
}

impl Default for NetNs {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Deleting the name frees the namespace once no process holds it;
        // `Proc` guards are dropped first by the tests that own both.
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// Moves the calling thread into the namespace named `name` until the guard
/// drops: for threads that hold the name, not the [`NetNs`].
pub fn enter(name: &str) -> Entered {
    let original = File::open("/proc/thread-self/ns/net").expect("open own netns");
    let target = File::open(format!("/run/netns/{name}")).expect("open netns");
    setns(target.as_fd(), CloneFlags::CLONE_NEWNET).expect("setns into test namespace");
    Entered { original }
}

/// The calling thread is inside a test namespace until this drops.
#[derive(Debug)]
pub struct Entered {
    original: File,
}

impl Drop for Entered {
    fn drop(&mut self) {
        let _ = setns(self.original.as_fd(), CloneFlags::CLONE_NEWNET);
    }
}

/// A child process killed (and reaped) on drop.
#[derive(Debug)]
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs a command, panicking with its output if it fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Deletes namespaces, and BPF pin directories, a killed test run left
/// behind (names with [`PREFIX`] whose creating process is gone).
pub fn remove_stale() {
    for dir in [crate::agent::TEST_BPFFS, &std::env::temp_dir().to_string_lossy()] {
        let Ok(entries) = std::fs::read_dir(dir) else { continue };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(PREFIX) else { continue };
            if left_by_dead_process(rest) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        if left_by_dead_process(rest) {
            kill_and_delete(&name);
        }
    }
}

/// Kills the processes still inside namespace `name` (daemons a killed run
/// left would otherwise keep it alive, unnamed) and deletes it.
pub fn kill_and_delete(name: &str) {
    kill_all(name);
    let _ = Command::new("ip").args(["netns", "del", name]).status();
}

/// Kills (SIGKILL) every process inside namespace `name`.
pub fn kill_all(name: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::SIGKILL,
                );
            }
        }
    }
}

/// Whether `rest` (a name after [`PREFIX`]) is `<pid>-<n>` (then maybe
/// `-<more>`) of a process that
/// is gone. Only that shape: other things in the temp dir may start with the
/// prefix too (a `lbt-merged` scratch tree was deleted before this check).
fn left_by_dead_process(rest: &str) -> bool {
    let Some((pid, n)) = rest.split_once('-') else { return false };
    // A name may go on after its number (`lbt-<pid>-<n>-decap1`: the pins
    // of an `lb decap` a test ran beside its agent).
    let n = n.split('-').next().unwrap_or_default();
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    numeric(pid) && numeric(n) && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}
