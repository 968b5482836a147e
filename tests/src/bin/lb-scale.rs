//! `cargo xtask bench agent`: the agent at scale.
//!
//! 1. Rebuild + swap: one service with 1000 backends (table 65537) loaded in
//!    the kernel; each round takes one backend down: new plan (Maglev
//!    rebuild) and write (table to the idle half, record switch), timed.
//! 2. Memory: `lb run` with 100 services x 100 backends (TCP probes every
//!    second to unroutable addresses, failing at once: 10 000 probes/s), its
//!    resident memory read from /proc after 5 s; at the XDP hook (native, on
//!    a veth) and at the tc hook.

use std::{
    fmt::Write as _,
    time::{Duration, Instant},
};

use lb_common::abi::{BACKEND_ACTIVE, BACKEND_DOWN};
use lb_tests::{
    agent::{TempDir, lb_binary},
    netns::NetNs,
};
use lb_userspace::{
    config,
    datapath::{
        self, Datapath, LoadOptions,
        plan::{Effective, replan},
    },
    object,
};

fn main() {
    rebuild_and_swap();
    for attach in ["native", "tc"] {
        memory(attach);
    }
}

fn rebuild_and_swap() {
    let mut text = String::from("[[service]]\nname = \"big\"\nvip = \"10.100.0.1:80\"\n");
    for i in 0..1000 {
        let _ =
            write!(text, "[[service.backend]]\naddr = \"10.3.{}.{}:80\"\n", i / 250, 1 + i % 250);
    }
    let cfg = config::parse(&text, "scale.toml".as_ref()).expect("config");
    let mut plan = datapath::plan(&cfg).expect("plan");
    let obj = object::resolve(None).expect("embedded eBPF object");
    let mut dp =
        Datapath::load(&obj, &plan, LoadOptions { flow_capacity: 1024, pins: None }).expect("load");
    dp.apply(&plan).expect("apply");
    let mut times = Vec::new();
    for round in 0..30 {
        let down = cfg.services[0].backends[round * 7].addr;
        let start = Instant::now();
        let next = replan(&plan, &cfg, &|_, b| {
            if b.addr == down {
                Effective { state: BACKEND_DOWN, weight: 0 }
            } else {
                Effective { state: BACKEND_ACTIVE, weight: b.weight }
            }
        })
        .expect("replan");
        dp.apply_change(&plan, &next).expect("apply");
        times.push(start.elapsed());
        plan = next;
    }
    times.sort();
    println!(
        "rebuild + swap, 1 service x 1000 backends, table 65537, 30 rounds: median {:.2} ms, p99 {:.2} ms (goal < 5 ms)",
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1])
    );
}

/// The agent's memory with its datapath at the `attach` hook.
fn memory(attach: &str) {
    let ns = NetNs::new();
    ns.ip("link add lb0 type veth peer name lb1");
    ns.ip("link set lb0 up");
    ns.ip("link set lb1 up");
    let dir = TempDir::new();
    let mut text = format!(
        "[agent]\ninterfaces = [\"lb0\"]\nmode = \"xdp\"\nattach = \"{attach}\"\ncontrol_socket = \"{}\"\npin_dir = \"{}\"\n",
        dir.0.join("control.sock").display(),
        lb_tests::agent::pin_dir(&dir.0).display()
    );
    for s in 0..100 {
        let _ = write!(
            text,
            "[[service]]\nname = \"s{s}\"\nvip = \"10.100.{}.{}:80\"\n[service.health]\nkind = \"tcp\"\ninterval = \"1s\"\ntimeout = \"500ms\"\n",
            s / 250,
            1 + s % 250
        );
        for b in 0..100 {
            let _ = write!(text, "[[service.backend]]\naddr = \"10.210.{s}.{}:80\"\n", b + 1);
        }
    }
    let path = dir.0.join("scale.toml");
    std::fs::write(&path, text).expect("config");
    let lb = lb_binary();
    let mut child = ns
        .command(&[lb.to_str().expect("utf-8"), "run", "--config", path.to_str().expect("utf-8")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("lb run");
    std::thread::sleep(Duration::from_secs(5));
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .map(|l| l.split_whitespace().nth(1).unwrap_or("?").to_owned())
            .unwrap_or_else(|| "?".into())
    };
    println!(
        "memory, attach = {attach}, 100 services x 100 backends (TCP probes every 1 s): VmRSS {} kB (anon {} kB, file {} kB, shmem {} kB), threads {} (goal < 50 MB)",
        field("VmRSS:"),
        field("RssAnon:"),
        field("RssFile:"),
        field("RssShmem:"),
        field("Threads:")
    );
    let _ = child.kill();
    let _ = child.wait();
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
