//! Backends from DNS: a service with a `dns` table takes backends from a
//! name's A/AAAA or SRV records, beside the file's own, re-resolved every
//! `dns.interval` (sooner when the TTL is shorter).
//!
//! Resolution ([`resolve`]) and the rules on what an answer does
//! ([`state`], [`records`]) live here; the agent applies a changed set
//! through the same plan-and-swap path as a reload, so established flows
//! keep their backends and every datapath mode gets it.

pub mod records;
pub mod resolve;
pub mod state;

pub use state::{DnsState, Outcome, Verdict};
