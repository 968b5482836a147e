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
    let ifaces: Vec<String> = r
        .interfaces
        .iter()
        .map(|i| format!("{} ({})", i.name, i.attach))
        .collect();
    let _ = writeln!(out, "mode {}   interfaces {}", r.mode, ifaces.join(", "));
    let _ = writeln!(
        out,
        "\n{:<24} {:<8} {:>6} {:>12} {:>14} {:>10}",
        "SERVICE / BACKEND", "STATE", "SLOTS", "PACKETS", "BYTES", "NEW FLOWS"
    );
    for s in &r.services {
        let _ = writeln!(
            out,
            "{}",
            row(
                &format!("{} {} {}", s.name, s.vip, s.protocol),
                "",
                "",
                &s.traffic
            )
        );
        for b in &s.backends {
            let _ = writeln!(
                out,
                "{}",
                row(
                    &format!("  {} w{}", b.addr, b.weight),
                    &b.state,
                    &b.slots.to_string(),
                    &b.traffic
                )
            );
        }
    }
    let _ = writeln!(
        out,
        "\n{:<24} {:<8} {:>12}",
        "EXCEPTION", "ACTION", "PACKETS"
    );
    for e in &r.exceptions {
        let _ = writeln!(out, "{:<24} {:<8} {:>12}", e.reason, e.action, e.packets);
    }
    out
}

fn row(name: &str, state: &str, slots: &str, t: &Traffic) -> String {
    format!(
        "{:<24} {:<8} {:>6} {:>12} {:>14} {:>10}",
        name, state, slots, t.packets, t.bytes, t.new_flows
    )
}
