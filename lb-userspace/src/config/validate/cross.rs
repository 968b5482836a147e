//! Rules between services: uniqueness of names and VIPs, backends that point
//! back at a VIP, backends shared by too many services, and the datapath's
//! capacity.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use super::report::{Issue, Report, Scope};
use super::service::Checked;
use super::values::identity;
use crate::config::model::{Mode, Protocol, ProxyProtocol};
use lb_common::abi::{MAX_BACKENDS, MAX_REPLY_TARGETS, MAX_SERVICES};

/// Checks the services as a whole, after each was checked on its own. A
/// backend's file (`backend_role`: a `[decap]` table) may have none.
pub(super) fn check(services: &[Checked], backend_role: bool, report: &mut Report) {
    if services.is_empty() && !backend_role {
        report.add(
            &Scope::FILE,
            Issue::new(
                "no [[service]] is defined, and an agent with nothing to serve is almost certainly \
                 a mistake",
                "add a [[service]] with a vip and at least one [[service.backend]]; see \
                 config/example.toml",
            ),
        );
    }
    limits(services, report);
    unique_names(services, report);
    let vips = unique_vips(services, report);
    backends_are_not_vips(services, &vips, report);
    shared_backends(services, report);
}

/// Only splice mode can send PROXY protocol headers: XDP rewrites packets
/// and cannot insert bytes into a stream. Backends set up to expect the
/// header would reject every XDP-forwarded connection, so `mode = "xdp"` is
/// refused here (and `auto` runs in splice mode, saying why).
pub(super) fn proxy_protocol_needs_splice(mode: Mode, services: &[Checked], report: &mut Report) {
    if mode != Mode::Xdp {
        return;
    }
    for service in services {
        if service.service.as_ref().is_some_and(|s| s.proxy_protocol != ProxyProtocol::None) {
            report.add(
                &service.scope,
                Issue::new(
                    "proxy_protocol is set, which only splice mode sends, but agent.mode = \"xdp\"",
                    "set agent.mode = \"splice\" (or \"auto\", which then runs in splice mode), \
                     or remove proxy_protocol: XDP keeps the client address as the packets' source",
                ),
            );
        }
    }
}

/// The datapath's maps are sized at load for these maxima; beyond them the
/// agent could not install the config at all.
fn limits(services: &[Checked], report: &mut Report) {
    let service_count = services.len();
    if service_count > MAX_SERVICES as usize {
        report.add(
            &Scope::FILE,
            Issue::new(
                format!("{service_count} services exceed the datapath's limit of {MAX_SERVICES}"),
                "remove services or split them across several agents",
            ),
        );
    }
    let backend_count: usize = services.iter().map(|s| s.backends.len()).sum();
    if backend_count > MAX_BACKENDS as usize {
        report.add(
            &Scope::FILE,
            Issue::new(
                format!("{backend_count} backends exceed the datapath's limit of {MAX_BACKENDS}"),
                "remove backends or split services across several agents",
            ),
        );
    }
}

/// Names select services in CLI commands and metrics, so each must pick one.
fn unique_names(services: &[Checked], report: &mut Report) {
    let mut first: HashMap<&str, usize> = HashMap::new();
    for (index, service) in services.iter().enumerate() {
        let Some(name) = service.name.as_deref() else {
            continue;
        };
        match first.get(name) {
            Some(&earlier) => report.add(
                &service.scope,
                Issue::new(
                    format!("the name is also used by service #{}", earlier + 1),
                    "give every service a unique name",
                ),
            ),
            None => {
                first.insert(name, index);
            }
        }
    }
}

/// Two services on one address, port and protocol would fight over the same
/// packets. Returns each VIP address with the first service that has it.
fn unique_vips(services: &[Checked], report: &mut Report) -> HashMap<(IpAddr, u16), usize> {
    let mut first = HashMap::new();
    let mut vips = HashMap::new();
    for (index, service) in services.iter().enumerate() {
        let Some((vip, protocol)) = service.vip else {
            continue;
        };
        match first.get(&(identity(vip), protocol)) {
            Some(&earlier) => report.add(
                &service.scope,
                Issue::new(
                    format!("vip {vip} ({protocol}) is also used by {}", other(services, earlier)),
                    "give each service its own address, port or protocol, or merge their backends \
                     into one service",
                ),
            ),
            None => {
                first.insert((identity(vip), protocol), index);
            }
        }
        vips.entry(identity(vip)).or_insert(index);
    }
    vips
}

/// A backend at a VIP would send traffic back into the balancer, forever.
fn backends_are_not_vips(
    services: &[Checked],
    vips: &HashMap<(IpAddr, u16), usize>,
    report: &mut Report,
) {
    for backend in services.iter().flat_map(|s| &s.backends) {
        let Some(&owner) = backend.addr.and_then(|addr| vips.get(&identity(addr))) else {
            continue;
        };
        report.add(
            &backend.scope,
            Issue::new(
                format!(
                    "addr is the VIP of {}, so traffic would loop through the balancer",
                    other(services, owner)
                ),
                "use the address of the real server behind the VIP",
            ),
        );
    }
}

