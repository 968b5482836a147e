//! From the file as written ([`RawConfig`]) to the domain types ([`Config`]),
//! collecting every broken rule on the way so the user can fix them all in
//! one edit.
//!
//! Each section has its own file; a section's check records its problems and
//! returns what parsed, so later rules (duplicates, loops) still run on the
//! parts that are valid.

mod agent;
mod announce;
mod backend;
mod cross;
mod decap;
mod dns;
mod flows;
mod forwarding;
mod health;
mod report;
mod service;
mod sources;
mod splice;
mod values;

use std::path::Path;

use super::error::Problem;
use super::model::Agent;
use super::model::Config;
use super::raw::{RawAgent, RawConfig};
use report::Report;

/// Validates `raw`, read from `file`; on success every rule holds.
pub(super) fn validate(raw: RawConfig, file: &Path) -> Result<Config, Vec<Problem>> {
    let mut report = Report::new(file);
    let agent = agent::check(raw.agent, &mut report);
    let splice = splice::check(raw.splice, &mut report);
    let flows = flows::check(raw.flows, &mut report);
    let checked: Vec<service::Checked> = raw
        .service
        .into_iter()
        .enumerate()
        .map(|(index, raw)| service::check(index, raw, &mut report))
        .collect();
    // A [decap] table makes the file a backend's, valid or not: its own
    // problems are reported, not a missing service besides.
    let backend_role = raw.decap.is_some();
    let decap = decap::check(raw.decap, &mut report);
    cross::check(&checked, backend_role, &mut report);
    if let Some(agent) = &agent {
        cross::proxy_protocol_needs_splice(agent.mode, &checked, &mut report);
    }
    let services: Option<Vec<_>> = checked.into_iter().map(|s| s.service).collect();
    match (agent, splice, flows, services, decap) {
        (Some(agent), Some(splice), Some(flows), Some(services), Some(decap))
            if report.count() == 0 =>
        {
            Ok(Config { source: file.to_owned(), agent, splice, flows, services, decap })
        }
        _ => Err(report.into_problems()),
    }
}

/// Only the `[agent]` table `raw` of `file`, validated alone.
pub(super) fn agent_only(raw: RawAgent, file: &Path) -> Result<Agent, Vec<Problem>> {
    let mut report = Report::new(file);
    match agent::check(raw, &mut report) {
        Some(agent) if report.count() == 0 => Ok(agent),
        _ => Err(report.into_problems()),
    }
}

/// Helpers for the rule tests in this module's files: they validate whole
/// TOML snippets, since rules between services need more than one section.
#[cfg(test)]
pub(super) mod testing {
    use std::path::Path;

    use crate::config::{Config, ConfigError, parse};

    /// A valid service named `name` on `vip` with one backend `backend`.
    pub(crate) fn service(name: &str, vip: &str, backend: &str) -> String {
        format!(
            "[[service]]\nname = \"{name}\"\nvip = \"{vip}\"\n\
             [[service.backend]]\naddr = \"{backend}\"\n"
        )
    }

    /// A file with the top-level table `[name]` holding `keys`, and one
    /// valid service.
    pub(crate) fn with_table(name: &str, keys: &str) -> String {
        format!("[{name}]\n{keys}\n{}", service("web", "10.0.0.100:80", "10.0.1.1:80"))
    }

    pub(crate) fn accepted(text: &str) -> Config {
        match parse(text, Path::new("lb.toml")) {
            Ok(config) => config,
            Err(error) => panic!("refused: {error}\n--- config:\n{text}"),
        }
    }

    /// The problem lines of a config that must be refused.
    pub(crate) fn problems(text: &str) -> Vec<String> {
        match parse(text, Path::new("lb.toml")) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(ConfigError::Invalid { problems, .. }) => {
                problems.iter().map(ToString::to_string).collect()
            }
            Err(other) => panic!("not a validation error: {other}"),
        }
    }

    /// Asserts exactly one problem, containing every word.
    pub(crate) fn refused(text: &str, words: &[&str]) {
        let problems = problems(text);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        for word in words {
            assert!(problems[0].contains(word), "missing {word:?} in {}", problems[0]);
        }
    }
}
