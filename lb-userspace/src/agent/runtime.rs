//! What the agent knows about each backend beyond the config: its health,
//! what the operator said (drain, disable, weight), and how often it changed.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    time::{Duration, Instant},
};

use lb_common::abi::{BACKEND_ACTIVE, BACKEND_DOWN, BACKEND_DRAINING};

use crate::{
    agent::saved::SavedBackend,
    config::{Backend, Config},
    datapath::plan::Effective,
    health::{Health, Tracker},
};

/// The operator's say over a backend, from the control socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
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
    /// A passive signal took it down and no probe has answered since.
    pub passive_pending: bool,
    /// Passive signals are ignored until then: set when a probe
    /// contradicted the last passive verdict (a false positive).
    pub passive_hold_until: Option<Instant>,
    /// The next hold: doubles with each false positive (up to a minute),
    /// back to the first after a confirmed one.
    pub passive_hold: Duration,
}

/// The first passive hold.
pub const PASSIVE_HOLD: Duration = Duration::from_secs(1);
/// The longest passive hold.
pub const PASSIVE_HOLD_MAX: Duration = Duration::from_secs(60);

/// Runtime state of every backend, keyed by (service name, address).
pub type Runtimes = HashMap<(String, SocketAddr), Runtime>;

impl Runtime {
    /// A backend new to the agent: up, enabled, configured weight.
    pub fn new(rise: u32, fall: u32) -> Self {
        Self {
            tracker: Tracker::new(rise, fall),
            admin: Admin::Enabled,
            weight: None,
            transitions: 0,
            passive_pending: false,
            passive_hold_until: None,
            passive_hold: PASSIVE_HOLD,
        }
    }

    /// Whether a passive signal at `now` may take the backend down; if so,
    /// the verdict awaits confirmation by the next probe.
    pub fn passive_allowed(&mut self, now: Instant) -> bool {
        if self.passive_hold_until.is_some_and(|until| now < until) {
            return false;
        }
        self.passive_pending = true;
        true
    }

    /// Damping: the first probe after a passive verdict confirms it (the
    /// probe failed too: the hold resets) or contradicts it (the backend
    /// answers probes but reset a connection: passive signals are ignored
    /// for a hold that doubles with each such false positive). Genuine
    /// repeated failures are therefore never damped; a backend that resets
    /// connections while passing probes cannot flap faster than the hold.
    pub fn probe_after_passive(&mut self, ok: bool, now: Instant) {
        if !std::mem::take(&mut self.passive_pending) {
            return;
        }
        if ok {
            self.passive_hold_until = Some(now + self.passive_hold);
            self.passive_hold = (self.passive_hold * 2).min(PASSIVE_HOLD_MAX);
        } else {
            self.passive_hold = PASSIVE_HOLD;
        }
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

/// What a restarted agent should know of each backend: operator state,
/// runtime weight and health, as saved beside the plan.
pub fn to_saved(runtimes: &Runtimes) -> Vec<SavedBackend> {
    let mut out: Vec<SavedBackend> = runtimes
        .iter()
        .map(|((service, addr), rt)| SavedBackend {
            service: service.clone(),
            addr: *addr,
            admin: rt.admin,
            weight: rt.weight,
            down: rt.tracker.health() == Health::Down,
        })
        .collect();
    out.sort_by(|a, b| (&a.service, a.addr).cmp(&(&b.service, b.addr)));
    out
}

/// Runtimes for `cfg` starting from what a previous agent saved: a backend
/// it had disabled, drained or re-weighted stays so, and one it had down
/// stays down until `rise` probes pass. Backends it did not know start
/// fresh; saved entries the config no longer has are dropped.
pub fn restored(cfg: &Config, saved: &[SavedBackend]) -> Runtimes {
    let mut old = Runtimes::new();
    for s in saved {
        let Some(svc) = cfg.services.iter().find(|svc| svc.name == s.service) else { continue };
        let mut rt = Runtime::new(svc.health.rise, svc.health.fall);
        rt.admin = s.admin;
        rt.weight = s.weight;
        if s.down {
            let _ = rt.tracker.force_down();
        }
        old.insert((s.service.clone(), s.addr), rt);
    }
    for_config(cfg, old)
}

/// The runtimes for `cfg`: kept from `old` for backends it already had
/// (their health and the operator's settings survive a reload), fresh
/// (up, enabled) for the others.
pub fn for_config(cfg: &Config, mut old: Runtimes) -> Runtimes {
    let mut out = Runtimes::new();
    for svc in &cfg.services {
        for b in &svc.backends {
            let key = (svc.name.clone(), b.addr);
            let mut rt =
                old.remove(&key).unwrap_or_else(|| Runtime::new(svc.health.rise, svc.health.fall));
            rt.tracker.set_thresholds(svc.health.rise, svc.health.fall);
            out.insert(key, rt);
        }
    }
    out
}

/// What the datapath must do with each backend of `cfg`, failing open: when
/// every enabled backend of a service fails its checks, they all stay in
/// (the checks are more likely wrong than every backend dead, and dropping
/// all traffic is the worse outcome). Logged each time the plan is made.
pub fn effective_states<'a>(
    cfg: &'a Config,
    runtimes: &'a Runtimes,
) -> impl Fn(&str, &Backend) -> Effective + 'a {
    let open: HashSet<&str> = cfg
        .services
        .iter()
        .filter(|svc| {
            let enabled: Vec<&Runtime> = svc
                .backends
                .iter()
                .filter_map(|b| runtimes.get(&(svc.name.clone(), b.addr)))
                .filter(|rt| rt.admin == Admin::Enabled)
                .collect();
            !enabled.is_empty() && enabled.iter().all(|rt| rt.tracker.health() == Health::Down)
        })
        .map(|svc| svc.name.as_str())
        .collect();
    for svc in &open {
        tracing::warn!(
            service = svc,
            "every enabled backend fails its checks: failing open, all stay in"
        );
    }
    move |svc: &str, b: &Backend| match runtimes.get(&(svc.to_owned(), b.addr)) {
        Some(rt) if open.contains(svc) && rt.admin == Admin::Enabled => {
            Effective { state: BACKEND_ACTIVE, weight: rt.weight.unwrap_or(b.weight) }
        }
        Some(rt) => rt.effective(b),
        None => Effective::configured(b),
    }
}

