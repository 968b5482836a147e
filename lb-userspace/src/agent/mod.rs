//! The running balancer: owns the datapath (XDP, or splice where XDP cannot
//! run) through [`forwarder::Forwarder`], applies health and
//! operator changes to it, and answers the control socket.
//!
//! Every change (a probe verdict, a drain, a weight, a reload) goes the same
//! way: compute the new plan from config + runtime state, write new tables
//! beside the live ones, switch each service record atomically.

mod announce;
pub mod dns;
pub mod flood;
mod flow;
pub mod forwarder;
pub mod passive;
mod runtime;
pub mod saved;
mod status;
mod trace;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Instant,
};

use forwarder::Forwarder;
use lb_common::abi::{DropReason, FlowTimeouts};

pub use runtime::Admin;
use runtime::Runtimes;

use crate::{
    config::{Config, ProxyProtocol},
    control::{
        Request, Response,
        protocol::{BackendAction, InterfaceStatus, StatusReport},
        server::Handler,
    },
    datapath::{
        Datapath, DatapathError, Plan, PlanError,
        flows::{self, FlowCounts},
        ifaces,
        lost::{self, LossWatch},
        pins::{self, Pins},
        plan::replan,
    },
    health::{
        Health,
        scheduler::{Outcome, Target},
        tunnel::Tunnel,
    },
    metrics::{self, histogram::Histogram},
    routes::{self, RouteError, VipRoutes},
    splice::inflight::Inflight,
};

/// The running balancer, over either datapath (see [`Forwarder`]).
#[derive(Debug)]
pub struct Agent {
    interfaces: Vec<InterfaceStatus>,
    state: Mutex<State>,
    /// Woken after each successful reload, so the probes are respawned.
    reloaded: tokio::sync::Notify,
    /// Woken by `lb stop`.
    stopping: tokio::sync::Notify,
    /// Woken after DNS changed a service's backends, so the probes are
    /// respawned.
    dns_changed: tokio::sync::Notify,
    /// Why the datapath is the one it is, for `lb status`.
    mode_reason: Option<String>,
    /// Where the datapath is pinned.
    pins: Pins,
    /// Where the plan is saved for the next agent.
    state_file: PathBuf,
    /// A handle on the flow table for counting live flows (XDP mode).
    flow_table: Option<std::os::fd::OwnedFd>,
    /// Live flows per backend id from the last sweep of the flow table,
    /// and when it was taken.
    flow_counts: Mutex<Option<(Arc<FlowCounts>, Instant)>>,
    /// The interfaces' lost frames, last seen.
    losses: Mutex<LossWatch>,
    /// The interfaces with a peer device, as last written to the datapath.
    peer_devices: Mutex<Vec<u32>>,
    /// `lb trace` sessions (XDP mode).
    tracer: Option<Arc<crate::trace::Tracer>>,
    /// Flood mode and the new-flow rate it is judged by (locked after
    /// `state` where both are held).
    flood: Mutex<flood::FloodWatch>,
}

/// Everything a change replaces, under one lock so readers never see a
/// config, a plan and runtime states that disagree.
#[derive(Debug)]
struct State {
    config: Config,
    plan: Plan,
    runtimes: Runtimes,
    datapath: Box<dyn Forwarder>,
    /// Probe durations per service, for the metrics.
    probe_durations: BTreeMap<String, Histogram>,
    /// The local routes of the VIPs.
    routes: VipRoutes,
    /// The announced routes (`[agent.announce]`); `None` when not configured,
    /// or once withdrawn for good at shutdown.
    announcer: Option<routes::announce::Announcer>,
    /// What DNS last said, per service with a `dns` table.
    dns: BTreeMap<String, crate::dns::DnsState>,
}

