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
    sync::{Arc, atomic::Ordering::Relaxed},
};

use lb_common::abi::{
    BACKEND_DOWN, Counters, DropReason, PROTO_TCP, PassiveEvent, SERVICE_HASH_CLIENT_IP, ServiceKey,
};
use tokio::{
    net::{TcpListener, UdpSocket},
    runtime::Handle,
    sync::{mpsc::UnboundedSender, watch},
};

use super::{
    bind::{self, listen_failure},
    cores::Cores,
    inflight::Inflight,
    pick,
    sources::Policy,
    tcp::{Backend, BackendStats, Shared, Stats, serve},
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
    /// Its counters when it took `id`: a service a reload re-creates on the
    /// same VIP (renamed, say) keeps the listener and its counters, but
    /// counts from zero under its new id, as at the kernel hooks.
    base: Counts,
    shared: Arc<Shared>,
    /// Set to stop accepting (on every listener of the VIP).
    stop: watch::Sender<bool>,
}

/// The splice proxy.
#[derive(Debug)]
pub struct SpliceForwarder {
    services: HashMap<ServiceKey, Served>,
    /// Per backend id; kept across changes so counters never go back.
    backends: HashMap<u32, Arc<BackendStats>>,
    /// What the services a reload removed had counted: the exception
    /// totals (every service's) never go back.
    retired: Counts,
    limits: Splice,
    inflight: Arc<Inflight>,
    events: UnboundedSender<PassiveEvent>,
    /// The agent's runtime: UDP services run there.
    rt: Handle,
    /// The threads that serve TCP services (declared last: dropped after
    /// the services, which only stop accepting).
    cores: Cores,
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
        let cores = Cores::per_cpu().map_err(DatapathError::Threads)?;
        let mut f = Self {
            services: HashMap::new(),
            backends: HashMap::new(),
            retired: Counts::default(),
            limits,
            inflight: Arc::default(),
            events,
            rt,
            cores,
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
            let Some(served) = self.services.get_mut(&svc.key) else { continue };
            // A reload that re-creates the service on the same VIP (renamed,
            // say) gives it a new id: its counters are reported under that.
            if served.id != svc.record.id {
                served.id = svc.record.id;
                served.base = Counts::of(&served.shared.stats);
            }
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
        let retired = &mut self.retired;
        self.services.retain(|key, served| {
            let kept = keep.contains(key);
            if !kept {
                served.stop.send_replace(true);
                *retired = retired.plus(Counts::of(&served.shared.stats));
            }
            kept
        });
        Ok(())
    }

