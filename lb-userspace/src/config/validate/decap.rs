//! `[decap]`: the backend role of direct server return, what
//! `lb decap --config FILE` runs.

use std::net::IpAddr;
use std::path::PathBuf;

use super::report::{Issue, Report, Scope};
use super::values::{choice, interface_name};
use crate::config::model::{Attach, DecapRole};
use crate::config::raw::RawDecap;

/// The role, if the file has one: `Some(None)` without a `[decap]` table,
/// `None` when it has one that is invalid (its problems reported).
pub(super) fn check(raw: Option<RawDecap>, report: &mut Report) -> Option<Option<DecapRole>> {
    let Some(raw) = raw else { return Some(None) };
    let before = report.count();
    if raw.interfaces.is_empty() {
        report.add(
            &Scope::FILE,
            Issue::new(
                "decap.interfaces is empty, so lb decap has nowhere to attach",
                "list the interfaces the balancers' tunnelled packets arrive on, e.g. \
                 interfaces = [\"eth0\"]",
            ),
        );
    }
    for (i, name) in raw.interfaces.iter().enumerate() {
        report.take(&Scope::FILE, interface_name(&format!("decap.interfaces[{i}]"), name));
    }
    let mut addresses = Vec::with_capacity(raw.addresses.len());
    for (i, text) in raw.addresses.iter().enumerate() {
        match text.parse::<IpAddr>() {
            Ok(ip) => addresses.push(ip),
            Err(_) => report.add(
                &Scope::FILE,
                Issue::new(
                    format!("decap.addresses[{i}] {text:?} is not an IP address"),
                    "write an address of this host, e.g. \"10.1.0.2\" or \"2001:db8::2\", or \
                     leave addresses out to decapsulate for every address of the host",
                ),
            ),
        }
    }
    let attach = report.take(
        &Scope::FILE,
        choice("decap.attach", raw.attach.as_deref(), Attach::Auto, Attach::ALL, Attach::name),
    );
    let pin_dir =
        PathBuf::from(raw.pin_dir.unwrap_or_else(|| crate::decap::DEFAULT_PIN_DIR.to_owned()));
    if !pin_dir.is_absolute() {
        report.add(
            &Scope::FILE,
            Issue::new(
                format!("decap.pin_dir {:?} is not an absolute path", pin_dir.display()),
                format!(
                    "use a directory on a BPF file system, e.g. \"{}\"",
                    crate::decap::DEFAULT_PIN_DIR
                ),
            ),
        );
    }
    if report.count() != before {
        return None;
    }
    Some(Some(DecapRole { interfaces: raw.interfaces, addresses, attach: attach?, pin_dir }))
}

#[cfg(test)]
mod tests {
    use super::super::testing::{accepted, refused, service};
    use crate::config::model::Attach;

    #[test]
    fn a_backends_file_holds_the_role_alone() {
        let c = accepted("[decap]\ninterfaces = [\"eth0\"]\naddresses = [\"10.1.0.2\"]\n");
        let role = c.decap.expect("the role");
        assert_eq!(role.interfaces, ["eth0"]);
        assert_eq!(role.addresses, ["10.1.0.2".parse::<std::net::IpAddr>().unwrap()]);
        assert_eq!(role.attach, Attach::Auto);
        assert_eq!(role.pin_dir, std::path::PathBuf::from(crate::decap::DEFAULT_PIN_DIR));
        assert!(c.services.is_empty());
        // Beside services too (a host both balancing and serving).
        let both = format!(
            "[decap]\ninterfaces = [\"eth1\"]\nattach = \"tc\"\n{}",
            service("web", "10.0.0.100:80", "10.0.1.1:80")
        );
        assert_eq!(accepted(&both).decap.expect("role").attach, Attach::Tc);
        // Without either, the file is still refused.
        refused("[agent]\n", &["no [[service]]"]);
    }

    #[test]
    fn each_mistake_names_the_field_and_the_fix() {
        refused("[decap]\n", &["decap.interfaces is empty", "interfaces = [\"eth0\"]"]);
        refused(
            "[decap]\ninterfaces = [\"eth0\"]\naddresses = [\"10.1.0\"]\n",
            &["decap.addresses[0]", "not an IP address"],
        );
        refused(
            "[decap]\ninterfaces = [\"eth0\"]\nattach = \"xdp\"\n",
            &["decap.attach", "\"tc\""],
        );
        refused(
            "[decap]\ninterfaces = [\"eth0\"]\npin_dir = \"lb-decap\"\n",
            &["decap.pin_dir", "absolute"],
        );
        let unknown = crate::config::parse(
            "[decap]\ninterfaces = [\"eth0\"]\nport = 1\n",
            std::path::Path::new("lb.toml"),
        )
        .expect_err("an unknown key");
        assert!(unknown.to_string().contains("unknown field `port`"), "{unknown}");
    }
}