/// Why a change was refused; what runs stays as it was.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// The new config file is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The change cannot be applied live.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// Writing the maps failed.
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    /// Adding or removing a VIP route failed.
    #[error("VIP routes: {0}")]
    Routes(#[from] RouteError),
    /// No such service.
    #[error("no service {0:?}; `lb status` lists them")]
    NoService(String),
    /// No such backend in the service.
    #[error("no backend {backend} in service {service:?}; `lb status` lists them")]
    Unknown {
        /// The service asked for.
        service: String,
        /// The backend asked for.
        backend: String,
    },
    /// A weight outside 1-65535.
    #[error("weight {0} is out of range; use 1-65535 (to stop new flows, use `lb backend drain`)")]
    Weight(u32),
    /// `lb reload --config FILE` to an agent that runs another file.
    #[error(
        "this agent runs {}, not {}: a reload re-reads the agent's own file; edit that one, \
         or restart lb with --config {}",
        ours.display(),
        meant.display(),
        meant.display()
    )]
    OtherFile {
        /// The agent's file.
        ours: PathBuf,
        /// The file the operator named.
        meant: PathBuf,
    },
}

/// Whether `a` and `b` name the same file (compared resolved, so a relative
/// path or a symlink to the agent's file counts as it).
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

impl Agent {
    /// An agent for a datapath already loaded with `plan` (the plan of
    /// `config`) and attached to `interfaces`, holding `routes` (those of
    /// `config`'s VIPs).
    ///
    /// `saved`: backend states a previous agent left (see
    /// [`saved::SavedBackend`]); `plan` must already reflect them.
    pub fn new(
        config: Config,
        plan: Plan,
        datapath: Box<dyn Forwarder>,
        interfaces: Vec<InterfaceStatus>,
        saved: &[saved::SavedBackend],
        routes: VipRoutes,
    ) -> Self {
        let runtimes = runtime::restored(&config, saved);
        let announcer = config.agent.announce.map(routes::announce::Announcer::new);
        let mut plan = plan;
        plan.compact();
        let state = State {
            config,
            plan,
            runtimes,
            datapath,
            probe_durations: BTreeMap::new(),
            announcer,
            routes,
            dns: BTreeMap::new(),
        };
        let flow_table = match state.datapath.xdp().map(Datapath::flow_table).transpose() {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!("flow counts are off: {e}");
                None
            }
        };
        let flood = Mutex::new(flood::FloodWatch::new(state.config.flows.flood_threshold));
        let pins = Pins::new(&state.config.agent.pin_dir);
        let state_file = pins::state_file(&state.config.agent.control_socket);
        Self {
            interfaces,
            mode_reason: None,
            state: Mutex::new(state),
            reloaded: tokio::sync::Notify::new(),
            stopping: tokio::sync::Notify::new(),
            dns_changed: tokio::sync::Notify::new(),
            pins,
            state_file,
            flow_table,
            flow_counts: Mutex::default(),
            losses: Mutex::default(),
            peer_devices: Mutex::default(),
            tracer: None,
            flood,
        }
    }

    /// Records why the datapath is the one it is (shown by `lb status`).
    pub fn with_mode_reason(mut self, why: impl Into<String>) -> Self {
        self.mode_reason = Some(why.into());
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The probes the current config asks for.
    pub fn targets(&self) -> Vec<Target> {
        let st = self.lock();
        // Splice mode connects to the backends' own addresses whatever the
        // forwarding: no tunnel to probe there.
        let kernel = st.datapath.xdp().is_some();
        st.config
            .services
            .iter()
            .flat_map(|svc| {
                let tunnel = match (&svc.tunnel_source, svc.health.tunnel && kernel) {
                    (Some(source), true) => Some(Tunnel { vip: svc.vip, source: *source }),
                    _ => None,
                };
                svc.backends.iter().map(move |b| Target {
                    service: svc.name.clone(),
                    backend: b.addr,
                    kind: svc.health.kind.clone(),
                    interval: svc.health.interval,
                    timeout: svc.health.timeout,
                    proxy_protocol: svc.proxy_protocol != ProxyProtocol::None,
                    tunnel: tunnel.clone(),
                })
            })
            .collect()
    }

    /// Counts a probe result; on a change of health, the backend's tables
    /// are rebuilt and swapped in, and the change is logged with its reason
    /// and how long detecting it took.
    pub fn on_probe(&self, o: &Outcome) {
        let mut st = self.lock();
        st.probe_durations.entry(o.service.clone()).or_default().observe(o.latency);
        let key = (o.service.clone(), o.backend);
        let Some(rt) = st.runtimes.get_mut(&key) else { return };
        rt.probe_after_passive(o.result.is_ok(), o.at);
        let Some(t) = rt.tracker.observe(o.result.is_ok(), o.at) else { return };
        rt.transitions += 1;
        let reason = match &o.result {
            Ok(()) => "probes succeed".to_owned(),
            Err(e) => e.clone(),
        };
        let started = Instant::now();
        let applied = apply(&mut st, &self.state_file);
        let to = if t.to == Health::Up { "up" } else { "down" };
        match applied {
            Ok(()) => tracing::warn!(
                service = %o.service,
                backend = %o.backend,
                to,
                signal = passive::Signal::Probe.name(),
                reason,
                consecutive = t.streak,
                detection_ms = t.detection.as_secs_f64() * 1e3,
                apply_us = started.elapsed().as_micros() as u64,
                "backend health changed"
            ),
            Err(e) => {
                tracing::error!(service = %o.service, backend = %o.backend, to, "applying a health change failed: {e}")
            }
        }
    }

    /// Applies an operator action to one backend.
    pub fn backend(
        &self,
        service: &str,
        backend: &str,
        action: BackendAction,
    ) -> Result<String, ChangeError> {
        let mut st = self.lock();
        if !st.config.services.iter().any(|s| s.name == service) {
            return Err(ChangeError::NoService(service.to_owned()));
        }
        let addr: Option<SocketAddr> = backend.parse().ok();
        let unknown =
            || ChangeError::Unknown { service: service.to_owned(), backend: backend.to_owned() };
        let rt = st
            .runtimes
            .get_mut(&(service.to_owned(), addr.ok_or_else(unknown)?))
            .ok_or_else(unknown)?;
        let before = (rt.admin, rt.weight);
        match action {
            BackendAction::Drain => rt.admin = Admin::Draining,
            BackendAction::Disable => rt.admin = Admin::Disabled,
            BackendAction::Enable => rt.admin = Admin::Enabled,
            BackendAction::Weight { weight } if (1..=65535).contains(&weight) => {
                rt.weight = Some(weight)
            }
            BackendAction::Weight { weight } => return Err(ChangeError::Weight(weight)),
        }
        let now = (rt.admin, rt.weight);
        if let Err(e) = apply(&mut st, &self.state_file) {
            if let Some(rt) = st.runtimes.get_mut(&(service.to_owned(), addr.ok_or_else(unknown)?))
            {
                (rt.admin, rt.weight) = before;
            }
            return Err(e);
        }
        let msg = format!(
            "backend {backend} of {service}: {} (weight {})",
            now.0.name(),
            now.1.map_or("from config".into(), |w| w.to_string())
        );
        tracing::info!("operator: {msg}");
        Ok(msg)
    }

    /// [`Agent::reload`] on a request naming the file the operator meant
    /// (`meant`): refused if the agent runs another. Returns the file's
    /// path, for the answer.
    fn reload_checked(&self, meant: Option<&Path>) -> Result<String, ChangeError> {
        let ours = self.lock().config.source.clone();
        if let Some(meant) = meant
            && !same_file(meant, &ours)
        {
            return Err(ChangeError::OtherFile { ours, meant: meant.to_owned() });
        }
        self.reload()?;
        Ok(ours.display().to_string())
    }

    /// Re-reads the config file the agent was started with and applies it:
    /// backends added or removed and weights take effect with atomic table
    /// swaps; established flows keep their backends; health and operator
    /// state of retained backends carry over. An invalid file, or a change
    /// that needs a restart, leaves everything as it was.
    pub fn reload(&self) -> Result<(), ChangeError> {
        let mut st = self.lock();
        let mut config = crate::config::load(&st.config.source)?;
        needs_no_restart(&st.config, &config, st.datapath.mode())?;
        let mut dns = st.dns.clone();
        dns::keep_across_reload(&mut config, &mut dns);
        let mut runtimes = runtime::for_config(&config, st.runtimes.clone());
        // An operator's weight holds until the next reload (README): the
        // file's weights apply again, or a weight edited in the file would
        // stay overridden for as long as the backend exists.
        for rt in runtimes.values_mut() {
            rt.weight = None;
        }
        let state = &mut *st;
        // New VIPs are routed before their services are served (a splice
        // listener binds to a local address); routes of VIPs gone are
        // removed once the change is in, and a failed change removes
        // the routes it added.
        let want = routes::wanted(&config);
        let added = state.routes.sync(&want, false)?;
        routes::log_changes(&added, "reload");
        let changed =
            change(&mut *state.datapath, &state.plan, &config, &runtimes, &self.state_file);
        let removed = match changed {
            Ok(plan) => {
                state.plan = plan;
                state.routes.sync(&want, true)
            }
            Err(e) => {
                if let Err(undo) = state.routes.sync(&routes::wanted(&state.config), true) {
                    tracing::error!(
                        "reload refused, and removing the VIP routes it added failed: {undo}"
                    );
                }
                return Err(e);
            }
        };
        match removed {
            Ok(c) => routes::log_changes(&c, "reload"),
            Err(e) => tracing::error!("reload: the routes of VIPs no longer configured stay: {e}"),
        }
        let flooded = {
            let mut watch = self.flood.lock().unwrap_or_else(|p| p.into_inner());
            watch.set_threshold(config.flows.flood_threshold);
            watch.on()
        };
        if let Err(e) = state.datapath.set_flow_timeouts(flow_timeouts(&config, flooded)) {
            tracing::error!("reload: the flow timeouts stay as they were: {e}");
        }
        state.config = config;
        state.runtimes = runtimes;
        state.dns = dns;
        announce::sync(state, "reload");
        drop(st);
        self.reloaded.notify_one();
        tracing::info!("config reloaded");
        Ok(())
    }

    /// `lb stop`: removes the pins and the saved state, so that this agent's
    /// exit (which follows) detaches the program everywhere and frees the
    /// maps, instead of leaving the datapath running for a successor.
    pub fn stop(&self) -> Result<(), String> {
        self.pins.remove().map_err(|e| format!("removing {}: {e}", self.pins.dir().display()))?;
        let _ = std::fs::remove_file(&self.state_file);
        self.stopping.notify_one();
        tracing::info!("lb stop: pins removed; exiting and detaching");
        Ok(())
    }

    /// Shutdown: hands the VIP routes over to be removed, or kept, once
    /// the datapath is gone (see `lb run`).
    pub fn take_routes(&self) -> VipRoutes {
        let mut st = self.lock();
        let setting = st.routes.setting();
        std::mem::replace(&mut st.routes, VipRoutes::new(setting))
    }

    /// Shutdown, first step: the datapath stops taking new connections.
    /// Returns the count of those still open (splice mode) to wait on.
    pub fn stop_accepting(&self) -> Option<Arc<Inflight>> {
        self.lock().datapath.stop_accepting()
    }

    /// Completes when `lb stop` asks the agent to exit.
    pub async fn stopped(&self) {
        self.stopping.notified().await;
    }

    /// Completes after the next successful reload.
    pub async fn reloaded(&self) {
        self.reloaded.notified().await;
    }

    /// Services, backends, health and counters now.
    pub fn status(&self) -> Result<StatusReport, DatapathError> {
        let st = self.lock();
        let counts = self.flow_counts(&st);
        let flood = self.flood_status();
        let mut report = status::report(
            &st,
            &self.interfaces_now(),
            self.mode_reason.as_deref(),
            &counts,
            &flood,
        )?;
        report.trace = self.tracer.as_ref().and_then(|t| t.running());
        Ok(report)
    }
}

