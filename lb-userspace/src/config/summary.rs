//! The human summary `lb check` prints for a valid config.

use std::fmt;

use super::defaults::SLOTS_PER_BACKEND;
use super::duration::Written;
use super::model::{
    Config, DecapRole, Dns, DnsRecords, Forwarding, Health, HealthKind, Protocol, ProxyProtocol,
    Service,
};

impl Config {
    /// A printable summary: agent settings, then one row per service with its
    /// backends beneath, then a `config OK` line.
    pub fn summary(&self) -> Summary {
        Summary { config: self.clone() }
    }
}

/// What [`Config::summary`] returns: lines, each ending in a newline; print
/// it with `print!("{}", ...)`.
#[derive(Debug, Clone)]
pub struct Summary {
    config: Config,
}

const HEADERS: [&str; 6] = ["SERVICE", "VIP", "PROTO", "SCHEDULER", "TABLE", "HEALTH"];

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let config = &self.config;
        let agent = &config.agent;
        let interfaces = if agent.interfaces.is_empty() {
            "(none)".to_owned()
        } else {
            // An interface with a hook of its own shows it: `eth0 (native)`.
            let named: Vec<String> = agent
                .interfaces
                .iter()
                .map(|i| match agent.attach_by_interface.get(i) {
                    Some(a) => format!("{i} ({a})"),
                    None => i.clone(),
                })
                .collect();
            named.join(", ")
        };
        let metrics = agent.metrics_addr.map_or("off".to_owned(), |addr| addr.to_string());
        writeln!(f, "{}", config.source.display())?;
        // A backend's file: the role is all it runs.
        if let (true, Some(d)) = (config.services.is_empty(), &config.decap) {
            decap_lines(f, d)?;
            return writeln!(
                f,
                "config OK: a direct-server-return backend (lb decap --config), no services"
            );
        }
        writeln!(f, "agent")?;
        writeln!(f, "  mode            {} (attach {})", agent.mode, agent.attach)?;
        writeln!(f, "  interfaces      {interfaces}")?;
        writeln!(f, "  metrics         {metrics}")?;
        writeln!(f, "  control socket  {}", agent.control_socket.display())?;
        match agent.vip_routes {
            super::VipRoutes::Local => writeln!(
                f,
                "  vip routes      local (one per VIP address, dev lo table local proto {})",
                crate::routes::PROTOCOL
            )?,
            super::VipRoutes::None => writeln!(f, "  vip routes      none (managed outside lb)")?,
        }
        match agent.announce {
            Some(a) => writeln!(
                f,
                "  announce        table {} proto {} (a blackhole route per VIP while a backend \
                 of it is usable, for a routing daemon to export)",
                a.table, a.protocol
            )?,
            None => writeln!(f, "  announce        off")?,
        }
        if let Some(d) = &config.decap {
            decap_lines(f, d)?;
        }
        let sp = &config.splice;
        writeln!(
            f,
            "splice (when it runs)\n  connections     {} per service, connect {} x{}, idle {}, UDP idle {}, \
             shutdown {}",
            sp.max_connections,
            Written(sp.connect_timeout),
            sp.connect_tries,
            Written(sp.idle_timeout),
            Written(sp.udp_idle_timeout),
            Written(sp.shutdown_timeout)
        )?;
        let fl = &config.flows;
        writeln!(
            f,
            "flows (XDP)\n  idle timeouts   TCP {}, TCP closing {}, UDP {}\n  capacity        {} flows",
            Written(fl.tcp_idle_timeout),
            Written(fl.tcp_closing_timeout),
            Written(fl.udp_idle_timeout),
            fl.capacity
        )?;
        writeln!(f)?;

        let rows: Vec<[String; 6]> = config
            .services
            .iter()
            .map(|s| {
                [
                    s.name.clone(),
                    s.vip.to_string(),
                    s.protocol.to_string(),
                    s.scheduler.to_string(),
                    s.table_size.to_string(),
                    health(&s.health),
                ]
            })
            .collect();
        let mut widths = HEADERS.map(str::len);
        for row in &rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.len());
            }
        }
        write_row(f, &HEADERS.map(str::to_owned), &widths)?;
        for (row, service) in rows.iter().zip(&config.services) {
            write_row(f, row, &widths)?;
            if let Some(passive) = passive(service) {
                writeln!(f, "    passive: {passive}")?;
            }
            match (service.forwarding, service.tunnel_source) {
                (Forwarding::Nat, _) => {}
                (fwd, Some(src)) => {
                    let probes =
                        if service.health.tunnel { ", probed through the tunnel too" } else { "" };
                    writeln!(f, "    forwarding: {fwd} from {src}{probes}")?
                }
                (fwd, None) => writeln!(f, "    forwarding: {fwd}")?,
            }
            let sources = service.sources.describe();
            if !sources.is_empty() {
                writeln!(f, "    sources: {sources}")?;
            }
            if service.proxy_protocol != ProxyProtocol::None {
                writeln!(f, "    proxy_protocol {} (splice mode only)", service.proxy_protocol)?;
            }
            if let Some(dns) = &service.dns {
                writeln!(f, "    dns: {}", dns_line(dns))?;
            }
            for backend in &service.backends {
                writeln!(
                    f,
                    "    backend {:<w$}  weight {}",
                    backend.addr.to_string(),
                    backend.weight,
                    w = widths[1]
                )?;
            }
        }
        for service in &config.services {
            let slots = u64::from(service.table_size);
            let backends = service.backends.len() as u64;
            if slots < backends * SLOTS_PER_BACKEND {
                writeln!(
                    f,
                    "note: service \"{}\": table_size {slots} is under {SLOTS_PER_BACKEND} slots per \
                     backend for {backends} backends, so their shares will be uneven",
                    service.name
                )?;
            }
        }
        let services = config.services.len();
        let backends = config.backend_count();
        // Every line, the last included, ends in a newline, so the summary
        // can be printed as is.
        let names = config.services.iter().filter(|s| s.dns.is_some()).count();
        let from_dns = match names {
            0 => String::new(),
            n => format!(", plus those of {n} DNS name{}", plural(n)),
        };
        writeln!(
            f,
            "config OK: {services} service{}, {backends} backend{}{from_dns}",
            plural(services),
            plural(backends)
        )
    }
}

