//! The status report: config, plan, runtime state and counters together.

use lb_common::abi::{Counters, DropReason};

use super::{State, runtime::state_name};
use crate::{
    control::protocol::{
        BackendStatus, DnsStatus, ExceptionStatus, FloodStatus, InterfaceStatus, ServiceStatus,
        StatusReport, Traffic,
    },
    datapath::{DatapathError, flows::FlowCounts},
    health::Health,
};

pub(super) fn report(
    st: &State,
    interfaces: &[InterfaceStatus],
    mode_reason: Option<&str>,
    (flows, flows_age_ms): &(std::sync::Arc<FlowCounts>, u64),
    flood: &FloodStatus,
) -> Result<StatusReport, DatapathError> {
    let totals = st.datapath.totals(&st.plan.service_ids(), st.plan.backends.len() as u32)?;
    let services = st
        .config
        .services
        .iter()
        .zip(&st.plan.services)
        .map(|(svc, planned)| ServiceStatus {
            name: svc.name.clone(),
            vip: svc.vip.to_string(),
            protocol: svc.protocol.to_string(),
            scheduler: svc.scheduler.to_string(),
            traffic: traffic(totals.services.get(planned.record.id as usize)),
            sources: svc.sources.describe(),
            acl_denied: totals.services.get(planned.record.id as usize).map_or(0, |c| c.acl_denied),
            rate_limited: totals
                .services
                .get(planned.record.id as usize)
                .map_or(0, |c| c.rate_limited),
            backends: svc
                .backends
                .iter()
                .zip(&planned.backend_ids)
                .enumerate()
                .map(|(i, (b, &id))| {
                    let rt = st.runtimes.get(&(svc.name.clone(), b.addr));
                    BackendStatus {
                        addr: b.addr.to_string(),
                        dns: b.dns.clone(),
                        weight: rt.and_then(|r| r.weight).unwrap_or(b.weight),
                        state: st
                            .plan
                            .backends
                            .get(id as usize)
                            .map_or("down", |r| state_name(r.state))
                            .to_owned(),
                        health: match rt.map(|r| r.tracker.health()) {
                            Some(Health::Down) => "down",
                            _ => "up",
                        }
                        .to_owned(),
                        admin: rt.map_or("enabled", |r| r.admin.name()).to_owned(),
                        transitions: rt.map_or(0, |r| r.transitions),
                        slots: planned.slots.get(i).copied().unwrap_or(0),
                        traffic: traffic(totals.backends.get(id as usize)),
                        active_flows: flows.get(&id).map_or(0, |l| l.active),
                        closing_flows: flows.get(&id).map_or(0, |l| l.closing),
                    }
                })
                .collect(),
            dns: dns_status(svc, st.dns.get(&svc.name)),
        })
        .collect();
    let exceptions =
        DropReason::ALL
            .iter()
            .zip(&totals.exceptions)
            .map(|(r, &packets)| ExceptionStatus {
                reason: r.name().to_owned(),
                action: action_here(*r, st.datapath.mode()).to_owned(),
                packets,
            })
            .chain(totals.proxy_exceptions.iter().map(|&(reason, action, packets)| {
                ExceptionStatus { reason: reason.to_owned(), action: action.to_owned(), packets }
            }))
            .collect();
    Ok(StatusReport {
        mode: st.datapath.mode().to_owned(),
        mode_reason: mode_reason.map(str::to_owned),
        interfaces: interfaces.to_vec(),
        services,
        exceptions,
        flows_age_ms: *flows_age_ms,
        vip_routes: st.routes.status(),
        announce: st.announcer.as_ref().map(crate::routes::announce::Announcer::status),
        trace: None,
        flood: FloodStatus {
            challenging: flood.on && st.config.flows.syn_challenge && st.datapath.xdp().is_some(),
            ..flood.clone()
        },
        probes_skipped: crate::health::scheduler::skipped(),
        descriptors: crate::splice::budget::limit().map(|budget| {
            crate::control::protocol::DescriptorStatus {
                used: crate::splice::budget::used(),
                budget,
            }
        }),
    })
}

/// The `lb status` view of a DNS service's state.
fn dns_status(
    svc: &crate::config::Service,
    st: Option<&crate::dns::DnsState>,
) -> Option<DnsStatus> {
    let dns = svc.dns.as_ref()?;
    let unix_ms = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
    };
    let st = st.cloned().unwrap_or_default();
    Some(DnsStatus {
        name: dns.name.clone(),
        kind: dns.records.name().to_owned(),
        resolver: dns.resolver.map_or("/etc/resolv.conf".to_owned(), |r| r.to_string()),
        interval_ms: dns.interval.as_millis() as u64,
        ttl_ms: st.ttl.map(|t| t.as_millis() as u64),
        allow_empty: dns.allow_empty,
        backends: svc.backends.iter().filter(|b| b.dns.is_some()).count() as u32,
        last_success_unix_ms: st.last_success.map(unix_ms),
        last_error: st.last_error.as_ref().map(|e| e.1.clone()),
        last_error_unix_ms: st.last_error.as_ref().map(|e| unix_ms(e.0)),
        resolutions: st.resolutions,
        changes: st.changes,
        failures: st.failures,
        empty: st.empty,
    })
}

fn traffic(c: Option<&Counters>) -> Traffic {
    let c = c.copied().unwrap_or_default();
    Traffic { packets: c.packets, bytes: c.bytes, new_flows: c.new_flows }
}

/// What `reason` does in `mode`: the kernel datapath drops a refused
/// packet, the splice proxy resets the connection it accepted.
fn action_here(reason: DropReason, mode: &str) -> &'static str {
    match reason {
        DropReason::AclDenied | DropReason::RateLimited if mode == "splice" => "refuse",
        _ => reason.action(),
    }
}