/// The service, address and "has probes" of backend id `id`.
fn backend_of(st: &State, id: u32) -> Option<(String, SocketAddr, bool)> {
    st.config.services.iter().zip(&st.plan.services).find_map(|(svc, planned)| {
        let i = planned.backend_ids.iter().position(|&b| b == id)?;
        let b = svc.backends.get(i)?;
        Some((svc.name.clone(), b.addr, svc.health.kind != crate::config::HealthKind::None))
    })
}

/// Recomputes the plan from the config and runtime state it holds and
/// writes it.
/// The announced routes follow (a VIP whose last usable backend went is
/// withdrawn in the same step).
fn apply(st: &mut State, state_file: &std::path::Path) -> Result<(), ChangeError> {
    st.plan = change(&mut *st.datapath, &st.plan, &st.config, &st.runtimes, state_file)?;
    announce::sync(st, "change");
    Ok(())
}

/// The plan for `cfg` taking over from `old`, with the backend states a
/// previous agent saved applied (see [`Agent::new`]).
pub fn replan_restored(
    old: &Plan,
    cfg: &Config,
    saved: &[saved::SavedBackend],
) -> Result<Plan, PlanError> {
    let runtimes = runtime::restored(cfg, saved);
    replan(old, cfg, &runtime::effective_states(cfg, &runtimes))
}

