//! Reading the per-CPU counters into totals.

use aya::maps::{MapData, PerCpuArray};
use lb_common::abi::{Counters, DropReason, MAP_BACKEND_COUNTERS, MAP_DROPS, MAP_SERVICE_COUNTERS};

use super::kernel::{Datapath, DatapathError};

/// Totals over all CPUs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    /// Per service id, up to the largest asked for (ids not asked for are
    /// zero: a reload that re-creates a service gives it a new id, so ids
    /// run past the number of services).
    pub services: Vec<Counters>,
    /// Per backend id.
    pub backends: Vec<Counters>,
    /// Per `DropReason`, in `DropReason::ALL` order.
    pub exceptions: Vec<u64>,
    /// Exceptions only the splice proxy has: (reason, action, connections).
    pub proxy_exceptions: Vec<(&'static str, &'static str, u64)>,
}

/// Zeroed counters for every id up to the largest of `ids`.
pub fn by_id(ids: &[u32]) -> Vec<Counters> {
    let len = ids.iter().max().map_or(0, |&m| m as usize + 1);
    vec![Counters::default(); len]
}

/// Reads the counters of the services `services` (ids) and of the first
/// `backends` backends, and every exception counter.
pub fn read(dp: &Datapath, services: &[u32], backends: u32) -> Result<Totals, DatapathError> {
    let svc: PerCpuArray<&MapData, Counters> = dp.map(MAP_SERVICE_COUNTERS)?;
    let be: PerCpuArray<&MapData, Counters> = dp.map(MAP_BACKEND_COUNTERS)?;
    let drops: PerCpuArray<&MapData, u64> = dp.map(MAP_DROPS)?;
    let err = |map| move |source| DatapathError::Map { map, source };
    let sum = |arr: &PerCpuArray<&MapData, Counters>, i, map| {
        arr.get(&i, 0).map(|v| Counters::sum(v.iter())).map_err(err(map))
    };
    let mut by = by_id(services);
    for &id in services {
        if let Some(slot) = by.get_mut(id as usize) {
            *slot = sum(&svc, id, MAP_SERVICE_COUNTERS)?;
        }
    }
    Ok(Totals {
        services: by,
        backends: (0..backends)
            .map(|i| sum(&be, i, MAP_BACKEND_COUNTERS))
            .collect::<Result<_, _>>()?,
        exceptions: DropReason::ALL
            .iter()
            .map(|r| drops.get(&(*r as u32), 0).map(|v| v.iter().sum()).map_err(err(MAP_DROPS)))
            .collect::<Result<_, _>>()?,
        proxy_exceptions: Vec::new(),
    })
}
