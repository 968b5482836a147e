//! The paths every measurement runs through, each started in the lb
//! namespace and torn down (daemon killed, rules and routes removed, XDP
//! detached) when its guard drops.

use std::{
    net::{IpAddr, SocketAddr, TcpStream},
    path::Path as FsPath,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use lb_tests::{
    agent::{Lb, TempDir, pin_dir, start_lb},
    netns::{NetNs, Proc},
    topology::{VIP4, lb_side4},
};

use crate::bed::{Bed, RR_PORT};

/// A path between client and backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Kernel routing straight to the backend's address: the ceiling.
    Direct,
    /// nftables DNAT in the lb namespace.
    Nft,
    /// HAProxy 2.6, TCP mode, splice-auto.
    Haproxy,
    /// nginx 1.22 stream module.
    Nginx,
    /// `lb run --mode xdp`, at the XDP hook (native).
    LbXdp,
    /// `lb run --mode xdp`, at the tc hook.
    LbTc,
    /// `lb run --mode splice`.
    LbSplice,
    /// `lb run` at the tc hook with `forwarding = "dsr-ipip"`: the backend
    /// runs `lb decap` and answers the client over its own link.
    LbDsr,
}

impl Path {
    /// Every path, in report order.
    pub const ALL: [Path; 8] = [
        Path::Direct,
        Path::Nft,
        Path::Haproxy,
        Path::Nginx,
        Path::LbXdp,
        Path::LbTc,
        Path::LbSplice,
        Path::LbDsr,
    ];

    /// The report's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Path::Direct => "direct",
            Path::Nft => "nft-dnat",
            Path::Haproxy => "haproxy",
            Path::Nginx => "nginx",
            Path::LbXdp => "lb-xdp",
            Path::LbTc => "lb-tc",
            Path::LbSplice => "lb-splice",
            Path::LbDsr => "lb-dsr",
        }
    }

    /// Whether it serves UDP (HAProxy 2.6 has no UDP proxying).
    pub fn udp(self) -> bool {
        self != Path::Haproxy
    }

    /// Where the client sends: the backend itself, or the VIP.
    pub fn target(self, bed: &Bed) -> IpAddr {
        let ip = if self == Path::Direct { bed.backend_ip() } else { VIP4.to_owned() };
        ip.parse().expect("an address literal")
    }

    /// Whether the VIP is a local address of the lb namespace (proxies).
    fn local_vip(self) -> bool {
        matches!(self, Path::Haproxy | Path::Nginx | Path::LbSplice)
    }
}

/// A started path; everything it changed is undone on drop.
#[derive(Debug)]
pub struct Running {
    /// The path.
    pub path: Path,
    /// The balancer process whose CPU time counts (proxies and lb).
    pub pid: Option<u32>,
    daemon: Option<Proc>,
    pub lb: Option<Lb>,
    lb_ns: String,
    /// lb-dsr: the backend's namespace, where its set-up is undone.
    dsr_backend: Option<String>,
    dir: TempDir,
}

