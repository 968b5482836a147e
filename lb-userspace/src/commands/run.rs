//! `lb run`: serve the config until SIGINT, SIGTERM or `lb stop`.
//!
//! The datapath is pinned: when the agent exits on a signal, it keeps
//! forwarding, and the next `lb run` takes it over without interruption.
//! `lb stop` removes it.

use std::{path::Path, sync::Arc};

use anyhow::{Context, Result, bail};
use aya::maps::{MapData, RingBuf};
use lb_common::abi::PassiveEvent;
use lb_userspace::{
    agent::{
        self, Admin, Agent,
        forwarder::Forwarder,
        passive::Watches,
        saved::{self, SavedBackend},
    },
    config::{self, Attach, Mode, ProxyProtocol},
    control::{protocol::InterfaceStatus, server::ControlSocket},
    datapath::{
        self, Datapath, LoadOptions, attach,
        pins::{self, Pins},
        syns::SynView,
    },
    health, metrics, object,
    routes::{self, VipRoutes},
    splice::forwarder::SpliceForwarder,
    trace::hub::{Reader, Tracer},
};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
};

pub fn run(
    path: &Path,
    mode: Option<Mode>,
    attach: Option<Attach>,
    bpf_object: Option<&Path>,
) -> Result<()> {
    let cfg = config::load(path)?;
    if cfg.services.is_empty() {
        anyhow::bail!(
            "{} defines no [[service]], only a [decap] role: this is a backend's file; run `lb \
             decap --config {}` on this host",
            path.display(),
            path.display()
        );
    }
    let mode = mode.unwrap_or(cfg.agent.mode);
    if mode != Mode::Splice {
        // Not a reason to fall back to splice mode: a misspelt name would
        // leave lb serving from userspace with a warning, the fix unsaid.
        missing_interfaces(&cfg, path)?;
    }
    // Several threads: in splice mode they move the bytes.
    // First, so a running agent is found before anything of it is touched.
    let socket = ControlSocket::bind(&cfg.agent.control_socket)?;
    // DNS services start with the backends their names have now, or, when
    // DNS does not answer, those the previous agent last had from it.
    let previous =
        saved::load(&pins::state_file(&cfg.agent.control_socket), object::EXPECTED_BUILD_ID)
            .map(|s| s.dns)
            .unwrap_or_default();
    let (cfg, dns_states) = agent::dns::resolve_at_start(&cfg, &previous)?;
    let splice = |why: &str| -> Result<(tokio::runtime::Runtime, Started)> {
        // Splice mode: TCP is served on threads of its own, one per CPU
        // (`splice::cores`); this runtime carries UDP and the agent.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        let started = start_splice(&cfg, &rt, why)?;
        Ok((rt, started))
    };
    let xdp = || -> Result<(tokio::runtime::Runtime, Started)> {
        let started = start_xdp(&cfg, path, bpf_object, attach)?;
        // XDP mode only manages: one thread is plenty, and keeps memory low.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        Ok((rt, started))
    };
    // Before anything on the host changes: a metrics port in use must fail
    // the start with nothing left behind (it left the VIP routes).
    let metrics_socket = cfg.agent.metrics_addr.map(bind_metrics).transpose()?;
    // The VIPs are routed before any traffic is served (a splice listener
    // then binds to a local address), and lb routes of addresses no longer
    // VIPs (left by an agent that crashed) go.
    let mut routes = VipRoutes::new(cfg.agent.vip_routes);
    let changes = routes.sync(&routes::wanted(&cfg), true).with_context(|| {
        format!("{}: agent.vip_routes = \"{}\"", path.display(), cfg.agent.vip_routes)
    })?;
    routes::log_changes(&changes, "start");
    let chosen = || -> Result<(tokio::runtime::Runtime, Started)> {
        Ok(match mode {
            Mode::Xdp => xdp()?,
            Mode::Splice => splice("--mode splice or agent.mode = \"splice\"")?,
            Mode::Auto => {
                match cfg.services.iter().find(|s| s.proxy_protocol != ProxyProtocol::None) {
                    Some(s) => splice(&format!(
                        "service {:?} sets proxy_protocol, which only splice mode sends",
                        s.name
                    ))?,
                    None => match xdp() {
                        Ok(s) => s,
                        // An object named on the command line is wanted: its
                        // failure is the answer, not splice mode.
                        Err(e) if bpf_object.is_some() => return Err(e),
                        Err(e) => {
                            Pins::new(&cfg.agent.pin_dir).remove_if_empty();
                            splice(&format!("XDP is unavailable: {}", xdp_unavailable(&e)))?
                        }
                    },
                }
            }
        })
    };
    let (rt, started) = match chosen() {
        Ok(s) => s,
        Err(e) => {
            // A datapath still pinned (a previous agent's) keeps forwarding
            // with its routes; otherwise nothing serves the VIPs.
            if !Pins::new(&cfg.agent.pin_dir).exist()
                && let Err(undo) = routes.remove_all()
            {
                tracing::error!("removing the VIP routes of a failed start: {undo}");
            }
            return Err(e);
        }
    };
    let Started { plan, forwarder, events, syns, interfaces, pins, why, restored, trace } = started;
    // Only splice mode says why it runs.
    let splice_mode = why.is_some();
    let metrics_listener = match metrics_socket {
        Some(socket) => {
            let _in = rt.enter();
            let listener = tokio::net::TcpListener::from_std(socket)
                .context("serving the metrics address (agent.metrics_addr)")?;
            // Said once: with port 0 the log is the only place it shows.
            if let Ok(at) = listener.local_addr() {
                tracing::info!(%at, "metrics: serving /metrics and the status page");
            }
            Some(listener)
        }
        None => None,
    };
    tracing::info!(
        mode = forwarder.mode(),
        services = plan.services.len(),
        // Not `plan.backends`: it keeps every id ever used (a flow may
        // still name a removed backend's).
        backends = plan.services.iter().map(|s| s.backend_ids.len()).sum::<usize>(),
        control = %cfg.agent.control_socket.display(),
        "lb running"
    );
    let shutdown_timeout = cfg.splice.shutdown_timeout;
    forget_other_announcements(&cfg);
    let mut agent =
        Agent::new(cfg, plan, forwarder, interfaces, &restored, routes).with_dns(dns_states);
    if let Some(why) = why {
        agent = agent.with_mode_reason(why);
    }
    let mut trace_reader = None;
    if let Some((tracer, reader)) = trace {
        agent = agent.with_tracer(tracer);
        trace_reader = Some(reader);
    }
    let agent = Arc::new(agent);
    // The datapath is attached (or the proxy listening): the VIPs that
    // have a usable backend are announced.
    agent.announce();

    rt.block_on(async {
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
        // Probe results feed the agent; probes are respawned after a
        // reload, since the backends or their settings may have changed.
        let (tx, mut outcomes) = tokio::sync::mpsc::unbounded_channel();
        let consumer = agent.clone();
        let feeding = tokio::spawn(async move {
            while let Some(o) = outcomes.recv().await {
                consumer.on_probe(&o);
            }
        });
        let passive = match events {
            Events::Ring(ring) => tokio::spawn(read_events(ring, agent.clone())),
            Events::Channel(mut rx) => tokio::spawn({
                let agent = agent.clone();
                async move {
                    while let Some(ev) = rx.recv().await {
                        agent.on_event(ev);
                    }
                }
            }),
        };
        // XDP mode: the flow table is swept for live flows per backend,
        // and the SYN counters sampled for backends that stopped answering.
        let sweeping = tokio::spawn(sweep_flows(agent.clone()));
        // Every mode: the new-flow rate, and flood mode by it.
        let flood_watch = tokio::spawn(watch_flood(agent.clone()));
        let watching = syns.map(|view| tokio::spawn(watch_syns(view, agent.clone())));
        let tracing_task = trace_reader.map(|r| tokio::spawn(lb_userspace::trace::hub::read(r)));
        let metrics_task = metrics_listener.map(|l| {
            let source: Arc<dyn metrics::Source> = agent.clone();
            tokio::spawn(metrics::serve(l, source, std::future::pending()))
        });
        let reloader = agent.clone();
        let shutdown = async move {
            let mut probes = health::scheduler::spawn(reloader.targets(), tx.clone());
            let mut resolving = agent::dns::spawn(&reloader, false);
            loop {
                tokio::select! {
                    _ = term.recv() => return tracing::info!("SIGTERM: shutting down"),
                    _ = int.recv() => return tracing::info!("SIGINT: shutting down"),
                    _ = reloader.stopped() => return,
                    _ = hup.recv() => {
                        if let Err(e) = reloader.reload() {
                            tracing::error!("SIGHUP: reload refused, the running config stays: {e}");
                        }
                    }
                    // Any reload (SIGHUP or `lb reload`): backends or their
                    // probe settings may have changed.
                    _ = reloader.reloaded() => {
                        let targets = reloader.targets();
                        if splice_mode {
                            // Listeners and probed backends may have come
                            // or gone.
                            set_fd_budget(targets.len() as u64);
                        }
                        probes = health::scheduler::spawn(targets, tx.clone());
                        // The names, or their settings, may have changed:
                        // each is resolved at once.
                        for task in resolving.drain(..) {
                            task.abort();
                        }
                        resolving = agent::dns::spawn(&reloader, true);
                    }
                    // DNS added or removed backends: they are probed.
                    _ = reloader.dns_changed() => {
                        probes = health::scheduler::spawn(reloader.targets(), tx.clone());
                    }
                }
                let _ = &probes;
            }
        };
        socket.serve(agent.clone(), shutdown).await;
        // Before the last connections are waited on: the router stops
        // sending new ones here while they finish. A pinned datapath keeps
        // forwarding after a signal, and keeps its announcements with it.
        if !pins.as_ref().is_some_and(Pins::exist) {
            agent.withdraw_all("the datapath is being removed (lb stop, or the proxy's end)");
        } else if agent.announces() {
            tracing::info!("the announced VIPs stay with the running datapath");
        }
        feeding.abort();
        passive.abort();
        sweeping.abort();
        flood_watch.abort();
        if let Some(w) = watching {
            w.abort();
        }
        if let Some(t) = tracing_task {
            t.abort();
        }
        finish_connections(&agent, shutdown_timeout).await;
        if let Some(t) = metrics_task {
            t.abort();
        }
        anyhow::Ok(())
    })?;
    let routes = agent.take_routes();
    drop(agent);
    // The runtime's end closes the splice proxy's sockets: their FINs leave
    // from the VIP, which needs its route until then.
    drop(rt);
    release_routes(routes, pins.as_ref().is_some_and(Pins::exist));
    if pins.as_ref().is_some_and(Pins::exist) {
        tracing::info!(
            pins = %pins.as_ref().map(|p| p.dir().display().to_string()).unwrap_or_default(),
            "agent stopped; the datapath keeps forwarding (the next `lb run` takes it over, \
             `lb stop` removes it)"
        );
    } else {
        tracing::info!("agent stopped; its datapath (kernel or proxy) is gone");
    }
    Ok(())
}

