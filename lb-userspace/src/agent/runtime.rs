//! What the agent knows about each backend beyond the config: its health,
//! what the operator said (drain, disable, weight), and how often it changed.

use std::{
    collections::HashMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use lb_common::abi::{BACKEND_ACTIVE, BACKEND_DOWN, BACKEND_DRAINING};

use crate::{
    config::{Backend, Config},
    datapath::plan::Effective,
    health::{Health, Tracker},
};

/// The operator's say over a backend, from the control socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admin {
    /// Follows its health checks.
    Enabled,
    /// Keeps its established flows, takes no new ones.
    Draining,
    /// Gets nothing; its flows are re-hashed to other backends.
    Disabled,
}

impl Admin {
    /// Lower-case name for status output.
    pub fn name(self) -> &'static str {
        match self {
            Admin::Enabled => "enabled",
            Admin::Draining => "draining",
            Admin::Disabled => "disabled",
        }
    }
}

/// One backend's runtime state.
#[derive(Debug, Clone)]
pub struct Runtime {
    /// Health from probes (and passive signals).
    pub tracker: Tracker,
    /// Operator state.
    pub admin: Admin,
    /// Weight set at runtime, overriding the config's.
    pub weight: Option<u32>,
    /// Health changes so far.
    pub transitions: u64,
    /// When a passive signal last took it down.
    pub last_passive: Option<Instant>,
    /// Passive signals within this long of the last one are ignored; it
    /// doubles each time the backend is taken down again soon after (up to
    /// a minute), so a backend that resets some connections but passes its
    /// probes cannot flap faster than this.
    pub passive_hold: Duration,
}

/// The first passive hold.
pub const PASSIVE_HOLD: Duration = Duration::from_secs(1);
/// The longest passive hold.
pub const PASSIVE_HOLD_MAX: Duration = Duration::from_secs(60);

/// Runtime state of every backend, keyed by (service name, address).
pub type Runtimes = HashMap<(String, SocketAddr), Runtime>;

impl Runtime {
    /// Whether a passive signal at `now` may take the backend down, updating
    /// the hold: a signal inside the hold is ignored; one soon after the hold
    /// (within 4 holds of the last) doubles it; a later one resets it.
    pub fn passive_allowed(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last_passive {
            let since = now.saturating_duration_since(last);
            if since < self.passive_hold {
                return false;
            }
            self.passive_hold = if since < self.passive_hold * 4 {
                (self.passive_hold * 2).min(PASSIVE_HOLD_MAX)
            } else {
                PASSIVE_HOLD
            };
        }
        self.last_passive = Some(now);
        true
    }

    /// What the datapath must do with this backend.
    pub fn effective(&self, b: &Backend) -> Effective {
        let up = self.tracker.health() == Health::Up;
        match (self.admin, up) {
            (Admin::Disabled, _) | (_, false) => Effective { state: BACKEND_DOWN, weight: 0 },
            (Admin::Draining, true) => Effective { state: BACKEND_DRAINING, weight: 0 },
            (Admin::Enabled, true) => {
                Effective { state: BACKEND_ACTIVE, weight: self.weight.unwrap_or(b.weight) }
            }
        }
    }
}

/// The runtimes for `cfg`: kept from `old` for backends it already had
/// (their health and the operator's settings survive a reload), fresh
/// (up, enabled) for the others.
pub fn for_config(cfg: &Config, mut old: Runtimes) -> Runtimes {
    let mut out = Runtimes::new();
    for svc in &cfg.services {
        for b in &svc.backends {
            let key = (svc.name.clone(), b.addr);
            let rt = old.remove(&key).unwrap_or_else(|| Runtime {
                tracker: Tracker::new(svc.health.rise, svc.health.fall),
                admin: Admin::Enabled,
                weight: None,
                transitions: 0,
                last_passive: None,
                passive_hold: PASSIVE_HOLD,
            });
            out.insert(key, rt);
        }
    }
    out
}

/// `BACKEND_*` state as a word for status output.
pub fn state_name(state: u8) -> &'static str {
    match state {
        BACKEND_ACTIVE => "active",
        BACKEND_DRAINING => "draining",
        _ => "down",
    }
}
