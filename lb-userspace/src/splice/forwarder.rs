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
    sync::{Arc, RwLock},
};

use lb_common::abi::{Counters, DropReason, PROTO_TCP, SERVICE_HASH_CLIENT_IP, ServiceKey};
use socket2::{Domain, Socket, Type};
use tokio::{
    net::{TcpListener, UdpSocket},
    runtime::Handle,
    sync::Notify,
};

use super::{
    tcp::{Limits, Stats, View, serve},
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
    view: Arc<RwLock<View>>,
    stats: Arc<Stats>,
    stop: Arc<Notify>,
}

/// The splice proxy.
#[derive(Debug)]
pub struct SpliceForwarder {
    services: HashMap<ServiceKey, Served>,
    limits: Limits,
    rt: Handle,
}

impl SpliceForwarder {
    /// Starts serving every TCP service of `plan` (a fresh plan: tables
    /// filled). UDP services are not served by this build (logged).
    pub fn start(plan: &Plan, limits: Limits, rt: Handle) -> Result<Self, DatapathError> {
        let mut f = Self { services: HashMap::new(), limits, rt };
        f.apply(plan)?;
        Ok(f)
    }

    fn apply(&mut self, new: &Plan) -> Result<(), DatapathError> {
        for svc in &new.services {
            if !self.services.contains_key(&svc.key) {
                let served = self.listen(svc)?;
                self.services.insert(svc.key, served);
            }
            let Some(served) = self.services.get(&svc.key) else { continue };
            let mut view = served.view.write().unwrap_or_else(|p| p.into_inner());
            if !svc.table.is_empty() {
                view.table = svc.table.clone();
            }
            view.client_affinity = svc.record.flags & SERVICE_HASH_CLIENT_IP != 0;
            view.backends = svc
                .backend_ids
                .iter()
                .filter_map(|&id| {
                    let r = new.backends.get(id as usize)?;
                    Some((id, SocketAddr::new(r.addr.to_ip(r.family), u16::from_be(r.port_be))))
                })
                .collect();
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
        let served = Served {
            id: svc.record.id,
            view: Arc::default(),
            stats: Arc::default(),
            stop: Arc::new(Notify::new()),
        };
        let (view, stats, stop) = (served.view.clone(), served.stats.clone(), served.stop.clone());
        let limits = self.limits;
        let _ctx = self.rt.enter();
        if svc.key.proto == PROTO_TCP {
            let std: std::net::TcpListener = bind(vip, Type::STREAM).map_err(err)?.into();
            let listener = TcpListener::from_std(std).map_err(err)?;
            self.rt.spawn(async move {
                serve(listener, vip, view, limits, stats, async move { stop.notified().await })
                    .await
            });
        } else {
            let std: std::net::UdpSocket = bind(vip, Type::DGRAM).map_err(err)?.into();
            let sock = UdpSocket::from_std(std).map_err(err)?;
            self.rt.spawn(async move {
                udp::serve(sock, vip, view, UDP_IDLE, stats, async move { stop.notified().await })
                    .await
            });
        }
        tracing::info!(service = %svc.name, %vip, "splice: listening");
        Ok(served)
    }
}

/// UDP sessions idle this long are dropped (Katran's UDP flow timeout).
const UDP_IDLE: std::time::Duration = std::time::Duration::from_secs(30);

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
        use std::sync::atomic::Ordering::Relaxed;
        let mut out = Totals {
            services: vec![Counters::default(); services as usize],
            backends: vec![Counters::default(); backends as usize],
            exceptions: vec![0; DropReason::ALL.len()],
        };
        for served in self.services.values() {
            if let Some(c) = out.services.get_mut(served.id as usize) {
                // Connections, not packets: a proxy sees streams.
                c.new_flows = served.stats.relayed.load(Relaxed);
                c.bytes =
                    served.stats.bytes_up.load(Relaxed) + served.stats.bytes_down.load(Relaxed);
            }
        }
        Ok(out)
    }
}