/// Shutdown, last step: the VIP routes are removed with the datapath
/// (`keep` false), or stay with a pinned datapath that keeps forwarding for
/// the next agent to take over (`keep` true).
fn release_routes(mut routes: VipRoutes, keep: bool) {
    if keep {
        if !routes.held().is_empty() {
            tracing::info!(
                routes = routes.held().len(),
                "the VIP routes stay with the running datapath"
            );
        }
        return;
    }
    match routes.remove_all() {
        Ok(gone) if gone.is_empty() => {}
        Ok(gone) => tracing::info!(routes = gone.len(), "VIP routes removed"),
        Err(e) => tracing::error!(
            "removing the VIP routes failed: {e}; remove them with `ip route flush table local \
             proto {}`",
            routes::PROTOCOL
        ),
    }
}

/// Withdraws what a previous agent announced under another
/// `[agent.announce]` (or with none now), then notes the setting in force,
/// so routes nobody maintains are never left announced.
fn forget_other_announcements(cfg: &config::Config) {
    use routes::announce;
    let note = announce::note_path(&cfg.agent.control_socket);
    match announce::remove_noted(&note, cfg.agent.announce) {
        Ok(None) => {}
        Ok(Some((old, gone))) => tracing::warn!(
            table = old.table,
            protocol = old.protocol,
            withdrawn = gone.len(),
            "start: withdrew what the previous agent announced with another [agent.announce]"
        ),
        Err(e) => {
            // The note stays, so the next start tries again.
            return tracing::error!(
                "start: withdrawing what the previous agent announced with another \
                 [agent.announce] failed: {e}"
            );
        }
    }
    announce::note(&note, cfg.agent.announce);
}

