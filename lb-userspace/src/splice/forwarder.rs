//! The splice proxy as a [`Forwarder`]: the agent gives it the same plans as
//! the XDP datapath (Maglev tables, backend states) and it serves each TCP
//! service on its VIP.
//!
//! A VIP must reach this host as a local address: assigned to an interface,
//! or routed locally (`ip route add local 10.0.0.100/32 dev lo`). Listening
//! sockets use IP_FREEBIND, so the address need not exist when lb starts.

use std::{
    collections::HashMap,
    io,
    net::SocketAddr,
    sync::{Arc, RwLock, atomic::Ordering::Relaxed},
};

use lb_common::abi::{
    BACKEND_DOWN, Counters, DropReason, PROTO_TCP, PassiveEvent, SERVICE_HASH_CLIENT_IP, ServiceKey,
};
use socket2::{Domain, Socket, Type};
use tokio::{
    net::{TcpListener, UdpSocket},
    runtime::Handle,
    sync::{Notify, mpsc::UnboundedSender},
};

use super::{
    inflight::Inflight,
    pick,
    sources::Policy,
    tcp::{Backend, BackendStats, Shared, serve},
    udp,
};
use crate::{
    agent::forwarder::Forwarder,
    config::Splice,
    datapath::{
        DatapathError, Plan,
        flows::{FlowCounts, Live},
        plan::PlannedService,
        stats::Totals,
    },
};

/// One served service.
#[derive(Debug)]
struct Served {
    id: u32,
    shared: Arc<Shared>,
    stop: Arc<Notify>,
}

/// The splice proxy.
#[derive(Debug)]
pub struct SpliceForwarder {
    services: HashMap<ServiceKey, Served>,
    /// Per backend id; kept across changes so counters never go back.
    backends: HashMap<u32, Arc<BackendStats>>,
    limits: Splice,
    inflight: Arc<Inflight>,
    events: UnboundedSender<PassiveEvent>,
    rt: Handle,
}

impl SpliceForwarder {
    /// Starts serving every service of `plan` (a fresh plan: tables filled).
    /// Backends refusing connections are reported on `events`.
    pub fn start(
        plan: &Plan,
        limits: Splice,
        events: UnboundedSender<PassiveEvent>,
        rt: Handle,
    ) -> Result<Self, DatapathError> {
        let mut f = Self {
            services: HashMap::new(),
            backends: HashMap::new(),
            limits,
            inflight: Arc::default(),
            events,
            rt,
        };
        f.apply(plan)?;
        Ok(f)
    }

    fn apply(&mut self, new: &Plan) -> Result<(), DatapathError> {
        for svc in &new.services {
            if !self.services.contains_key(&svc.key) {
                let served = self.listen(svc)?;
                self.services.insert(svc.key, served);
            }
            let backends: HashMap<u32, Backend> = svc
                .backend_ids
                .iter()
                .filter_map(|&id| {
                    let r = new.backends.get(id as usize)?;
                    let addr = SocketAddr::new(r.addr.to_ip(r.family), u16::from_be(r.port_be));
                    let stats = Arc::clone(self.backends.entry(id).or_default());
                    // Out of the table: its connections are re-hashed, which
                    // for a proxy means ended.
                    if r.state == BACKEND_DOWN {
                        stats.cut_connections();
                    }
                    Some((id, Backend { addr, stats }))
                })
                .collect();
            let Some(served) = self.services.get(&svc.key) else { continue };
            let mut view = served.shared.view.write().unwrap_or_else(|p| p.into_inner());
            if !svc.table.is_empty() {
                view.table = svc.table.clone();
                view.owners = pick::owners(&view.table);
            }
            view.client_affinity = svc.record.flags & SERVICE_HASH_CLIENT_IP != 0;
            view.proxy_protocol = svc.proxy_protocol;
            view.sources = Policy::of(svc);
            view.backends = backends;
        }
        // Services gone from the plan: stop accepting on their VIPs.
        let keep: Vec<ServiceKey> = new.services.iter().map(|s| s.key).collect();
        self.services.retain(|key, served| {
            let kept = keep.contains(key);
            if !kept {
                served.stop.notify_one();
            }
            kept
        });
        Ok(())
    }

