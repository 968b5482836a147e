//! Service ids given again (see `plan::replan`, once every id has been
//! handed out): what the id's last service left in the maps, its counters
//! and its sources' buckets, is cleared before the id's new record goes
//! in, so a new service starts from zero and no source of it starts
//! limited by another service's history.

use aya::maps::{HashMap, MapData, PerCpuArray, PerCpuValues};
use lb_common::abi::{BucketKey, Counters, MAP_BUCKETS, MAP_SERVICE_COUNTERS};

use super::{
    kernel::{Datapath, DatapathError, map_err},
    plan::Plan,
};

/// The ids of `new` that `old`'s services do not hold but that were
/// handed out before `old` (fresh ids are below nothing: their entries
/// were never written).
pub fn ids(old: &Plan, new: &Plan) -> Vec<u32> {
    new.services
        .iter()
        .map(|s| s.record.id)
        .filter(|&id| id < old.next_service_id && !old.services.iter().any(|o| o.record.id == id))
        .collect()
}

/// Clears the counters and buckets of the service ids `reused`.
pub fn clear(dp: &mut Datapath, reused: &[u32]) -> Result<(), DatapathError> {
    if reused.is_empty() {
        return Ok(());
    }
    let cpus = aya::util::nr_cpus()
        .map_err(|(what, e)| DatapathError::Window(format!("counting CPUs ({what}): {e}")))?;
    let mut counters: PerCpuArray<&mut MapData, Counters> = dp.map_mut(MAP_SERVICE_COUNTERS)?;
    for &id in reused {
        let zero = PerCpuValues::try_from(vec![Counters::default(); cpus])
            .map_err(|e| DatapathError::Window(format!("zeroed counters: {e}")))?;
        counters.set(id, zero, 0).map_err(map_err(MAP_SERVICE_COUNTERS))?;
    }
    let mut buckets: HashMap<&mut MapData, BucketKey, u64> = dp.map_mut(MAP_BUCKETS)?;
    let stale: Vec<BucketKey> =
        buckets.keys().filter_map(Result::ok).filter(|k| reused.contains(&k.service_id)).collect();
    for key in &stale {
        // Gone already (evicted meanwhile) is as good as removed.
        let _ = buckets.remove(key);
    }
    Ok(())
}
