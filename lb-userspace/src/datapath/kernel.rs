//! Loading the XDP program and writing a [`Plan`] into its maps.

use std::os::fd::AsFd;

use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::{Array, HashMap, MapData, MapError},
    programs::{ProgramError, SchedClassifier, Xdp},
};
use lb_common::abi::{
    ALL_MAPS, BackendRecord, DEFAULT_FLOW_CAPACITY, Endpoint, FlowTimeouts, MAP_BACKENDS,
    MAP_EVENTS, MAP_FLOWS, MAP_MAGLEV, MAP_PEER_DEVICES, MAP_PENDING, MAP_REPLIES, MAP_SERVICES,
    MAP_SERVICES_GEN, MAP_SETTINGS, MAP_SYNS, MAP_TRACE, MAP_TRACE_ON, MAP_VERIFIED, Replies,
    ServiceKey, ServiceRecord, pending_capacity,
};

use super::{
    acl,
    pins::Pins,
    plan::{Plan, PlannedService},
    prefilter,
    replies::replies,
    syns::SynView,
    window::SlotWindow,
};
use crate::{
    object::BpfObject,
    trace::hub::{Reader, Tracer},
};

/// Name of the XDP entry point in the object.
pub const PROGRAM: &str = "lb_xdp";
/// Name of the tc (sched_cls) entry point: the same datapath at tc ingress.
pub const TC_PROGRAM: &str = "lb_tc";
/// Name of the no-op program benchmarks use as their baseline.
pub const BASELINE: &str = "lb_bench_noop";
/// The tc hook's no-op baseline.
pub const TC_BASELINE: &str = "lb_bench_noop_tc";

/// Why the datapath could not be loaded or written.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    /// The object could not be parsed or its maps created.
    #[error("loading the eBPF object ({origin}) failed: {source}")]
    Load {
        /// Where the object came from.
        origin: String,
        /// The error (boxed: it is large, and errors are rare).
        source: Box<EbpfError>,
    },
    /// The object has no `lb_xdp` XDP program (or no `lb_tc` one).
    #[error(
        "the eBPF object has no program named {PROGRAM} (or {TC_PROGRAM}); rebuild it with `cargo xtask build-ebpf --release`"
    )]
    NoProgram,
    /// The verifier or the kernel refused the program.
    #[error("the kernel refused the XDP program: {0}")]
    Program(#[source] ProgramError),
    /// A map the agent needs is missing from the object.
    #[error("the eBPF object has no map {0}; rebuild it with `cargo xtask build-ebpf --release`")]
    NoMap(&'static str),
    /// A map could not be memory-mapped or its descriptor duplicated (the
    /// text names the map and the step).
    #[error("{0}")]
    Window(String),
    /// The program's aya-log ring (`AYA_LOGS`, `lb trace`'s records)
    /// could not be opened.
    #[error("opening the datapath's log ring AYA_LOGS (lb trace's records): {0}")]
    Logs(String),
    /// The splice proxy could not listen on a VIP.
    #[error("cannot listen on {vip}: {reason}")]
    Listen {
        /// The VIP.
        vip: std::net::SocketAddr,
        /// Why.
        reason: String,
    },
    /// The splice proxy could not start its serving threads.
    #[error("starting the splice proxy's threads: {0}")]
    Threads(#[source] std::io::Error),
    /// A table could not be written.
    #[error("service {service:?}: writing its Maglev table failed: {reason}")]
    Table {
        /// The service.
        service: String,
        /// Why.
        reason: String,
    },
    /// Writing or reading a map failed.
    #[error("map {map}: {source}")]
    Map {
        /// The map.
        map: &'static str,
        /// The error.
        source: MapError,
    },
}

/// Settings fixed at load time.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Entries of the flow table.
    pub flow_capacity: u32,
    /// Pin the maps there, or reuse the ones pinned there already.
    pub pins: Option<Pins>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { flow_capacity: DEFAULT_FLOW_CAPACITY, pins: None }
    }
}

/// The loaded program and its maps. Dropping it detaches the program from
/// every interface and frees the maps.
#[derive(Debug)]
pub struct Datapath {
    window: SlotWindow,
    ebpf: Ebpf,
}

