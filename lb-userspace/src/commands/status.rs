//! `lb status`: the running balancer as a terminal table, or JSON.

use std::{fmt::Write as _, path::Path};

use anyhow::{Result, bail};
use lb_userspace::control::{
    Request, Response, client,
    protocol::{StatusReport, Traffic},
};

pub fn run(control: &Path, json: bool) -> Result<()> {
    let report = match client::request(control, &Request::Status)? {
        Response::Status(report) => report,
        Response::Error { message } => bail!("the agent could not report its status: {message}"),
        Response::Done { .. } | Response::Flow(_) => {
            bail!("the agent answered something other than a status")
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(())
}

fn render(r: &StatusReport) -> String {
    let mut out = String::new();
    let ifaces: Vec<String> =
        r.interfaces.iter().map(|i| format!("{} ({})", i.name, i.attach)).collect();
    let _ = writeln!(out, "mode {}   interfaces {}", r.mode, ifaces.join(", "));
    let _ = writeln!(
        out,
        "\n{:<28} {:<9} {:<6} {:<9} {:>6} {:>12} {:>14} {:>10}",
        "SERVICE / BACKEND", "STATE", "HEALTH", "ADMIN", "SLOTS", "PACKETS", "BYTES", "NEW FLOWS"
    );
    for s in &r.services {
        let name = format!("{} {} {}", s.name, s.vip, s.protocol);
        let _ = writeln!(out, "{}", row(&name, ["", "", "", ""], &s.traffic));
        for b in &s.backends {
            let name = format!("  {} w{}", b.addr, b.weight);
            let cols =
                [b.state.as_str(), b.health.as_str(), b.admin.as_str(), &b.slots.to_string()];
            let _ = writeln!(out, "{}", row(&name, cols, &b.traffic));
        }
    }
    let _ = writeln!(out, "\n{:<24} {:<8} {:>12}", "EXCEPTION", "ACTION", "PACKETS");
    for e in &r.exceptions {
        let _ = writeln!(out, "{:<24} {:<8} {:>12}", e.reason, e.action, e.packets);
    }
    out
}

/// One table row: name, [state, health, admin, slots], traffic.
fn row(name: &str, cols: [&str; 4], t: &Traffic) -> String {
    let [state, health, admin, slots] = cols;
    format!(
        "{name:<28} {state:<9} {health:<6} {admin:<9} {slots:>6} {:>12} {:>14} {:>10}",
        t.packets, t.bytes, t.new_flows
    )
}
