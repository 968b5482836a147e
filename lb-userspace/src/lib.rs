//! The `lb` agent.
//!
//! - [`config`]: TOML deserialized into raw structs, then validated into the
//!   domain types everything else uses.
//! - [`datapath`]: the XDP program from userspace: map content for a config,
//!   loading, attaching, counters.
//! - [`object`]: finds the eBPF object (embedded or `--bpf-object`) and refuses
//!   a missing or stale one.
pub mod config;
pub mod datapath;
pub mod object;