impl Datapath {
    /// Loads `object` into the kernel (maps sized for `plan`), verified but
    /// not yet attached.
    pub fn load(object: &BpfObject, plan: &Plan, opts: LoadOptions) -> Result<Self, DatapathError> {
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries(MAP_MAGLEV, plan.maglev_slots)
            .map_max_entries(MAP_FLOWS, opts.flow_capacity)
            .map_max_entries(MAP_PENDING, pending_capacity(opts.flow_capacity))
            .map_max_entries(MAP_VERIFIED, pending_capacity(opts.flow_capacity));
        // Pinned maps are reused as they are (sizes included): the flow
        // table of a datapath being taken over keeps its flows.
        let paths: Vec<(&str, std::path::PathBuf)> = opts
            .pins
            .as_ref()
            .map(|p| ALL_MAPS.iter().map(|&m| (m, p.map(m))).collect())
            .unwrap_or_default();
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(&object.bytes).map_err(|source| DatapathError::Load {
            origin: object.origin.to_string(),
            source: Box::new(source),
        })?;
        let prog: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .ok_or(DatapathError::NoProgram)?
            .try_into()
            .map_err(DatapathError::Program)?;
        prog.load().map_err(DatapathError::Program)?;
        let map = ebpf.map_mut(MAP_MAGLEV).ok_or(DatapathError::NoMap(MAP_MAGLEV))?;
        let window = SlotWindow::new(map, plan.maglev_slots)
            .map_err(|e| DatapathError::Window(format!("memory-mapping {MAP_MAGLEV}: {e}")))?;
        Ok(Self { window, ebpf })
    }

    /// Writes every entry of `plan` (a datapath just loaded). Tables and
    /// backends go first and each service record last, so no packet sees a
    /// service whose table is not complete.
    pub fn apply(&mut self, plan: &Plan) -> Result<(), DatapathError> {
        self.write(None, plan)
    }

    /// Writes what differs between `old` (what the maps hold) and `new`:
    /// changed backend records, then each changed table into the region its
    /// new record points at (never the live one), then the changed records,
    /// each replaced atomically.
    pub fn apply_change(&mut self, old: &Plan, new: &Plan) -> Result<(), DatapathError> {
        self.write(Some(old), new)
    }

    fn write(&mut self, old: Option<&Plan>, new: &Plan) -> Result<(), DatapathError> {
        // The prefilter's new bits first, its stale bits last (see there):
        // with no old plan, what the map holds is what another agent wrote.
        let had = match old {
            Some(o) => prefilter::words(o),
            None => prefilter::read(self)?,
        };
        let want = prefilter::words(new);
        let both = prefilter::union(&had, &want);
        prefilter::write(self, &had, &both)?;
        self.write_entries(old, new)?;
        prefilter::write(self, &both, &want)
    }

    fn write_entries(&mut self, old: Option<&Plan>, new: &Plan) -> Result<(), DatapathError> {
        let mut backends: Array<&mut MapData, BackendRecord> = self.map_mut(MAP_BACKENDS)?;
        for (id, b) in new.backends.iter().enumerate() {
            if old.and_then(|o| o.backends.get(id)) != Some(b) {
                backends.set(id as u32, b, 0).map_err(map_err(MAP_BACKENDS))?;
            }
        }
        self.write_replies(old, new)?;
        // Entries first, records after, stale entries last: a record that
        // gains a list flag finds its entries in place, and entries a
        // record stops needing go only once it no longer reads them.
        let had = old.map(acl::tries).unwrap_or_default();
        let want = acl::tries(new);
        acl::insert(self, &had, &want)?;
        let prev_of =
            |svc: &PlannedService| old.and_then(|o| o.services.iter().find(|p| p.key == svc.key));
        for svc in &new.services {
            let prev = prev_of(svc);
            // A new table always comes with a new record (it goes to the
            // idle half); an empty one means "unchanged, already in place".
            if !svc.table.is_empty() && prev.is_none_or(|p| p.record != svc.record) {
                self.window.write(svc.record.table_base, &svc.table).map_err(|e| {
                    DatapathError::Table { service: svc.name.clone(), reason: e.to_string() }
                })?;
            }
        }
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        // Before the records: a reused id's new record must find its
        // counters and buckets empty.
        if let Some(old) = old {
            super::reused::clear(self, &super::reused::ids(old, new))?;
        }
        let mut services: HashMap<&mut MapData, ServiceKey, ServiceRecord> =
            self.map_mut(MAP_SERVICES)?;
        for svc in &new.services {
            if prev_of(svc).is_none_or(|p| p.record != svc.record) {
                services.insert(svc.key, svc.record, 0).map_err(map_err(MAP_SERVICES))?;
            }
        }
        // Services no longer configured: their VIPs pass to the kernel from
        // now on. Their regions are free for later services.
        for gone in old.iter().flat_map(|o| &o.services) {
            if !new.services.iter().any(|s| s.key == gone.key) {
                services.remove(&gone.key).map_err(map_err(MAP_SERVICES))?;
            }
        }
        self.bump_services_generation()?;
        acl::remove(self, &had, &want)
    }