/// Why XDP could not start, in one clause: the first cause and, when the
/// kernel said "not permitted", the capabilities it wants.
fn xdp_unavailable(e: &anyhow::Error) -> String {
    let root = e.root_cause().to_string();
    let denied = e.chain().any(|c| {
        c.to_string().contains("Operation not permitted")
            || c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied)
    });
    if denied {
        format!("{e} ({root}: lb needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN, or root)")
    } else {
        format!("{e:#}")
    }
}

/// Splice mode's graceful shutdown: listeners are closed, so no new
/// connection comes; those open may finish within `timeout`, and whatever
/// is left is closed when the runtime stops.
async fn finish_connections(agent: &Agent, timeout: std::time::Duration) {
    let Some(inflight) = agent.stop_accepting() else { return };
    let open = inflight.count();
    if open == 0 {
        return;
    }
    tracing::info!(open, timeout = ?timeout, "no longer accepting; waiting for open connections");
    match tokio::time::timeout(timeout, inflight.idle()).await {
        Ok(()) => tracing::info!(open, "every open connection finished"),
        Err(_) => tracing::warn!(
            left = inflight.count(),
            "splice.shutdown_timeout reached: closing the connections still open"
        ),
    }
}

/// Feeds the datapath's passive signals to the agent as they arrive.
async fn read_events(events: RingBuf<MapData>, agent: Arc<Agent>) {
    // SAFETY: the ring buffer owns its map fd and keeps it open, unchanged,
    // for as long as it lives, and the AsyncFd owns the ring buffer.
    let registered =
        unsafe { AsyncFd::register_with_interest(events, tokio::io::Interest::READABLE) };
    let mut fd = match registered {
        Ok(fd) => fd,
        Err(e) => {
            return tracing::error!("passive detection is off: cannot poll its ring buffer: {e}");
        }
    };
    loop {
        let Ok(mut ready) = fd.readable_mut().await else { return };
        let ring = ready.get_inner_mut();
        while let Some(item) = ring.next() {
            if let Some(ev) = PassiveEvent::from_bytes(&item) {
                agent.on_event(ev);
            }
        }
        ready.clear_ready();
    }
}