/// The `[decap]` role, a few lines.
fn decap_lines(f: &mut fmt::Formatter<'_>, d: &DecapRole) -> fmt::Result {
    let addresses = if d.addresses.is_empty() {
        "every address of the host".to_owned()
    } else {
        d.addresses.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    };
    writeln!(
        f,
        "decap (lb decap --config: a direct-server-return backend)\n  interfaces      {} \
         (attach {})\n  addresses       {addresses}\n  pins            {}",
        d.interfaces.join(", "),
        d.attach,
        d.pin_dir.display()
    )
}

/// What a `dns` table asks for, on one line.
fn dns_line(dns: &Dns) -> String {
    let records = match dns.records {
        DnsRecords::Address { port } => format!("A/AAAA {} port {port}", dns.name),
        DnsRecords::Srv => format!("SRV {}", dns.name),
    };
    let resolver = dns.resolver.map_or("/etc/resolv.conf".to_owned(), |r| r.to_string());
    let empty = if dns.allow_empty { "applied" } else { "keep the last set" };
    format!(
        "{records} every {} (or its TTL, at least {}) via {resolver}; empty answer or NXDOMAIN: {empty}",
        Written(dns.interval),
        Written(super::defaults::DNS_MIN_INTERVAL)
    )
}

fn write_row(f: &mut fmt::Formatter<'_>, row: &[String; 6], widths: &[usize; 6]) -> fmt::Result {
    let mut line = String::new();
    for (cell, &width) in row.iter().zip(widths) {
        line.push_str(&format!("{cell:<width$}  "));
    }
    writeln!(f, "{}", line.trim_end())
}

