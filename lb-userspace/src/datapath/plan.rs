//! What the maps must hold for a config: computed without touching the
//! kernel, so it is tested on any host and written to the maps in one pass.

use std::net::SocketAddr;

use lb_common::{
    abi::{
        Addr, BACKEND_ACTIVE, BackendRecord, DEFAULT_TABLE_SIZE, FAMILY_V4, FAMILY_V6,
        FORWARD_DSR_IPIP, FORWARD_DSR_L2, FORWARD_NAT, MAX_ACL_ENTRIES, MAX_BACKENDS, MAX_SERVICES,
        NO_SERVICE, PROTO_TCP, PROTO_UDP, SERVICE_ALLOW_LIST, SERVICE_BALANCING_FLAGS,
        SERVICE_DENY_LIST, SERVICE_HASH_CLIENT_IP, ServiceKey, ServiceRecord, cost_ns,
    },
    maglev::{self, MaglevError, Member},
};

use crate::config::{
    Backend, Config, Forwarding, Prefix, Protocol, ProxyProtocol, Scheduler, Service,
};

/// The content of every map for one config.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Plan {
    /// One entry per service, in config order. Ids are not indexes: a
    /// reload that re-creates a service gives it a new id (see [`replan`]).
    pub services: Vec<PlannedService>,
    /// Backend records; the index is the backend id.
    pub backends: Vec<BackendRecord>,
    /// Slots of the Maglev map: every service's table twice (one region
    /// live, one to write the next table into, for an atomic swap), plus
    /// [`HEADROOM_SLOTS`] for services a reload adds.
    pub maglev_slots: u32,
    /// The id the next added service gets. Ids are handed out in order
    /// and reused only once all have been (see [`replan`]); a reused id's
    /// counters and buckets are cleared before its new record goes in.
    pub next_service_id: u32,
}

impl Plan {
    /// The ids of the services, in config order: what counters are read
    /// for.
    pub fn service_ids(&self) -> Vec<u32> {
        self.services.iter().map(|s| s.record.id).collect()
    }
}

/// Once every id has been given (a long-lived agent whose reloads re-create
/// services), the lowest id neither `old` nor the services planned so far
/// (`taken`) hold: one whose service went in an earlier change, so no
/// packet reads its record, counters or list entries any more. The
/// datapath zeroes what it left before the id's new record goes in (see
/// `fresh_ids`).
fn reusable_id(old: &Plan, taken: &[PlannedService]) -> Option<u32> {
    let used = |id: u32| old.services.iter().chain(taken).any(|s| s.record.id == id);
    (0..MAX_SERVICES).find(|&id| !used(id))
}

/// Room in the Maglev map for services added by reloads: eight services of
/// the default table size (8 MB of kernel memory). Regions of removed
/// services are reused; beyond that, adding a service needs a restart.
pub const HEADROOM_SLOTS: u64 = 8 * 2 * DEFAULT_TABLE_SIZE as u64;

/// One service's map entries.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PlannedService {
    /// The config name.
    pub name: String,
    /// The services-map key.
    pub key: ServiceKey,
    /// The services-map value (points at the live table).
    pub record: ServiceRecord,
    /// First slot of the service's region: two tables' worth of slots, the
    /// live one and the one the next table is written into.
    pub region_base: u32,
    /// Ids of this service's backends, in config order.
    pub backend_ids: Vec<u32>,
    /// The Maglev weight each backend had when the table was built (0 for
    /// one out of it), in config order.
    pub weights: Vec<u32>,
    /// Slots of the table each backend owns, in config order.
    pub slots: Vec<u32>,
    /// The Maglev table (backend ids, `record.table_size` of them) to write;
    /// empty when the live one is unchanged, or once written and
    /// [`Plan::compact`]ed (a plan is kept for months; 100 services' tables
    /// are 25 MB).
    pub table: Vec<u32>,
    /// Splice mode starts each backend connection with a PROXY protocol v2
    /// header (the XDP datapath ignores it: it keeps the client address).
    #[serde(default)]
    pub proxy_protocol: bool,
    /// Sources that may reach it (empty: every source); the record's
    /// `SERVICE_ALLOW_LIST` flag says whether there are any.
    #[serde(default)]
    pub allow: Vec<Prefix>,
    /// Sources that may not, whatever `allow` says.
    #[serde(default)]
    pub deny: Vec<Prefix>,
}

impl Plan {
    /// Drops the tables' contents once they are in the kernel.
    pub fn compact(&mut self) {
        for svc in &mut self.services {
            svc.table = Vec::new();
        }
    }
}

/// How many slots of `table` each of `ids` owns.
fn slot_counts(table: &[u32], ids: &[u32]) -> Vec<u32> {
    // Backend ids are small (< MAX_BACKENDS): count per id directly.
    let mut per_id = vec![0u32; ids.iter().max().map_or(0, |&m| m as usize + 1)];
    for &slot in table {
        if let Some(c) = per_id.get_mut(slot as usize) {
            *c += 1;
        }
    }
    ids.iter().map(|&id| per_id.get(id as usize).copied().unwrap_or(0)).collect()
}

