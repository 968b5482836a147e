//! Which VIPs the agent announces (`[agent.announce]`): those with at least
//! one usable backend, judged again after every change of a backend's
//! health, operator state or set, so a withdrawal follows the transition
//! that caused it within the same lock hold.
//!
//! Usable: health up and not disabled. A draining backend counts: its
//! established flows still arrive through this host, and withdrawing would
//! send them to another. The datapath fails open when every enabled backend
//! of a service fails its checks (see `runtime::effective_states`), but
//! announcement does not: a host that can serve nothing is better left out
//! of the router's choices.

use std::{collections::BTreeMap, fmt::Write as _, net::IpAddr};

use super::{
    Agent, State,
    runtime::{Admin, Runtimes},
};
use crate::{
    config::Config,
    health::Health,
    routes::announce::{self, Announcer, Verdict},
};

/// Every VIP address of the config with whether it can be served.
pub(super) fn verdicts(cfg: &Config, runtimes: &Runtimes) -> BTreeMap<IpAddr, Verdict> {
    let mut out: BTreeMap<IpAddr, Verdict> = BTreeMap::new();
    for svc in &cfg.services {
        let (mut usable, mut down, mut disabled) = (0, 0, 0);
        for b in &svc.backends {
            match runtimes.get(&(svc.name.clone(), b.addr)) {
                Some(rt) if rt.admin == Admin::Disabled => disabled += 1,
                Some(rt) if rt.tracker.health() == Health::Down => down += 1,
                _ => usable += 1,
            }
        }
        let v = out
            .entry(svc.vip.ip())
            .or_insert_with(|| Verdict { servable: false, why: String::new() });
        v.servable |= usable > 0;
        if !v.why.is_empty() {
            v.why.push_str("; ");
        }
        let _ = write!(v.why, "{} {usable} of {} usable", svc.name, svc.backends.len());
        let out_of_service: Vec<String> = [(down, "down"), (disabled, "disabled")]
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, what)| format!("{n} {what}"))
            .collect();
        if !out_of_service.is_empty() {
            let _ = write!(v.why, " ({})", out_of_service.join(", "));
        }
    }
    out
}

/// Judges every VIP again and makes the announced routes match; `when`
/// names the step for the log. A failure is logged and left for the next
/// change or the periodic retry.
pub(super) fn sync(st: &mut State, when: &str) {
    if st.announcer.is_none() {
        return;
    }
    let verdicts = verdicts(&st.config, &st.runtimes);
    let Some(a) = st.announcer.as_mut() else { return };
    match a.sync(verdicts) {
        Ok(changes) => announce::log_changes(a, &changes, when),
        Err(e) => tracing::error!(
            "{when}: announcing the VIPs failed, the routing daemon may announce a VIP that \
             cannot be served (or miss one that can): {e}; retried every second"
        ),
    }
}

impl Agent {
    /// Announces the servable VIPs: at start, once the datapath is attached.
    pub fn announce(&self) {
        sync(&mut self.lock(), "start");
    }

    /// Whether VIPs are announced (`[agent.announce]`, not yet withdrawn).
    pub fn announces(&self) -> bool {
        self.lock().announcer.is_some()
    }

    /// Syncs again if the last sync failed (called every second).
    pub fn retry_announce(&self) {
        let mut st = self.lock();
        if st.announcer.as_ref().is_some_and(Announcer::failed) {
            sync(&mut st, "retry");
        }
    }

    /// Withdraws every VIP: the datapath is going (`lb stop`, or the end of
    /// splice mode). Later changes announce nothing.
    pub fn withdraw_all(&self, why: &str) {
        let mut st = self.lock();
        let Some(mut a) = st.announcer.take() else { return };
        match a.withdraw_all(why) {
            Ok(changes) => {
                announce::log_changes(&a, &changes, "shutdown");
                announce::note(&announce::note_path(&st.config.agent.control_socket), None);
            }
            Err(e) => tracing::error!(
                "withdrawing the VIPs failed: {e}; remove the routes with `ip route flush table \
                 {} proto {}`",
                a.setting().table,
                a.setting().protocol
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vip_is_servable_while_any_service_on_it_has_a_usable_backend() {
        let text = "[[service]]\nname = \"web\"\nvip = \"10.0.0.1:80\"\n\
             [[service.backend]]\naddr = \"10.0.1.1:80\"\n[[service.backend]]\naddr = \"10.0.1.2:80\"\n\
             [[service]]\nname = \"dns\"\nvip = \"10.0.0.1:53\"\nprotocol = \"udp\"\n\
             [[service.backend]]\naddr = \"10.0.1.1:53\"\n\
             [[service]]\nname = \"other\"\nvip = \"10.0.0.2:80\"\n\
             [[service.backend]]\naddr = \"10.0.1.3:80\"\n";
        let cfg = crate::config::parse(text, std::path::Path::new("t.toml")).expect("valid");
        let mut rts = super::super::runtime::for_config(&cfg, Default::default());
        let v = |rts: &Runtimes| verdicts(&cfg, rts);
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        let all = v(&rts);
        assert!(all[&a].servable && all[&b].servable);
        assert_eq!(all[&a].why, "web 2 of 2 usable; dns 1 of 1 usable");
        let key = |svc: &str, addr: &str| (svc.to_owned(), addr.parse().expect("addr"));
        let _ = rts.get_mut(&key("web", "10.0.1.1:80")).expect("rt").tracker.force_down();
        rts.get_mut(&key("web", "10.0.1.2:80")).expect("rt").admin = Admin::Disabled;
        let now = v(&rts);
        assert!(now[&a].servable, "dns still serves on the VIP");
        assert_eq!(now[&a].why, "web 0 of 2 usable (1 down, 1 disabled); dns 1 of 1 usable");
        let _ = rts.get_mut(&key("dns", "10.0.1.1:53")).expect("rt").tracker.force_down();
        rts.get_mut(&key("other", "10.0.1.3:80")).expect("rt").admin = Admin::Draining;
        let now = v(&rts);
        assert!(!now[&a].servable, "nothing on the VIP is usable");
        assert!(now[&b].servable, "a draining backend still carries its flows");
    }
}
