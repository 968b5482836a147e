//! Which backend a flow must reach, computed from the userspace Maglev plan
//! the way the datapath computes it, so a test can check every flow landed
//! exactly there.

use lb_common::{
    abi::{Addr, FlowKey},
    hash::{client_hash, flow_hash, slot_for},
};
use lb_userspace::datapath::Plan;

/// The name (`b<i>`, as lbt-server answers) of backend `id` of `plan`: `i`
/// is the third group of its address, 10.200.<i>.1 or fd00:200:<i>::1.
pub fn name(plan: &Plan, id: u32) -> String {
    let b = &plan.backends[id as usize];
    let i = match b.addr.to_ip(b.family) {
        std::net::IpAddr::V4(a) => u16::from(a.octets()[2]),
        std::net::IpAddr::V6(a) => a.segments()[2],
    };
    format!("b{i}")
}

/// The name of the backend `service` of `plan` gives the flow `key` (hash
/// of the 5-tuple).
pub fn backend(plan: &Plan, service: &str, key: &FlowKey) -> String {
    let svc = plan.services.iter().find(|s| s.name == service).expect("service");
    let slot = slot_for(flow_hash(key), svc.record.table_size).expect("table");
    name(plan, svc.table[slot as usize])
}

/// The name of the backend a client-affinity `service` of `plan` gives
/// every connection from `client` (hash of the client address only).
pub fn backend_for_client(plan: &Plan, service: &str, client: std::net::IpAddr) -> String {
    let svc = plan.services.iter().find(|s| s.name == service).expect("service");
    let slot = slot_for(client_hash(&Addr::from(client)), svc.record.table_size).expect("table");
    name(plan, svc.table[slot as usize])
}
