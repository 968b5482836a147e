//! The control socket: how `lb status` (and later drain/weight/reload) talk
//! to a running agent.
//!
//! One JSON request per connection, one JSON response, each a single line.
//! The socket is created mode 0600 in a 0700 directory: only root controls
//! the balancer unless the operator loosens it.

pub mod client;
pub mod protocol;
pub mod server;

pub use protocol::{Request, Response};
