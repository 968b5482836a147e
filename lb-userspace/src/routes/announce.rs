//! Announced routes (`[agent.announce]`): a blackhole route per VIP that can
//! be served, in a kernel table of the operator's choosing, marked with a
//! protocol number, for a routing daemon (BIRD's kernel protocol with
//! `learn`, FRR's `ip import-table`) to pick up and export by BGP.
//!
//! They sit beside the VIPs' local routes (see the parent module) and never
//! replace them: the local route is what makes the kernel answer for the
//! VIP, and must stay while the datapath forwards, servable or not; the
//! announced route says to the network "send this VIP here", and must go
//! the moment nothing behind it can answer. No rule points at their table,
//! so the kernel never forwards by them: a blackhole is only a carrier
//! with no next hop and no interface.
//!
//! Each sync reads the table and makes it match: lb's routes (its protocol,
//! host length) to addresses not servable go, whoever left them (a crashed
//! agent, a VIP removed by a reload); a route removed by hand comes back.
//!
//! Routes a previous agent left in a table the config no longer names (the
//! setting changed or went, and the agent restarted over a pinned
//! datapath, or crashed) would be announced for ever with nobody to
//! withdraw them: each agent notes its (table, protocol) beside its control
//! socket ([`note_path`]) while it announces, and the next start, or
//! `lb stop`, removes what a different noted pair holds.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::{Path, PathBuf},
};

use super::{
    RouteError, full_length,
    netlink::{LocalRoute, Netlink, Place},
};
use crate::{config::Announce, control::protocol::AnnounceStatus};

/// Whether a VIP is announced, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// At least one backend of a service on the VIP is usable.
    pub servable: bool,
    /// Why, for `lb status` and the log (per service, e.g. `web 2 of 3 usable`).
    pub why: String,
}

/// What one sync changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Routes added: VIPs now announced.
    pub announced: Vec<IpAddr>,
    /// lb's routes removed: addresses now withdrawn.
    pub withdrawn: Vec<IpAddr>,
    /// How long the sync took (a dump of the table and the changes), in
    /// microseconds: what a withdrawal adds to the health transition.
    pub took_us: u64,
}

/// The announced routes lb holds in one table.
#[derive(Debug)]
pub struct Announcer {
    setting: Announce,
    /// Every VIP of the config, as last judged.
    verdicts: BTreeMap<IpAddr, Verdict>,
    /// Addresses with a route in the table after the last sync.
    held: BTreeSet<IpAddr>,
    /// Why the last sync failed (the routes may not match the verdicts):
    /// the next change, or the agent's periodic retry, syncs again.
    failed: Option<String>,
}

impl Announcer {
    /// Holding nothing yet.
    pub fn new(setting: Announce) -> Self {
        Self { setting, verdicts: BTreeMap::new(), held: BTreeSet::new(), failed: None }
    }

    /// The setting it was made for.
    pub fn setting(&self) -> Announce {
        self.setting
    }

    /// Whether the last sync failed.
    pub fn failed(&self) -> bool {
        self.failed.is_some()
    }

    /// The verdicts of the last [`Announcer::sync`].
    pub fn verdicts(&self) -> &BTreeMap<IpAddr, Verdict> {
        &self.verdicts
    }

    fn place(&self) -> Place {
        Place::blackhole(self.setting.table)
    }

    /// Makes the table hold a route for exactly the servable VIPs of
    /// `verdicts`. Stops at the first refusal (the verdicts are kept, and
    /// `failed` says why, so a later sync completes the change).
    pub fn sync(&mut self, verdicts: BTreeMap<IpAddr, Verdict>) -> Result<Changes, RouteError> {
        self.verdicts = verdicts;
        let started = std::time::Instant::now();
        let done =
            self.apply().map(|c| Changes { took_us: started.elapsed().as_micros() as u64, ..c });
        self.failed = done.as_ref().err().map(ToString::to_string);
        done
    }

    fn apply(&mut self) -> Result<Changes, RouteError> {
        let place = self.place();
        let protocol = self.setting.protocol;
        let mut nl = Netlink::open()?;
        let ours: BTreeSet<IpAddr> = nl
            .routes(place)?
            .into_iter()
            .filter(|r| r.protocol == protocol && r.prefix_len == full_length(r.addr))
            .map(|r| r.addr)
            .collect();
        self.held = ours.clone();
        let want: BTreeSet<IpAddr> =
            self.verdicts.iter().filter(|(_, v)| v.servable).map(|(&a, _)| a).collect();
        let mut changes = Changes::default();
        // Withdrawals first: a VIP that cannot be served is the urgent case.
        for &addr in ours.difference(&want) {
            match nl.change(false, place, &LocalRoute::host(addr, 0, protocol)) {
                Ok(()) => changes.withdrawn.push(addr),
                Err(e) if e.errno() == Some(nix::errno::Errno::ESRCH) => {}
                Err(e) => return Err(e.into()),
            }
            self.held.remove(&addr);
        }
        for &addr in want.difference(&ours) {
            match nl.change(true, place, &LocalRoute::host(addr, 0, protocol)) {
                Ok(()) => changes.announced.push(addr),
                Err(e) if e.errno() == Some(nix::errno::Errno::EEXIST) => {}
                Err(e) => return Err(e.into()),
            }
            self.held.insert(addr);
        }
        Ok(changes)
    }

