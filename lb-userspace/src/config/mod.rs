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
    let text = std::fs::read_to_string(path)
        .map_err(|source| ConfigError::Io { path: path.to_owned(), source })?;
    parse(&text, path)
}

/// Reads the `[agent]` table of the config file at `path` alone, the rest
/// unchecked: what the CLI needs to find a running agent (its socket, its
/// pins) while the file is being edited. Never for running an agent.
pub fn load_agent(path: &Path) -> Result<Agent, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ConfigError::Io { path: path.to_owned(), source })?;
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
