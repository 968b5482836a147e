//! A service's `forwarding` and `tunnel_source`, and what direct server
//! return asks of its backends.

use std::net::{IpAddr, SocketAddr};

use lb_common::encap::MAX_SOURCE_HOST_BITS;

use super::backend;
use super::report::{Issue, Report, Scope};
use super::values::choice;
use crate::config::model::{Forwarding, HealthKind};
use crate::config::prefix::Prefix;
use crate::config::unicast::not_a_source;

/// The forwarding of the service on `vip` (if it parsed) and, for
/// `dsr-ipip`, its tunnel source prefix.
pub(super) fn check(
    forwarding: Option<&str>,
    tunnel_source: Option<&str>,
    vip: Option<SocketAddr>,
    scope: &Scope,
    report: &mut Report,
) -> Option<(Forwarding, Option<Prefix>)> {
    let forwarding = report.take(
        scope,
        choice("forwarding", forwarding, Forwarding::Nat, Forwarding::ALL, Forwarding::name),
    )?;
    match (forwarding, tunnel_source) {
        (Forwarding::DsrIpip, None) => {
            let example = match vip {
                Some(v) if v.is_ipv6() => "\"fd00:9::/112\"",
                _ => "\"10.9.0.0/24\"",
            };
            report.add(
                scope,
                Issue::new(
                    "forwarding = \"dsr-ipip\" has no tunnel_source",
                    format!(
                        "add tunnel_source = {example}: an address (or prefix) of this host the \
                         backends accept tunnelled packets from; a prefix lets the outer source \
                         vary per flow so the backends' NICs spread them over their queues"
                    ),
                ),
            );
            None
        }
        (Forwarding::DsrIpip, Some(text)) => {
            let prefix = report.take(scope, tunnel_prefix(text, vip))?;
            Some((forwarding, Some(prefix)))
        }
        (_, Some(_)) => {
            report.add(
                scope,
                Issue::new(
                    format!(
                        "tunnel_source is set, but forwarding is \"{forwarding}\"; only \
                         \"dsr-ipip\" encapsulates"
                    ),
                    "remove tunnel_source, or set forwarding = \"dsr-ipip\"",
                ),
            );
            None
        }
        (_, None) => Some((forwarding, None)),
    }
}

fn tunnel_prefix(text: &str, vip: Option<SocketAddr>) -> Result<Prefix, Issue> {
    let prefix: Prefix = text.parse().map_err(|e| {
        Issue::new(
            format!("tunnel_source: {e}"),
            "write an address of this host, or a prefix of them, e.g. \"10.9.0.0/24\"",
        )
    })?;
    // The backend's kernel drops a tunnelled packet from such a source as
    // a martian: the connections it carries would time out. The flow hash
    // may pick any address of the prefix; the classes refused start and
    // end on boundaries no prefix of 16 host bits or fewer straddles, so
    // its two ends say it all.
    let (first, last) = prefix.range();
    let ip = |n: u128| match prefix.addr() {
        IpAddr::V4(_) => IpAddr::V4((n as u32).into()),
        IpAddr::V6(_) => IpAddr::V6(n.into()),
    };
    for (end, at) in [("starts at", ip(first)), ("ends at", ip(last))] {
        if let Some(why) = not_a_source(at) {
            return Err(Issue::new(
                format!("tunnel_source {prefix} {end} {at}, {why}, not an address of this host"),
                "give an address of this host the backends can answer, or a prefix of them, \
                 e.g. \"10.9.0.0/24\"",
            ));
        }
    }
    if let Some(vip) = vip
        && prefix.addr().is_ipv4() != vip.is_ipv4()
    {
        return Err(Issue::new(
            format!("tunnel_source {prefix} is not of the VIP's family"),
            "IPv4 travels in IPv4 and IPv6 in IPv6: give a tunnel_source of the VIP's family",
        ));
    }
    let family_bits = if prefix.addr().is_ipv4() { 32 } else { 128 };
    let host_bits = family_bits - prefix.bits();
    if host_bits > MAX_SOURCE_HOST_BITS {
        return Err(Issue::new(
            format!(
                "tunnel_source {prefix} leaves {host_bits} host bits; the outer source varies in \
                 at most {MAX_SOURCE_HOST_BITS}"
            ),
            format!("use a prefix of /{} or longer", family_bits - MAX_SOURCE_HOST_BITS),
        ));
    }
    Ok(prefix)
}