    /// Withdraws every VIP (the datapath is going), `why` saying so in
    /// `lb status` for as long as the agent still answers.
    pub fn withdraw_all(&mut self, why: &str) -> Result<Changes, RouteError> {
        let verdicts = self
            .verdicts
            .keys()
            .map(|&a| (a, Verdict { servable: false, why: why.to_owned() }))
            .collect();
        self.sync(verdicts)
    }

    /// For `lb status` and the metrics.
    pub fn status(&self) -> AnnounceStatus {
        use crate::control::protocol::VipAnnouncement;
        AnnounceStatus {
            table: self.setting.table,
            protocol: self.setting.protocol,
            vips: self
                .verdicts
                .iter()
                .map(|(addr, v)| VipAnnouncement {
                    vip: format!("{addr}/{}", full_length(*addr)),
                    announced: self.held.contains(addr),
                    servable: v.servable,
                    why: v.why.clone(),
                })
                .collect(),
            error: self.failed.clone(),
        }
    }
}

/// Removes every route of `setting`'s table and protocol (`lb stop` with no
/// agent running: what a stopped agent left). Returns the addresses.
pub fn remove_left(setting: Announce) -> Result<Vec<IpAddr>, RouteError> {
    let mut a = Announcer::new(setting);
    Ok(a.sync(BTreeMap::new())?.withdrawn)
}

/// Where the agent of `control_socket` notes its (table, protocol).
pub fn note_path(control_socket: &Path) -> PathBuf {
    control_socket.with_extension("announce")
}

/// The (table, protocol) noted at `path`, if a readable note is there.
pub fn noted(path: &Path) -> Option<Announce> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut words = text.split_whitespace();
    match (words.next(), words.next(), words.next(), words.next()) {
        (Some("table"), Some(t), Some("protocol"), Some(p)) => {
            Some(Announce { table: t.parse().ok()?, protocol: p.parse().ok()? })
        }
        _ => None,
    }
}

/// Notes `setting` at `path` (`None`: removes the note). A failure is
/// logged: only the clean-up after a changed setting depends on it.
pub fn note(path: &Path, setting: Option<Announce>) {
    let done = match setting {
        Some(a) => std::fs::write(path, format!("table {} protocol {}\n", a.table, a.protocol)),
        None => match std::fs::remove_file(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            r => r,
        },
    };
    if let Err(e) = done {
        tracing::warn!(
            "{}: {e}; if [agent.announce] changes, routes this agent announced may have to be \
             removed by hand (`ip route flush table TABLE proto PROTOCOL`)",
            path.display()
        );
    }
}

/// At start, or `lb stop` with no agent: withdraws what the note at `path`
/// says a previous agent announced, unless `now` (the setting in force) is
/// the same pair, which its own sync keeps clean. Returns the pair cleaned
/// and the addresses withdrawn.
pub fn remove_noted(
    path: &Path,
    now: Option<Announce>,
) -> Result<Option<(Announce, Vec<IpAddr>)>, RouteError> {
    match noted(path) {
        Some(old) if Some(old) != now => Ok(Some((old, remove_left(old)?))),
        _ => Ok(None),
    }
}

/// Logs what a sync changed; `when` says at which step.
pub fn log_changes(a: &Announcer, changes: &Changes, when: &str) {
    let Announce { table, protocol } = a.setting();
    for addr in &changes.announced {
        let why = a.verdicts().get(addr).map_or("", |v| v.why.as_str());
        let sync_us = changes.took_us;
        tracing::info!(vip = %addr, table, protocol, why, sync_us, "{when}: VIP announced");
    }
    for addr in &changes.withdrawn {
        let why = a.verdicts().get(addr).map_or("no longer a VIP", |v| v.why.as_str());
        let sync_us = changes.took_us;
        tracing::warn!(vip = %addr, table, protocol, why, sync_us, "{when}: VIP withdrawn");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_round_trips_and_goes() {
        let dir = std::env::temp_dir().join(format!("lb-note-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = note_path(&dir.join("control.sock"));
        assert_eq!(path.file_name().and_then(|n| n.to_str()), Some("control.announce"));
        assert_eq!(noted(&path), None);
        let a = Announce { table: 100_000, protocol: 253 };
        note(&path, Some(a));
        assert_eq!(noted(&path), Some(a));
        // The same pair is the running agent's own: nothing to clean.
        assert!(matches!(remove_noted(&path, Some(a)), Ok(None)));
        note(&path, None);
        assert_eq!(noted(&path), None);
        note(&path, None);
        std::fs::write(&path, "table x protocol 1").expect("write");
        assert_eq!(noted(&path), None, "an unreadable note is no note");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
