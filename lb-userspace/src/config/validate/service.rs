//! `[[service]]`: one service's own fields and the rules between its backends.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::backend;
use super::dns;
use super::forwarding;
use super::health;
use super::report::{Issue, Report, Scope};
use super::sources;
use super::values::{choice, identity, nonzero_port, one_host, service_name, socket_addr};
use crate::config::defaults;
use crate::config::error::Subject;
use crate::config::model::{Health, Protocol, ProxyProtocol, Scheduler, Service};
use crate::config::raw::RawService;
use lb_common::maglev::{is_prime, next_prime};

const VIP_EXAMPLE: &str = "10.0.0.100:80";

/// One service after its own checks. Rules across services (duplicate names
/// and VIPs, backends pointing at a VIP) need the parts that did parse, so
/// they are kept even when the service as a whole is invalid.
#[derive(Debug)]
pub(super) struct Checked {
    pub(super) scope: Scope,
    pub(super) name: Option<String>,
    pub(super) vip: Option<(SocketAddr, Protocol)>,
    pub(super) backends: Vec<backend::Checked>,
    pub(super) service: Option<Service>,
}

/// Validates service number `index` (0-based).
pub(super) fn check(index: usize, raw: RawService, report: &mut Report) -> Checked {
    let name = service_name(raw.name.as_deref());
    let scope = Scope::service(match &name {
        Ok(name) => Subject::Named(name.clone()),
        Err(_) => Subject::Index(index + 1),
    });
    let before = report.count();
    let name = report.take(&scope, name);
    let vip = report.take(&scope, vip(raw.vip.as_deref()));
    let protocol = report.take(
        &scope,
        choice("protocol", raw.protocol.as_deref(), Protocol::Tcp, Protocol::ALL, Protocol::name),
    );
    let scheduler = report.take(
        &scope,
        choice(
            "scheduler",
            raw.scheduler.as_deref(),
            Scheduler::Maglev,
            Scheduler::ALL,
            Scheduler::name,
        ),
    );
    let proxy_protocol =
        report.take(&scope, proxy_protocol(raw.proxy_protocol.as_deref(), protocol));
    let tunnel_probe = raw.health.as_ref().and_then(|h| h.tunnel);
    let health = health::check(raw.health, protocol, &scope, report);
    let has_dns = raw.dns.is_some();
    let dns = raw.dns.map(|d| dns::check(d, &scope, report));
    let sources = sources::check(raw.allow, raw.deny, raw.new_flow_limit, vip, &scope, report);
    let forwarding = forwarding::check(
        raw.forwarding.as_deref(),
        raw.tunnel_source.as_deref(),
        vip,
        &scope,
        report,
    );
    let tunnel = forwarding::tunnel_probe(
        tunnel_probe,
        forwarding.map(|f| f.0),
        health.as_ref().map(|h| &h.kind),
        &scope,
        report,
    );
    let health = health.map(|h| Health { tunnel: tunnel.unwrap_or(false), ..h });
    let backend_count = raw.backend.len();
    let backends: Vec<backend::Checked> = raw
        .backend
        .into_iter()
        .enumerate()
        .map(|(index, raw)| backend::check(index, raw, vip, &scope, report))
        .collect();
    // A DNS service may start with none: its backends come from DNS.
    if backends.is_empty() && !has_dns {
        report.add(
            &scope,
            Issue::new(
                "it has no backends",
                "add at least one [[service.backend]] with addr = \"10.0.1.1:80\", \
                 or a dns table to resolve them from",
            ),
        );
    }
    duplicate_backends(&backends, report);
    if let (Some((fwd, _)), Some(vip)) = (forwarding, vip) {
        let dns_port = match &dns {
            Some(Some(d)) => match d.records {
                crate::config::model::DnsRecords::Address { port } => Some(port),
                crate::config::model::DnsRecords::Srv => None,
            },
            _ => None,
        };
        forwarding::check_ports(fwd, vip, &backends, dns_port, &scope, report);
    }
    let table_size = report.take(&scope, table_size(raw.table_size, backend_count));

    let all_backends: Option<Vec<_>> = backends.iter().map(|b| b.backend.clone()).collect();
    // A part can parse while a rule between parts fails (say, a duplicate
    // backend), so the service is built only if it added no problem.
    let built = || {
        Some(Service {
            name: name.clone()?,
            vip: vip?,
            protocol: protocol?,
            scheduler: scheduler?,
            table_size: table_size?,
            proxy_protocol: proxy_protocol?,
            health: health?,
            dns: match &dns {
                None => None,
                Some(checked) => Some(checked.clone()?),
            },
            sources: sources.clone()?,
            forwarding: forwarding?.0,
            tunnel_source: forwarding?.1,
            backends: all_backends?,
        })
    };
    let service = if report.count() == before { built() } else { None };
    Checked { scope, name, vip: vip.zip(protocol), backends, service }
}

