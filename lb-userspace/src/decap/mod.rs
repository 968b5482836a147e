//! The backend side of direct server return: `lb decap` loads the
//! decapsulating programs (`lb_decap_xdp`, `lb_decap_tc`) of the same
//! object `lb run` uses, lists this host's addresses in `LB_DECAP_ADDRS`,
//! attaches to interfaces and pins what it made under a directory of its
//! own, apart from `lb run`'s, so both can run on one host.
//!
//! ```text
//! <pin_dir>/maps/LB_DECAP_ADDRS, LB_DECAP_COUNTERS
//! <pin_dir>/links/<iface>, links/tc-<iface>
//! ```
//! `lb decap --status` reads the pinned counters, `lb decap --stop` detaches
//! the pinned links and removes the directory (the foreground process sees
//! it gone and exits).

pub mod addrs;
pub mod attach;

use std::{collections::BTreeSet, net::IpAddr, path::Path};

use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::{HashMap, Map, MapData, MapError, PerCpuArray},
    programs::{ProgramError, SchedClassifier, Xdp},
};
use lb_common::abi::{
    ALL_MAPS, Addr, DECAP_MAPS, DecapCounters, MAP_DECAP_ADDRS, MAP_DECAP_COUNTERS, MAP_EVENTS,
    MAX_DECAP_ADDRS, family_of,
};

use crate::{datapath::pins::Pins, object::BpfObject};

/// The XDP entry point.
pub const XDP_PROGRAM: &str = "lb_decap_xdp";
/// The tc entry point.
pub const TC_PROGRAM: &str = "lb_decap_tc";
/// Where `lb decap` pins by default (`lb run` pins at /sys/fs/bpf/lb).
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/lb-decap";

/// Why the decapsulating program could not be loaded, filled or read.
#[derive(Debug, thiserror::Error)]
pub enum DecapError {
    /// The object could not be parsed or its maps created.
    #[error("loading the eBPF object ({origin}) failed: {source}")]
    Load {
        /// Where the object came from.
        origin: String,
        /// The error (boxed: it is large).
        source: Box<EbpfError>,
    },
    /// The object lacks a program or map `lb decap` needs.
    #[error(
        "the eBPF object has no {0}; rebuild it with `cargo xtask build-ebpf --release` (and lb to embed it)"
    )]
    Missing(&'static str),
    /// The verifier or the kernel refused a program.
    #[error("the kernel refused {program}: {source}")]
    Program {
        /// The program.
        program: &'static str,
        /// The error.
        source: ProgramError,
    },
    /// A map could not be read, written or pinned.
    #[error("map {map}: {source}")]
    Map {
        /// The map.
        map: &'static str,
        /// The error.
        source: MapError,
    },
    /// More addresses than the map holds.
    #[error(
        "{count} addresses to decapsulate for, at most {MAX_DECAP_ADDRS} fit; list the ones the balancer sends to with --address"
    )]
    TooManyAddresses {
        /// How many were given.
        count: usize,
    },
}

/// The loaded decapsulating programs and their maps.
#[derive(Debug)]
pub struct Decap {
    ebpf: Ebpf,
    addrs: BTreeSet<IpAddr>,
}

impl Decap {
    /// Loads both programs of `object`, its decap maps pinned under `pins`
    /// if given. The balancer's maps of the object are made as small as
    /// they go (one entry): the decap programs never touch them.
    pub fn load(object: &BpfObject, pins: Option<&Pins>) -> Result<Self, DecapError> {
        let mut loader = EbpfLoader::new();
        for name in ALL_MAPS.iter().filter(|&&m| m != MAP_EVENTS) {
            loader.map_max_entries(name, 1);
        }
        let paths: Vec<_> =
            pins.map(|p| DECAP_MAPS.map(|m| (m, p.map(m))).to_vec()).unwrap_or_default();
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(&object.bytes).map_err(|source| DecapError::Load {
            origin: object.origin.to_string(),
            source: Box::new(source),
        })?;
        let program = |e| DecapError::Program { program: XDP_PROGRAM, source: e };
        let xdp: &mut Xdp = ebpf
            .program_mut(XDP_PROGRAM)
            .ok_or(DecapError::Missing(XDP_PROGRAM))?
            .try_into()
            .map_err(program)?;
        xdp.load().map_err(program)?;
        let program = |e| DecapError::Program { program: TC_PROGRAM, source: e };
        let tc: &mut SchedClassifier = ebpf
            .program_mut(TC_PROGRAM)
            .ok_or(DecapError::Missing(TC_PROGRAM))?
            .try_into()
            .map_err(program)?;
        tc.load().map_err(program)?;
        let mut decap = Self { ebpf, addrs: BTreeSet::new() };
        // Maps reused from an earlier pin keep their addresses: start from
        // what they hold, so `set_addresses` removes the stale ones.
        decap.addrs = decap.listed()?;
        Ok(decap)
    }

