//! BIRD 2 for the announcement tests: one daemon in the balancer's
//! namespace learning lb's announced routes from a kernel table and
//! exporting them by BGP (with BFD), one in a router namespace learning them
//! and installing them in its kernel. Each runs in the foreground (`bird
//! -f`) with its config, control socket and log in the test's scratch
//! directory, and is killed on drop.
//!
//! Timers are short so a test runs in seconds: BFD 100 ms x 3, BGP hold
//! 3 s / keepalive 1 s, connection retries every second.

use std::path::{Path, PathBuf};

use crate::netns::{NetNs, Proc};

/// The BGP link between the balancer (`.1`) and the router (`.2`).
pub const LB_LINK4: &str = "10.200.250.1";
/// The router's end.
pub const ROUTER_LINK4: &str = "10.200.250.2";
/// The same link, IPv6.
pub const LB_LINK6: &str = "fd00:200:fa::1";
/// The router's end, IPv6.
pub const ROUTER_LINK6: &str = "fd00:200:fa::2";

/// The AS numbers: the balancer's and the router's.
const LB_AS: u32 = 65001;
const ROUTER_AS: u32 = 65000;

/// A running BIRD.
#[derive(Debug)]
pub struct Bird {
    socket: PathBuf,
    log: PathBuf,
    ns: String,
    _proc: Proc,
}

/// Session timers shared by both ends.
pub(crate) const TIMERS: &str = "hold time 3; keepalive time 1; connect delay time 1; connect retry time 1; \
                      error wait time 1, 2; bfd on;";

/// The BFD protocol both ends run on their link.
pub(crate) fn bfd(iface: &str) -> String {
    format!(
        "protocol bfd {{\n  interface \"{iface}\" {{ min rx interval 100 ms; min tx interval \
         100 ms; idle tx interval 100 ms; multiplier 3; }};\n}}\n"
    )
}

impl Bird {
    /// BIRD in the balancer namespace `ns` (link interface `iface`): learns
    /// the blackholes of `protocol` in kernel `table` and exports them to
    /// the router.
    pub fn lb(ns: &NetNs, dir: &Path, iface: &str, table: u32, protocol: u8) -> Self {
        let mut conf = format!("router id {LB_LINK4};\nprotocol device {{ scan time 10; }}\n");
        conf += &bfd(iface);
        for (fam, me, peer) in [("ipv4", LB_LINK4, ROUTER_LINK4), ("ipv6", LB_LINK6, ROUTER_LINK6)]
        {
            conf += &format!(
                "{fam} table lb_{fam};\n\
                 protocol kernel lb_kernel_{fam} {{\n  kernel table {table};\n  learn;\n  \
                 scan time 10;\n  {fam} {{ table lb_{fam}; import where krt_source = {protocol}; \
                 export none; }};\n}}\n\
                 protocol bgp up_{fam} {{\n  local {me} as {LB_AS};\n  neighbor {peer} as \
                 {ROUTER_AS};\n  {TIMERS}\n  {fam} {{ table lb_{fam}; import none; export all; \
                 next hop self; }};\n}}\n"
            );
        }
        Self::start(ns, dir, "lb", &conf)
    }

    /// BIRD in the router namespace `ns` (link interface `iface`): learns
    /// the balancer's routes by BGP and installs them in its main table.
    pub fn router(ns: &NetNs, dir: &Path, iface: &str) -> Self {
        let mut conf = format!("router id {ROUTER_LINK4};\nprotocol device {{ scan time 10; }}\n");
        conf += &bfd(iface);
        for (fam, me, peer) in [("ipv4", ROUTER_LINK4, LB_LINK4), ("ipv6", ROUTER_LINK6, LB_LINK6)]
        {
            conf += &format!(
                "protocol kernel k_{fam} {{\n  {fam} {{ export all; }};\n}}\n\
                 protocol bgp lb_{fam} {{\n  local {me} as {ROUTER_AS};\n  neighbor {peer} as \
                 {LB_AS};\n  {TIMERS}\n  {fam} {{ import all; export none; }};\n}}\n"
            );
        }
        Self::start(ns, dir, "router", &conf)
    }

    /// BIRD in `ns` with `body` as its config (after the log line), its
    /// files named `bird-<name>.*` in `dir`: for topologies this module's
    /// two roles do not fit.
    pub fn start(ns: &NetNs, dir: &Path, name: &str, body: &str) -> Self {
        let conf = dir.join(format!("bird-{name}.conf"));
        let socket = dir.join(format!("bird-{name}.ctl"));
        let log = dir.join(format!("bird-{name}.log"));
        let text = format!("log \"{}\" all;\n{body}", log.display());
        std::fs::write(&conf, text).expect("write the BIRD config");
        let path = |p: &Path| p.to_str().expect("utf-8 path").to_owned();
        let pid = dir.join(format!("bird-{name}.pid"));
        let proc =
            ns.spawn(&["bird", "-f", "-c", &path(&conf), "-s", &path(&socket), "-P", &path(&pid)]);
        let bird = Self { socket, log, ns: ns.name().to_owned(), _proc: proc };
        crate::agent::wait_for(std::time::Duration::from_secs(10), "BIRD's control socket", || {
            bird.try_birdc(&["show", "status"]).filter(|s| s.contains("Daemon is up")).map(drop)
        });
        bird
    }

    /// What `birdc` says to `args`, or `None` if it could not ask.
    fn try_birdc(&self, args: &[&str]) -> Option<String> {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &self.ns, "birdc", "-s"])
            .arg(&self.socket)
            .args(args)
            .output()
            .ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// What `birdc` says to `args` (panics if it cannot ask).
    pub fn birdc(&self, args: &[&str]) -> String {
        self.try_birdc(args).unwrap_or_else(|| panic!("birdc {args:?} failed"))
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}