/// How often the SYN counters are sampled: the unanswered-SYN signal fires
/// at most this long after its condition holds.
const SYN_SAMPLE: std::time::Duration = std::time::Duration::from_millis(5);

/// Feeds the agent samples of the datapath's SYN counters.
async fn watch_syns(view: SynView, agent: Arc<Agent>) {
    let mut watches = Watches::default();
    let mut tick = tokio::time::interval(SYN_SAMPLE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        agent.check_unanswered(&view, &mut watches);
    }
}

/// Time between two readings of the new-flow rate.
const FLOOD_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// Reads the new-flow rate every [`FLOOD_EVERY`] and turns flood mode on
/// or off by it (its own task: the flow-table sweep slows down with the
/// table, flood mode must not). A quarter of a second, not a second: until
/// flood mode is on, every spoofed SYN goes to a backend and its answer
/// comes back (in the flood bench's 4 s flood, the legitimate rate kept
/// rose from 0.57-0.58x to 0.61-0.73x at the tc hook, 0.62-0.73x to
/// 0.76-0.85x at XDP); a reading costs a read of each service's counters.
async fn watch_flood(agent: Arc<Agent>) {
    let mut tick = tokio::time::interval(FLOOD_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let a = agent.clone();
        if tokio::task::spawn_blocking(move || a.watch_flood()).await.is_err() {
            return;
        }
    }
}