/// A reply from a backend is matched to its flow by trying each VIP the
/// backend serves, and the datapath records at most [`MAX_REPLY_TARGETS`]
/// of them per endpoint: beyond that, replies to some services would not be
/// translated back. Reported once per endpoint, at its backend in the first
/// service over the limit.
fn shared_backends(services: &[Checked], report: &mut Report) {
    /// One backend endpoint and the services using it, each with the
    /// backend's scope there.
    struct Endpoint<'a> {
        addr: SocketAddr,
        protocol: Protocol,
        users: Vec<(usize, &'a Scope)>,
    }
    // In file order, so problems come out in a stable order.
    let mut endpoints: Vec<Endpoint> = Vec::new();
    let mut position: HashMap<((IpAddr, u16), Protocol), usize> = HashMap::new();
    for (index, service) in services.iter().enumerate() {
        let Some((_, protocol)) = service.vip else { continue };
        for backend in &service.backends {
            let Some(addr) = backend.addr else { continue };
            let at = *position.entry((identity(addr), protocol)).or_insert_with(|| {
                endpoints.push(Endpoint { addr, protocol, users: Vec::new() });
                endpoints.len() - 1
            });
            let users = &mut endpoints[at].users;
            // A backend listed twice in one service is reported there.
            if users.last().is_none_or(|&(last, _)| last != index) {
                users.push((index, &backend.scope));
            }
        }
    }
    for Endpoint { addr, protocol, users } in endpoints {
        let Some(&(_, scope)) = users.get(MAX_REPLY_TARGETS) else { continue };
        // Enough names to find them in the file; a long list would bury the fix.
        let shown = MAX_REPLY_TARGETS + 1;
        let mut named: Vec<String> =
            users.iter().take(shown).map(|&(index, _)| other(services, index)).collect();
        if users.len() > shown {
            named.push(format!("and {} more", users.len() - shown));
        }
        report.add(
            scope,
            Issue::new(
                format!(
                    "{addr} ({protocol}) is a backend of {} services ({}), more than the \
                     {MAX_REPLY_TARGETS} whose replies the datapath can translate",
                    users.len(),
                    named.join(", ")
                ),
                format!(
                    "let at most {MAX_REPLY_TARGETS} services use {addr}; give the others another \
                     port or address of that server"
                ),
            ),
        );
    }
}

/// Another service as a message refers to it: by name and position, since
/// the name alone is ambiguous when names are duplicated too.
fn other(services: &[Checked], index: usize) -> String {
    match services.get(index).and_then(|s| s.name.as_deref()) {
        Some(name) => format!("service \"{name}\" (#{})", index + 1),
        None => format!("service #{}", index + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{accepted, problems, refused, service};

    #[test]
    fn no_services() {
        for text in ["", "[agent]\ninterfaces = [\"eth0\"]\n"] {
            refused(
                text,
                &["lb.toml: no [[service]] is defined", "almost certainly", "config/example.toml"],
            );
        }
    }

    #[test]
    fn duplicate_names() {
        let text = service("web", "10.0.0.100:80", "10.0.1.1:80")
            + &service("web", "10.0.0.101:80", "10.0.1.1:80");
        refused(&text, &["service \"web\": the name is also used by service #1", "unique name"]);
    }

    #[test]
    fn duplicate_vips_need_the_same_protocol() {
        let text = service("a", "10.0.0.100:80", "10.0.1.1:80")
            + &service("b", "10.0.0.100:80", "10.0.1.2:80");
        refused(
            &text,
            &[
                "service \"b\": vip 10.0.0.100:80 (tcp) is also used by service \"a\"",
                "own address, port or protocol",
            ],
        );
        let udp = service("b", "10.0.0.100:80", "10.0.1.2:80").replacen(
            "vip",
            "protocol = \"udp\"\nvip",
            1,
        );
        let text = service("a", "10.0.0.100:80", "10.0.1.1:80") + &udp;
        assert_eq!(accepted(&text).services.len(), 2);
    }

    #[test]
    fn backend_at_a_vip_loops() {
        let text = service("a", "10.0.0.100:80", "10.0.1.1:80")
            + &service("b", "10.0.0.101:80", "10.0.0.100:80");
        refused(
            &text,
            &[
                "service \"b\" backend \"10.0.0.100:80\": addr is the VIP of service \"a\"",
                "loop",
                "real server",
            ],
        );
        refused(&service("a", "10.0.0.100:80", "10.0.0.100:80"), &["VIP of service \"a\""]);
    }

    #[test]
    fn a_backend_serves_at_most_four_services() {
        let services = |count: u8| -> String {
            (1..=count)
                .map(|i| service(&format!("s{i}"), &format!("10.0.0.{i}:80"), "10.0.1.1:80"))
                .collect()
        };
        assert_eq!(accepted(&services(4)).services.len(), 4);
        refused(
            &services(6),
            &[
                "service \"s5\" backend \"10.0.1.1:80\": 10.0.1.1:80 (tcp) is a backend of 6 \
                 services (service \"s1\" (#1), service \"s2\" (#2)",
                "service \"s5\" (#5), and 1 more), more than the 4",
                "let at most 4 services use 10.0.1.1:80",
            ],
        );
        // Another port or protocol is another endpoint.
        let text = services(4) + &service("s5", "10.0.0.5:80", "10.0.1.1:81");
        accepted(&text);
        let udp = service("u", "10.0.0.1:80", "10.0.1.1:80").replacen(
            "vip",
            "protocol = \"udp\"\nvip",
            1,
        );
        accepted(&(services(4) + &udp));
    }

    #[test]
    fn too_many_services() {
        let text: String = (0..=lb_common::abi::MAX_SERVICES)
            .map(|i| {
                let addr = |net: u8| format!("10.{net}.{}.{}:80", i / 256, i % 256);
                service(&format!("s{i}"), &addr(1), &addr(2))
            })
            .collect();
        let problems = problems(&text);
        assert_eq!(problems.len(), 1, "{:?}", &problems[..3.min(problems.len())]);
        assert!(
            problems[0].contains("1025 services exceed the datapath's limit of 1024"),
            "{}",
            problems[0]
        );
    }
}