/// Whether the service's probes also go through the tunnel
/// (`health.tunnel`): on by default where they can (`dsr-ipip` with a probe
/// kind), since only that catches a backend without the VIP or without
/// `lb decap`; asking for it where it cannot apply is refused, as it would
/// silently do nothing.
pub(super) fn tunnel_probe(
    asked: Option<bool>,
    forwarding: Option<Forwarding>,
    kind: Option<&HealthKind>,
    scope: &Scope,
    report: &mut Report,
) -> Option<bool> {
    let (Some(forwarding), Some(kind)) = (forwarding, kind) else { return None };
    let can = forwarding == Forwarding::DsrIpip && *kind != HealthKind::None;
    match asked {
        Some(true) if !can => {
            let issue = if forwarding != Forwarding::DsrIpip {
                Issue::new(
                    format!(
                        "health.tunnel = true, but forwarding is \"{forwarding}\"; only \
                         \"dsr-ipip\" has a tunnel to probe through"
                    ),
                    "remove health.tunnel, or set forwarding = \"dsr-ipip\"",
                )
            } else {
                Issue::new(
                    "health.tunnel = true, but kind = \"none\" runs no probe",
                    "remove health.tunnel, or set a probe kind such as kind = \"tcp\"",
                )
            };
            report.add(scope, issue);
            None
        }
        Some(asked) => Some(asked && can),
        None => Some(can),
    }
}