/// Least time between two sweeps of the flow table.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Sweeps the flow table for live flows per backend, at most every
/// [`SWEEP_EVERY`] and never more than a fifth of the time (a full table
/// takes a good part of a second to read).
async fn sweep_flows(agent: Arc<Agent>) {
    loop {
        let started = std::time::Instant::now();
        let a = agent.clone();
        let swept = tokio::task::spawn_blocking(move || {
            a.sweep_flows();
            a.check_lost_frames();
            a.refresh_peer_devices();
            a.retry_announce();
        });
        if swept.await.is_err() {
            return;
        }
        tokio::time::sleep(SWEEP_EVERY.max(started.elapsed() * 5)).await;
    }
}

/// Loads the datapath: taking over the one pinned by a previous agent when
/// there is one of this build (its flow table, ids and table regions carry
/// over, so no established flow breaks, and so do the backends' operator
/// states and health), else a fresh one.
fn takeover_or_load(
    cfg: &config::Config,
    obj: &object::BpfObject,
    pins: &Pins,
    state: &Path,
) -> Result<(datapath::Plan, Datapath, Vec<SavedBackend>)> {
    // A datapath taken over keeps its flow table, capacity included.
    let opts = LoadOptions { pins: Some(pins.clone()), flow_capacity: cfg.flows.capacity };
    if pins.exist() {
        let taken = saved::load(state, object::EXPECTED_BUILD_ID).and_then(|old| {
            let plan =
                agent::replan_restored(&old.plan, cfg, &old.backends).map_err(|e| e.to_string())?;
            let mut dp = Datapath::load(obj, &plan, opts.clone()).map_err(|e| e.to_string())?;
            dp.apply_change(&old.plan, &plan).map_err(|e| e.to_string())?;
            Ok((plan, dp, old.backends))
        });
        match taken {
            Ok((mut plan, dp, backends)) => {
                plan.compact();
                saved::save(
                    state,
                    object::EXPECTED_BUILD_ID,
                    &plan,
                    &backends,
                    &saved::dns_of(cfg),
                )
                .with_context(|| format!("saving {}", state.display()))?;
                let kept = backends.iter().filter(|b| b.down || b.admin != Admin::Enabled).count();
                tracing::info!(
                    pins = %pins.dir().display(),
                    backends_not_in_service = kept,
                    "took over the running datapath (with its backends' operator states and health)"
                );
                return Ok((plan, dp, backends));
            }
            Err(why) => {
                tracing::warn!(
                    pins = %pins.dir().display(),
                    "a datapath is pinned here but cannot be taken over ({why}): replacing it, \
                     established flows may break"
                );
                pins.remove().context("removing the old pins")?;
                pins.prepare().context("re-creating the pin directory")?;
            }
        }
    }
    let mut plan = datapath::plan(cfg).context("computing the map content")?;
    let mut dp = Datapath::load(obj, &plan, opts)?;
    dp.apply(&plan).context("writing the maps")?;
    plan.compact();
    saved::save(state, object::EXPECTED_BUILD_ID, &plan, &[], &saved::dns_of(cfg))
        .with_context(|| format!("saving {}", state.display()))?;
    Ok((plan, dp, Vec::new()))
}

