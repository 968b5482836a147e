//! The plan the pinned maps hold, saved beside the control socket so the
//! next agent can take the datapath over: it plans its config *from* this
//! one, keeping every service's id and table region and every backend's id,
//! which the flows in the pinned flow table refer to.

use std::{fs, io, path::Path};

use serde::{Deserialize, Serialize};

use super::plan::Plan;

#[derive(Serialize, Deserialize)]
struct Saved {
    /// Build id of the eBPF object whose maps these are: another build may
    /// lay them out differently, and then nothing can be taken over.
    build_id: String,
    plan: Plan,
}

/// Writes `plan` (atomically: a reader never sees half a file).
pub fn save(path: &Path, build_id: &str, plan: &Plan) -> io::Result<()> {
    let text = serde_json::to_string(&Saved { build_id: build_id.to_owned(), plan: plan.clone() })
        .map_err(io::Error::other)?;
    let tmp = path.with_extension("tmp");
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::write(&tmp, text)?;
    fs::rename(&tmp, path)
}

/// The saved plan, if it is there, readable and from the same build.
pub fn load(path: &Path, build_id: &str) -> Result<Plan, String> {
    let text =
        fs::read_to_string(path).map_err(|e| format!("no state at {}: {e}", path.display()))?;
    let saved: Saved = serde_json::from_str(&text).map_err(|e| format!("unreadable state: {e}"))?;
    if saved.build_id != build_id {
        return Err(format!(
            "it was loaded by another build (eBPF object {}, this is {build_id})",
            saved.build_id
        ));
    }
    Ok(saved.plan)
}
