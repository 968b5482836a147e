//! `lb flow`: which backend a flow gets and why, read from the live maps.

use std::net::SocketAddr;

use aya::maps::{Array, HashMap, MapData};
use lb_common::{
    abi::{
        BACKEND_DOWN, BackendRecord, FLOW_CLOSING, FLOW_OPENING, FlowKey, FlowValue, MAP_BACKENDS,
        MAP_FLOWS, MAP_MAGLEV, MAP_PENDING, NO_BACKEND, PROTO_TCP, SERVICE_HASH_CLIENT_IP,
        TICK_SHIFT,
    },
    hash::{client_hash, flow_hash, slot_for},
};

use super::State;
use crate::{config::Protocol, control::protocol::FlowReport, datapath::plan::service_key};

/// Explains where the flow `src` -> `dst` (`protocol`) goes.
pub(super) fn explain(
    st: &State,
    src: &str,
    dst: &str,
    protocol: &str,
) -> Result<FlowReport, String> {
    let src: SocketAddr = src.parse().map_err(|_| format!("{src:?} is not ip:port"))?;
    let dst: SocketAddr = dst.parse().map_err(|_| format!("{dst:?} is not ip:port"))?;
    let proto = match protocol {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        _ => return Err(format!("protocol {protocol:?}: use tcp or udp")),
    };
    if src.is_ipv4() != dst.is_ipv4() {
        return Err("source and destination are of different address families".into());
    }
    let (svc, planned) = st
        .config
        .services
        .iter()
        .zip(&st.plan.services)
        .find(|(s, _)| s.vip == dst && s.protocol == proto)
        .ok_or_else(|| {
            format!("{dst} ({protocol}) is no VIP of this balancer: its packets pass untouched")
        })?;
    let key = service_key(svc);
    let flow = FlowKey::between(src, dst, key.proto);
    if !crate::splice::sources::Policy::of(planned).admits(src.ip()) {
        return Ok(FlowReport {
            service: svc.name.clone(),
            backend: String::new(),
            source: "refused".into(),
            hash: 0,
            slot: 0,
            table_size: planned.record.table_size,
            why: format!(
                "{} is refused by the service's source lists ({}): every packet is dropped",
                src.ip(),
                svc.sources.describe()
            ),
        });
    }
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let dp = st
        .datapath
        .xdp()
        .ok_or("flow queries need XDP mode; in splice mode a flow is placed when it connects")?;
    let backends: Array<&MapData, BackendRecord> = dp.map(MAP_BACKENDS).map_err(|e| err(&e))?;
    let addr_of = |id: u32| -> Option<(String, BackendRecord)> {
        let r = backends.get(&id, 0).ok()?;
        Some((SocketAddr::new(r.addr.to_ip(r.family), u16::from_be(r.port_be)).to_string(), r))
    };
    let rec = planned.record;
    let hash = if rec.flags & SERVICE_HASH_CLIENT_IP != 0 {
        client_hash(&flow.src)
    } else {
        flow_hash(&flow)
    };
    let slot = slot_for(hash, rec.table_size).unwrap_or(0);
    let mut report = FlowReport {
        service: svc.name.clone(),
        backend: String::new(),
        source: "maglev".into(),
        hash,
        slot,
        table_size: rec.table_size,
        why: String::new(),
    };
    let flows: HashMap<&MapData, FlowKey, FlowValue> = dp.map(MAP_FLOWS).map_err(|e| err(&e))?;
    let timeouts = super::flow_timeouts(&st.config, false);
    let now = crate::datapath::flows::now_ticks();
    // Answered flows first, then those not answered yet, as the datapath
    // looks (see lb-ebpf's `flows`).
    let pending: HashMap<&MapData, FlowKey, FlowValue> =
        dp.map(MAP_PENDING).map_err(|e| err(&e))?;
    let found = match flows.get(&flow, 0) {
        Ok(v) if !v.expired(flow.proto, now, &timeouts) => Ok((v, "")),
        _ => pending.get(&flow, 0).map(|v| (v, ", not answered yet")),
    };
    if let Ok((pinned, unanswered)) = found
        && let Some((addr, r)) = addr_of(pinned.backend_id)
    {
        let idle =
            f64::from(now.wrapping_sub(pinned.last_seen)) * (1u64 << TICK_SHIFT) as f64 / 1e9;
        let state = match pinned.state {
            FLOW_OPENING => "opening",
            FLOW_CLOSING => "closing",
            _ => "established",
        };
        let state = format!("{state}{unanswered}");
        if pinned.expired(flow.proto, now, &timeouts) {
            report.why = format!(
                "pinned to {addr} until it expired ({state}, idle {idle:.0} s): the next packet \
                 is a new flow; "
            );
        } else if r.state == BACKEND_DOWN {
            report.why = format!("pinned to {addr}, which is down: the next packet is re-hashed; ");
        } else {
            report.source = "flow-table".into();
            let syn = if flow.proto == PROTO_TCP {
                "; a new connection from this port (a SYN) is balanced anew"
            } else {
                ""
            };
            report.why = format!(
                "flow-table hit: the flow is pinned to {addr} ({state}, idle {idle:.0} s{syn})"
            );
            report.backend = addr;
            return Ok(report);
        }
    }
    let maglev: Array<&MapData, u32> = dp.map(MAP_MAGLEV).map_err(|e| err(&e))?;
    let id = maglev.get(&(rec.table_base + slot), 0).map_err(|e| err(&e))?;
    let by = if rec.flags & SERVICE_HASH_CLIENT_IP != 0 { "client address" } else { "5-tuple" };
    match addr_of(id).filter(|_| id != NO_BACKEND) {
        Some((addr, _)) => {
            report.why += &format!(
                "new flow: hash of the {by} {hash:#010x} -> slot {slot} of {} -> {addr}",
                rec.table_size
            );
            report.backend = addr;
        }
        None => report.why += "new flow: no backend can take it (it would be dropped)",
    }
    Ok(report)
}