/// Why a config cannot be turned into map content.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// More services or backends than the maps hold.
    #[error("{what}: {count} exceeds the datapath's limit of {limit}")]
    TooMany {
        /// Services or backends.
        what: &'static str,
        /// How many the config has.
        count: usize,
        /// The limit.
        limit: u32,
    },
    /// The Maglev tables do not fit one map.
    #[error(
        "the Maglev tables need {slots} slots in all, more than a map can index; lower table_size"
    )]
    TablesTooLarge {
        /// Slots needed.
        slots: u64,
    },
    /// The change cannot be applied to a running datapath.
    #[error("{what}; restart lb to apply it")]
    NeedsRestart {
        /// What changed.
        what: String,
    },
    /// Every backend id has been handed out since the datapath was loaded:
    /// a removed backend keeps its id (a flow still pinned to it must not
    /// reach a newcomer), so a long run of new backends uses them up.
    #[error(
        "no backend id left: all {limit} have been handed out since lb started (the config has \
         {configured} backends; a removed backend keeps its id, so a flow still pinned to it \
         never reaches a newcomer); restart lb from scratch to free them: `lb stop`, then start \
         it again (the datapath is replaced and established flows break; a restart that takes \
         the datapath over keeps the ids)"
    )]
    BackendIdsUsedUp {
        /// Backends in the config.
        configured: usize,
        /// The limit.
        limit: u32,
    },
    /// Building a Maglev table failed (the config validation should have
    /// prevented it).
    #[error("service {service:?}: {source}")]
    Maglev {
        /// The service.
        service: String,
        /// The error.
        source: MaglevError,
    },
}

/// Computes the map content of `cfg`. Every backend starts active.
pub fn plan(cfg: &Config) -> Result<Plan, PlanError> {
    check_limit("services", cfg.services.len(), MAX_SERVICES)?;
    check_prefixes(cfg)?;
    check_limit("backends", cfg.backend_count(), MAX_BACKENDS)?;
    // Sized before any table is built: a size no map can index is refused
    // here rather than after allocating tables of that size.
    let tables: u64 = cfg.services.iter().map(|svc| region_len(svc.table_size)).sum();
    let total = tables + HEADROOM_SLOTS;
    let maglev_slots =
        u32::try_from(total).map_err(|_| PlanError::TablesTooLarge { slots: total })?;
    let mut backends = Vec::with_capacity(cfg.backend_count());
    let mut services = Vec::with_capacity(cfg.services.len());
    let mut next_base: u64 = 0;
    for (id, svc) in cfg.services.iter().enumerate() {
        let id = id as u32;
        let first = backends.len() as u32;
        backends.extend(svc.backends.iter().map(|b| backend_record(b.addr, id)));
        let backend_ids: Vec<u32> = (first..backends.len() as u32).collect();
        let weights: Vec<u32> = svc.backends.iter().map(|b| b.weight).collect();
        let table = maglev_table(svc, &backend_ids, &weights)?;
        let slots = slot_counts(&table, &backend_ids);
        let base =
            u32::try_from(next_base).map_err(|_| PlanError::TablesTooLarge { slots: next_base })?;
        next_base += region_len(svc.table_size);
        services.push(PlannedService {
            name: svc.name.clone(),
            key: service_key(svc),
            record: with_forwarding(
                with_sources(
                    ServiceRecord {
                        id,
                        flags: service_flags(svc),
                        table_size: svc.table_size,
                        table_base: base,
                        ..ServiceRecord::default()
                    },
                    svc,
                ),
                svc,
            ),
            region_base: base,
            backend_ids,
            weights,
            slots,
            table,
            proxy_protocol: svc.proxy_protocol == ProxyProtocol::V2,
            allow: svc.sources.allow.clone(),
            deny: svc.sources.deny.clone(),
        });
    }
    let next_service_id = services.len() as u32;
    Ok(Plan { services, backends, maglev_slots, next_service_id })
}