    fn listen(&self, svc: &PlannedService) -> Result<Served, DatapathError> {
        let vip =
            SocketAddr::new(svc.key.addr.to_ip(svc.key.family), u16::from_be(svc.key.port_be));
        let err = |e: io::Error| DatapathError::Listen { vip, reason: listen_failure(&e) };
        let shared = Arc::new(Shared {
            vip,
            view: RwLock::default(),
            limits: self.limits,
            stats: Default::default(),
            buckets: Default::default(),
            inflight: Arc::clone(&self.inflight),
            events: Some(self.events.clone()),
        });
        let stop = Arc::new(Notify::new());
        let served = Served { id: svc.record.id, shared: Arc::clone(&shared), stop: stop.clone() };
        let _ctx = self.rt.enter();
        if svc.key.proto == PROTO_TCP {
            let std: std::net::TcpListener = bind(vip, Type::STREAM).map_err(err)?.into();
            let listener = TcpListener::from_std(std).map_err(err)?;
            self.rt.spawn(serve(listener, shared, async move { stop.notified().await }));
        } else {
            let std: std::net::UdpSocket = bind(vip, Type::DGRAM).map_err(err)?.into();
            let sock = UdpSocket::from_std(std).map_err(err)?;
            self.rt.spawn(udp::serve(sock, shared, async move { stop.notified().await }));
        }
        tracing::info!(service = %svc.name, %vip, "splice: listening");
        Ok(served)
    }
}

/// A socket bound to `vip` (listening, for TCP). A VIP that is a local
/// address (assigned, or `ip route add local VIP/32 dev lo`) is bound with
/// IP_FREEBIND, so it may appear after lb starts. One that is not (its
/// traffic steered here by a TPROXY rule or policy routing) is bound with
/// IP_TRANSPARENT, which accepts connections to a foreign address.
fn bind(vip: SocketAddr, ty: Type) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(vip), ty, None)?;
    s.set_reuse_address(true)?;
    if vip.is_ipv6() {
        s.set_only_v6(true)?;
    }
    if is_local(vip) {
        s.set_freebind(true)?;
    } else {
        transparent(&s, vip)?;
        tracing::info!(
            %vip,
            "the VIP is not a local address: listening with IP_TRANSPARENT (its traffic must reach \
             this host through a TPROXY rule or policy routing, e.g. `ip rule add to VIP lookup \
             100` + `ip route add local VIP dev lo table 100`)"
        );
    }
    s.set_nonblocking(true)?;
    s.bind(&vip.into())?;
    if ty == Type::STREAM {
        // Accepted sockets inherit it: no setsockopt per connection.
        s.set_nodelay(true)?;
        s.listen(4096)?;
    }
    Ok(s)
}

/// Why a listen failed, with the fix for the usual causes.
fn listen_failure(e: &io::Error) -> String {
    let fix = match e.raw_os_error() {
        Some(nix::libc::EACCES) => {
            "; ports below 1024 need CAP_NET_BIND_SERVICE: run lb as root or grant it"
        }
        Some(nix::libc::EADDRINUSE) => {
            "; another process holds it (see `ss -ltnup`): stop it or move the VIP's port"
        }
        _ => "",
    };
    format!("{e}{fix}")
}

/// Whether `vip`'s address is local: a plain bind to it works.
fn is_local(vip: SocketAddr) -> bool {
    let Ok(s) = Socket::new(Domain::for_address(vip), Type::DGRAM, None) else { return true };
    match s.bind(&SocketAddr::new(vip.ip(), 0).into()) {
        Err(e) => e.raw_os_error() != Some(nix::libc::EADDRNOTAVAIL),
        Ok(()) => true,
    }
}