fn health(health: &Health) -> String {
    let probe = match &health.kind {
        HealthKind::None => return "none".to_owned(),
        HealthKind::Tcp => "tcp connect".to_owned(),
        HealthKind::Http { path, expect_status } => format!("http GET {path} -> {expect_status}"),
        HealthKind::Udp { send, expect } => {
            let expect = expect
                .as_ref()
                .map_or("any reply".to_owned(), |bytes| format!("\"{}\"", bytes.escape_ascii()));
            format!("udp \"{}\" -> {expect}", send.escape_ascii())
        }
    };
    format!(
        "{probe} every {} timeout {} rise {} fall {}",
        Written(health.interval),
        Written(health.timeout),
        health.rise,
        health.fall
    )
}

/// The passive signals of a TCP service (UDP services have none): a RST to
/// a forwarded SYN, and SYNs left unanswered. Both need probes to bring a
/// backend back, so without probes they are off.
fn passive(service: &Service) -> Option<String> {
    if service.protocol != Protocol::Tcp {
        return None;
    }
    let health = &service.health;
    Some(match (&health.kind, health.syn_unanswered) {
        (HealthKind::None, _) => "off (no probes)".to_owned(),
        (_, 0) => "RST to SYN; unanswered SYNs off".to_owned(),
        (_, count) => format!(
            "RST to SYN; {count} unanswered SYN{} after {}",
            plural(count as usize),
            Written(health.syn_timeout)
        ),
    })
}

fn plural(count: usize) -> &'static str {
    if count == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_proxy_protocol_service_says_so() {
        let text = "[[service]]\nname = \"web\"\nproxy_protocol = \"v2\"\nvip = \"10.0.0.1:80\"\n\
                    [[service.backend]]\naddr = \"10.0.1.1:80\"\n";
        let cfg = crate::config::parse(text, std::path::Path::new("lb.toml")).unwrap();
        let out = cfg.summary().to_string();
        assert!(out.contains("    proxy_protocol v2 (splice mode only)"), "{out}");
    }

    #[test]
    fn a_dns_service_says_what_it_resolves() {
        let text = "[[service]]\nname = \"web\"\nvip = \"10.0.0.1:80\"\n\
                    dns = { name = \"web.example\", port = 8080, resolver = \"10.0.0.53:53\" }\n";
        let cfg = crate::config::parse(text, std::path::Path::new("lb.toml")).unwrap();
        let out = cfg.summary().to_string();
        assert!(
            out.contains(
                "    dns: A/AAAA web.example port 8080 every 5s (or its TTL, at least 1s) via \
                 10.0.0.53:53; empty answer or NXDOMAIN: keep the last set\n"
            ),
            "{out}"
        );
        assert!(
            out.contains("config OK: 1 service, 0 backends, plus those of 1 DNS name\n"),
            "{out}"
        );
    }

    #[test]
    fn flows_and_the_syn_signal_are_shown() {
        let service = |health: &str| {
            format!(
                "[[service]]\nname = \"web\"\nvip = \"10.0.0.1:80\"\n[service.health]\n{health}\n\
                 [[service.backend]]\naddr = \"10.0.1.1:80\"\n"
            )
        };
        let summary = |text: &str| {
            crate::config::parse(text, std::path::Path::new("lb.toml"))
                .unwrap()
                .summary()
                .to_string()
        };
        let out = summary(&service(""));
        assert!(
            out.contains("flows (XDP)\n  idle timeouts   TCP 5m, TCP closing 10s, UDP 30s"),
            "{out}"
        );
        assert!(out.contains("    passive: RST to SYN; 3 unanswered SYNs after 25ms\n"), "{out}");
        let out = summary(&service("syn_unanswered = 1\nsyn_timeout = \"1s\""));
        assert!(out.contains("    passive: RST to SYN; 1 unanswered SYN after 1s\n"), "{out}");
        let out = summary(&service("syn_unanswered = 0"));
        assert!(out.contains("    passive: RST to SYN; unanswered SYNs off\n"), "{out}");
        let out = summary(&service("kind = \"none\""));
        assert!(out.contains("    passive: off (no probes)\n"), "{out}");
        let udp = service("").replacen("vip", "protocol = \"udp\"\nvip", 1);
        assert!(!summary(&udp).contains("passive"));
    }
}