/// The plan for `cfg` replacing `old` in a running datapath:
/// - services are matched by name; one whose VIP, protocol, scheduler or
///   table size changed counts as removed and added;
/// - kept services keep their ids and table regions; a changed table moves
///   to the other half of its region, so it can be written while packets
///   read the live half;
/// - added services get an id never used before (once all have been, one
///   freed by an earlier change: see [`reusable_id`]) and a free region of the Maglev map
///   (removed services' regions are reused; the map has headroom, see
///   [`HEADROOM_SLOTS`]);
/// - backends keep their ids (matched by service and address); new backends
///   get ids never used before (a flow still pinned to a removed backend's
///   id must not land on a newcomer).
///
/// `effective` gives each backend's state and Maglev weight (health,
/// operator settings).
pub fn replan(
    old: &Plan,
    cfg: &Config,
    effective: &dyn Fn(&str, &Backend) -> Effective,
) -> Result<Plan, PlanError> {
    check_limit("services", cfg.services.len(), MAX_SERVICES)?;
    check_prefixes(cfg)?;
    let same = |svc: &Service, prev: &PlannedService| {
        svc.name == prev.name
            && service_key(svc) == prev.key
            && service_flags(svc) == prev.record.flags & SERVICE_BALANCING_FLAGS
            && svc.table_size == prev.record.table_size
    };
    let kept: Vec<Option<&PlannedService>> =
        cfg.services.iter().map(|svc| old.services.iter().find(|prev| same(svc, prev))).collect();
    // Every old region is in use during this change, removed services'
    // included: their records are deleted only after the new ones are in,
    // and packets may read their tables until then. They are free from the
    // next change on.
    let mut free = free_regions(
        old.maglev_slots,
        old.services.iter().map(|p| (p.region_base, region_len(p.record.table_size))),
    );
    let mut next_id = old.next_service_id;
    let mut backends = old.backends.clone();
    let mut services = Vec::with_capacity(cfg.services.len());
    for (svc, prev) in cfg.services.iter().zip(kept) {
        let (id, region_base, live) = match prev {
            Some(p) => (p.record.id, p.region_base, Some(p)),
            None => {
                let id = if next_id < MAX_SERVICES {
                    next_id += 1;
                    next_id - 1
                } else {
                    let id =
                        reusable_id(old, &services).ok_or_else(|| PlanError::NeedsRestart {
                            what: format!("no service id left for {:?}", svc.name),
                        })?;
                    // The id's last service left backend records naming it:
                    // they must not become this service's (its replies
                    // map, its returning backends' ids).
                    for r in backends.iter_mut().filter(|r| r.service_id == id) {
                        r.service_id = NO_SERVICE;
                    }
                    id
                };
                let base = take_region(&mut free, region_len(svc.table_size)).ok_or_else(|| {
                    PlanError::NeedsRestart {
                        what: format!(
                            "no room left in the Maglev map for service {:?} (it needs two tables \
                         of {} slots); the map is sized at start, so the restart replaces the \
                         running datapath rather than taking it over, and established flows \
                         may break",
                            svc.name, svc.table_size
                        ),
                    }
                })?;
                (id, base, None)
            }
        };
        let mut backend_ids = Vec::with_capacity(svc.backends.len());
        let mut weights = Vec::with_capacity(svc.backends.len());
        for b in &svc.backends {
            let record = backend_record(b.addr, id);
            let same = |r: &BackendRecord| {
                r.addr == record.addr && r.port_be == record.port_be && r.family == record.family
            };
            let existing = live
                .and_then(|p| {
                    p.backend_ids
                        .iter()
                        .copied()
                        .find(|&bid| old.backends.get(bid as usize).is_some_and(same))
                })
                // A backend removed earlier and now back (a DNS name that
                // flaps, a reload undone) gets its old id again: a flow
                // still pinned to that id belongs to this very backend, so
                // nothing is misdirected, and churn does not use up the
                // ids.
                .or_else(|| {
                    live?;
                    old.backends
                        .iter()
                        .rposition(|r| r.service_id == id && same(r))
                        .map(|i| i as u32)
                        .filter(|bid| !backend_ids.contains(bid))
                });
            let bid = match existing {
                Some(bid) => bid,
                None => {
                    backends.push(record);
                    backends.len() as u32 - 1
                }
            };
            let eff = effective(&svc.name, b);
            if let Some(r) = backends.get_mut(bid as usize) {
                r.state = eff.state;
            }
            backend_ids.push(bid);
            weights.push(eff.weight);
        }
        if backends.len() > MAX_BACKENDS as usize {
            let configured: usize = cfg.services.iter().map(|s| s.backends.len()).sum();
            check_limit("backends", configured, MAX_BACKENDS)?;
            return Err(PlanError::BackendIdsUsedUp { configured, limit: MAX_BACKENDS });
        }
        let (record, table, slots) = match live {
            // Same members, same weights: the same table, already in place.
            Some(p) if backend_ids == p.backend_ids && weights == p.weights => {
                (p.record, Vec::new(), p.slots.clone())
            }
            Some(p) => {
                let record =
                    ServiceRecord { table_base: other_half(p.region_base, p.record), ..p.record };
                let table = maglev_table(svc, &backend_ids, &weights)?;
                let slots = slot_counts(&table, &backend_ids);
                (record, table, slots)
            }
            None => {
                let record = ServiceRecord {
                    id,
                    flags: service_flags(svc),
                    table_size: svc.table_size,
                    table_base: region_base,
                    ..ServiceRecord::default()
                };
                let table = maglev_table(svc, &backend_ids, &weights)?;
                let slots = slot_counts(&table, &backend_ids);
                (record, table, slots)
            }
        };
        // Source lists and limits change without a new table: the record
        // is rewritten (atomically, as ever) with its new ones.
        let record = with_forwarding(with_sources(record, svc), svc);
        services.push(PlannedService {
            name: svc.name.clone(),
            key: service_key(svc),
            record,
            region_base,
            backend_ids,
            weights,
            slots,
            table,
            proxy_protocol: svc.proxy_protocol == ProxyProtocol::V2,
            allow: svc.sources.allow.clone(),
            deny: svc.sources.deny.clone(),
        });
    }
    Ok(Plan { services, backends, maglev_slots: old.maglev_slots, next_service_id: next_id })
}