    fn listen(&self, svc: &PlannedService) -> Result<Served, DatapathError> {
        let vip =
            SocketAddr::new(svc.key.addr.to_ip(svc.key.family), u16::from_be(svc.key.port_be));
        let err = |e: io::Error| DatapathError::Listen { vip, reason: listen_failure(&e) };
        let shared = Arc::new(Shared::new(
            vip,
            self.limits,
            Arc::clone(&self.inflight),
            Some(self.events.clone()),
        ));
        let (stop, stopping) = watch::channel(false);
        let stopped = move || {
            let mut stopping = stopping.clone();
            async move {
                let _ = stopping.wait_for(|&s| s).await;
            }
        };
        if svc.key.proto == PROTO_TCP {
            let group = bind::listeners(vip, self.cores.len()).map_err(err)?;
            for (socket, core) in group.into_iter().zip(self.cores.handles()) {
                // Registered with the reactor of the thread that serves it.
                let _ctx = core.enter();
                let listener = TcpListener::from_std(socket.into()).map_err(err)?;
                core.spawn(serve(listener, Arc::clone(&shared), stopped()));
            }
        } else {
            let _ctx = self.rt.enter();
            let sock = UdpSocket::from_std(bind::udp(vip).map_err(err)?.into()).map_err(err)?;
            self.rt.spawn(udp::serve(sock, Arc::clone(&shared), stopped()));
        }
        let served = Served { id: svc.record.id, base: Counts::default(), shared, stop };
        tracing::info!(service = %svc.name, %vip, "splice: listening");
        Ok(served)
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

    fn totals(&self, services: &[u32], backends: u32) -> Result<Totals, DatapathError> {
        let mut out = Totals {
            services: crate::datapath::stats::by_id(services),
            backends: vec![Counters::default(); backends as usize],
            exceptions: vec![0; DropReason::ALL.len()],
            proxy_exceptions: Vec::new(),
        };
        // Connections (TCP) or sessions (UDP) count as flows; a proxy sees
        // streams, not packets, so `packets` stays 0.
        let mut all = self.retired;
        for served in self.services.values() {
            let now = Counts::of(&served.shared.stats);
            all = all.plus(now);
            if let Some(c) = out.services.get_mut(served.id as usize) {
                let own = now.since(served.base);
                c.new_flows = own.relayed;
                c.bytes = own.bytes;
                c.acl_denied = own.acl_denied;
                c.rate_limited = own.rate_limited;
            }
        }
        for (reason, n) in [
            (DropReason::NoBackend, all.no_backend),
            (DropReason::AclDenied, all.acl_denied),
            (DropReason::RateLimited, all.rate_limited),
        ] {
            if let Some(total) = out.exceptions.get_mut(reason as usize) {
                *total = n;
            }
        }
        out.proxy_exceptions = vec![
            ("splice_connection_limit", "refuse", all.at_limit),
            ("splice_backend_connect_failed", "next_backend", all.connect_failed),
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
            served.stop.send_replace(true);
        }
        Some(Arc::clone(&self.inflight))
    }
}

/// A plain copy of a service's counters ([`Stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counts {
    relayed: u64,
    bytes: u64,
    acl_denied: u64,
    rate_limited: u64,
    no_backend: u64,
    at_limit: u64,
    connect_failed: u64,
}

impl Counts {
    fn of(s: &Stats) -> Self {
        // Every field named: a counter added to `Stats` does not compile
        // until it is read here.
        let Stats {
            relayed,
            refused_at_limit,
            no_backend,
            connect_failures,
            bytes_up,
            bytes_down,
            acl_denied,
            rate_limited,
        } = s;
        Self {
            relayed: relayed.load(Relaxed),
            bytes: bytes_up.load(Relaxed) + bytes_down.load(Relaxed),
            acl_denied: acl_denied.load(Relaxed),
            rate_limited: rate_limited.load(Relaxed),
            no_backend: no_backend.load(Relaxed),
            at_limit: refused_at_limit.load(Relaxed),
            connect_failed: connect_failures.load(Relaxed),
        }
    }

    fn zip(self, o: Self, f: impl Fn(u64, u64) -> u64) -> Self {
        Self {
            relayed: f(self.relayed, o.relayed),
            bytes: f(self.bytes, o.bytes),
            acl_denied: f(self.acl_denied, o.acl_denied),
            rate_limited: f(self.rate_limited, o.rate_limited),
            no_backend: f(self.no_backend, o.no_backend),
            at_limit: f(self.at_limit, o.at_limit),
            connect_failed: f(self.connect_failed, o.connect_failed),
        }
    }

    fn plus(self, o: Self) -> Self {
        self.zip(o, u64::saturating_add)
    }

    /// What was counted since `base`.
    fn since(self, base: Self) -> Self {
        self.zip(base, u64::saturating_sub)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_since_a_base_and_summed_never_go_back() {
        let s = Stats::default();
        s.relayed.store(10, Relaxed);
        s.bytes_up.store(5, Relaxed);
        s.bytes_down.store(7, Relaxed);
        s.acl_denied.store(3, Relaxed);
        let base = Counts::of(&s);
        assert_eq!((base.relayed, base.bytes, base.acl_denied), (10, 12, 3));
        s.relayed.store(25, Relaxed);
        let own = Counts::of(&s).since(base);
        assert_eq!((own.relayed, own.bytes, own.acl_denied), (15, 0, 0));
        let retired = Counts { at_limit: 4, ..base };
        let all = retired.plus(Counts::of(&s));
        assert_eq!((all.relayed, all.at_limit, all.acl_denied), (35, 4, 6));
    }
}
