//! The `lb` agent.
//!
//! - [`config`]: TOML deserialized into raw structs, then validated into the
//!   domain types everything else uses.
//! - [`object`]: finds the eBPF object (embedded or `--bpf-object`) and refuses
//!   a missing or stale one.
pub mod config;
pub mod object;