/// Slots of a service's region: two tables, the live one and the next. In
/// `u64`, since two of the largest `u32` tables do not fit a `u32`.
fn region_len(table_size: u32) -> u64 {
    2 * u64::from(table_size)
}

/// The gaps of `0..slots` not covered by `used` (base, length) regions.
fn free_regions(slots: u32, used: impl Iterator<Item = (u32, u64)>) -> Vec<(u32, u32)> {
    let mut used: Vec<(u32, u64)> = used.collect();
    used.sort_unstable();
    let mut free = Vec::new();
    let mut at = 0u32;
    for (base, len) in used {
        if base > at {
            free.push((at, base - at));
        }
        let end = u32::try_from(u64::from(base) + len).unwrap_or(u32::MAX);
        at = at.max(end);
    }
    if slots > at {
        free.push((at, slots - at));
    }
    free
}

/// Takes `len` slots from the first free region large enough.
fn take_region(free: &mut [(u32, u32)], len: u64) -> Option<u32> {
    let region = free.iter_mut().find(|(_, l)| u64::from(*l) >= len)?;
    // It fits a free region, hence a `u32`.
    let len = u32::try_from(len).ok()?;
    let base = region.0;
    *region = (base + len, region.1 - len);
    Some(base)
}

/// What a backend is right now, as the datapath must see it: its state and
/// its share of new flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Effective {
    /// `BACKEND_ACTIVE`, `BACKEND_DRAINING` or `BACKEND_DOWN`.
    pub state: u8,
    /// Maglev weight; 0 for a draining or down backend (no new flows).
    pub weight: u32,
}

impl Effective {
    /// Active with the configured weight: what a config alone says.
    pub fn configured(b: &Backend) -> Self {
        Self { state: BACKEND_ACTIVE, weight: b.weight }
    }
}

/// The half of a service's two-table region that `record` does not use.
fn other_half(region_base: u32, record: ServiceRecord) -> u32 {
    // A region always lies inside the map, whose slots a `u32` counts; a
    // saved plan that says otherwise yields a base the slot window refuses
    // to write to, not a panic.
    if record.table_base == region_base {
        region_base.saturating_add(record.table_size)
    } else {
        region_base
    }
}

/// The Maglev table of `svc`, whose backends have the ids `backend_ids` and
/// the Maglev weights `weights` (0 keeps a backend out of the table).
fn maglev_table(
    svc: &Service,
    backend_ids: &[u32],
    weights: &[u32],
) -> Result<Vec<u32>, PlanError> {
    let members: Vec<Member> = svc
        .backends
        .iter()
        .zip(backend_ids.iter().zip(weights))
        .map(|(b, (&id, &weight))| Member { id, addr: b.addr, weight })
        .collect();
    maglev::build(&members, svc.table_size)
        .map_err(|source| PlanError::Maglev { service: svc.name.clone(), source })
}

/// The ACL tries (one per family, shared by every service) must hold every
/// service's allow and deny prefixes.
fn check_prefixes(cfg: &Config) -> Result<(), PlanError> {
    let all = || cfg.services.iter().flat_map(|s| s.sources.allow.iter().chain(&s.sources.deny));
    let v4 = all().filter(|p| p.addr().is_ipv4()).count();
    check_limit("IPv4 allow and deny prefixes over all services", v4, MAX_ACL_ENTRIES)?;
    check_limit(
        "IPv6 allow and deny prefixes over all services",
        all().count() - v4,
        MAX_ACL_ENTRIES,
    )
}

fn check_limit(what: &'static str, count: usize, limit: u32) -> Result<(), PlanError> {
    if count > limit as usize { Err(PlanError::TooMany { what, count, limit }) } else { Ok(()) }
}

/// The services-map key of a service.
pub fn service_key(svc: &Service) -> ServiceKey {
    ServiceKey {
        addr: Addr::from(svc.vip.ip()),
        port_be: svc.vip.port().to_be(),
        proto: match svc.protocol {
            Protocol::Tcp => PROTO_TCP,
            Protocol::Udp => PROTO_UDP,
        },
        family: family(svc.vip),
    }
}

