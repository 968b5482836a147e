//! The plan the pinned maps hold, saved beside the control socket so the
//! next agent can take the datapath over: it plans its config *from* this
//! one, keeping every service's id and table region and every backend's id,
//! which the flows in the pinned flow table refer to. Beside the plan, each
//! backend's operator state and health, so a restart neither re-enables a
//! backend an operator disabled nor sends flows to one known to be down.

use std::{fs, io, net::SocketAddr, path::Path};

use serde::{Deserialize, Serialize};

use super::runtime::Admin;
use crate::datapath::Plan;

/// What [`save`] writes: [`Saved`] by reference, so saving copies no plan.
#[derive(Serialize)]
struct SavedRef<'a> {
    build_id: &'a str,
    plan: &'a Plan,
    backends: &'a [SavedBackend],
    dns: &'a [SavedDnsBackend],
}

#[derive(Deserialize)]
struct Saved {
    /// Build id of the eBPF object whose maps these are: another build may
    /// lay them out differently, and then nothing can be taken over.
    build_id: String,
    plan: Plan,
    /// Absent in files from before it existed: then every backend starts
    /// enabled and up, as a fresh start would.
    #[serde(default)]
    backends: Vec<SavedBackend>,
    /// The backends DNS gave, so the next agent has them if DNS does not
    /// answer when it starts. Absent in older files.
    #[serde(default)]
    dns: Vec<SavedDnsBackend>,
}

/// A backend a service had from DNS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedDnsBackend {
    /// Its service's name.
    pub service: String,
    /// Its address.
    pub addr: SocketAddr,
    /// The weight DNS gave it.
    pub weight: u32,
    /// The record it came from.
    pub record: String,
}

/// The DNS backends of `cfg`, to save.
pub fn dns_of(cfg: &crate::config::Config) -> Vec<SavedDnsBackend> {
    cfg.services
        .iter()
        .flat_map(|s| {
            s.backends.iter().filter_map(|b| {
                Some(SavedDnsBackend {
                    service: s.name.clone(),
                    addr: b.addr,
                    weight: b.weight,
                    record: b.dns.clone()?,
                })
            })
        })
        .collect()
}

/// One backend's state as the agent last knew it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedBackend {
    /// Its service's name.
    pub service: String,
    /// Its address.
    pub addr: SocketAddr,
    /// What the operator set.
    pub admin: Admin,
    /// A weight set at runtime (`lb backend weight`), if any.
    pub weight: Option<u32>,
    /// Its checks had it down.
    pub down: bool,
}

/// What a saved file holds.
#[derive(Debug, Clone, PartialEq)]
pub struct State {
    /// The plan the maps hold.
    pub plan: Plan,
    /// Backend states.
    pub backends: Vec<SavedBackend>,
    /// The backends DNS gave.
    pub dns: Vec<SavedDnsBackend>,
}

/// Writes `plan`, `backends` and `dns` (atomically: a reader never sees
/// half a file), streamed: at 100 services x 100 backends a copy of the
/// plan and its text in memory were most of the agent's peak (see
/// `cargo xtask bench agent`). The plan should be compacted
/// ([`Plan::compact`]): the live tables are in the pinned maps, and a next
/// agent writes only the tables its own plan changes.
pub fn save(
    path: &Path,
    build_id: &str,
    plan: &Plan,
    backends: &[SavedBackend],
    dns: &[SavedDnsBackend],
) -> io::Result<()> {
    let saved = SavedRef { build_id, plan, backends, dns };
    let tmp = path.with_extension("tmp");
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let mut out = io::BufWriter::new(fs::File::create(&tmp)?);
    serde_json::to_writer(&mut out, &saved).map_err(io::Error::other)?;
    io::Write::flush(&mut out)?;
    drop(out);
    fs::rename(&tmp, path)
}

/// The saved state, if it is there, readable and from the same build.
pub fn load(path: &Path, build_id: &str) -> Result<State, String> {
    let text =
        fs::read_to_string(path).map_err(|e| format!("no state at {}: {e}", path.display()))?;
    let saved: Saved = serde_json::from_str(&text).map_err(|e| format!("unreadable state: {e}"))?;
    if saved.build_id != build_id {
        return Err(format!(
            "it was loaded by another build (eBPF object {}, this is {build_id})",
            saved.build_id
        ));
    }
    Ok(State { plan: saved.plan, backends: saved.backends, dns: saved.dns })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_from_before_backend_states_loads_with_none() {
        let dir = std::env::temp_dir().join(format!("lb-saved-{}", std::process::id()));
        let path = dir.join("state.json");
        let plan = Plan {
            services: Vec::new(),
            backends: Vec::new(),
            maglev_slots: 0,
            next_service_id: 0,
        };
        save(&path, "b1", &plan, &[], &[]).unwrap();
        let text = fs::read_to_string(&path).unwrap().replace(",\"backends\":[],\"dns\":[]}", "}");
        assert_eq!(text.matches("\"backends\"").count(), 1, "only the plan's: {text}");
        fs::write(&path, text).unwrap();
        let state = load(&path, "b1").unwrap();
        assert_eq!(state.plan, plan);
        assert!(state.backends.is_empty() && state.dns.is_empty());
        assert!(load(&path, "b2").unwrap_err().contains("another build"));
        let _ = fs::remove_dir_all(dir);
    }
}
