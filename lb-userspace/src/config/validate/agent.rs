//! `[agent]`: datapath mode, interfaces and the agent's own endpoints.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use super::report::{Issue, Report, Scope};
use super::values::{choice, interface_name, socket_addr};
use crate::config::defaults;
use crate::config::model::{Agent, Attach, Mode, VipRoutes};
use crate::config::raw::RawAgent;

/// Validates the agent table (absent = all defaults).
pub(super) fn check(raw: RawAgent, report: &mut Report) -> Option<Agent> {
    let scope = &Scope::FILE;
    let interfaces_ok = interfaces(&raw.interfaces, report);
    let mode = report
        .take(scope, choice("agent.mode", raw.mode.as_deref(), Mode::Auto, Mode::ALL, Mode::name));
    let attach = attach(&raw, report);
    let attach_by_interface = attach_by_interface(&raw, report);
    if mode == Some(Mode::Xdp) && raw.interfaces.is_empty() {
        report.add(
            scope,
            Issue::new(
                "agent.mode = \"xdp\" but agent.interfaces is empty, so XDP has nowhere to attach",
                "list the interfaces, e.g. interfaces = [\"eth0\"], or use mode = \"auto\"",
            ),
        );
    }
    let metrics_addr = match raw.metrics_addr.as_deref() {
        None => Some(None),
        Some(text) => {
            report.take(scope, socket_addr("agent.metrics_addr", text, "127.0.0.1:9100")).map(Some)
        }
    };
    let control_socket = report.take(scope, control_socket(raw.control_socket.as_deref()));
    let pin_dir = report.take(scope, pin_dir(raw.pin_dir.as_deref()));
    let vip_routes = report.take(
        scope,
        choice(
            "agent.vip_routes",
            raw.vip_routes.as_deref(),
            VipRoutes::Local,
            VipRoutes::ALL,
            VipRoutes::name,
        ),
    );
    let announce = match raw.announce {
        None => Some(None),
        Some(a) => super::announce::check(&a, report).map(Some),
    };
    Some(Agent {
        interfaces: interfaces_ok.then_some(raw.interfaces)?,
        mode: mode?,
        attach: attach?,
        attach_by_interface: attach_by_interface?,
        metrics_addr: metrics_addr?,
        control_socket: control_socket?,
        pin_dir: pin_dir?,
        vip_routes: vip_routes?,
        announce: announce?,
    })
}

/// `agent.attach`, or its old name `xdp_attach` (not both).
fn attach(raw: &RawAgent, report: &mut Report) -> Option<Attach> {
    let (field, text) = match (&raw.attach, &raw.xdp_attach) {
        (Some(_), Some(_)) => {
            report.add(
                &Scope::FILE,
                Issue::new(
                    "agent.attach and agent.xdp_attach (its old name) are both set",
                    "keep only attach",
                ),
            );
            return None;
        }
        (None, Some(old)) => ("agent.xdp_attach", Some(old.as_str())),
        (text, None) => ("agent.attach", text.as_deref()),
    };
    report.take(&Scope::FILE, choice(field, text, Attach::Auto, Attach::ALL, Attach::name))
}

/// `[agent.attach_by_interface]`: a hook per interface, each one that
/// `agent.interfaces` lists.
fn attach_by_interface(raw: &RawAgent, report: &mut Report) -> Option<BTreeMap<String, Attach>> {
    let before = report.count();
    let mut out = BTreeMap::new();
    for (iface, text) in raw.attach_by_interface.iter().flatten() {
        let field = format!("agent.attach_by_interface.{iface}");
        if !raw.interfaces.contains(iface) {
            report.add(
                &Scope::FILE,
                Issue::new(
                    format!("{field} names an interface agent.interfaces does not list"),
                    format!("add {iface:?} to agent.interfaces, or remove the entry"),
                ),
            );
            continue;
        }
        let choice = choice(&field, Some(text), Attach::Auto, Attach::ALL, Attach::name);
        if let Some(how) = report.take(&Scope::FILE, choice) {
            out.insert(iface.clone(), how);
        }
    }
    (report.count() == before).then_some(out)
}

fn pin_dir(text: Option<&str>) -> Result<PathBuf, Issue> {
    match text {
        None => Ok(PathBuf::from(defaults::PIN_DIR)),
        Some(path) if path.starts_with('/') && path.len() > 1 => Ok(PathBuf::from(path)),
        Some(path) => Err(Issue::new(
            format!("agent.pin_dir {path:?} is not an absolute path"),
            format!(
                "give a directory on a BPF file system, e.g. \"{}\", or leave it out",
                defaults::PIN_DIR
            ),
        )),
    }
}

