//! What the agent drives: the XDP datapath, or the splice proxy where XDP
//! cannot run. Both take the same plans (Maglev tables, backend states) and
//! report the same counters, so health, operator actions, reloads and
//! status work the same in either mode.

use std::sync::Arc;

use lb_common::abi::FlowTimeouts;

use crate::{
    datapath::{Datapath, DatapathError, Plan, flows::FlowCounts, stats::Totals},
    splice::inflight::Inflight,
};

/// A datapath the agent can program.
pub trait Forwarder: Send + std::fmt::Debug {
    /// "xdp" or "splice".
    fn mode(&self) -> &'static str;
    /// Moves from `old` (what it holds) to `new`: new tables take effect
    /// atomically per service; established flows keep their backends.
    fn apply_change(&mut self, old: &Plan, new: &Plan) -> Result<(), DatapathError>;
    /// Counters of the services whose ids are `services` and of the first
    /// `backends` backends (see [`Totals`]).
    fn totals(&self, services: &[u32], backends: u32) -> Result<Totals, DatapathError>;
    /// The XDP datapath, for what only it has (flow queries, flow counts).
    fn xdp(&self) -> Option<&Datapath> {
        None
    }
    /// Sets the flow table's idle timeouts (XDP; the splice proxy has its
    /// own, fixed at start).
    fn set_flow_timeouts(&mut self, _t: FlowTimeouts) -> Result<(), DatapathError> {
        Ok(())
    }
    /// Records the interfaces with a peer device, which the tc hook
    /// forwards into with `bpf_redirect_peer` (XDP mode only).
    fn set_peer_devices(&mut self, _ifindexes: &[u32]) -> Result<(), DatapathError> {
        Ok(())
    }
    /// Live flows per backend id where the forwarder keeps them itself
    /// (splice mode); `None` where the flow table must be swept (XDP).
    fn flow_counts(&self) -> Option<FlowCounts> {
        None
    }
    /// Shutdown, first step: stop taking new connections. Returns the count
    /// of those still open, to wait on (splice mode; XDP holds none).
    fn stop_accepting(&mut self) -> Option<Arc<Inflight>> {
        None
    }
}

impl Forwarder for Datapath {
    fn mode(&self) -> &'static str {
        "xdp"
    }

    fn apply_change(&mut self, old: &Plan, new: &Plan) -> Result<(), DatapathError> {
        Datapath::apply_change(self, old, new)
    }

    fn totals(&self, services: &[u32], backends: u32) -> Result<Totals, DatapathError> {
        crate::datapath::stats::read(self, services, backends)
    }

    fn xdp(&self) -> Option<&Datapath> {
        Some(self)
    }

    fn set_flow_timeouts(&mut self, t: FlowTimeouts) -> Result<(), DatapathError> {
        self.set_timeouts(t)
    }

    fn set_peer_devices(&mut self, ifindexes: &[u32]) -> Result<(), DatapathError> {
        Datapath::set_peer_devices(self, ifindexes)
    }
}