/// Each relayed TCP connection holds up to six descriptors (two sockets,
/// two pipes once both directions carry bulk): the soft limit (often 1024) is raised to the hard one, and a
/// hard limit too low for `splice.max_connections` is reported up front
/// rather than as failed accepts under load.
fn raise_fd_limit(cfg: &config::Config) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else { return };
    if soft < hard
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        tracing::warn!("cannot raise the open-file limit from {soft} to {hard}: {e}");
    }
    // Six at most a TCP connection (two sockets, two pipes), one a UDP session.
    let per_service = |s: &config::Service| match s.protocol {
        config::Protocol::Tcp => 6,
        config::Protocol::Udp => 1,
    };
    let want = cfg.services.iter().map(per_service).sum::<u64>()
        * u64::from(cfg.splice.max_connections)
        + 1024;
    if hard < want {
        tracing::warn!(
            limit = hard,
            needed = want,
            "the open-file limit is below what splice.max_connections allows; connections beyond \
             it will wait for others to close: raise it (LimitNOFILE= in the unit, ulimit -n) or \
             lower max_connections"
        );
    }
}

/// Splice mode's descriptor budget (`splice::budget`): the open-file
/// limit less what lb holds besides its connections and what its probes
/// (`probed` backends) and operator sockets need. Set at start and after
/// each reload.
fn set_fd_budget(probed: u64) {
    use lb_userspace::splice::budget;
    use nix::sys::resource::{Resource, getrlimit};
    let Ok((limit, _)) = getrlimit(Resource::RLIMIT_NOFILE) else { return };
    let open = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    // Connections may have been accepted already: theirs are counted.
    let others = open.saturating_sub(budget::used());
    let n = budget::size(limit, others, probed);
    budget::set(n);
    if n < budget::LOW {
        tracing::warn!(
            descriptors = n,
            limit,
            "splice mode can hold only {n} descriptors for connections (the open-file limit \
             {limit} less {others} lb holds, {} reserved and one per probed backend): about {} \
             connections at once; raise the limit (LimitNOFILE= in the unit, ulimit -n)",
            budget::RESERVE,
            n / 2
        );
    } else {
        tracing::info!(
            descriptors = n,
            limit,
            others,
            "splice: descriptors for connections (the open-file limit less those lb holds, and a \
             reserve for probes, status and metrics)"
        );
    }
}

/// Where passive failure signals come from.
enum Events {
    /// The XDP datapath's ring buffer.
    Ring(RingBuf<MapData>),
    /// The splice proxy's refused connects.
    Channel(tokio::sync::mpsc::UnboundedReceiver<PassiveEvent>),
}

/// A started datapath, ready for the agent.
struct Started {
    plan: datapath::Plan,
    forwarder: Box<dyn Forwarder>,
    events: Events,
    /// The SYN counters (XDP mode).
    syns: Option<SynView>,
    /// Why splice mode, when it is.
    why: Option<String>,
    /// Backend states the previous agent saved (XDP takeover).
    restored: Vec<SavedBackend>,
    interfaces: Vec<InterfaceStatus>,
    pins: Option<Pins>,
    /// `lb trace`'s filter and the reader of the datapath's records (XDP
    /// mode; none if they could not be opened).
    trace: Option<(Tracer, Reader)>,
}