    /// Tells the datapath's per-CPU caches of service records that the
    /// records changed (after they did): each reads its records again at
    /// their next use. Never 0, which means "nothing written yet".
    fn bump_services_generation(&mut self) -> Result<(), DatapathError> {
        let mut map: Array<&mut MapData, u32> = self.map_mut(MAP_SERVICES_GEN)?;
        let now = map.get(&0, 0).map_err(map_err(MAP_SERVICES_GEN))?;
        let next = match now.wrapping_add(1) {
            0 => 1,
            n => n,
        };
        map.set(0, next, 0).map_err(map_err(MAP_SERVICES_GEN))
    }

    /// Writes the replies map `new` calls for, before any service record
    /// can send a flow to a backend it lists (entries no backend needs any
    /// more are removed too: their VIP is gone). Entries that did not change
    /// are not rewritten.
    fn write_replies(&mut self, old: Option<&Plan>, new: &Plan) -> Result<(), DatapathError> {
        let (want, over) = replies(new);
        for e in over {
            tracing::warn!(
                "backend {}:{} serves more services than the datapath translates replies for;                  restart lb to drop backends that reloads removed",
                e.addr.to_ip(e.family),
                u16::from_be(e.port_be)
            );
        }
        let had = old.map(|o| replies(o).0).unwrap_or_default();
        let mut map: HashMap<&mut MapData, Endpoint, Replies> = self.map_mut(MAP_REPLIES)?;
        for (k, v) in &want {
            if old.is_none() || had.get(k) != Some(v) {
                map.insert(k, v, 0).map_err(map_err(MAP_REPLIES))?;
            }
        }
        for k in had.keys().filter(|k| !want.contains_key(k)) {
            map.remove(k).map_err(map_err(MAP_REPLIES))?;
        }
        Ok(())
    }

    /// Sets the flow table's idle timeouts.
    pub fn set_timeouts(&mut self, t: FlowTimeouts) -> Result<(), DatapathError> {
        let mut settings: Array<&mut MapData, FlowTimeouts> = self.map_mut(MAP_SETTINGS)?;
        settings.set(0, t, 0).map_err(map_err(MAP_SETTINGS))
    }

    /// A read-only view of the per-backend SYN counters.
    pub fn syn_view(&self) -> Result<SynView, DatapathError> {
        let map = self.ebpf.map(MAP_SYNS).ok_or(DatapathError::NoMap(MAP_SYNS))?;
        SynView::new(map)
            .map_err(|e| DatapathError::Window(format!("memory-mapping {MAP_SYNS}: {e}")))
    }

    /// The passive-event ring buffer, taken out of the object so its reader
    /// can live in its own task.
    pub fn take_events(&mut self) -> Result<aya::maps::RingBuf<MapData>, DatapathError> {
        let map = self.ebpf.take_map(MAP_EVENTS).ok_or(DatapathError::NoMap(MAP_EVENTS))?;
        aya::maps::RingBuf::try_from(map).map_err(map_err(MAP_EVENTS))
    }

    /// `lb trace`'s parts, taken out of the object: the filter map, the
    /// switch, and the reader of this program's aya-log ring. The switch
    /// and the ring belong to the program this agent loaded (a taken-over
    /// datapath gets this agent's program swapped into its links), so they
    /// are never pinned.
    pub fn take_trace(&mut self) -> Result<(Tracer, Reader), DatapathError> {
        let map = self.ebpf.take_map(MAP_TRACE).ok_or(DatapathError::NoMap(MAP_TRACE))?;
        let map = Array::try_from(map).map_err(map_err(MAP_TRACE))?;
        let switch = self.ebpf.take_map(MAP_TRACE_ON).ok_or(DatapathError::NoMap(MAP_TRACE_ON))?;
        let switch = Array::try_from(switch).map_err(map_err(MAP_TRACE_ON))?;
        let (tracer, sink) = Tracer::new(map, switch).map_err(map_err(MAP_TRACE))?;
        let reader = aya_log::EbpfLogger::init_with_logger(&mut self.ebpf, sink)
            .map_err(|e| DatapathError::Logs(e.to_string()))?;
        Ok((tracer, reader))
    }

