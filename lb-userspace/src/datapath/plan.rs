//! What the maps must hold for a config: computed without touching the
//! kernel, so it is tested on any host and written to the maps in one pass.

use std::net::SocketAddr;

use lb_common::{
    abi::{
        Addr, BACKEND_ACTIVE, BackendRecord, FAMILY_V4, FAMILY_V6, MAX_BACKENDS, MAX_SERVICES,
        PROTO_TCP, PROTO_UDP, SERVICE_HASH_CLIENT_IP, ServiceKey, ServiceRecord,
    },
    maglev::{self, MaglevError, Member},
};

use crate::config::{Config, Protocol, Scheduler, Service};

/// The content of every map for one config.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// One entry per service, in config order; its index is its id.
    pub services: Vec<PlannedService>,
    /// Backend records; the index is the backend id.
    pub backends: Vec<BackendRecord>,
    /// Slots the Maglev map needs: every service's table twice (one region
    /// live, one to write the next table into, for an atomic swap).
    pub maglev_slots: u32,
}

/// One service's map entries.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedService {
    /// The config name.
    pub name: String,
    /// The services-map key.
    pub key: ServiceKey,
    /// The services-map value (points at the live table region).
    pub record: ServiceRecord,
    /// Ids of this service's backends, in config order.
    pub backend_ids: Vec<u32>,
    /// The Maglev table: backend ids, `record.table_size` of them.
    pub table: Vec<u32>,
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
    check_limit("backends", cfg.backend_count(), MAX_BACKENDS)?;
    let mut backends = Vec::with_capacity(cfg.backend_count());
    let mut services = Vec::with_capacity(cfg.services.len());
    let mut next_base: u64 = 0;
    for (id, svc) in cfg.services.iter().enumerate() {
        let id = id as u32;
        let first = backends.len() as u32;
        backends.extend(svc.backends.iter().map(|b| backend_record(b.addr, id)));
        let backend_ids: Vec<u32> = (first..backends.len() as u32).collect();
        let members: Vec<Member> = svc
            .backends
            .iter()
            .zip(&backend_ids)
            .map(|(b, &id)| Member {
                id,
                addr: b.addr,
                weight: b.weight,
            })
            .collect();
        let table =
            maglev::build(&members, svc.table_size).map_err(|source| PlanError::Maglev {
                service: svc.name.clone(),
                source,
            })?;
        let base =
            u32::try_from(next_base).map_err(|_| PlanError::TablesTooLarge { slots: next_base })?;
        next_base += 2 * u64::from(svc.table_size);
        services.push(PlannedService {
            name: svc.name.clone(),
            key: service_key(svc),
            record: ServiceRecord {
                id,
                flags: service_flags(svc),
                table_size: svc.table_size,
                table_base: base,
            },
            backend_ids,
            table,
        });
    }
    let maglev_slots = u32::try_from(next_base.max(1))
        .map_err(|_| PlanError::TablesTooLarge { slots: next_base })?;
    Ok(Plan {
        services,
        backends,
        maglev_slots,
    })
}

fn check_limit(what: &'static str, count: usize, limit: u32) -> Result<(), PlanError> {
    if count > limit as usize {
        Err(PlanError::TooMany { what, count, limit })
    } else {
        Ok(())
    }
}

/// The services-map key of a service.
pub fn service_key(svc: &Service) -> ServiceKey {
    ServiceKey {
        vip: Addr::from(svc.vip.ip()),
        port_be: svc.vip.port().to_be(),
        proto: match svc.protocol {
            Protocol::Tcp => PROTO_TCP,
            Protocol::Udp => PROTO_UDP,
        },
        family: family(svc.vip),
    }
}

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
        assert_eq!(p.maglev_slots, 2 * 251 + 2 * 101);
        assert_eq!(web.backend_ids, vec![0, 1]);
        assert_eq!(dns.backend_ids, vec![2]);
        assert_eq!(p.backends[2].service_id, 1);
        assert_eq!(p.backends[1].port_be, 8080u16.to_be());
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
