//! Headless Chromium (Debian's `chromium`) inside a test namespace: the DOM
//! of a page after its scripts ran, and a screenshot.

use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Output, Stdio},
    time::{Duration, Instant},
};

use crate::netns::NetNs;

/// How long one Chromium run may take, start-up included (a loaded
/// machine starts it in seconds; a hung one is killed).
const LIMIT: Duration = Duration::from_secs(90);

/// A Chromium binary and a profile directory of its own.
#[derive(Debug)]
pub struct Chromium {
    binary: PathBuf,
    profile: PathBuf,
}

impl Chromium {
    /// Chromium, if installed, with its profile under `dir`; `Err` says why
    /// it cannot run (the caller decides whether that is a skip).
    pub fn find(dir: &Path) -> Result<Self, String> {
        let binary = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .ok_or("no /usr/bin/chromium (apt-get install chromium)")?;
        let profile = dir.join("chromium-profile");
        std::fs::create_dir_all(&profile).map_err(|e| format!("{}: {e}", profile.display()))?;
        Ok(Self { binary, profile })
    }

    /// The DOM of `url` (serialised) after `budget` of virtual time, which
    /// lets its timers and fetches run; loaded from inside `ns`.
    pub fn dump_dom(&self, ns: &NetNs, url: &str, budget: Duration) -> String {
        let budget = format!("--virtual-time-budget={}", budget.as_millis());
        let out = self.run(ns, &[&budget, "--dump-dom", url]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A PNG of `url` after `budget`, `width` x `height` pixels, to `png`.
    pub fn screenshot(
        &self,
        ns: &NetNs,
        url: &str,
        budget: Duration,
        (width, height): (u32, u32),
        png: &Path,
    ) {
        let _ = std::fs::remove_file(png);
        let budget = format!("--virtual-time-budget={}", budget.as_millis());
        let size = format!("--window-size={width},{height}");
        let shot = format!("--screenshot={}", png.display());
        self.run(ns, &[&budget, &size, "--hide-scrollbars", &shot, url]);
        assert!(png.exists(), "chromium wrote no screenshot to {}", png.display());
    }

    /// Runs Chromium headless in `ns` with `args`, killing its whole
    /// process group if it outlives [`LIMIT`]; panics unless it succeeds.
    fn run(&self, ns: &NetNs, args: &[&str]) -> Output {
        let profile = format!("--user-data-dir={}", self.profile.display());
        let mut cmd = ns.command(&[self.binary.to_str().expect("utf-8 path")]);
        // --no-sandbox: tests run as root, where Chromium's sandbox refuses
        // to start. No GPU, extensions or first-run work in a test.
        cmd.args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"])
            .args(["--disable-extensions", "--disable-dev-shm-usage", &profile])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("starting chromium: {e}"));
        let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
        // Read the pipes while waiting: a large DOM fills a pipe buffer.
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let read = |mut r: Box<dyn std::io::Read + Send>| {
            std::thread::spawn(move || {
                let mut v = Vec::new();
                let _ = r.read_to_end(&mut v);
                v
            })
        };
        let (out, err) = (read(Box::new(stdout)), read(Box::new(stderr)));
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("waiting for chromium") {
                break status;
            }
            if started.elapsed() > LIMIT {
                let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::SIGKILL);
                let _ = child.wait();
                panic!("chromium {args:?} ran over {LIMIT:?}; killed");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        // Its helpers (zygote, GPU process) are in the same group.
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::SIGKILL);
        let output = Output {
            status,
            stdout: out.join().expect("stdout reader"),
            stderr: err.join().expect("stderr reader"),
        };
        assert!(
            output.status.success(),
            "chromium {args:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }
}