/// The names of the fields of `$a` and `$b` (two `$ty`) that differ. The
/// pattern lists every field, so a field added to `$ty` does not compile
/// until it is named here: no change can go unnamed.
macro_rules! changed_fields {
    ($ty:path, $a:expr, $b:expr, [$($f:ident),* $(,)?]) => {{
        let (a, b) = ($a, $b);
        let $ty { $($f: _),* } = a;
        let mut changed: Vec<&'static str> = Vec::new();
        $( if a.$f != b.$f { changed.push(stringify!($f)); } )*
        changed
    }};
}

/// "the [table] table changed (key, key)".
fn changed_keys(table: &str, changed: &[&str]) -> String {
    format!("the [{table}] table changed ({})", changed.join(", "))
}

/// Settings only read at startup: a reload that changes them is refused
/// rather than half-applied.
fn needs_no_restart(old: &Config, new: &Config, mode: &str) -> Result<(), PlanError> {
    let restart = |what: String| Err(PlanError::NeedsRestart { what });
    let agent = changed_fields!(
        crate::config::Agent,
        &old.agent,
        &new.agent,
        [
            interfaces,
            mode,
            attach,
            attach_by_interface,
            metrics_addr,
            control_socket,
            pin_dir,
            vip_routes,
            announce,
        ]
    );
    if !agent.is_empty() {
        return restart(changed_keys("agent", &agent));
    }
    let splice = changed_fields!(
        crate::config::Splice,
        &old.splice,
        &new.splice,
        [
            max_connections,
            connect_timeout,
            connect_tries,
            idle_timeout,
            udp_idle_timeout,
            shutdown_timeout,
        ]
    );
    if !splice.is_empty() {
        return restart(changed_keys("splice", &splice));
    }
    if old.flows.capacity != new.flows.capacity {
        return restart(
            "flows.capacity changed (the flow table is sized when the datapath is created: \
             `lb stop`, then start lb, which breaks established flows; a plain restart keeps \
             the running table)"
                .into(),
        );
    }
    let proxied = new.services.iter().find(|s| s.proxy_protocol != ProxyProtocol::None);
    if let (Some(s), "xdp") = (proxied, mode) {
        return restart(format!(
            "service {:?} now asks for proxy_protocol, which only splice mode sends",
            s.name
        ));
    }
    Ok(())
}