/// PROXY protocol headers start a TCP stream; there is no stream to start
/// in UDP, and HAProxy, nginx and most backends only parse it on TCP.
fn proxy_protocol(text: Option<&str>, protocol: Option<Protocol>) -> Result<ProxyProtocol, Issue> {
    let value = choice(
        "proxy_protocol",
        text,
        ProxyProtocol::None,
        ProxyProtocol::ALL,
        ProxyProtocol::name,
    )?;
    if value == ProxyProtocol::V2 && protocol == Some(Protocol::Udp) {
        return Err(Issue::new(
            "proxy_protocol = \"v2\" is set on a UDP service; it applies to TCP only",
            "remove proxy_protocol from this service",
        ));
    }
    Ok(value)
}

fn vip(text: Option<&str>) -> Result<SocketAddr, Issue> {
    let text = text.ok_or_else(|| {
        Issue::new(
            "it has no vip",
            format!("add the address clients connect to, e.g. vip = \"{VIP_EXAMPLE}\""),
        )
    })?;
    let vip = socket_addr("vip", text, VIP_EXAMPLE)?;
    nonzero_port("vip", vip, VIP_EXAMPLE)?;
    one_host("vip", vip, VIP_EXAMPLE)?;
    Ok(vip)
}

/// A backend listed twice would get twice its share under one address, which
/// is never what the weight says; the later entry is the one reported.
fn duplicate_backends(backends: &[backend::Checked], report: &mut Report) {
    let mut first = HashMap::new();
    for (index, backend) in backends.iter().enumerate() {
        let Some(addr) = backend.addr else { continue };
        if let Some(&earlier) = first.get(&identity(addr)) {
            report.add(
                &backend.scope,
                Issue::new(
                    format!("it is listed twice in this service (also backend #{})", earlier + 1),
                    "remove one entry; to give it more traffic, raise its weight instead",
                ),
            );
        } else {
            first.insert(identity(addr), index);
        }
    }
}

