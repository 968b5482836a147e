//! The `lb` agent.
//!
//! - [`agent`]: the running XDP balancer, answering the control socket.
//! - [`control`]: the control socket protocol, server and client.
//! - [`config`]: TOML deserialized into raw structs, then validated into the
//!   domain types everything else uses.
//! - [`datapath`]: the XDP program from userspace: map content for a config,
//!   loading, attaching, counters.
//! - [`decap`]: `lb decap`, the backend side of direct server return:
//!   the program that strips IP-in-IP outer headers, its addresses and pins.
//! - [`dns`]: backends resolved from DNS names, and the rules on answers.
//! - [`health`]: active probes and consecutive-result health state.
//! - [`metrics`]: the HTTP endpoint: Prometheus metrics, the status page and its JSON.
//! - [`routes`]: a local route for every VIP on the lb host (rtnetlink).
//! - [`splice`]: the userspace fallback datapath (splice(2) relay).
//! - [`trace`]: `lb trace` sessions: the datapath's filter and its aya-log records.
//! - [`object`]: finds the eBPF object (embedded or `--bpf-object`) and refuses
//!   a missing or stale one.
pub mod accept;
pub mod agent;
pub mod config;
pub mod control;
pub mod datapath;
pub mod decap;
pub mod dns;
pub mod health;
pub mod metrics;
pub mod object;
pub mod routes;
pub mod shortage;
pub mod splice;
pub mod throttle;
pub mod trace;