/// The XDP datapath: loaded (or taken over), filled, attached.
fn start_xdp(
    cfg: &config::Config,
    path: &Path,
    bpf_object: Option<&Path>,
    attach: Option<Attach>,
) -> Result<Started> {
    if cfg.agent.interfaces.is_empty() {
        bail!(
            "{}: agent.interfaces is empty, so XDP has nowhere to attach; list them, e.g. interfaces = [\"eth0\"]",
            path.display()
        );
    }
    let obj = object::resolve(bpf_object)?;
    let pins = Pins::new(&cfg.agent.pin_dir);
    pins.prepare()
        .with_context(|| format!("preparing {} (agent.pin_dir)", pins.dir().display()))?;
    let state = pins::state_file(&cfg.agent.control_socket);
    let (plan, mut dp, restored) = takeover_or_load(cfg, &obj, &pins, &state)?;
    dp.set_timeouts(agent::flow_timeouts(cfg, false)).context("writing the flow timeouts")?;
    let events = dp.take_events()?;
    let syns = dp.syn_view()?;
    let attached = attach::attach_all(&mut dp, &cfg.agent.attach_choices(attach), Some(&pins))?;
    // After attaching: the rings and maps taken out of the object must
    // outlive the loading of every program that uses them.
    let trace = dp.take_trace().inspect_err(|e| tracing::warn!("lb trace is off: {e}")).ok();
    if routes::wanted(cfg).iter().any(std::net::IpAddr::is_ipv4) {
        let xdp: Vec<String> = attached
            .iter()
            .filter(|a| a.hook != attach::Hook::Tc)
            .map(|a| a.interface.clone())
            .collect();
        routes::accept_local_sources(&xdp);
    }
    for a in &attached {
        tracing::info!(
            interface = %a.interface,
            hook = a.hook.name(),
            link = a.link,
            why = %a.why,
            object = %obj.origin,
            "datapath attached"
        );
    }
    let interfaces = attached
        .into_iter()
        .map(|a| InterfaceStatus {
            name: a.interface,
            attach: a.hook.name().to_owned(),
            why: a.why,
            lost: Default::default(),
        })
        .collect();
    Ok(Started {
        plan,
        forwarder: Box::new(dp),
        events: Events::Ring(events),
        syns: Some(syns),
        why: None,
        restored,
        interfaces,
        pins: Some(pins),
        trace,
    })
}

/// The userspace proxy, listening on every TCP VIP.
fn start_splice(cfg: &config::Config, rt: &tokio::runtime::Runtime, why: &str) -> Result<Started> {
    tracing::warn!("serving in splice mode (userspace proxy): {why}");
    raise_fd_limit(cfg);
    let plan = datapath::plan(cfg).context("computing the Maglev tables")?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let fwd = SpliceForwarder::start(&plan, cfg.splice, tx, rt.handle().clone())?;
    // Once its runtimes and listeners hold theirs.
    let probed = cfg
        .services
        .iter()
        .filter(|s| s.health.kind != config::HealthKind::None)
        .map(|s| s.backends.len() as u64)
        .sum();
    set_fd_budget(probed);
    Ok(Started {
        plan,
        forwarder: Box::new(fwd),
        events: Events::Channel(rx),
        syns: None,
        why: Some(format!("splice: {why}")),
        restored: Vec::new(),
        interfaces: Vec::new(),
        pins: None,
        trace: None,
    })
}

/// The metrics listener on `addr`, bound and listening, not yet registered
/// with a runtime (there is none yet). `SO_REUSEADDR`, as a tokio listener
/// has, so a restart binds while the last agent's connections linger.
fn bind_metrics(addr: std::net::SocketAddr) -> Result<std::net::TcpListener> {
    let bind = || -> std::io::Result<std::net::TcpListener> {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        socket.set_reuse_address(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(1024)?;
        Ok(socket.into())
    };
    bind().with_context(|| format!("binding the metrics address {addr} (agent.metrics_addr)"))
}

/// Refuses `agent.interfaces` entries this host has no interface for.
fn missing_interfaces(cfg: &config::Config, path: &Path) -> Result<()> {
    let missing = super::check::absent_interfaces(cfg);
    if missing.is_empty() {
        return Ok(());
    }
    bail!(
        "{}: agent.interfaces lists {}, which this host has no interface for (`ip link` lists \
         them): fix the name{}, or serve from userspace with mode = \"splice\"",
        path.display(),
        missing.iter().map(|m| format!("{m:?}")).collect::<Vec<_>>().join(", "),
        if missing.len() > 1 { "s" } else { "" }
    )
}