    /// A second handle on the flow table (its own fd), so flows can be
    /// counted without holding whatever guards this datapath.
    pub fn flow_table(&self) -> Result<std::os::fd::OwnedFd, DatapathError> {
        let data = match self.ebpf.map(MAP_FLOWS) {
            Some(aya::maps::Map::LruHashMap(d)) => d,
            _ => return Err(DatapathError::NoMap(MAP_FLOWS)),
        };
        data.fd().as_fd().try_clone_to_owned().map_err(|e| {
            DatapathError::Window(format!("duplicating the descriptor of {MAP_FLOWS}: {e}"))
        })
    }

    /// The XDP program, for attaching and test runs.
    pub fn program_mut(&mut self) -> Result<&mut Xdp, DatapathError> {
        self.ebpf
            .program_mut(PROGRAM)
            .ok_or(DatapathError::NoProgram)?
            .try_into()
            .map_err(DatapathError::Program)
    }

    /// The tc program, loaded (verified) on first use: only interfaces at
    /// the tc hook need it.
    pub fn tc_program_mut(&mut self) -> Result<&mut SchedClassifier, DatapathError> {
        loaded(&mut self.ebpf, TC_PROGRAM, SchedClassifier::load, |p| p.fd().is_ok())
    }

    /// Records which interfaces have a peer device (veth, netkit), so the
    /// tc hook forwards into them with `bpf_redirect_peer`; entries for
    /// interfaces not listed are removed.
    pub fn set_peer_devices(&mut self, ifindexes: &[u32]) -> Result<(), DatapathError> {
        let mut map: HashMap<&mut MapData, u32, u32> = self.map_mut(MAP_PEER_DEVICES)?;
        let stale: Vec<u32> =
            map.keys().filter_map(Result::ok).filter(|i| !ifindexes.contains(i)).collect();
        for i in stale {
            map.remove(&i).map_err(map_err(MAP_PEER_DEVICES))?;
        }
        for &i in ifindexes {
            map.insert(i, 1, 0).map_err(map_err(MAP_PEER_DEVICES))?;
        }
        Ok(())
    }

    /// The object's no-op XDP program, loaded on first use: the baseline the
    /// datapath benchmark compares [`PROGRAM`] against. Never attached.
    pub fn baseline_program(&mut self) -> Result<&mut Xdp, DatapathError> {
        loaded(&mut self.ebpf, BASELINE, Xdp::load, |p| p.fd().is_ok())
    }

    /// The object's no-op tc program, loaded on first use: the baseline of
    /// [`TC_PROGRAM`]. Never attached.
    pub fn tc_baseline_program(&mut self) -> Result<&mut SchedClassifier, DatapathError> {
        loaded(&mut self.ebpf, TC_BASELINE, SchedClassifier::load, |p| p.fd().is_ok())
    }

    /// A typed view of one of the program's maps.
    pub fn map_mut<'a, T>(&'a mut self, name: &'static str) -> Result<T, DatapathError>
    where
        T: TryFrom<&'a mut aya::maps::Map, Error = MapError>,
    {
        let map = self.ebpf.map_mut(name).ok_or(DatapathError::NoMap(name))?;
        T::try_from(map).map_err(map_err(name))
    }

    /// A read-only typed view of one of the program's maps.
    pub fn map<'a, T>(&'a self, name: &'static str) -> Result<T, DatapathError>
    where
        T: TryFrom<&'a aya::maps::Map, Error = MapError>,
    {
        let map = self.ebpf.map(name).ok_or(DatapathError::NoMap(name))?;
        T::try_from(map).map_err(map_err(name))
    }
}

/// Program `name` of `ebpf` as a `P`, loaded (verified) on first use.
fn loaded<'a, P>(
    ebpf: &'a mut Ebpf,
    name: &str,
    load: fn(&mut P) -> Result<(), ProgramError>,
    is_loaded: fn(&P) -> bool,
) -> Result<&'a mut P, DatapathError>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let prog: &mut P = ebpf
        .program_mut(name)
        .ok_or(DatapathError::NoProgram)?
        .try_into()
        .map_err(DatapathError::Program)?;
    if !is_loaded(prog) {
        load(prog).map_err(DatapathError::Program)?;
    }
    Ok(prog)
}

pub(super) fn map_err(map: &'static str) -> impl Fn(MapError) -> DatapathError {
    move |source| DatapathError::Map { map, source }
}
