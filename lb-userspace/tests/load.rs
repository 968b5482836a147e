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
    let totals = datapath::stats::read(&dp, plan.services.len() as u32, plan.backends.len() as u32)
        .expect("counters");
    assert!(totals.services.iter().all(|c| c.packets == 0));
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
    let mut in_object: Vec<&str> = ebpf.maps().map(|(name, _)| name).collect();
    in_object.sort_unstable();
    let mut declared = lb_common::abi::ALL_MAPS.to_vec();
    declared.sort_unstable();
    assert_eq!(in_object, declared);
}
