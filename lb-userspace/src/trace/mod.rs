//! `lb trace`: the agent's side of a trace session.
//!
//! The client (`lb trace`) asks the running agent over the control socket;
//! the agent writes the filter into `LB_TRACE`, reads the datapath's
//! aya-log ring (`AYA_LOGS`, which belongs to the program this agent
//! loaded, so a taken-over datapath is traced like a fresh one), names the
//! records and streams them back. The session ends when the client's
//! connection does, however it ends (count reached, Ctrl-C, killed): the
//! agent clears the filter then.
//!
//! - [`filter`]: the client's criteria as the datapath's `TraceFilter`;
//! - [`format`]: a record (numbers) as a readable line (names);
//! - [`hub`]: the ring's reader and the one session it feeds.

pub mod filter;
pub mod format;
pub mod hub;

pub use filter::{TraceError, TraceSpec};
pub use format::Names;
pub use hub::{Session, Tracer};