/// Maglev needs a prime table size so every backend's permutation visits
/// every slot, and at least one slot per backend; the maximum keeps a
/// rebuild and the kernel map affordable (see `defaults::MAX_TABLE_SIZE`).
fn table_size(raw: Option<i64>, backends: usize) -> Result<u32, Issue> {
    let Some(raw) = raw else {
        return Ok(defaults::TABLE_SIZE);
    };
    let default = defaults::TABLE_SIZE;
    let max = defaults::MAX_TABLE_SIZE;
    let size = u32::try_from(raw).ok().filter(|&size| size > 0).ok_or_else(|| {
        Issue::new(
            format!("table_size = {raw} is not a positive 32-bit number"),
            format!("use a prime such as {default} (the default), or leave it out"),
        )
    })?;
    if size > max {
        return Err(Issue::new(
            format!(
                "table_size = {size} is above the maximum {max} ({per} slots for each \
                 backend the datapath can hold)",
                per = defaults::SLOTS_PER_BACKEND
            ),
            format!(
                "use table_size = {default} (the default), or a prime of about {per} x the \
                 service's backends, at most {max}",
                per = defaults::SLOTS_PER_BACKEND
            ),
        ));
    }
    let backends = u32::try_from(backends).unwrap_or(u32::MAX);
    if size < backends {
        let good = u64::from(backends) * defaults::SLOTS_PER_BACKEND;
        let suggestion = u32::try_from(good).ok().and_then(next_prime).unwrap_or(default).min(max);
        return Err(Issue::new(
            format!(
                "table_size = {size} is smaller than its {backends} backends, so some would get no traffic"
            ),
            format!(
                "use a prime of at least {backends}, e.g. table_size = {suggestion} \
                 ({} slots per backend balances well)",
                defaults::SLOTS_PER_BACKEND
            ),
        ));
    }
    if !is_prime(size) {
        let fix = match next_prime(size) {
            Some(prime) => format!("use the next prime, table_size = {prime}"),
            None => format!("use a smaller prime, e.g. table_size = {default}"),
        };
        return Err(Issue::new(
            format!(
                "table_size = {size} is not prime, which Maglev needs to fill its table evenly"
            ),
            fix,
        ));
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{accepted, problems, refused, service};
    use super::*;

    #[test]
    fn defaults() {
        let config = accepted(&service("web", "10.0.0.100:80", "10.0.1.1:80"));
        let web = &config.services[0];
        assert_eq!(web.protocol, Protocol::Tcp);
        assert_eq!(web.scheduler, Scheduler::Maglev);
        assert_eq!(web.table_size, defaults::TABLE_SIZE);
        assert_eq!(web.backends.len(), 1);
    }

    #[test]
    fn name_rules_name_the_service_by_position() {
        let text = "[[service]]\nname = \"web server\"\nvip = \"10.0.0.100:80\"\n\
                    [[service.backend]]\naddr = \"10.0.1.1:80\"\n";
        refused(
            text,
            &["lb.toml: service #1: name \"web server\" contains ' '", "letters, digits"],
        );
        let text = text.replace("web server", "");
        refused(&text, &["service #1: name is empty"]);
        let text =
            "[[service]]\nvip = \"10.0.0.100:80\"\n[[service.backend]]\naddr = \"10.0.1.1:80\"\n";
        refused(text, &["service #1: it has no name", "name = \"web\""]);
    }

    #[test]
    fn vip_rules() {
        refused(
            &service("web", "10.0.0.100", "10.0.1.1:80"),
            &["service \"web\": vip \"10.0.0.100\" is not", "\"10.0.0.100:80\""],
        );
        refused(
            &service("web", "10.0.0.100:0", "10.0.1.1:80"),
            &["service \"web\": vip 10.0.0.100:0 has port 0"],
        );
        refused(
            "[[service]]\nname = \"web\"\n[[service.backend]]\naddr = \"10.0.1.1:80\"\n",
            &["it has no vip", "vip = \"10.0.0.100:80\""],
        );
    }

    #[test]
    fn a_vip_must_be_one_host() {
        for (vip, backend, kind) in [
            ("0.0.0.0:80", "10.0.1.1:80", "the unspecified address"),
            ("255.255.255.255:80", "10.0.1.1:80", "the limited broadcast address"),
            ("224.0.0.1:5000", "10.0.1.1:80", "a multicast address"),
            ("[::]:80", "[2001:db8::1]:80", "the unspecified address"),
            ("[ff02::1]:80", "[2001:db8::1]:80", "a multicast address"),
            ("[::ffff:0.0.0.0]:80", "[2001:db8::1]:80", "the unspecified address"),
        ] {
            refused(
                &service("web", vip, backend),
                &[
                    &format!("service \"web\": vip {vip} is {kind}"),
                    "not one host",
                    "give one host's address, e.g. vip = \"10.0.0.100:80\"",
                ],
            );
        }
        // Loopback, and the neighbours of the refused addresses, are hosts.
        for vip in ["127.0.0.1:80", "0.0.0.1:80", "255.255.255.254:80", "[::1]:80"] {
            let backend = if vip.starts_with('[') { "[2001:db8::1]:80" } else { "10.0.1.1:80" };
            accepted(&service("web", vip, backend));
        }
    }

    #[test]
    fn protocol_and_scheduler() {
        let text = service("dns", "10.0.0.53:53", "10.0.1.1:53");
        let text =
            text.replacen("vip", "protocol = \"udp\"\nscheduler = \"maglev-client-ip\"\nvip", 1);
        let dns = &accepted(&text).services[0];
        assert_eq!((dns.protocol, dns.scheduler), (Protocol::Udp, Scheduler::MaglevClientIp));
        let text = text.replace("\"udp\"", "\"sctp\"");
        refused(&text, &["protocol \"sctp\" is not supported", "\"tcp\" or \"udp\""]);
    }

    #[test]
    fn no_backends() {
        refused(
            "[[service]]\nname = \"web\"\nvip = \"10.0.0.100:80\"\n",
            &["service \"web\": it has no backends", "[[service.backend]]"],
        );
    }

    #[test]
    fn duplicate_backend() {
        let text = service("web", "10.0.0.100:80", "10.0.1.1:80")
            + "[[service.backend]]\naddr = \"10.0.1.2:80\"\n[[service.backend]]\naddr = \"10.0.1.1:80\"\n";
        refused(
            &text,
            &[
                "service \"web\" backend \"10.0.1.1:80\": it is listed twice",
                "also backend #1",
                "raise its weight",
            ],
        );
    }

    fn with_table_size(size: i64, backends: usize) -> String {
        let mut text =
            format!("[[service]]\nname = \"web\"\nvip = \"10.0.0.100:80\"\ntable_size = {size}\n");
        for index in 0..backends {
            text += &format!("[[service.backend]]\naddr = \"10.0.1.{}:80\"\n", index + 1);
        }
        text
    }

    #[test]
    fn table_size_must_be_prime() {
        refused(
            &with_table_size(65536, 1),
            &["table_size = 65536 is not prime", "table_size = 65537"],
        );
        refused(&with_table_size(0, 1), &["table_size = 0 is not a positive"]);
        refused(&with_table_size(-7, 1), &["table_size = -7"]);
        refused(&with_table_size(1 << 33, 1), &["not a positive 32-bit"]);
    }

    #[test]
    fn table_size_has_a_maximum() {
        let max = defaults::MAX_TABLE_SIZE;
        // The largest 32-bit prime: accepted before, it made `lb run` try
        // to allocate 17 GB.
        refused(
            &with_table_size(4_294_967_291, 1),
            &[
                "service \"web\": table_size = 4294967291 is above the maximum 1638431",
                "use table_size = 65537 (the default)",
                "at most 1638431",
            ],
        );
        refused(&with_table_size(i64::from(max) + 1, 1), &["above the maximum 1638431"]);
        assert_eq!(accepted(&with_table_size(max.into(), 1)).services[0].table_size, max);
        // The maximum is prime, so it can be used as it is, and gives 100
        // slots to each backend the datapath can hold.
        let enough = lb_common::abi::MAX_BACKENDS * defaults::SLOTS_PER_BACKEND as u32;
        assert_eq!(next_prime(enough), Some(max));
    }

    #[test]
    fn table_size_must_cover_the_backends() {
        refused(
            &with_table_size(3, 4),
            &["table_size = 3 is smaller than its 4 backends", "table_size = 401"],
        );
        // Small but prime and not below the backend count: allowed, with a
        // note in the summary rather than an error.
        let config = accepted(&with_table_size(5, 5));
        assert_eq!(config.services[0].table_size, 5);
        assert!(config.summary().to_string().contains("uneven"));
    }

    #[test]
    fn every_problem_of_a_service_is_reported() {
        let text = "[[service]]\nname = \"web\"\nvip = \"10.0.0.100:80\"\nprotocol = \"x\"\n\
                    table_size = 4\n[service.health]\nrise = 0\n\
                    [[service.backend]]\naddr = \"10.0.1.1:80\"\nweight = 0\n\
                    [[service.backend]]\naddr = \"nope\"\n";
        let problems = problems(text);
        assert_eq!(problems.len(), 5, "{problems:#?}");
    }

    #[test]
    fn proxy_protocol_is_tcp_only_and_splice_only() {
        let tcp = "[[service]]\nname = \"web\"\nproxy_protocol = \"v2\"\nvip = \"10.0.0.100:80\"\n\
                   [[service.backend]]\naddr = \"10.0.1.1:80\"\n";
        assert_eq!(accepted(tcp).services[0].proxy_protocol, ProxyProtocol::V2);
        let default = accepted(&service("web", "10.0.0.100:80", "10.0.1.1:80"));
        assert_eq!(default.services[0].proxy_protocol, ProxyProtocol::None);
        refused(&tcp.replace("\"v2\"", "\"v1\""), &["proxy_protocol", "\"v1\"", "none"]);
        let udp = tcp.replacen("vip = ", "protocol = \"udp\"\nvip = ", 1);
        refused(&udp, &["proxy_protocol = \"v2\"", "UDP", "TCP only"]);
        let xdp = format!("[agent]\nmode = \"xdp\"\ninterfaces = [\"eth0\"]\n{tcp}");
        refused(&xdp, &["service \"web\"", "only splice mode sends", "agent.mode = \"splice\""]);
        let auto = format!("[agent]\nmode = \"auto\"\n{tcp}");
        accepted(&auto);
    }
}