/// Starts `path` in the bed's lb namespace and waits until it serves.
pub fn start(path: Path, bed: &Bed) -> Result<Running> {
    let lb_ns = &bed.topo.lb;
    let dir = TempDir::new();
    let d = dir.0.to_str().context("utf-8 temp dir")?.to_owned();
    let mut run = Running {
        path,
        pid: None,
        daemon: None,
        lb: None,
        lb_ns: lb_ns.name().to_owned(),
        dsr_backend: None,
        dir,
    };
    if path.local_vip() {
        lb_ns.ip(&format!("route add local {VIP4}/32 dev lo"));
    }
    match path {
        Path::Direct => {}
        Path::Nft => {
            let f = write(&run.dir.0, "nft-dnat.nft", bed.template("nft-dnat.nft.in", &[])?)?;
            lb_ns.exec(&["nft", "-f", &f]);
        }
        Path::Haproxy => {
            let f = write(
                &run.dir.0,
                "haproxy.cfg",
                bed.template("haproxy.cfg.in", &[("@DIR@", &d)])?,
            )?;
            // -db: foreground, no master: the child we hold is HAProxy.
            run.daemon = Some(spawn_logged(lb_ns, &["haproxy", "-db", "-f", &f], &run.dir.0)?);
        }
        Path::Nginx => {
            let f =
                write(&run.dir.0, "nginx.conf", bed.template("nginx.conf.in", &[("@DIR@", &d)])?)?;
            run.daemon = Some(spawn_logged(
                lb_ns,
                &["nginx", "-c", &f, "-p", &d, "-e", &format!("{d}/nginx-error.log")],
                &run.dir.0,
            )?);
        }
        Path::LbXdp | Path::LbTc | Path::LbSplice | Path::LbDsr => {
            let (mode, attach) = match path {
                Path::LbXdp => ("xdp", "native"),
                Path::LbTc | Path::LbDsr => ("xdp", "tc"),
                _ => ("splice", "auto"),
            };
            let forwarding = if path == Path::LbDsr {
                run.daemon = Some(bed.dsr_backend(&run.dir.0)?);
                run.dsr_backend = Some(bed.backend().name().to_owned());
                format!("forwarding = \"dsr-ipip\"\ntunnel_source = \"{}\"", lb_side4(1))
            } else {
                String::new()
            };
            let pin = pin_dir(&run.dir.0);
            let pin = pin.to_str().context("utf-8 pin dir")?;
            let cfg = bed.template(
                "lb.toml.in",
                &[
                    ("@MODE@", mode),
                    ("@ATTACH@", attach),
                    ("@DIR@", &d),
                    ("@PIN@", pin),
                    ("@FORWARDING@", &forwarding),
                ],
            )?;
            let f = write(&run.dir.0, "lb.toml", cfg)?;
            let lb = start_lb(&bed.topo, FsPath::new(&f), &run.dir.0);
            run.pid = Some(lb.pid());
            run.lb = Some(lb);
        }
    }
    if let (Some(d), None) = (&run.daemon, &run.pid) {
        run.pid = Some(d.0.id());
    }
    let served = wait_serving(path, bed).and_then(|()| {
        let exited = match run.daemon.as_mut() {
            Some(d) => d.0.try_wait()?.is_some(),
            None => false,
        };
        // Whatever answered, it is not this path.
        if exited { bail!("{} exited", path.name()) } else { Ok(()) }
    });
    if let Err(e) = served {
        let log = std::fs::read_to_string(run.dir.0.join("daemon.log")).unwrap_or_default();
        bail!("{e:#}; its log: {log}");
    }
    Ok(run)
}

fn write(dir: &FsPath, name: &str, text: String) -> Result<String> {
    let p = dir.join(name);
    std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
    Ok(p.to_str().context("utf-8 path")?.to_owned())
}

/// Spawns a foreground daemon in `ns` with stdout and stderr in `dir`.
fn spawn_logged(ns: &NetNs, cmd: &[&str], dir: &FsPath) -> Result<Proc> {
    let log = std::fs::File::create(dir.join("daemon.log"))?;
    let child = ns
        .command(cmd)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("spawning {cmd:?}"))?;
    Ok(Proc(child))
}

/// Waits (at most 10 s) until a connection to the short-connection service
/// succeeds from the client namespace.
fn wait_serving(path: Path, bed: &Bed) -> Result<()> {
    let target = SocketAddr::new(path.target(bed), RR_PORT);
    let _in = bed.topo.client.enter();
    let start = Instant::now();
    while TcpStream::connect_timeout(&target, Duration::from_millis(200)).is_err() {
        crate::signals::check()?;
        if start.elapsed() > Duration::from_secs(10) {
            bail!("{} does not serve {target} after 10 s", path.name());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

impl Drop for Running {
    fn drop(&mut self) {
        self.daemon.take();
        if let Some(lb) = self.lb.take() {
            drop(lb);
            // A killed agent leaves its datapath forwarding (restarts keep
            // traffic flowing): remove it, or it would serve the next path.
            // In its namespace: `lb stop` also removes the VIP's local route
            // there, which the next path (a proxy) adds itself.
            let cfg = self.dir.0.join("lb.toml");
            let _ = std::process::Command::new("ip")
                .args(["netns", "exec", &self.lb_ns])
                .arg(lb_tests::agent::lb_binary())
                .args(["stop", "--config"])
                .arg(&cfg)
                .output();
        }
        let ip = |args: &str| {
            let _ = std::process::Command::new("ip")
                .args(["-n", &self.lb_ns])
                .args(args.split_whitespace())
                .output();
        };
        if self.path.local_vip() {
            ip(&format!("route del local {VIP4}/32 dev lo"));
        }
        // Whatever is left in the lb namespace (nginx's workers outlive a
        // killed master) would keep serving the VIP under the next path's name.
        lb_tests::netns::kill_all(&self.lb_ns);
        if let Some(ns) = self.dsr_backend.take() {
            crate::bed::undo_dsr_backend(&ns, &self.dir.0);
        }
        if self.path == Path::Nft {
            let _ = std::process::Command::new("ip")
                .args(["netns", "exec", &self.lb_ns, "nft", "delete", "table", "ip", "lbbench"])
                .output();
        }
    }
}
