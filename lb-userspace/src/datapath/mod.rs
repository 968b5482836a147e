//! The kernel datapath (XDP and tc hooks) seen from userspace: what the maps must hold for a
//! config ([`plan`]), loading the program and writing the maps ([`kernel`]),
//! attaching it ([`attach`]) and reading its counters ([`stats`]).

pub mod acl;
pub mod attach;
pub mod batch;
pub mod flows;
pub mod ifaces;
pub mod kernel;
pub mod lost;
pub mod pins;
pub mod plan;
pub mod prefilter;
pub mod replies;
pub mod reused;
pub mod stats;
pub mod syns;
pub mod sys;
pub mod tc_netlink;
pub mod window;

pub use kernel::{Datapath, DatapathError, LoadOptions};
pub use plan::{Plan, PlanError, plan};