/// IP_TRANSPARENT (IPV6_TRANSPARENT for IPv6), which needs CAP_NET_ADMIN.
fn transparent(s: &Socket, vip: SocketAddr) -> io::Result<()> {
    use nix::sys::socket::{setsockopt, sockopt::IpTransparent};
    let done = if vip.is_ipv4() {
        setsockopt(s, IpTransparent, &true)
    } else {
        setsockopt(s, Ipv6Transparent, &true)
    };
    done.map_err(|e| {
        io::Error::other(format!(
            "{vip} is not a local address and IP_TRANSPARENT failed ({e}): add it to an \
             interface or `ip route add local {}/{} dev lo`, or give lb CAP_NET_ADMIN",
            vip.ip(),
            if vip.is_ipv4() { 32 } else { 128 }
        ))
    })
}

/// IPV6_TRANSPARENT, which nix does not name.
#[derive(Debug, Clone, Copy)]
struct Ipv6Transparent;

impl nix::sys::socket::SetSockOpt for Ipv6Transparent {
    type Val = bool;

    fn set<F: std::os::fd::AsFd>(&self, fd: &F, val: &bool) -> nix::Result<()> {
        let on: nix::libc::c_int = (*val).into();
        // SAFETY: `on` outlives the call and its size is passed with it.
        let r = unsafe {
            nix::libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&fd.as_fd()),
                nix::libc::SOL_IPV6,
                nix::libc::IPV6_TRANSPARENT,
                (&raw const on).cast(),
                std::mem::size_of_val(&on) as nix::libc::socklen_t,
            )
        };
        nix::errno::Errno::result(r).map(drop)
    }
}

impl Forwarder for SpliceForwarder {
    fn mode(&self) -> &'static str {
        "splice"
    }

    /// Views are replaced whole, so what it held before does not matter.
    fn apply_change(&mut self, _old: &Plan, new: &Plan) -> Result<(), DatapathError> {
        self.apply(new)
    }

    fn totals(&self, services: u32, backends: u32) -> Result<Totals, DatapathError> {
        let mut out = Totals {
            services: vec![Counters::default(); services as usize],
            backends: vec![Counters::default(); backends as usize],
            exceptions: vec![0; DropReason::ALL.len()],
            proxy_exceptions: Vec::new(),
        };
        let (mut at_limit, mut connect_failed) = (0, 0);
        // Connections (TCP) or sessions (UDP) count as flows; a proxy sees
        // streams, not packets, so `packets` stays 0.
        for served in self.services.values() {
            let s = &served.shared.stats;
            if let Some(c) = out.services.get_mut(served.id as usize) {
                c.new_flows = s.relayed.load(Relaxed);
                c.bytes = s.bytes_up.load(Relaxed) + s.bytes_down.load(Relaxed);
                c.acl_denied = s.acl_denied.load(Relaxed);
                c.rate_limited = s.rate_limited.load(Relaxed);
            }
            for (reason, n) in [
                (DropReason::NoBackend, &s.no_backend),
                (DropReason::AclDenied, &s.acl_denied),
                (DropReason::RateLimited, &s.rate_limited),
            ] {
                if let Some(total) = out.exceptions.get_mut(reason as usize) {
                    *total += n.load(Relaxed);
                }
            }
            at_limit += s.refused_at_limit.load(Relaxed);
            connect_failed += s.connect_failures.load(Relaxed);
        }
        out.proxy_exceptions = vec![
            ("splice_connection_limit", "refuse", at_limit),
            ("splice_backend_connect_failed", "next_backend", connect_failed),
        ];
        for (&id, b) in &self.backends {
            if let Some(c) = out.backends.get_mut(id as usize) {
                c.new_flows = b.opened.load(Relaxed);
                c.bytes = b.bytes.load(Relaxed);
            }
        }
        Ok(out)
    }

    fn flow_counts(&self) -> Option<FlowCounts> {
        Some(
            self.backends
                .iter()
                .map(|(&id, b)| (id, Live { active: b.open.load(Relaxed), closing: 0 }))
                .collect(),
        )
    }

    fn stop_accepting(&mut self) -> Option<Arc<Inflight>> {
        for served in self.services.values() {
            served.stop.notify_one();
        }
        Some(Arc::clone(&self.inflight))
    }
}
