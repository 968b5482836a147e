//! The datapath's "maybe ours" prefilter (`lb_common::prefilter`): the
//! words a plan calls for, and their writing around the plan's entries. A
//! packet whose endpoints' bits are clear skips every lookup, so an entry
//! whose bit is clear would be ignored: bits are set before the entries
//! that need them are written, and cleared only once those are gone.

use aya::maps::{Array, MapData};
use lb_common::{abi::MAP_PREFILTER, prefilter};

use super::{
    DatapathError,
    kernel::{Datapath, map_err},
    plan::Plan,
    replies::replies,
};

/// The filter's words for `plan`: the bits of its VIPs and of every
/// backend endpoint the replies map holds.
pub fn words(plan: &Plan) -> Vec<u64> {
    let mut words = vec![0u64; prefilter::WORDS as usize];
    let vips = plan.services.iter().map(|s| (s.key.addr, s.key.port_be, s.key.proto));
    let backends = replies(plan).0.into_keys().map(|e| (e.addr, e.port_be, e.proto));
    for (addr, port_be, proto) in vips.chain(backends) {
        let (word, mask) = prefilter::word_and_mask(prefilter::bit(&addr, port_be, proto));
        if let Some(w) = words.get_mut(word as usize) {
            *w |= mask;
        }
    }
    words
}

/// What the map holds now (after a takeover, what the last agent wrote).
pub fn read(dp: &Datapath) -> Result<Vec<u64>, DatapathError> {
    let map: Array<&MapData, u64> = dp.map(MAP_PREFILTER)?;
    (0..prefilter::WORDS).map(|i| map.get(&i, 0).map_err(map_err(MAP_PREFILTER))).collect()
}

/// Writes the words of `want` that differ from `had` (what the map holds).
pub fn write(dp: &mut Datapath, had: &[u64], want: &[u64]) -> Result<(), DatapathError> {
    let mut map: Array<&mut MapData, u64> = dp.map_mut(MAP_PREFILTER)?;
    for (i, (h, w)) in (0u32..).zip(had.iter().zip(want)) {
        if h != w {
            map.set(i, *w, 0).map_err(map_err(MAP_PREFILTER))?;
        }
    }
    Ok(())
}

/// Both: every bit either holds.
pub fn union(a: &[u64], b: &[u64]) -> Vec<u64> {
    a.iter().zip(b).map(|(x, y)| x | y).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{config, datapath::plan};

    fn plan_of(toml: &str) -> Plan {
        plan::plan(&config::parse(toml, std::path::Path::new("test.toml")).expect("config"))
            .expect("plan")
    }

    fn has(words: &[u64], ip: &str, port: u16, proto: u8) -> bool {
        let addr = lb_common::abi::Addr::from(ip.parse::<std::net::IpAddr>().unwrap());
        let (w, m) = prefilter::word_and_mask(prefilter::bit(&addr, port.to_be(), proto));
        words[w as usize] & m != 0
    }

    #[test]
    fn every_vip_and_backend_endpoint_is_set() {
        let p = plan_of(
            "[[service]]\nname = \"w\"\nvip = \"10.0.0.1:80\"\n\
             [[service.backend]]\naddr = \"10.0.1.1:8080\"\n\
             [[service.backend]]\naddr = \"10.0.1.2:8080\"\n\
             [[service]]\nname = \"d\"\nvip = \"[fd00::1]:53\"\nprotocol = \"udp\"\n\
             [[service.backend]]\naddr = \"[fd00:1::1]:53\"\n",
        );
        let w = words(&p);
        assert!(has(&w, "10.0.0.1", 80, 6));
        assert!(has(&w, "10.0.1.1", 8080, 6));
        assert!(has(&w, "10.0.1.2", 8080, 6));
        assert!(has(&w, "fd00::1", 53, 17));
        assert!(has(&w, "fd00:1::1", 53, 17));
        let set: u32 = w.iter().map(|x| x.count_ones()).sum();
        assert!(set <= 5, "only those: {set} bits");
        assert!(union(&w, &vec![0; w.len()]) == w);
    }
}