/// Every change goes this way: plans `config` with `runtimes` from `old`
/// (what `fwd` holds), writes the difference, saves the new plan for the
/// next agent (a failure there only loses takeover) and returns it,
/// compacted. On error nothing was written.
fn change(
    fwd: &mut dyn Forwarder,
    old: &Plan,
    config: &Config,
    runtimes: &Runtimes,
    state_file: &std::path::Path,
) -> Result<Plan, ChangeError> {
    let mut plan = replan(old, config, &runtime::effective_states(config, runtimes))?;
    fwd.apply_change(old, &plan)?;
    plan.compact();
    let backends = runtime::to_saved(runtimes);
    let dns = saved::dns_of(config);
    if let Err(e) =
        saved::save(state_file, crate::object::EXPECTED_BUILD_ID, &plan, &backends, &dns)
    {
        tracing::warn!(
            "saving {}: {e}; a restart will not take the datapath over",
            state_file.display()
        );
    }
    Ok(plan)
}

impl Agent {
    /// Counts the live flows per backend (a sweep of the flow table in XDP
    /// mode; blocking, one batch syscall per 8192 entries) for status and
    /// metrics.
    pub fn sweep_flows(&self) {
        use std::os::fd::AsFd;
        let Some(table) = &self.flow_table else { return };
        let timeouts = flow_timeouts(&self.lock().config, false);
        let counts = match flows::sweep(table.as_fd(), &timeouts, flows::now_ticks()) {
            Ok(c) => c,
            Err(e) => return tracing::warn!("counting flows failed: {e}"),
        };
        *self.flow_counts.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Arc::new(counts), Instant::now()));
    }

    /// Measures the new-flow rate (blocking: a read of the per-CPU
    /// counters) and turns flood mode on or off by it, telling the
    /// datapath (the settings map) and the log once per change.
    pub fn watch_flood(&self) {
        let mut st = self.lock();
        let totals = match st.datapath.totals(&st.plan.service_ids(), 0) {
            Ok(t) => t,
            Err(e) => return tracing::warn!("reading the new-flow counters failed: {e}"),
        };
        let mut total: u64 = totals.services.iter().map(|c| c.new_flows).sum();
        // SYNs answered with a challenge, and packets of no flow from
        // sources not verified (an ACK flood's), are new flows refused:
        // without them, the rate would fall as soon as flood mode is on,
        // and turn it off while the flood goes on.
        for refused in [DropReason::SynChallenged, DropReason::NoFlowUnverified] {
            let n = totals.exceptions.get(refused as usize).copied().unwrap_or(0);
            total = total.wrapping_add(n);
        }
        if st.datapath.xdp().is_none() {
            // Splice mode: a SYN flood at the VIP's listener never becomes
            // an accepted connection; the kernel's SYN cookies show it.
            total = total.wrapping_add(flood::kernel_syncookies());
        }
        let mut watch = self.flood.lock().unwrap_or_else(|p| p.into_inner());
        let threshold = watch.threshold();
        match watch.observe(Instant::now(), total) {
            Some(flood::Change::On { rate }) => tracing::warn!(
                rate,
                threshold,
                "flood mode on: {rate} new flows/s, above flows.flood_threshold {threshold}"
            ),
            Some(flood::Change::Off { rate }) => tracing::info!(
                rate,
                threshold,
                "flood mode off: {rate} new flows/s, below half of flows.flood_threshold \
                 {threshold} for {} s",
                flood::CALM.as_secs()
            ),
            None => return,
        }
        let timeouts = flow_timeouts(&st.config, watch.on());
        drop(watch);
        if let Err(e) = st.datapath.set_flow_timeouts(timeouts) {
            tracing::error!("telling the datapath about flood mode failed: {e}");
        }
    }

    /// Flood mode now, for status and metrics.
    fn flood_status(&self) -> crate::control::protocol::FloodStatus {
        let watch = self.flood.lock().unwrap_or_else(|p| p.into_inner());
        crate::control::protocol::FloodStatus {
            on: watch.on(),
            rate: watch.rate(),
            threshold: watch.threshold(),
            on_for_ms: watch.on_for(Instant::now()).map_or(0, |d| d.as_millis() as u64),
            episodes: watch.episodes(),
            // Filled in by the status report, which knows the mode.
            challenging: false,
        }
    }

    /// Warns of frames the kernel lost on the datapath's interfaces since
    /// the last call (blocking: a few ioctls per interface).
    pub fn check_lost_frames(&self) {
        self.losses.lock().unwrap_or_else(|p| p.into_inner()).check(&self.interfaces);
    }

    /// Writes the namespace's interfaces with a peer device to the datapath
    /// when they changed since the last call (veths come and go, as pods
    /// do), so the tc hook forwards into new ones with `bpf_redirect_peer`.
    /// Blocking: an ioctl per interface.
    pub fn refresh_peer_devices(&self) {
        if !self.interfaces.iter().any(|i| i.attach == crate::datapath::attach::Hook::Tc.name()) {
            return;
        }
        let now = match ifaces::peer_devices() {
            Ok(now) => now,
            Err(e) => return tracing::warn!("listing the interfaces failed: {e}"),
        };
        let mut last = self.peer_devices.lock().unwrap_or_else(|p| p.into_inner());
        if *last == now {
            return;
        }
        match self.lock().datapath.set_peer_devices(&now) {
            Ok(()) => {
                tracing::debug!(peer_devices = ?now, "interfaces with a peer device updated");
                *last = now;
            }
            Err(e) => tracing::warn!("updating the interfaces with a peer device failed: {e}"),
        }
    }

    /// The interfaces, with their lost-frame counts read now.
    fn interfaces_now(&self) -> Vec<InterfaceStatus> {
        self.interfaces
            .iter()
            .map(|i| InterfaceStatus { lost: lost::read(&i.name), ..i.clone() })
            .collect()
    }

    /// Live flows per backend id and their age in ms: the proxy's own
    /// gauges in splice mode (age 0), else the last sweep (`u64::MAX`
    /// before the first).
    fn flow_counts(&self, st: &State) -> (Arc<FlowCounts>, u64) {
        if let Some(c) = st.datapath.flow_counts() {
            return (Arc::new(c), 0);
        }
        match &*self.flow_counts.lock().unwrap_or_else(|p| p.into_inner()) {
            Some((c, at)) => (c.clone(), at.elapsed().as_millis() as u64),
            None => (Arc::default(), u64::MAX),
        }
    }
}

