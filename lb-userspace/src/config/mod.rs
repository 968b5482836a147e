//! Configuration: the TOML file deserialized into raw structs ([`raw`]), then
//! validated ([`validate`]) into the domain types ([`model`]) the rest of the
//! agent uses.
//!
//! A file is either accepted whole or refused with every problem listed: the
//! functions here return a [`Config`] only when all rules hold, so nothing
//! from an invalid file can be applied.
#![deny(missing_docs)]

pub mod defaults;
mod duration;
pub use duration::parse_arg as parse_duration_arg;
mod error;
mod model;
mod prefix;
mod raw;
mod summary;
mod toml_error;
mod unicast;
mod validate;

use std::path::Path;

pub use error::{ConfigError, Problem, Subject};
pub use model::{
    Agent, Announce, Attach, AttachChoice, Backend, Config, DecapRole, Dns, DnsRecords, Flows,
    Forwarding, Health, HealthKind, Mode, NewFlowLimit, Protocol, ProxyProtocol, Scheduler,
    Service, Sources, Splice, VipRoutes,
};
pub use prefix::{Prefix, PrefixError};
pub use summary::Summary;
pub(crate) use unicast::not_one_host;

/// Reads, parses and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    parse(&read(path)?, path)
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path)
        .map_err(|source| ConfigError::Io { path: path.to_owned(), source })
}

/// Reads the `[agent]` table of the config file at `path` alone, the rest
/// unchecked: what the CLI needs to find a running agent (its socket, its
/// pins) while the file is being edited. Never for running an agent.
pub fn load_agent(path: &Path) -> Result<Agent, ConfigError> {
    let text = read(path)?;
    let raw: raw::RawAgentOnly =
        toml::from_str(&text).map_err(|error| toml_error::parse_error(path, &text, &error))?;
    validate::agent_only(raw.agent, path)
        .map_err(|problems| ConfigError::Invalid { path: path.to_owned(), problems })
}

/// Parses and validates config `text`; `origin` names it in messages and
/// becomes [`Config::source`].
pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
    let raw: raw::RawConfig =
        toml::from_str(text).map_err(|error| toml_error::parse_error(origin, text, &error))?;
    validate::validate(raw, origin)
        .map_err(|problems| ConfigError::Invalid { path: origin.to_owned(), problems })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file half edited (a service without its VIP yet) does not load,
    /// but its `[agent]` table still names the socket the CLI needs; an
    /// invalid `[agent]` is refused by both.
    #[test]
    fn the_agent_table_is_read_from_a_file_whose_services_are_broken() {
        let dir = std::env::temp_dir().join(format!("lb-load-agent-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("lb.toml");
        let agent = "[agent]\ncontrol_socket = \"/run/lb-edit/lb.sock\"\n";
        std::fs::write(&path, format!("{agent}[[service]]\nname = \"web\"\n")).expect("write");
        assert!(load(&path).is_err(), "a service without a VIP");
        let read = load_agent(&path).expect("the [agent] table alone");
        assert_eq!(read.control_socket, Path::new("/run/lb-edit/lb.sock"));
        std::fs::write(&path, "[agent]\ncontrol_socket = \"lb.sock\"\n").expect("write");
        assert!(load_agent(&path).is_err(), "a relative socket is refused here too");
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
