//! The file as written: serde structs mirroring the TOML, before any checks.
//!
//! Values whose mistakes deserve a precise message (addresses, durations,
//! enumerations, counts that could be negative) are kept as strings or `i64`
//! here, so validation can name the service and backend and suggest a fix
//! rather than surface a bare serde error; and required keys are `Option` so a
//! missing one is collected with every other problem instead of stopping the
//! parse. Every struct denies unknown fields: a misspelt key silently ignored
//! would leave a default the user did not ask for.

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    #[serde(default)]
    pub(crate) agent: RawAgent,
    #[serde(default)]
    pub(crate) splice: RawSplice,
    #[serde(default)]
    pub(crate) flows: RawFlows,
    #[serde(default)]
    pub(crate) service: Vec<RawService>,
    pub(crate) decap: Option<RawDecap>,
}

/// Only the `[agent]` table of a file, whatever else it holds (see
/// [`super::load_agent`]).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawAgentOnly {
    #[serde(default)]
    pub(crate) agent: RawAgent,
}

/// `[decap]`: the backend role of direct server return.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDecap {
    #[serde(default)]
    pub(crate) interfaces: Vec<String>,
    #[serde(default)]
    pub(crate) addresses: Vec<String>,
    pub(crate) attach: Option<String>,
    pub(crate) pin_dir: Option<String>,
}

/// `[splice]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSplice {
    pub(crate) max_connections: Option<i64>,
    pub(crate) connect_timeout: Option<String>,
    pub(crate) connect_tries: Option<i64>,
    pub(crate) idle_timeout: Option<String>,
    pub(crate) udp_idle_timeout: Option<String>,
    pub(crate) shutdown_timeout: Option<String>,
}

/// `[flows]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFlows {
    pub(crate) tcp_idle_timeout: Option<String>,
    pub(crate) tcp_closing_timeout: Option<String>,
    pub(crate) udp_idle_timeout: Option<String>,
    pub(crate) capacity: Option<i64>,
    pub(crate) flood_threshold: Option<i64>,
    pub(crate) syn_challenge: Option<bool>,
}

/// `[agent]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAgent {
    #[serde(default)]
    pub(crate) interfaces: Vec<String>,
    pub(crate) mode: Option<String>,
    pub(crate) attach: Option<String>,
    /// The old name of `attach`, still accepted.
    pub(crate) xdp_attach: Option<String>,
    /// `[agent.attach_by_interface]`: interface name -> hook.
    pub(crate) attach_by_interface: Option<std::collections::BTreeMap<String, String>>,
    pub(crate) metrics_addr: Option<String>,
    pub(crate) control_socket: Option<String>,
    pub(crate) pin_dir: Option<String>,
    pub(crate) vip_routes: Option<String>,
    pub(crate) announce: Option<RawAnnounce>,
}

/// `[agent.announce]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAnnounce {
    pub(crate) table: Option<i64>,
    pub(crate) protocol: Option<i64>,
}

/// One `[[service]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawService {
    pub(crate) name: Option<String>,
    pub(crate) vip: Option<String>,
    pub(crate) protocol: Option<String>,
    pub(crate) scheduler: Option<String>,
    pub(crate) table_size: Option<i64>,
    pub(crate) proxy_protocol: Option<String>,
    pub(crate) health: Option<RawHealth>,
    pub(crate) dns: Option<RawDns>,
    pub(crate) allow: Option<Vec<String>>,
    pub(crate) deny: Option<Vec<String>>,
    pub(crate) new_flow_limit: Option<RawNewFlowLimit>,
    pub(crate) forwarding: Option<String>,
    pub(crate) tunnel_source: Option<String>,
    #[serde(default)]
    pub(crate) backend: Vec<RawBackend>,
}

/// `dns = { ... }` of a service: backends taken from a DNS name.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDns {
    pub(crate) name: Option<String>,
    #[serde(rename = "type")]
    pub(crate) kind: Option<String>,
    pub(crate) port: Option<i64>,
    pub(crate) interval: Option<String>,
    pub(crate) resolver: Option<String>,
    pub(crate) allow_empty: Option<bool>,
}

/// `new_flow_limit = { ... }` of a service.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNewFlowLimit {
    pub(crate) rate: Option<i64>,
    pub(crate) burst: Option<i64>,
    pub(crate) prefix_v4: Option<i64>,
    pub(crate) prefix_v6: Option<i64>,
}

/// `[service.health]`: one flat table for every kind, so a key that belongs
/// to another kind is reported by validation rather than as unknown.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHealth {
    pub(crate) kind: Option<String>,
    pub(crate) interval: Option<String>,
    pub(crate) timeout: Option<String>,
    pub(crate) rise: Option<i64>,
    pub(crate) fall: Option<i64>,
    pub(crate) path: Option<String>,
    pub(crate) expect_status: Option<i64>,
    pub(crate) send: Option<String>,
    pub(crate) expect: Option<String>,
    pub(crate) syn_timeout: Option<String>,
    pub(crate) syn_unanswered: Option<i64>,
    pub(crate) tunnel: Option<bool>,
}

/// One `[[service.backend]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBackend {
    pub(crate) addr: Option<String>,
    pub(crate) weight: Option<i64>,
}
