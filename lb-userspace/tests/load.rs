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