/// `record` with `svc`'s source-list flags and new-flow limit.
fn with_sources(record: ServiceRecord, svc: &Service) -> ServiceRecord {
    let s = &svc.sources;
    let mut flags = record.flags & SERVICE_BALANCING_FLAGS;
    if !s.allow.is_empty() {
        flags |= SERVICE_ALLOW_LIST;
    }
    if !s.deny.is_empty() {
        flags |= SERVICE_DENY_LIST;
    }
    let limit = s.new_flow_limit;
    ServiceRecord {
        flags,
        limit_cost_ns: limit.map_or(0, |l| cost_ns(l.rate)),
        limit_burst: limit.map_or(0, |l| l.burst),
        limit_prefix_v4: limit.map_or(32, |l| l.prefix_v4),
        limit_prefix_v6: limit.map_or(64, |l| l.prefix_v6),
        ..record
    }
}

/// `record` with `svc`'s forwarding. Like the source lists, it changes
/// without a new table: flows keep their backends, but the established
/// connections of a service whose forwarding changes break, since their
/// backends now answer from another address (the VIP, or their own).
fn with_forwarding(record: ServiceRecord, svc: &Service) -> ServiceRecord {
    let (tunnel_src, tunnel_host_bits) = match svc.tunnel_source {
        Some(p) => {
            let family_bits = if p.addr().is_ipv4() { 32 } else { 128 };
            (Addr::from(p.addr()), family_bits - p.bits())
        }
        None => (Addr::default(), 0),
    };
    ServiceRecord {
        forwarding: match svc.forwarding {
            Forwarding::Nat => FORWARD_NAT,
            Forwarding::DsrIpip => FORWARD_DSR_IPIP,
            Forwarding::DsrL2 => FORWARD_DSR_L2,
        },
        tunnel_host_bits,
        tunnel_src,
        ..record
    }
}

/// The flags that say how `svc` balances (the others come from its
/// sources, see [`with_sources`]).
fn service_flags(svc: &Service) -> u32 {
    match svc.scheduler {
        Scheduler::Maglev => 0,
        Scheduler::MaglevClientIp => SERVICE_HASH_CLIENT_IP,
    }
}

fn backend_record(addr: SocketAddr, service_id: u32) -> BackendRecord {
    BackendRecord {
        addr: Addr::from(addr.ip()),
        port_be: addr.port().to_be(),
        family: family(addr),
        state: BACKEND_ACTIVE,
        service_id,
    }
}

