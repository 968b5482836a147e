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
    Counters, DropReason, PROTO_TCP, PassiveEvent, SERVICE_HASH_CLIENT_IP, ServiceKey,
};
use socket2::{Domain, Socket, Type};
use tokio::{
    net::{TcpListener, UdpSocket},
    runtime::Handle,
    sync::{Notify, mpsc::UnboundedSender},
};

use super::{
    inflight::Inflight,
    tcp::{Backend, BackendStats, Limits, Shared, serve},
    udp,
};
use crate::{
    agent::forwarder::Forwarder,
    datapath::{DatapathError, Plan, plan::PlannedService, stats::Totals},
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
    limits: Limits,
    inflight: Arc<Inflight>,
    events: UnboundedSender<PassiveEvent>,
    rt: Handle,
}

impl SpliceForwarder {
    /// Starts serving every service of `plan` (a fresh plan: tables filled).
    /// Backends refusing connections are reported on `events`.
    pub fn start(
        plan: &Plan,
        limits: Limits,
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
                    Some((id, Backend { addr, stats }))
                })
                .collect();
            let Some(served) = self.services.get(&svc.key) else { continue };
            let mut view = served.shared.view.write().unwrap_or_else(|p| p.into_inner());
            if !svc.table.is_empty() {
                view.table = svc.table.clone();
            }
            view.client_affinity = svc.record.flags & SERVICE_HASH_CLIENT_IP != 0;
            view.proxy_protocol = svc.proxy_protocol;
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
        let vip = SocketAddr::new(svc.key.vip.to_ip(svc.key.family), u16::from_be(svc.key.port_be));
        let err = |e: io::Error| DatapathError::Listen { vip, reason: e.to_string() };
        let shared = Arc::new(Shared {
            vip,
            view: RwLock::default(),
            limits: self.limits,
            stats: Default::default(),
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

/// A socket bound to `vip` (listening, for TCP), which need not be a local
/// address yet.
fn bind(vip: SocketAddr, ty: Type) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(vip), ty, None)?;
    s.set_reuse_address(true)?;
    s.set_freebind(true)?;
    if vip.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&vip.into())?;
    if ty == Type::STREAM {
        s.listen(4096)?;
    }
    Ok(s)
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
        };
        // Connections (TCP) or sessions (UDP) count as flows; a proxy sees
        // streams, not packets, so `packets` stays 0.
        for served in self.services.values() {
            let s = &served.shared.stats;
            if let Some(c) = out.services.get_mut(served.id as usize) {
                c.new_flows = s.relayed.load(Relaxed);
                c.bytes = s.bytes_up.load(Relaxed) + s.bytes_down.load(Relaxed);
            }
            if let Some(n) = out.exceptions.get_mut(DropReason::NoBackend as usize) {
                *n += s.no_backend.load(Relaxed);
            }
        }
        for (&id, b) in &self.backends {
            if let Some(c) = out.backends.get_mut(id as usize) {
                c.new_flows = b.opened.load(Relaxed);
                c.bytes = b.bytes.load(Relaxed);
            }
        }
        Ok(out)
    }

    fn stop_accepting(&mut self) -> Option<Arc<Inflight>> {
        for served in self.services.values() {
            served.stop.notify_one();
        }
        Some(Arc::clone(&self.inflight))
    }
}
