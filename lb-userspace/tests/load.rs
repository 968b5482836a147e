//! The embedded object loads through the verifier and takes a config's maps.
//! Needs root (BPF); `cargo xtask test` runs as root.

use std::path::Path;

use lb_userspace::{config, datapath, object};

#[test]
fn demo_config_loads_and_applies() {
    let cfg = config::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/demo.toml"))
        .expect("demo config");
    let plan = datapath::plan(&cfg).expect("plan");
    let obj = object::resolve(None).expect("embedded object: run `cargo xtask build-ebpf` first");
    let mut dp = datapath::Datapath::load(
        &obj,
        &plan,
        datapath::LoadOptions { flow_capacity: 1024, pins: None },
    )
    .expect("load");
    dp.apply(&plan).expect("apply");
    // What the maps hold is the plan: every service record, backend
    // record, table slot and reply entry.
    use aya::maps::{Array, HashMap, MapData};
    use lb_common::abi::{
        BackendRecord, Endpoint, MAP_BACKENDS, MAP_MAGLEV, MAP_REPLIES, MAP_SERVICES, Replies,
        ServiceKey, ServiceRecord,
    };
    let services: HashMap<&MapData, ServiceKey, ServiceRecord> = dp.map(MAP_SERVICES).unwrap();
    let backends: Array<&MapData, BackendRecord> = dp.map(MAP_BACKENDS).unwrap();
    let maglev: Array<&MapData, u32> = dp.map(MAP_MAGLEV).unwrap();
    assert!(!plan.services.is_empty());
    for svc in &plan.services {
        assert_eq!(services.get(&svc.key, 0).expect("service record"), svc.record, "{}", svc.name);
        for (slot, &id) in svc.table.iter().enumerate() {
            let at = svc.record.table_base + slot as u32;
            assert_eq!(maglev.get(&at, 0).expect("slot"), id, "{} slot {slot}", svc.name);
        }
    }
    for (id, b) in plan.backends.iter().enumerate() {
        assert_eq!(backends.get(&(id as u32), 0).expect("backend"), *b);
    }
    let replies: HashMap<&MapData, Endpoint, Replies> = dp.map(MAP_REPLIES).unwrap();
    let (want, over) = datapath::replies::replies(&plan);
    assert!(over.is_empty());
    assert_eq!(replies.keys().count(), want.len());
    for (k, v) in &want {
        assert_eq!(replies.get(k, 0).expect("reply entry"), *v);
    }
}

/// The map names lb-common declares are exactly the object's: pinning and
/// every map lookup go by these names, and a mismatch would be silent
/// (a map not pinned) or fail only at run time.
#[test]
fn the_object_has_exactly_the_maps_lb_common_names() {
    let obj = object::resolve(None).expect("embedded object: run `cargo xtask build-ebpf` first");
    let ebpf = aya::EbpfLoader::new()
        .map_max_entries(lb_common::abi::MAP_FLOWS, 16)
        .load(&obj.bytes)
        .expect("load");
    // Sections such as `.rodata.cst4` are the compiler's constants, which
    // aya loads as read-only maps: no state, nothing to pin or look up.
    // `lb trace`'s ring (aya-log's `AYA_LOGS`) and switch belong to each
    // loaded program, never pinned: present, but not in `ALL_MAPS`.
    let all: Vec<&str> = ebpf.maps().map(|(name, _)| name).collect();
    for own in [lb_common::abi::MAP_TRACE_ON, "AYA_LOGS"] {
        assert!(all.contains(&own), "{own} missing from {all:?}");
    }
    let mut in_object: Vec<&str> =
        all.into_iter().filter(|n| !n.starts_with('.') && *n != "AYA_LOGS").collect();
    in_object.sort_unstable();
    // The balancer's maps and `lb decap`'s, each pinned by its own command.
    let mut declared = lb_common::abi::ALL_MAPS.to_vec();
    declared.extend(lb_common::abi::DECAP_MAPS);
    declared.extend(lb_common::abi::UNPINNED_MAPS);
    declared.sort_unstable();
    assert_eq!(in_object, declared);
}