/// `BACKEND_*` state as a word for status output.
pub fn state_name(state: u8) -> &'static str {
    match state {
        BACKEND_ACTIVE => "active",
        BACKEND_DRAINING => "draining",
        _ => "down",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> Runtime {
        Runtime::new(3, 2)
    }

    #[test]
    fn a_service_whose_every_backend_fails_fails_open() {
        let cfg = crate::config::parse(
            "[[service]]\nname = \"s\"\nvip = \"10.0.0.1:80\"\n\
             [[service.backend]]\naddr = \"10.0.1.1:80\"\n[[service.backend]]\naddr = \"10.0.1.2:80\"\n",
            std::path::Path::new("t.toml"),
        )
        .unwrap();
        let mut rts = for_config(&cfg, Runtimes::new());
        let svc = &cfg.services[0];
        let down = |rts: &mut Runtimes, i: usize| {
            let rt = rts.get_mut(&("s".to_owned(), svc.backends[i].addr)).unwrap();
            rt.tracker.force_down();
        };
        down(&mut rts, 0);
        {
            let eff = effective_states(&cfg, &rts);
            assert_eq!(eff("s", &svc.backends[0]).state, BACKEND_DOWN, "one of two down: out");
            assert_eq!(eff("s", &svc.backends[1]).state, BACKEND_ACTIVE);
        }
        down(&mut rts, 1);
        let eff = effective_states(&cfg, &rts);
        assert_eq!(eff("s", &svc.backends[0]).state, BACKEND_ACTIVE, "all down: fail open");
        assert_eq!(eff("s", &svc.backends[1]).weight, 1);
    }

    #[test]
    fn confirmed_passive_verdicts_are_never_damped() {
        let mut r = rt();
        let t0 = Instant::now();
        for i in 0..10 {
            let now = t0 + Duration::from_millis(10 * i);
            assert!(r.passive_allowed(now));
            r.probe_after_passive(false, now);
        }
        assert_eq!(r.passive_hold, PASSIVE_HOLD);
    }

    #[test]
    fn contradicted_verdicts_hold_off_passive_signals_for_doubling_holds() {
        let mut r = rt();
        let t0 = Instant::now();
        assert!(r.passive_allowed(t0));
        r.probe_after_passive(true, t0);
        assert!(!r.passive_allowed(t0 + PASSIVE_HOLD / 2), "held");
        assert!(r.passive_allowed(t0 + PASSIVE_HOLD));
        r.probe_after_passive(true, t0 + PASSIVE_HOLD);
        assert!(!r.passive_allowed(t0 + PASSIVE_HOLD * 2), "the hold doubled");
        assert!(r.passive_allowed(t0 + PASSIVE_HOLD * 3));
    }

    #[test]
    fn saved_states_round_trip_and_unknown_backends_start_fresh() {
        let text = "[[service]]\nname = \"s\"\nvip = \"10.0.0.1:80\"\n\
             [[service.backend]]\naddr = \"10.0.1.1:80\"\n[[service.backend]]\naddr = \"10.0.1.2:80\"\n\
             [[service.backend]]\naddr = \"10.0.1.3:80\"\n";
        let cfg = crate::config::parse(text, std::path::Path::new("t.toml")).unwrap();
        let key = |i: usize| ("s".to_owned(), cfg.services[0].backends[i].addr);
        let mut rts = for_config(&cfg, Runtimes::new());
        rts.get_mut(&key(0)).unwrap().admin = Admin::Disabled;
        rts.get_mut(&key(1)).unwrap().weight = Some(7);
        rts.get_mut(&key(1)).unwrap().tracker.force_down();
        let mut saved = to_saved(&rts);
        // One the config no longer has, and backend 3 unknown to the file.
        saved.retain(|b| b.addr != key(2).1);
        saved.push(SavedBackend {
            service: "gone".into(),
            addr: key(0).1,
            admin: Admin::Disabled,
            weight: None,
            down: true,
        });
        let back = restored(&cfg, &saved);
        assert_eq!(back.len(), 3, "exactly the config's backends");
        assert_eq!(back[&key(0)].admin, Admin::Disabled);
        assert_eq!(back[&key(1)].weight, Some(7));
        assert_eq!(back[&key(1)].tracker.health(), Health::Down, "down until rise probes pass");
        assert_eq!(back[&key(2)].admin, Admin::Enabled);
        assert_eq!(back[&key(2)].tracker.health(), Health::Up);
        assert_eq!(to_saved(&back), to_saved(&rts), "what was saved comes back");
    }
}
