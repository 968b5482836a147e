//! The replies map: for each backend endpoint, the VIPs of the services it
//! serves, so the datapath can find the flow a packet from it answers.

use std::collections::HashMap;

use lb_common::abi::{Endpoint, Replies};

use super::plan::Plan;

/// The replies map `plan` calls for, and the backend endpoints that serve
/// more services than the datapath can try (their replies through the
/// services beyond [`lb_common::abi::MAX_REPLY_TARGETS`] are not translated; the config
/// check refuses such a config, so only backends removed by reloads and
/// re-added elsewhere can get here).
///
/// Backends removed by a reload stay in: their established flows still
/// need their replies translated. A backend whose service is gone does not:
/// that VIP is no longer balanced.
pub fn replies(plan: &Plan) -> (HashMap<Endpoint, Replies>, Vec<Endpoint>) {
    let mut out: HashMap<Endpoint, Replies> = HashMap::new();
    let mut over = Vec::new();
    for b in &plan.backends {
        let Some(svc) = plan.services.iter().find(|s| s.record.id == b.service_id) else {
            continue;
        };
        let from =
            Endpoint { addr: b.addr, port_be: b.port_be, proto: svc.key.proto, family: b.family };
        let r = out.entry(from).or_default();
        let n = r.count as usize;
        if r.vips.iter().take(n).any(|v| *v == svc.key) {
            continue;
        }
        match r.vips.get_mut(n) {
            Some(slot) => {
                *slot = svc.key;
                r.count += 1;
            }
            None => over.push(from),
        }
    }
    (out, over)
}

#[cfg(test)]
mod tests {
    use lb_common::abi::{
        Addr, BackendRecord, FAMILY_V4, MAX_REPLY_TARGETS, PROTO_TCP, ServiceRecord,
    };

    use super::*;
    use crate::datapath::plan::PlannedService;

    fn ep(last: u8, port: u16) -> Endpoint {
        Endpoint {
            addr: Addr::from_v4_bytes([10, 0, 0, last]),
            port_be: port.to_be(),
            proto: PROTO_TCP,
            family: FAMILY_V4,
        }
    }

    fn service(id: u32, vip: Endpoint) -> PlannedService {
        PlannedService {
            name: format!("s{id}"),
            key: vip,
            record: ServiceRecord { id, ..Default::default() },
            region_base: 0,
            backend_ids: vec![],
            weights: vec![],
            slots: vec![],
            table: vec![],
            proxy_protocol: false,
            allow: vec![],
            deny: vec![],
        }
    }

    fn backend(last: u8, service_id: u32) -> BackendRecord {
        let e = ep(last, 80);
        BackendRecord { addr: e.addr, port_be: e.port_be, family: FAMILY_V4, state: 0, service_id }
    }

    fn plan(services: Vec<PlannedService>, backends: Vec<BackendRecord>) -> Plan {
        Plan { services, backends, maglev_slots: 0, next_service_id: 0 }
    }

    #[test]
    fn a_backend_in_two_services_answers_for_both_vips_once_each() {
        let p = plan(
            vec![service(0, ep(100, 80)), service(1, ep(101, 80))],
            // Backend .1 in both services, and again under a second id in
            // service 0 (removed by a reload, then added back).
            vec![backend(1, 0), backend(1, 1), backend(1, 0), backend(2, 1)],
        );
        let (map, over) = replies(&p);
        assert!(over.is_empty());
        let r = &map[&ep(1, 80)];
        assert_eq!(r.count, 2);
        assert_eq!(&r.vips[..2], &[ep(100, 80), ep(101, 80)]);
        let r = &map[&ep(2, 80)];
        assert_eq!((r.count, r.vips[0]), (1, ep(101, 80)));
    }

    #[test]
    fn backends_of_removed_services_are_left_out_and_overflow_is_reported() {
        let services = (0..5).map(|i| service(i, ep(100 + i as u8, 80))).collect();
        let mut backends: Vec<_> = (0..5).map(|i| backend(1, i)).collect();
        backends.push(backend(9, 42));
        let (map, over) = replies(&plan(services, backends));
        assert_eq!(map[&ep(1, 80)].count, MAX_REPLY_TARGETS as u32);
        assert_eq!(over, vec![ep(1, 80)]);
        assert!(!map.contains_key(&ep(9, 80)));
    }
}