/// The flow table's idle timeouts `cfg` asks for, in datapath ticks, and
/// whether flood mode is on (`flooded`).
pub fn flow_timeouts(cfg: &Config, flooded: bool) -> FlowTimeouts {
    let t = |d: std::time::Duration| lb_common::abi::ticks(d.as_nanos() as u64);
    FlowTimeouts {
        tcp: t(cfg.flows.tcp_idle_timeout),
        tcp_closing: t(cfg.flows.tcp_closing_timeout),
        udp: t(cfg.flows.udp_idle_timeout),
        flood: match (flooded, cfg.flows.syn_challenge) {
            (false, _) => 0,
            (true, false) => lb_common::abi::FLOOD_ON,
            (true, true) => lb_common::abi::FLOOD_ON | lb_common::abi::FLOOD_CHALLENGE,
        },
    }
}

impl metrics::Source for Agent {
    fn snapshot(&self) -> Result<metrics::Snapshot, String> {
        let st = self.lock();
        let counts = self.flow_counts(&st);
        let flood = self.flood_status();
        let report = status::report(
            &st,
            &self.interfaces_now(),
            self.mode_reason.as_deref(),
            &counts,
            &flood,
        )
        .map_err(|e| e.to_string())?;
        Ok(metrics::Snapshot { report, probes: st.probe_durations.clone() })
    }
}

