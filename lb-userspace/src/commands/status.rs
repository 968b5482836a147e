//! `lb status`: the running balancer as a terminal table, or JSON.

use std::{
    fmt::Write as _,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use lb_userspace::control::{
    Request, Response,
    protocol::{StatusReport, Traffic},
};

use super::target::Target;

pub fn run(target: &Target, json: bool, rates: bool) -> Result<()> {
    let first = fetch(target)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&first)?);
        return Ok(());
    }
    if !rates {
        print!("{}", render(&first));
        return Ok(());
    }
    // Rates: two samples a second apart.
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    let second = fetch(target)?;
    print!("{}", render(&second));
    print!("{}", render_rates(&first, &second, started.elapsed().as_secs_f64()));
    Ok(())
}

fn fetch(target: &Target) -> Result<StatusReport> {
    match target.request(&Request::Status)? {
        Response::Status(report) => Ok(report),
        Response::Error { message } => bail!("the agent could not report its status: {message}"),
        Response::Done { .. } | Response::Flow(_) | Response::Trace { .. } => {
            bail!("the agent answered something other than a status")
        }
    }
}

/// Per-second rates between two reports of the same services.
fn render_rates(a: &StatusReport, b: &StatusReport, secs: f64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n{:<44} {:>12} {:>14} {:>12}",
        format!("RATES over {secs:.1} s"),
        "PACKETS/S",
        "BITS/S",
        "NEW FLOWS/S"
    );
    let rate = |x: u64, y: u64| y.saturating_sub(x) as f64 / secs;
    let line = |out: &mut String, name: &str, x: &Traffic, y: &Traffic| {
        let _ = writeln!(
            out,
            "{name:<44} {:>12.0} {:>14.0} {:>12.0}",
            rate(x.packets, y.packets),
            rate(x.bytes, y.bytes) * 8.0,
            rate(x.new_flows, y.new_flows)
        );
    };
    for sb in &b.services {
        let Some(sa) = a.services.iter().find(|s| s.name == sb.name) else { continue };
        line(
            &mut out,
            &format!("{} {} {}", sb.name, sb.vip, sb.protocol),
            &sa.traffic,
            &sb.traffic,
        );
        for bb in &sb.backends {
            if let Some(ba) = sa.backends.iter().find(|x| x.addr == bb.addr) {
                line(&mut out, &format!("  {}", bb.addr), &ba.traffic, &bb.traffic);
            }
        }
    }
    out
}

/// `vip routes local proto 252: 10.0.0.100/32, ...` (and the VIPs that
/// were already local).
fn vip_routes(v: &lb_userspace::control::protocol::VipRouteStatus) -> String {
    if v.setting != "local" {
        return format!("vip routes {} (agent.vip_routes: lb adds none)", v.setting);
    }
    let held = if v.held.is_empty() { "(none)".to_owned() } else { v.held.join(", ") };
    let mut line = format!("vip routes local proto {}: {held}", v.protocol);
    if !v.already_local.is_empty() {
        line += &format!("; already local: {}", v.already_local.join(", "));
    }
    line
}

/// `announce table 100 proto 252` and a line per VIP: announced or
/// withdrawn, and why.
fn announce(a: &lb_userspace::control::protocol::AnnounceStatus) -> String {
    let mut out = format!("announce table {} proto {}", a.table, a.protocol);
    if let Some(e) = &a.error {
        out += &format!(" (last change failed: {e})");
    }
    for v in &a.vips {
        let state = match (v.announced, v.servable) {
            (true, _) => "announced",
            (false, false) => "withdrawn",
            (false, true) => "withdrawn (not yet announced)",
        };
        out += &format!("\n  {:<24} {state}: {}", v.vip, v.why);
    }
    out
}

/// The flood-mode line: its state, the rate it is judged by, the threshold.
fn flood(f: &lb_userspace::control::protocol::FloodStatus) -> String {
    if f.on {
        format!(
            "flood mode ON for {:.1} s: {} new flows/s (on above flows.flood_threshold {}, off \
             below {} for 5 s){}",
            f.on_for_ms as f64 / 1000.0,
            f.rate,
            f.threshold,
            f.threshold / 2,
            if f.challenging {
                "; SYNs from sources not verified are challenged (syn_challenged, \
                 challenge_answered)"
            } else {
                ""
            }
        )
    } else {
        format!(
            "flood mode off: {} new flows/s (on above flows.flood_threshold {}; {} times so far)",
            f.rate, f.threshold, f.episodes
        )
    }
}