    /// The XDP program.
    pub fn xdp(&mut self) -> Result<&mut Xdp, DecapError> {
        let e = |source| DecapError::Program { program: XDP_PROGRAM, source };
        self.ebpf
            .program_mut(XDP_PROGRAM)
            .ok_or(DecapError::Missing(XDP_PROGRAM))?
            .try_into()
            .map_err(e)
    }

    /// The tc program.
    pub fn tc(&mut self) -> Result<&mut SchedClassifier, DecapError> {
        let e = |source| DecapError::Program { program: TC_PROGRAM, source };
        self.ebpf
            .program_mut(TC_PROGRAM)
            .ok_or(DecapError::Missing(TC_PROGRAM))?
            .try_into()
            .map_err(e)
    }

    fn addr_map(&mut self) -> Result<HashMap<&mut MapData, Addr, u32>, DecapError> {
        let map = self.ebpf.map_mut(MAP_DECAP_ADDRS).ok_or(DecapError::Missing(MAP_DECAP_ADDRS))?;
        HashMap::try_from(map).map_err(|source| DecapError::Map { map: MAP_DECAP_ADDRS, source })
    }

    fn listed(&mut self) -> Result<BTreeSet<IpAddr>, DecapError> {
        let map = self.addr_map()?;
        Ok(map
            .iter()
            .filter_map(Result::ok)
            .map(|(addr, family)| addr.to_ip(family as u8))
            .collect())
    }

    /// Makes `LB_DECAP_ADDRS` hold exactly `want`: new addresses are added
    /// before stale ones go. Returns (added, removed).
    pub fn set_addresses(
        &mut self,
        want: &BTreeSet<IpAddr>,
    ) -> Result<(Vec<IpAddr>, Vec<IpAddr>), DecapError> {
        if want.len() > MAX_DECAP_ADDRS as usize {
            return Err(DecapError::TooManyAddresses { count: want.len() });
        }
        let added: Vec<IpAddr> = want.difference(&self.addrs).copied().collect();
        let removed: Vec<IpAddr> = self.addrs.difference(want).copied().collect();
        let err = |source| DecapError::Map { map: MAP_DECAP_ADDRS, source };
        let mut map = self.addr_map()?;
        for ip in &added {
            map.insert(Addr::from(*ip), u32::from(family_of(*ip)), 0).map_err(err)?;
        }
        for ip in &removed {
            map.remove(&Addr::from(*ip)).map_err(err)?;
        }
        self.addrs = want.clone();
        Ok((added, removed))
    }

    /// The counters, summed over the CPUs.
    pub fn counters(&self) -> Result<DecapCounters, DecapError> {
        let map =
            self.ebpf.map(MAP_DECAP_COUNTERS).ok_or(DecapError::Missing(MAP_DECAP_COUNTERS))?;
        sum_counters(PerCpuArray::try_from(map))
    }
}

/// The counters of a decap pinned under `pins` (another process's).
pub fn pinned_counters(pins: &Pins) -> Result<DecapCounters, DecapError> {
    let err = |source| DecapError::Map { map: MAP_DECAP_COUNTERS, source };
    let data = MapData::from_pin(pins.map(MAP_DECAP_COUNTERS)).map_err(err)?;
    sum_counters(PerCpuArray::try_from(Map::PerCpuArray(data)))
}

fn sum_counters<T: std::borrow::Borrow<MapData>>(
    arr: Result<PerCpuArray<T, DecapCounters>, MapError>,
) -> Result<DecapCounters, DecapError> {
    let err = |source| DecapError::Map { map: MAP_DECAP_COUNTERS, source };
    let values = arr.map_err(err)?.get(&0, 0).map_err(err)?;
    Ok(DecapCounters::sum(values.iter()))
}

/// Whether a decap is pinned under `dir` (its counters map is there).
pub fn pinned(dir: &Path) -> bool {
    Pins::new(dir).map(MAP_DECAP_COUNTERS).exists()
}
