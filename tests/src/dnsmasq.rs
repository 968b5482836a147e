//! A real DNS server for the DNS-backend tests: Debian's dnsmasq, in a
//! namespace the test made, on that namespace's loopback, answering for
//! `svc.test` from files the test rewrites. Killed on drop.
//!
//! A records come from an `addn-hosts` file, which dnsmasq re-reads on
//! SIGHUP; SRV records only from its config, so changing them restarts it.
//! `local=/svc.test/` makes a name with no record NXDOMAIN, as an
//! authoritative server says it.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crate::netns::{NetNs, Proc};

/// The port it listens on (127.0.0.1 of its namespace).
pub const PORT: u16 = 5300;
/// The zone it answers for.
pub const ZONE: &str = "svc.test";

/// One SRV record: target (a name in [`ZONE`]), port, priority, weight.
#[derive(Debug, Clone)]
pub struct Srv {
    /// The SRV name, e.g. `_web._tcp.svc.test`.
    pub name: String,
    /// The target host, e.g. `b1.svc.test`.
    pub target: String,
    /// The port the target serves on.
    pub port: u16,
    /// Lower is preferred.
    pub priority: u16,
    /// Share within a priority.
    pub weight: u16,
}

/// A running dnsmasq.
#[derive(Debug)]
pub struct Dnsmasq {
    ns: String,
    dir: PathBuf,
    ttl: u32,
    srv: Vec<Srv>,
    proc: Option<Proc>,
}

impl Dnsmasq {
    /// Starts it in `ns` with its files in `dir`, answering with TTL `ttl`
    /// seconds, with `hosts` (`(address, name)`) and `srv` records.
    pub fn start(ns: &NetNs, dir: &Path, ttl: u32, hosts: &[(&str, &str)], srv: &[Srv]) -> Self {
        let mut d = Self {
            ns: ns.name().to_owned(),
            dir: dir.to_owned(),
            ttl,
            srv: srv.to_vec(),
            proc: None,
        };
        d.write_hosts(hosts);
        d.run();
        d
    }

    /// `resolver = "..."` for the lb config.
    pub fn resolver() -> String {
        format!("127.0.0.1:{PORT}")
    }

    fn hosts_file(&self) -> PathBuf {
        self.dir.join("dns-hosts")
    }

    fn write_hosts(&self, hosts: &[(&str, &str)]) {
        let text: String = hosts.iter().map(|(ip, name)| format!("{ip} {name}\n")).collect();
        std::fs::write(self.hosts_file(), text).expect("write the dnsmasq hosts file");
    }

    fn run(&mut self) {
        let conf = self.dir.join("dnsmasq.conf");
        let mut text = format!(
            "port={PORT}\nlisten-address=127.0.0.1\nbind-interfaces\nno-resolv\nno-hosts\n\
             local=/{ZONE}/\nlocal-ttl={}\naddn-hosts={}\npid-file=\nuser=root\n",
            self.ttl,
            self.hosts_file().display()
        );
        for s in &self.srv {
            text += &format!(
                "srv-host={},{},{},{},{}\n",
                s.name, s.target, s.port, s.priority, s.weight
            );
        }
        std::fs::write(&conf, text).expect("write the dnsmasq config");
        let child = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns,
                "dnsmasq",
                "--keep-in-foreground",
                "--log-facility=-",
            ])
            .arg(format!("--conf-file={}", conf.display()))
            .stdin(std::process::Stdio::null())
            // Its banner; the rest goes to dnsmasq.log beside the config.
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("starting dnsmasq (Debian: apt-get install dnsmasq-base)");
        self.proc = Some(Proc(child));
        self.wait_listening();
    }

    /// Waits (at most 5 s) until it has bound its port.
    fn wait_listening(&self) {
        let start = Instant::now();
        loop {
            let out = std::process::Command::new("ip")
                .args(["netns", "exec", &self.ns, "ss", "-Hlun", &format!("sport = :{PORT}")])
                .output()
                .expect("ss");
            if !String::from_utf8_lossy(&out.stdout).trim().is_empty() {
                return;
            }
            assert!(start.elapsed() < Duration::from_secs(5), "dnsmasq never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Replaces the A records and has dnsmasq re-read them (SIGHUP);
    /// returns when the signal was sent.
    pub fn set_hosts(&self, hosts: &[(&str, &str)]) -> Instant {
        self.write_hosts(hosts);
        let pid = self.proc.as_ref().expect("dnsmasq running").0.id();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::SIGHUP)
            .expect("SIGHUP dnsmasq");
        Instant::now()
    }

    /// Replaces the SRV records (a restart: dnsmasq reads them at start
    /// only); returns when the new one listens.
    pub fn set_srv(&mut self, srv: &[Srv]) -> Instant {
        self.srv = srv.to_vec();
        self.stop();
        self.run();
        Instant::now()
    }

    /// Stops it: a DNS outage.
    pub fn stop(&mut self) {
        self.proc = None;
    }

    /// Starts it again with the same records.
    pub fn restart(&mut self) {
        if self.proc.is_none() {
            self.run();
        }
    }
}