fn family(addr: SocketAddr) -> u8 {
    if addr.is_ipv4() { FAMILY_V4 } else { FAMILY_V6 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use std::path::Path;

    fn cfg(text: &str) -> Config {
        config::parse(text, Path::new("t.toml")).unwrap()
    }

    const TWO: &str = r#"
        [[service]]
        name = "web"
        vip = "10.0.0.100:80"
        table_size = 251
        [[service.backend]]
        addr = "10.0.1.1:8080"
        [[service.backend]]
        addr = "10.0.1.2:8080"
        weight = 3

        [[service]]
        name = "dns"
        vip = "10.0.0.100:53"
        protocol = "udp"
        scheduler = "maglev-client-ip"
        table_size = 101
        [[service.backend]]
        addr = "10.0.2.1:53"
    "#;

    #[test]
    fn ids_keys_and_regions() {
        let p = plan(&cfg(TWO)).unwrap();
        assert_eq!(p.services.len(), 2);
        let (web, dns) = (&p.services[0], &p.services[1]);
        assert_eq!(web.key.port_be, 80u16.to_be());
        assert_eq!(web.key.proto, PROTO_TCP);
        assert_eq!(dns.key.proto, PROTO_UDP);
        assert_eq!(dns.record.flags, SERVICE_HASH_CLIENT_IP);
        assert_eq!(web.record.table_base, 0);
        // Each service owns two regions of its table size.
        assert_eq!(dns.record.table_base, 2 * 251);
        assert_eq!(p.maglev_slots as u64, 2 * 251 + 2 * 101 + HEADROOM_SLOTS);
        assert_eq!(p.next_service_id, 2);
        assert_eq!(web.backend_ids, vec![0, 1]);
        assert_eq!(dns.backend_ids, vec![2]);
        assert_eq!(p.backends[2].service_id, 1);
        assert_eq!(p.backends[1].port_be, 8080u16.to_be());
    }

    #[test]
    fn replan_keeps_ids_and_flips_changed_tables() {
        let old = plan(&cfg(TWO)).unwrap();
        let grown = TWO.replace(
            "        weight = 3\n",
            "        weight = 3\n        [[service.backend]]\n        addr = \"10.0.1.3:8080\"\n",
        );
        let new = replan(&old, &cfg(&grown), &|_, b| Effective::configured(b)).unwrap();
        let web = &new.services[0];
        // Existing backends keep their ids; the newcomer gets a fresh one
        // (3: ids 0-2 were taken, whether or not still in use).
        assert_eq!(web.backend_ids, vec![0, 1, 3]);
        assert_eq!(new.backends[3].port_be, 8080u16.to_be());
        // The changed table moved to the other half of its region.
        assert_eq!(web.record.table_base, web.region_base + 251);
        // The unchanged service did not move, and has nothing to write.
        assert_eq!(new.services[1].record, old.services[1].record);
        assert!(new.services[1].table.is_empty());
        assert_eq!(new.services[1].slots, old.services[1].slots);
        // And flips back on the next change.
        let again = replan(&new, &cfg(TWO), &|_, b| Effective::configured(b)).unwrap();
        assert_eq!(again.services[0].record.table_base, 0);
        assert_eq!(again.services[0].backend_ids, vec![0, 1]);
    }

    #[test]
    fn a_backend_removed_and_back_gets_its_old_id() {
        let configured = |_: &str, b: &Backend| Effective::configured(b);
        let old = plan(&cfg(TWO)).unwrap();
        let without =
            TWO.replace("        [[service.backend]]\n        addr = \"10.0.1.2:8080\"\n", "");
        let removed = replan(&old, &cfg(&without), &configured).unwrap();
        assert_eq!(removed.services[0].backend_ids, vec![0]);
        let back = replan(&removed, &cfg(TWO), &configured).unwrap();
        assert_eq!(back.services[0].backend_ids, vec![0, 1], "id 1 again, no new id");
        assert_eq!(back.backends.len(), old.backends.len());
        // The same address in another service is another backend.
        let moved = TWO.replace("addr = \"10.0.2.1:53\"", "addr = \"10.0.1.2:8080\"");
        let other = replan(&removed, &cfg(&moved), &configured).unwrap();
        assert_eq!(other.services[1].backend_ids, vec![3]);
    }

    #[test]
    fn new_addresses_use_up_the_ids_then_the_change_is_refused() {
        let configured = |_: &str, b: &Backend| Effective::configured(b);
        let base = cfg("[[service]]\nname = \"web\"\nvip = \"10.255.0.100:80\"\ntable_size = 7\n\
             [[service.backend]]\naddr = \"10.0.0.0:80\"\n");
        // Parsed once, the address changed in place: a name that gives a
        // new address at every answer.
        let one = |i: u32| {
            let mut c = base.clone();
            c.services[0].backends[0].addr =
                SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 80));
            c
        };
        let mut p = plan(&one(0)).unwrap();
        for i in 1..MAX_BACKENDS {
            p = replan(&p, &one(i), &configured).unwrap();
            p.compact();
        }
        assert_eq!(p.backends.len(), MAX_BACKENDS as usize);
        // Back to an address it had: its old id, no new one.
        let back = replan(&p, &one(5), &configured).unwrap();
        assert_eq!(back.services[0].backend_ids, vec![5]);
        // One backend in the config, every id handed out: not "too many
        // backends", which the operator could not make sense of.
        match replan(&p, &one(MAX_BACKENDS + 1), &configured) {
            Err(e @ PlanError::BackendIdsUsedUp { configured: 1, .. }) => {
                assert!(e.to_string().contains("`lb stop`, then start it again"), "{e}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_down_backend_leaves_the_table_and_regains_exactly_its_slots() {
        let old = plan(&cfg(TWO)).unwrap();
        let c = cfg(TWO);
        let down = replan(&old, &c, &|_, b| {
            if b.addr.port() == 8080 && b.weight == 3 {
                Effective { state: lb_common::abi::BACKEND_DOWN, weight: 0 }
            } else {
                Effective::configured(b)
            }
        })
        .unwrap();
        assert!(down.services[0].table.iter().all(|&id| id == 0));
        assert_eq!(down.backends[1].state, lb_common::abi::BACKEND_DOWN);
        let back = replan(&down, &c, &|_, b| Effective::configured(b)).unwrap();
        assert_eq!(
            back.services[0].table, old.services[0].table,
            "Maglev gives it back its own slots"
        );
        assert_eq!(back.backends[1].state, BACKEND_ACTIVE);
    }

    #[test]
    fn replan_adds_removes_and_moves_services() {
        let configured = |_: &str, b: &Backend| Effective::configured(b);
        let old = plan(&cfg(TWO)).unwrap();
        // A new VIP for "web": removed and added, with a fresh id and a
        // region from the headroom; "dns" is untouched.
        let moved = replan(&old, &cfg(&TWO.replace("10.0.0.100:80", "10.0.0.101:80")), &configured)
            .unwrap();
        let web = &moved.services[0];
        assert_eq!(web.record.id, 2);
        assert_eq!(web.region_base, 2 * 251 + 2 * 101);
        assert_eq!(web.record.table_base, web.region_base);
        assert!(!web.table.is_empty());
        assert_eq!(web.backend_ids, vec![3, 4], "new backends of a new service get fresh ids");
        assert_eq!(moved.services[1].record, old.services[1].record);
        assert_eq!(moved.next_service_id, 3);
        // Drop "web" entirely: its region is free again, and a new service
        // of the same size takes it.
        let dns_only = TWO.split("[[service]]").nth(2).map(|s| format!("[[service]]{s}")).unwrap();
        let without = replan(&moved, &cfg(&dns_only), &configured).unwrap();
        assert_eq!(without.services.len(), 1);
        let again = format!(
            "{dns_only}\n[[service]]\nname = \"new\"\nvip = \"10.0.0.102:80\"\ntable_size = 251\n[[service.backend]]\naddr = \"10.0.1.9:80\"\n"
        );
        let added = replan(&without, &cfg(&again), &configured).unwrap();
        assert_eq!(added.services[1].region_base, 0, "the freed region is reused");
        assert_eq!(added.services[1].record.id, 3);
    }

    #[test]
    fn once_every_id_is_handed_out_ids_freed_in_earlier_changes_are_given_again() {
        let configured = |_: &str, b: &Backend| Effective::configured(b);
        let mut old = plan(&cfg(TWO)).unwrap();
        old.next_service_id = MAX_SERVICES;
        // "web" (id 0) moves to another VIP: re-created in this change, while
        // its old record is still read, so not on its own id.
        let moved = TWO.replace("10.0.0.100:80", "10.0.0.101:80");
        let first = replan(&old, &cfg(&moved), &configured).unwrap();
        assert_eq!(first.services[0].record.id, 2, "neither 0 (still live) nor 1 (dns)");
        // Two services re-created in one change take two different ids, the
        // first the freed 0.
        let both = moved.replace("name = \"web\"", "name = \"www\"").replace(
            "name = \"dns\"\n        vip = \"10.0.0.100:53\"",
            "name = \"dns2\"\n        vip = \"10.0.0.102:53\"",
        );
        let second = replan(&first, &cfg(&both), &configured).unwrap();
        let ids: Vec<u32> = second.services.iter().map(|s| s.record.id).collect();
        assert_eq!(ids, vec![0, 3], "the lowest free ids, none live in the plan before");
        assert_eq!(second.next_service_id, MAX_SERVICES);
    }

    #[test]
    fn a_reused_service_id_does_not_take_over_its_last_services_backends() {
        let configured = |_: &str, b: &Backend| Effective::configured(b);
        let mut old = plan(&cfg(TWO)).unwrap();
        old.next_service_id = MAX_SERVICES;
        // "web" (id 0, backends 10.0.1.1 and .2) goes; then a new service
        // takes id 0, with another backend.
        let dns_only = TWO.split("[[service]]").nth(2).map(|s| format!("[[service]]{s}")).unwrap();
        let gone = replan(&old, &cfg(&dns_only), &configured).unwrap();
        let api = |backends: &str| {
            format!(
                "{dns_only}\n[[service]]\nname = \"api\"\nvip = \"10.0.0.105:80\"\n\
                 table_size = 251\n{backends}"
            )
        };
        let one = "[[service.backend]]\naddr = \"10.0.1.9:8080\"\n";
        let new = replan(&gone, &cfg(&api(one)), &configured).unwrap();
        assert_eq!(new.services[1].record.id, 0, "the freed id");
        // No reply of "web"'s backends is translated to "api"'s VIP.
        let (replies, _) = super::super::replies::replies(&new);
        for addr in ["10.0.1.1:8080", "10.0.1.2:8080"] {
            let e = Addr::from(addr.parse::<SocketAddr>().unwrap().ip());
            assert!(!replies.keys().any(|k| k.addr == e), "{addr} answers for a VIP");
        }
        // "web"'s address added to "api" is a new backend: a new id, not
        // "web"'s (whose flows may linger), which stays "web"'s.
        let two = format!("{one}[[service.backend]]\naddr = \"10.0.1.1:8080\"\n");
        let added = replan(&new, &cfg(&api(&two)), &configured).unwrap();
        let web_ids = &old.services[0].backend_ids;
        let api_ids = &added.services[1].backend_ids;
        assert!(api_ids.iter().all(|id| !web_ids.contains(id)), "{api_ids:?} vs {web_ids:?}");
    }

    #[test]
    fn lists_and_limits_change_the_record_but_not_the_service() {
        let old = plan(&cfg(TWO)).unwrap();
        let limited = TWO.replacen(
            "table_size = 251\n",
            "table_size = 251\nallow = [\"10.0.0.0/8\"]\ndeny = [\"10.9.0.0/16\"]\n\
             new_flow_limit = { rate = 4, burst = 8, prefix_v6 = 48 }\n",
            1,
        );
        let new = replan(&old, &cfg(&limited), &|_, b| Effective::configured(b)).unwrap();
        let (was, web) = (&old.services[0], &new.services[0]);
        assert_eq!((web.record.id, web.record.table_base), (was.record.id, was.record.table_base));
        assert!(web.table.is_empty(), "the table stays in place");
        assert_eq!(web.record.flags, SERVICE_ALLOW_LIST | SERVICE_DENY_LIST);
        let r = web.record;
        let limit = (r.limit_cost_ns, r.limit_burst, r.limit_prefix_v4, r.limit_prefix_v6);
        assert_eq!(limit, (250_000_000, 8, 32, 48));
        assert_eq!(web.deny[0].to_string(), "10.9.0.0/16");
        // The affinity service keeps its scheduler flag alone.
        assert_eq!(new.services[1].record.flags, SERVICE_HASH_CLIENT_IP);
        // And back: no list, no limit.
        let back = replan(&new, &cfg(TWO), &|_, b| Effective::configured(b)).unwrap();
        assert_eq!(back.services[0].record, old.services[0].record);
    }

    #[test]
    fn regions_fill_first_fit_and_refuse_when_full() {
        let mut free = free_regions(100, [(10, 20), (50, 10)].into_iter());
        assert_eq!(free, vec![(0, 10), (30, 20), (60, 40)]);
        assert_eq!(take_region(&mut free, 15), Some(30));
        assert_eq!(take_region(&mut free, 40), Some(60));
        assert_eq!(take_region(&mut free, 41), None);
    }

    #[test]
    fn the_largest_tables_fit_the_map() {
        let most =
            u64::from(MAX_SERVICES) * region_len(config::defaults::MAX_TABLE_SIZE) + HEADROOM_SLOTS;
        assert!(most <= u64::from(u32::MAX), "{most}");
    }

    #[test]
    fn a_table_too_large_for_the_headroom_needs_a_restart_which_makes_room() {
        let configured = |_: &str, b: &Backend| Effective::configured(b);
        let old = plan(&cfg(TWO)).unwrap();
        let big = format!(
            "{TWO}\n[[service]]\nname = \"big\"\nvip = \"10.0.0.102:80\"\ntable_size = {}\n\
             [[service.backend]]\naddr = \"10.0.1.9:80\"\n",
            config::defaults::MAX_TABLE_SIZE
        );
        let big = cfg(&big);
        let error = replan(&old, &big, &configured).unwrap_err().to_string();
        assert!(error.starts_with("no room left in the Maglev map for service \"big\""), "{error}");
        assert!(error.contains("established flows may break; restart lb"), "{error}");
        // A restart plans from nothing (the takeover's replan fails as the
        // reload did), and the new map is sized for the table.
        let fresh = plan(&big).unwrap();
        let b = &fresh.services[2];
        assert_eq!(b.region_base, 2 * 251 + 2 * 101);
        let end = u64::from(b.region_base) + region_len(config::defaults::MAX_TABLE_SIZE);
        assert_eq!(u64::from(fresh.maglev_slots), end + HEADROOM_SLOTS);
        // And the next reload of that datapath is an ordinary one.
        let again = replan(&fresh, &cfg(TWO), &configured).unwrap();
        assert_eq!(again.maglev_slots, fresh.maglev_slots);
    }

    // Validation caps table_size; a config built past it must still get an
    // error from the planner, not an overflow or a 17 GB allocation.
    #[test]
    fn sizes_past_any_map_are_refused_without_overflow() {
        let configured = |_: &str, b: &Backend| Effective::configured(b);
        let old = plan(&cfg(TWO)).unwrap();
        let mut huge = cfg(TWO);
        huge.services[0].vip = "10.0.0.101:80".parse().unwrap();
        huge.services[0].table_size = 4_294_967_291;
        match replan(&old, &huge, &configured) {
            Err(PlanError::NeedsRestart { what }) => assert!(what.contains("no room"), "{what}"),
            other => panic!("{other:?}"),
        }
        match plan(&huge) {
            Err(PlanError::TablesTooLarge { slots }) => {
                assert_eq!(slots, 2 * 4_294_967_291 + 2 * 101 + HEADROOM_SLOTS)
            }
            other => panic!("{other:?}"),
        }
        let mut free = vec![(0, u32::MAX)];
        assert_eq!(take_region(&mut free, region_len(u32::MAX)), None);
        assert_eq!(free_regions(10, [(4, region_len(u32::MAX))].into_iter()), vec![(0, 4)]);
    }

    #[test]
    fn tables_hold_only_the_services_backends_by_weight() {
        let p = plan(&cfg(TWO)).unwrap();
        let web = &p.services[0];
        assert_eq!(web.table.len(), 251);
        let heavy = web.table.iter().filter(|&&id| id == 1).count();
        assert!(web.table.iter().all(|id| web.backend_ids.contains(id)));
        // Weight 3 of 4: about 188 of 251 slots.
        assert!((170..=205).contains(&heavy), "{heavy}");
        assert!(p.services[1].table.iter().all(|&id| id == 2));
    }
}