/// Checks every name, and that none repeats (attaching twice fails at
/// startup, far from the typo). True when all are fine.
fn interfaces(names: &[String], report: &mut Report) -> bool {
    let before = report.count();
    let mut seen = HashSet::new();
    for (index, name) in names.iter().enumerate() {
        let field = format!("agent.interfaces[{index}]");
        if report.take(&Scope::FILE, interface_name(&field, name)).is_some() && !seen.insert(name) {
            report.add(
                &Scope::FILE,
                Issue::new(format!("agent.interfaces lists {name:?} twice"), "remove the repeat"),
            );
        }
    }
    report.count() == before
}

/// Absolute, as `pin_dir` is: a relative path would resolve against each
/// process's working directory, so `lb status` run anywhere else than
/// where the agent started would not find the agent.
fn control_socket(text: Option<&str>) -> Result<PathBuf, Issue> {
    let fix = format!(
        "give an absolute path, e.g. \"{}\", or leave it out for that default",
        defaults::CONTROL_SOCKET
    );
    match text {
        None => Ok(PathBuf::from(defaults::CONTROL_SOCKET)),
        Some("") => Err(Issue::new("agent.control_socket is empty", fix)),
        Some(path) if !path.starts_with('/') => {
            Err(Issue::new(format!("agent.control_socket {path:?} is not an absolute path"), fix))
        }
        Some(path) if path.ends_with('/') => Err(Issue::new(
            format!("agent.control_socket {path:?} ends in '/', so it names a directory"),
            fix,
        )),
        Some(path) => Ok(PathBuf::from(path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn check_raw(raw: RawAgent) -> Result<Agent, Vec<String>> {
        let mut report = Report::new(Path::new("lb.toml"));
        let agent = check(raw, &mut report);
        let problems: Vec<String> =
            report.into_problems().iter().map(ToString::to_string).collect();
        match agent {
            Some(agent) if problems.is_empty() => Ok(agent),
            _ => Err(problems),
        }
    }

    fn refused(raw: RawAgent, words: &[&str]) {
        let problems = check_raw(raw).expect_err("should be refused");
        assert_eq!(problems.len(), 1, "{problems:?}");
        for word in words {
            assert!(problems[0].contains(word), "missing {word:?} in {}", problems[0]);
        }
        assert!(!problems[0].contains("service"), "{}", problems[0]);
    }

    #[test]
    fn defaults() {
        let agent = check_raw(RawAgent::default()).expect("defaults are valid");
        assert_eq!(
            agent,
            Agent {
                interfaces: vec![],
                mode: Mode::Auto,
                attach: Attach::Auto,
                attach_by_interface: BTreeMap::new(),
                metrics_addr: None,
                control_socket: PathBuf::from("/run/lb/control.sock"),
                pin_dir: PathBuf::from("/sys/fs/bpf/lb"),
                vip_routes: VipRoutes::Local,
                announce: None,
            }
        );
    }

    #[test]
    fn every_choice_parses() {
        for &mode in Mode::ALL {
            let raw = RawAgent {
                mode: Some(mode.name().into()),
                interfaces: vec!["eth0".into()],
                ..RawAgent::default()
            };
            assert_eq!(check_raw(raw).expect("valid").mode, mode);
        }
        for &routes in VipRoutes::ALL {
            let raw = RawAgent { vip_routes: Some(routes.name().into()), ..RawAgent::default() };
            assert_eq!(check_raw(raw).expect("valid").vip_routes, routes);
        }
        for &attach in Attach::ALL {
            let raw = RawAgent { attach: Some(attach.name().into()), ..RawAgent::default() };
            assert_eq!(check_raw(raw).expect("valid").attach, attach);
            // The old name still works.
            let raw = RawAgent { xdp_attach: Some(attach.name().into()), ..RawAgent::default() };
            assert_eq!(check_raw(raw).expect("valid").attach, attach);
        }
    }

    #[test]
    fn an_interface_may_have_its_own_hook_and_the_cli_flag_overrides_all() {
        let raw = RawAgent {
            interfaces: vec!["eth0".into(), "veth1".into()],
            attach: Some("tc".into()),
            attach_by_interface: Some([("eth0".into(), "native".into())].into()),
            ..RawAgent::default()
        };
        let agent = check_raw(raw).expect("valid");
        let choices = agent.attach_choices(None);
        assert_eq!(
            choices.iter().map(|c| (c.interface.as_str(), c.how)).collect::<Vec<_>>(),
            [("eth0", Attach::Native), ("veth1", Attach::Tc)]
        );
        assert_eq!(choices[0].setting, "agent.attach_by_interface.eth0 = \"native\"");
        assert_eq!(choices[1].setting, "agent.attach = \"tc\"");
        let forced = agent.attach_choices(Some(Attach::Generic));
        assert!(forced.iter().all(|c| c.how == Attach::Generic && c.setting == "--attach generic"));
    }

    #[test]
    fn a_hook_for_an_interface_not_listed_or_unknown_is_refused() {
        refused(
            RawAgent {
                interfaces: vec!["eth0".into()],
                attach_by_interface: Some([("eth1".into(), "tc".into())].into()),
                ..RawAgent::default()
            },
            &["agent.attach_by_interface.eth1", "add \"eth1\" to agent.interfaces"],
        );
        refused(
            RawAgent {
                interfaces: vec!["eth0".into()],
                attach_by_interface: Some([("eth0".into(), "xdp".into())].into()),
                ..RawAgent::default()
            },
            &["agent.attach_by_interface.eth0 \"xdp\" is not supported", "\"native\""],
        );
    }

    #[test]
    fn unknown_mode() {
        refused(
            RawAgent { mode: Some("fast".into()), ..RawAgent::default() },
            &["agent.mode \"fast\"", "\"splice\""],
        );
        refused(
            RawAgent { xdp_attach: Some("skb".into()), ..RawAgent::default() },
            &["agent.xdp_attach", "\"generic\""],
        );
        refused(
            RawAgent { attach: Some("xdp".into()), ..RawAgent::default() },
            &["agent.attach \"xdp\"", "\"tc\""],
        );
        refused(
            RawAgent { vip_routes: Some("lo".into()), ..RawAgent::default() },
            &["agent.vip_routes \"lo\" is not supported", "\"local\" or \"none\""],
        );
        refused(
            RawAgent {
                attach: Some("tc".into()),
                xdp_attach: Some("native".into()),
                ..RawAgent::default()
            },
            &["agent.attach and agent.xdp_attach", "keep only attach"],
        );
    }

    #[test]
    fn xdp_needs_interfaces() {
        refused(
            RawAgent { mode: Some("xdp".into()), ..RawAgent::default() },
            &["agent.interfaces is empty", "interfaces = [\"eth0\"]"],
        );
    }

    #[test]
    fn interface_names() {
        refused(
            RawAgent { interfaces: vec!["".into()], ..RawAgent::default() },
            &["agent.interfaces[0] is an empty string"],
        );
        refused(
            RawAgent {
                interfaces: vec!["eth0".into(), "a-very-long-ifname".into()],
                ..RawAgent::default()
            },
            &["agent.interfaces[1] \"a-very-long-ifname\" is 18 bytes", "IFNAMSIZ", "ip link"],
        );
        refused(
            RawAgent { interfaces: vec!["eth0".into(), "eth0".into()], ..RawAgent::default() },
            &["twice"],
        );
    }

    #[test]
    fn metrics_and_control_socket() {
        let raw = RawAgent { metrics_addr: Some("127.0.0.1:9100".into()), ..RawAgent::default() };
        assert_eq!(check_raw(raw).expect("valid").metrics_addr, "127.0.0.1:9100".parse().ok());
        refused(
            RawAgent { metrics_addr: Some("localhost".into()), ..RawAgent::default() },
            &["agent.metrics_addr \"localhost\"", "127.0.0.1:9100"],
        );
        refused(
            RawAgent { control_socket: Some(String::new()), ..RawAgent::default() },
            &["control_socket is empty"],
        );
        for relative in ["lb.sock", "./lb.sock", "run/lb/control.sock"] {
            refused(
                RawAgent { control_socket: Some(relative.into()), ..RawAgent::default() },
                &[
                    &format!("agent.control_socket {relative:?} is not an absolute path"),
                    "give an absolute path, e.g. \"/run/lb/control.sock\", or leave it out",
                ],
            );
        }
        refused(
            RawAgent { control_socket: Some("/run/lb/".into()), ..RawAgent::default() },
            &["agent.control_socket \"/run/lb/\" ends in '/'", "give an absolute path, e.g."],
        );
        let raw = RawAgent { control_socket: Some("/tmp/lb.sock".into()), ..RawAgent::default() };
        assert_eq!(check_raw(raw).expect("valid").control_socket, Path::new("/tmp/lb.sock"));
    }
}