/// With direct server return the packet keeps the VIP's port, so each
/// backend must serve on it.
pub(super) fn check_ports(
    forwarding: Forwarding,
    vip: SocketAddr,
    backends: &[backend::Checked],
    dns_port: Option<u16>,
    scope: &Scope,
    report: &mut Report,
) {
    if !forwarding.is_dsr() {
        return;
    }
    for b in backends.iter().filter_map(|b| b.backend.as_ref()) {
        if b.addr.port() != vip.port() {
            report.add(
                scope,
                Issue::new(
                    format!(
                        "backend {} has port {}, but with forwarding = \"{forwarding}\" packets \
                         keep the VIP's port {}",
                        b.addr,
                        b.addr.port(),
                        vip.port()
                    ),
                    format!(
                        "serve on port {} on the backend and write addr = \"{}\"",
                        vip.port(),
                        SocketAddr::new(b.addr.ip(), vip.port())
                    ),
                ),
            );
        }
    }
    if let Some(port) = dns_port
        && port != vip.port()
    {
        report.add(
            scope,
            Issue::new(
                format!(
                    "dns.port is {port}, but with forwarding = \"{forwarding}\" packets keep the \
                     VIP's port {}",
                    vip.port()
                ),
                format!("set dns.port = {}", vip.port()),
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{accepted, refused, service};
    use crate::config::model::{Forwarding, HealthKind};

    /// A service on 10.0.0.100:80 with one backend and `keys` added.
    fn web(keys: &str, backend: &str) -> String {
        service("web", "10.0.0.100:80", backend).replacen("vip", &format!("{keys}\nvip"), 1)
    }

    #[test]
    fn nat_is_the_default_and_each_mode_parses() {
        let c = accepted(&service("web", "10.0.0.100:80", "10.0.1.1:8080"));
        assert_eq!(c.services[0].forwarding, Forwarding::Nat);
        let c = accepted(&web("forwarding = \"dsr-l2\"", "10.0.1.1:80"));
        assert_eq!(
            (c.services[0].forwarding, c.services[0].tunnel_source),
            (Forwarding::DsrL2, None)
        );
        let c = accepted(&web(
            "forwarding = \"dsr-ipip\"\ntunnel_source = \"10.9.0.0/24\"",
            "10.0.1.1:80",
        ));
        let s = &c.services[0];
        assert_eq!(s.forwarding, Forwarding::DsrIpip);
        assert_eq!(s.tunnel_source.map(|p| p.to_string()), Some("10.9.0.0/24".into()));
    }

    #[test]
    fn each_mistake_names_the_field_and_the_fix() {
        refused(&web("forwarding = \"dsr\"", "10.0.1.1:80"), &["forwarding", "\"dsr-ipip\""]);
        refused(
            &web("forwarding = \"dsr-ipip\"", "10.0.1.1:80"),
            &["no tunnel_source", "tunnel_source = \"10.9.0.0/24\""],
        );
        refused(
            &web("tunnel_source = \"10.9.0.1\"", "10.0.1.1:80"),
            &["tunnel_source is set", "\"nat\"", "remove tunnel_source"],
        );
        refused(
            &web("forwarding = \"dsr-ipip\"\ntunnel_source = \"fd00::1\"", "10.0.1.1:80"),
            &["not of the VIP's family"],
        );
        refused(
            &web("forwarding = \"dsr-ipip\"\ntunnel_source = \"10.0.0.0/8\"", "10.0.1.1:80"),
            &["24 host bits", "/16 or longer"],
        );
        refused(
            &web("forwarding = \"dsr-ipip\"\ntunnel_source = \"10.9.0.1/24\"", "10.0.1.1:80"),
            &["tunnel_source", "bits set past its length"],
        );
        for (source, why) in [
            ("0.0.0.0/30", "starts at 0.0.0.0, the unspecified"),
            ("224.0.0.0/30", "multicast"),
            ("255.255.255.0/24", "ends at 255.255.255.255, the limited broadcast"),
            ("127.0.0.0/24", "loopback"),
            ("0.0.0.4/30", "0.0.0.0/8"),
        ] {
            refused(
                &web(
                    &format!("forwarding = \"dsr-ipip\"\ntunnel_source = \"{source}\""),
                    "10.0.1.1:80",
                ),
                &["tunnel_source", why, "not an address of this host"],
            );
        }
    }

    #[test]
    fn dsr_backends_must_serve_on_the_vips_port() {
        refused(
            &web("forwarding = \"dsr-l2\"", "10.0.1.1:8080"),
            &["backend 10.0.1.1:8080", "VIP's port 80", "addr = \"10.0.1.1:80\""],
        );
    }

    const DSR: &str = "forwarding = \"dsr-ipip\"\ntunnel_source = \"10.9.0.0/24\"";

    #[test]
    fn dsr_ipip_probes_through_the_tunnel_unless_told_not_to() {
        let tunnel = |keys: &str| accepted(&web(keys, "10.0.1.1:80")).services[0].health.tunnel;
        assert!(tunnel(DSR));
        assert!(!tunnel(&format!("{DSR}\nhealth = {{ tunnel = false }}")));
        assert!(tunnel(&format!("{DSR}\nhealth = {{ kind = \"http\", tunnel = true }}")));
        // Nothing to probe through, or no probe: off, whatever the kind.
        assert!(!tunnel(&format!("{DSR}\nhealth = {{ kind = \"none\" }}")));
        assert!(!tunnel("forwarding = \"dsr-l2\""));
        let c = accepted(&service("web", "10.0.0.100:80", "10.0.1.1:8080"));
        assert!(!c.services[0].health.tunnel);
        assert_eq!(c.services[0].health.kind, HealthKind::Tcp);
    }

    #[test]
    fn a_tunnel_probe_that_could_not_run_is_refused() {
        refused(
            &web("forwarding = \"dsr-l2\"\nhealth = { tunnel = true }", "10.0.1.1:80"),
            &["health.tunnel = true", "\"dsr-l2\"", "set forwarding = \"dsr-ipip\""],
        );
        refused(
            &web("health = { tunnel = true }", "10.0.1.1:80"),
            &["health.tunnel = true", "\"nat\""],
        );
        refused(
            &web(&format!("{DSR}\nhealth = {{ kind = \"none\", tunnel = true }}"), "10.0.1.1:80"),
            &["kind = \"none\" runs no probe", "kind = \"tcp\""],
        );
    }
}