impl Handler for Agent {
    fn trace(&self, spec: crate::trace::TraceSpec) -> Result<crate::trace::Session, String> {
        self.start_trace(spec)
    }

    fn handle(&self, req: Request) -> Response {
        match req {
            Request::Status => match self.status() {
                Ok(report) => Response::Status(report),
                Err(e) => Response::Error { message: e.to_string() },
            },
            Request::Flow { src, dst, protocol } => {
                match flow::explain(&self.lock(), &src, &dst, &protocol) {
                    Ok(report) => Response::Flow(report),
                    Err(message) => Response::Error { message },
                }
            }
            Request::Stop => match self.stop() {
                Ok(()) => {
                    Response::Done { message: "stopping: the datapath is being removed".into() }
                }
                Err(message) => Response::Error { message },
            },
            Request::Reload { config } => match self.reload_checked(config.as_deref()) {
                Ok(path) => Response::Done { message: format!("config reloaded from {path}") },
                Err(e) => {
                    tracing::error!("reload refused, the running config stays: {e}");
                    Response::Error {
                        message: format!("reload refused, the running config stays: {e}"),
                    }
                }
            },
            // Streamed: the control socket hands it to `Handler::trace`.
            Request::Trace(_) => Response::Error { message: "a trace is streamed".into() },
            Request::Backend { service, backend, action } => {
                match self.backend(&service, &backend, action) {
                    Ok(message) => Response::Done { message },
                    Err(e) => Response::Error { message: e.to_string() },
                }
            }
        }
    }
}