fn render(r: &StatusReport) -> String {
    let mut out = String::new();
    let ifaces: Vec<String> =
        r.interfaces.iter().map(|i| format!("{} ({})", i.name, i.attach)).collect();
    let _ = writeln!(out, "mode {}   interfaces {}", r.mode, ifaces.join(", "));
    if let Some(why) = &r.mode_reason {
        let _ = writeln!(out, "  ({why})");
    }
    for i in r.interfaces.iter().filter(|i| !i.why.is_empty()) {
        let _ = writeln!(out, "  {} at {}: {}", i.name, i.attach, i.why);
        if i.lost.total() > 0 {
            let _ = writeln!(
                out,
                "    lost frames: {} xdp_xmit, {} dropped ({})",
                i.lost.xdp_xmit_errors,
                i.lost.dropped,
                lb_userspace::datapath::lost::advice(&i.name, &i.attach, &i.lost)
            );
        }
    }
    let _ = writeln!(out, "{}", vip_routes(&r.vip_routes));
    if let Some(a) = &r.announce {
        let _ = writeln!(out, "{}", announce(a));
    }
    if let Some(what) = &r.trace {
        let _ = writeln!(out, "lb trace running: {what}");
    }
    let _ = writeln!(out, "{}", flood(&r.flood));
    if let Some(d) = r.descriptors {
        let _ = writeln!(
            out,
            "splice descriptors: {} of {} in use{}",
            d.used,
            d.budget,
            if d.used >= d.budget {
                " (at the budget: new connections wait; raise the open-file limit)"
            } else {
                ""
            }
        );
    }
    if r.probes_skipped > 0 {
        let _ = writeln!(
            out,
            "health probes: {} rounds skipped, this host could not probe (out of descriptors?): \
             backends kept the health they had; see the log",
            r.probes_skipped
        );
    }
    let _ = writeln!(
        out,
        "\n{:<28} {:<9} {:<6} {:<9} {:>6} {:>12} {:>14} {:>10} {:>8} {:>8}",
        "SERVICE / BACKEND",
        "STATE",
        "HEALTH",
        "ADMIN",
        "SLOTS",
        "PACKETS",
        "BYTES",
        "NEW FLOWS",
        "ACTIVE",
        "CLOSING"
    );
    for s in &r.services {
        let name = format!("{} {} {}", s.name, s.vip, s.protocol);
        let _ = writeln!(out, "{}", row(&name, ["", "", "", "", "", ""], &s.traffic));
        if let Some(d) = &s.dns {
            let _ = writeln!(out, "  {}", dns_line(d));
        }
        if !s.sources.is_empty() || s.acl_denied + s.rate_limited > 0 {
            let _ = writeln!(
                out,
                "  sources: {}   acl_denied {}   rate_limited {}",
                if s.sources.is_empty() { "everyone, unlimited" } else { &s.sources },
                s.acl_denied,
                s.rate_limited
            );
        }
        for b in &s.backends {
            // The record it came from when that says more than the name
            // (an SRV target).
            let from = match (&b.dns, &s.dns) {
                (Some(r), Some(d)) if *r != d.name => format!(" dns {r}"),
                (Some(_), _) => " dns".to_owned(),
                (None, _) => String::new(),
            };
            let name = format!("  {} w{}{from}", b.addr, b.weight);
            let cols = [
                b.state.as_str(),
                b.health.as_str(),
                b.admin.as_str(),
                &b.slots.to_string(),
                &b.active_flows.to_string(),
                &b.closing_flows.to_string(),
            ];
            let _ = writeln!(out, "{}", row(&name, cols, &b.traffic));
        }
    }
    if r.mode == "xdp" && r.flows_age_ms != u64::MAX {
        let _ = writeln!(out, "(active and closing flows as of {} ms ago)", r.flows_age_ms);
    }
    // Packets in XDP mode; connections for the splice proxy's own reasons.
    let _ = writeln!(out, "\n{:<30} {:<12} {:>12}", "EXCEPTION", "ACTION", "COUNT");
    for e in &r.exceptions {
        let _ = writeln!(out, "{:<30} {:<12} {:>12}", e.reason, e.action, e.packets);
    }
    out
}

/// `dns web.example (a) via 10.0.0.53:53: 3 backends, ok 2s ago; 1 failure, 0 empty; last
/// error 5s ago: ...`
fn dns_line(d: &lb_userspace::control::protocol::DnsStatus) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let ago = |ms: Option<u64>| match ms {
        Some(at) => format!("{:.1}s ago", now.saturating_sub(at) as f64 / 1e3),
        None => "never".to_owned(),
    };
    let mut line = format!(
        "dns {} ({}) via {}: {} backends, last answer {}, {} resolutions, {} changes, {} failures, \
         {} empty",
        d.name,
        d.kind,
        d.resolver,
        d.backends,
        ago(d.last_success_unix_ms),
        d.resolutions,
        d.changes,
        d.failures,
        d.empty
    );
    if let Some(e) = &d.last_error {
        line += &format!("; last error {}: {e}", ago(d.last_error_unix_ms));
    }
    line
}

/// One table row: name, [state, health, admin, slots, active, closing],
/// traffic.
fn row(name: &str, cols: [&str; 6], t: &Traffic) -> String {
    let [state, health, admin, slots, active, closing] = cols;
    format!(
        "{name:<28} {state:<9} {health:<6} {admin:<9} {slots:>6} {:>12} {:>14} {:>10} \
         {active:>8} {closing:>8}",
        t.packets, t.bytes, t.new_flows
    )
}
