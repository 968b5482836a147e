//! The Prometheus text exposition of a status report.
//!
//! Names follow Prometheus conventions: `lb_` prefix, base units (bytes,
//! seconds), `_total` on counters. Every metric has HELP and TYPE lines;
//! `promtool check metrics` (Prometheus 2.42, Debian 12) finds nothing to
//! lint in a live agent's output.
//!
//! Why not the `prometheus-client` crate: every figure here is read at
//! scrape time from one snapshot (the kernel's maps, through the status
//! report), the collector pattern. That crate's strength is a registry of
//! metric objects the process updates as it goes, which lb does not have;
//! through its `Collector` trait the same families would be written out
//! one by one as here, plus a dependency and its encoder's API to track.

use std::{collections::BTreeMap, fmt::Write as _};

use super::histogram::{BOUNDS, Histogram};
use crate::control::protocol::StatusReport;

/// Renders `r` and the per-service probe histograms as exposition text.
pub fn render(r: &StatusReport, probes: &BTreeMap<String, Histogram>) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, String)>| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let svc = |s: &crate::control::protocol::ServiceStatus| {
        format!(
            "{{service=\"{}\",vip=\"{}\",protocol=\"{}\"}}",
            esc(&s.name),
            esc(&s.vip),
            esc(&s.protocol)
        )
    };
    let per_service = |f: fn(&crate::control::protocol::Traffic) -> u64| {
        r.services.iter().map(|s| (svc(s), f(&s.traffic).to_string())).collect()
    };
    family(
        "lb_service_packets_total",
        "counter",
        "Packets forwarded to the service's backends.",
        per_service(|t| t.packets),
    );
    family(
        "lb_service_bytes_total",
        "counter",
        "Bytes forwarded to the service's backends.",
        per_service(|t| t.bytes),
    );
    family(
        "lb_service_new_flows_total",
        "counter",
        "Flows the service's Maglev table placed.",
        per_service(|t| t.new_flows),
    );
    family(
        "lb_service_acl_denied_total",
        "counter",
        "Packets (splice mode: connections and datagrams) from sources the service's allow and \
         deny lists refuse.",
        r.services.iter().map(|s| (svc(s), s.acl_denied.to_string())).collect(),
    );
    family(
        "lb_service_rate_limited_total",
        "counter",
        "New flows refused over their source prefix's new-flow limit.",
        r.services.iter().map(|s| (svc(s), s.rate_limited.to_string())).collect(),
    );

    let backends = |f: &dyn Fn(&crate::control::protocol::BackendStatus) -> String| {
        r.services
            .iter()
            .flat_map(|s| {
                s.backends.iter().map(move |b| {
                    (format!("{{service=\"{}\",backend=\"{}\"}}", esc(&s.name), esc(&b.addr)), f(b))
                })
            })
            .collect::<Vec<_>>()
    };
    family(
        "lb_backend_packets_total",
        "counter",
        "Packets forwarded to the backend.",
        backends(&|b| b.traffic.packets.to_string()),
    );
    family(
        "lb_backend_bytes_total",
        "counter",
        "Bytes forwarded to the backend.",
        backends(&|b| b.traffic.bytes.to_string()),
    );
    family(
        "lb_backend_new_flows_total",
        "counter",
        "Flows placed on the backend.",
        backends(&|b| b.traffic.new_flows.to_string()),
    );
    family(
        "lb_backend_up",
        "gauge",
        "1 if the backend's health checks pass, else 0.",
        backends(&|b| u8::from(b.health == "up").to_string()),
    );
    family(
        "lb_backend_active",
        "gauge",
        "1 if the backend takes new flows (healthy, enabled, not draining), else 0.",
        backends(&|b| u8::from(b.state == "active").to_string()),
    );
    family(
        "lb_backend_weight",
        "gauge",
        "The backend's weight.",
        backends(&|b| b.weight.to_string()),
    );
    family(
        "lb_backend_slots",
        "gauge",
        "Slots of the service's Maglev table the backend owns.",
        backends(&|b| b.slots.to_string()),
    );
    family(
        "lb_backend_flows",
        "gauge",
        "Live flows pinned to the backend, opening or established (idle ones expire; splice mode: \
         open connections and sessions).",
        backends(&|b| b.active_flows.to_string()),
    );
    family(
        "lb_backend_closing_flows",
        "gauge",
        "Flows of the backend after a FIN or RST, until flows.tcp_closing_timeout.",
        backends(&|b| b.closing_flows.to_string()),
    );
    family(
        "lb_backend_health_changes_total",
        "counter",
        "Health state changes of the backend since the agent started.",
        backends(&|b| b.transitions.to_string()),
    );

    let dns = |f: fn(&crate::control::protocol::DnsStatus) -> u64| {
        r.services
            .iter()
            .filter_map(|s| {
                let d = s.dns.as_ref()?;
                Some((
                    format!("{{service=\"{}\",name=\"{}\"}}", esc(&s.name), esc(&d.name)),
                    f(d).to_string(),
                ))
            })
            .collect()
    };
    family(
        "lb_dns_backends",
        "gauge",
        "Backends the service has from its DNS name now.",
        dns(|d| d.backends.into()),
    );
    family(
        "lb_dns_resolutions_total",
        "counter",
        "DNS answers accepted for the service's name.",
        dns(|d| d.resolutions),
    );
    family(
        "lb_dns_changes_total",
        "counter",
        "DNS answers that changed the service's backends.",
        dns(|d| d.changes),
    );
    family(
        "lb_dns_failures_total",
        "counter",
        "Resolutions of the service's name that failed (no answer, or one that could not be \
         applied); the last set of backends stayed.",
        dns(|d| d.failures),
    );
    family(
        "lb_dns_empty_total",
        "counter",
        "Empty answers and NXDOMAINs for the service's name (kept the last set unless \
         dns.allow_empty).",
        dns(|d| d.empty),
    );
    family(
        "lb_dns_last_success_timestamp_seconds",
        "gauge",
        "When an answer for the service's name was last accepted (Unix time; 0 before the first).",
        dns(|d| d.last_success_unix_ms.unwrap_or(0) / 1000),
    );

    family(
        "lb_flood_mode",
        "gauge",
        "1 while flood mode is on (new flows above flows.flood_threshold a second; off below \
         half of it for 5 s), else 0.",
        vec![(String::new(), u8::from(r.flood.on).to_string())],
    );
    family(
        "lb_new_flows_per_second",
        "gauge",
        "New flows a second over every service, as flood mode last measured them.",
        vec![(String::new(), r.flood.rate.to_string())],
    );
    family(
        "lb_flood_episodes_total",
        "counter",
        "Times flood mode turned on since the agent started.",
        vec![(String::new(), r.flood.episodes.to_string())],
    );

    if let Some(d) = r.descriptors {
        family(
            "lb_splice_descriptors",
            "gauge",
            "Splice mode's descriptors: in use by connections, pipes and UDP sessions \
             (kind=\"used\"), and the budget they may take (kind=\"budget\": the open-file limit \
             less what lb needs besides).",
            vec![
                ("{kind=\"used\"}".to_owned(), d.used.to_string()),
                ("{kind=\"budget\"}".to_owned(), d.budget.to_string()),
            ],
        );
    }
    family(
        "lb_health_probes_skipped_total",
        "counter",
        "Health probe rounds this host could not make (out of descriptors, say); their backends \
         kept the health they had.",
        vec![(String::new(), r.probes_skipped.to_string())],
    );

    family(
        "lb_exceptions_total",
        "counter",
        "Packets the datapath dropped or did not balance, by reason and action.",
        r.exceptions
            .iter()
            .map(|e| {
                (
                    format!("{{reason=\"{}\",action=\"{}\"}}", esc(&e.reason), esc(&e.action)),
                    e.packets.to_string(),
                )
            })
            .collect(),
    );

    family(
        "lb_interface_lost_frames_total",
        "counter",
        "Frames the kernel lost on an interface of the datapath, by hook and kind: \
         xdp_xmit (redirected into it by XDP and refused: a veth peer without NAPI, \
         or a full ring) and dropped (its rx_dropped + tx_dropped).",
        r.interfaces
            .iter()
            .flat_map(|i| {
                let labels = |kind: &str| {
                    format!(
                        "{{interface=\"{}\",hook=\"{}\",kind=\"{kind}\"}}",
                        esc(&i.name),
                        esc(&i.attach)
                    )
                };
                [
                    (labels("xdp_xmit"), i.lost.xdp_xmit_errors.to_string()),
                    (labels("dropped"), i.lost.dropped.to_string()),
                ]
            })
            .collect(),
    );

    family(
        "lb_vip_announced",
        "gauge",
        "1 while the VIP's route is in the table a routing daemon exports ([agent.announce]), \
         0 while withdrawn (no usable backend, or the datapath going).",
        r.announce
            .iter()
            .flat_map(|a| &a.vips)
            .map(|v| (format!("{{vip=\"{}\"}}", esc(&v.vip)), u8::from(v.announced).to_string()))
            .collect(),
    );

    let _ =
        writeln!(out, "# HELP lb_probe_duration_seconds How long health probes took, per service.");
    let _ = writeln!(out, "# TYPE lb_probe_duration_seconds histogram");
    for (service, h) in probes {
        let s = esc(service);
        let mut cumulative = 0;
        for (i, bound) in BOUNDS.iter().enumerate() {
            cumulative += h.buckets[i];
            let _ = writeln!(
                out,
                "lb_probe_duration_seconds_bucket{{service=\"{s}\",le=\"{bound}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "lb_probe_duration_seconds_bucket{{service=\"{s}\",le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(out, "lb_probe_duration_seconds_sum{{service=\"{s}\"}} {}", h.sum);
        let _ = writeln!(out, "lb_probe_duration_seconds_count{{service=\"{s}\"}} {}", h.count);
    }
    out
}

/// Escapes a label value (backslash, quote, newline).
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::protocol::{InterfaceStatus, LostFrames};

    #[test]
    fn lost_frames_are_served_per_interface_hook_and_kind() {
        let r = StatusReport {
            mode: "xdp".into(),
            mode_reason: None,
            interfaces: vec![InterfaceStatus {
                name: "lb-b1".into(),
                attach: "native".into(),
                why: String::new(),
                lost: LostFrames { xdp_xmit_errors: 230, dropped: 4 },
            }],
            services: vec![],
            exceptions: vec![],
            flows_age_ms: 0,
            vip_routes: Default::default(),
            announce: None,
            trace: None,
            flood: Default::default(),
            probes_skipped: 0,
            descriptors: None,
        };
        let text = render(&r, &BTreeMap::new());
        for line in [
            "lb_interface_lost_frames_total{interface=\"lb-b1\",hook=\"native\",kind=\"xdp_xmit\"} 230",
            "lb_interface_lost_frames_total{interface=\"lb-b1\",hook=\"native\",kind=\"dropped\"} 4",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn dns_counters_are_served_per_service_and_name() {
        use crate::control::protocol::{DnsStatus, ServiceStatus, Traffic};
        let r = StatusReport {
            mode: "splice".into(),
            mode_reason: None,
            interfaces: vec![],
            services: vec![ServiceStatus {
                name: "web".into(),
                vip: "10.0.0.1:80".into(),
                protocol: "tcp".into(),
                scheduler: "maglev".into(),
                traffic: Traffic::default(),
                sources: String::new(),
                acl_denied: 0,
                rate_limited: 0,
                backends: vec![],
                dns: Some(DnsStatus {
                    name: "web.example".into(),
                    backends: 3,
                    failures: 2,
                    empty: 1,
                    resolutions: 9,
                    last_success_unix_ms: Some(1_700_000_000_500),
                    ..Default::default()
                }),
            }],
            exceptions: vec![],
            flows_age_ms: 0,
            vip_routes: Default::default(),
            announce: None,
            trace: None,
            flood: Default::default(),
            probes_skipped: 0,
            descriptors: None,
        };
        let text = render(&r, &BTreeMap::new());
        for line in [
            "lb_dns_backends{service=\"web\",name=\"web.example\"} 3",
            "lb_dns_failures_total{service=\"web\",name=\"web.example\"} 2",
            "lb_dns_empty_total{service=\"web\",name=\"web.example\"} 1",
            "lb_dns_resolutions_total{service=\"web\",name=\"web.example\"} 9",
            "lb_dns_last_success_timestamp_seconds{service=\"web\",name=\"web.example\"} 1700000000",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn announced_vips_are_a_gauge_each() {
        use crate::control::protocol::{AnnounceStatus, VipAnnouncement};
        let vip = |v: &str, announced| VipAnnouncement {
            vip: v.into(),
            announced,
            servable: announced,
            why: String::new(),
        };
        let r = StatusReport {
            announce: Some(AnnounceStatus {
                table: 100,
                protocol: 252,
                vips: vec![vip("10.0.0.1/32", true), vip("fd00::1/128", false)],
                error: None,
            }),
            mode: "splice".into(),
            mode_reason: None,
            interfaces: vec![],
            services: vec![],
            exceptions: vec![],
            flows_age_ms: 0,
            vip_routes: Default::default(),
            trace: None,
            flood: Default::default(),
            probes_skipped: 0,
            descriptors: None,
        };
        let text = render(&r, &BTreeMap::new());
        assert!(text.contains("# TYPE lb_vip_announced gauge"), "{text}");
        assert!(text.contains("lb_vip_announced{vip=\"10.0.0.1/32\"} 1\n"), "{text}");
        assert!(text.contains("lb_vip_announced{vip=\"fd00::1/128\"} 0\n"), "{text}");
    }
}
