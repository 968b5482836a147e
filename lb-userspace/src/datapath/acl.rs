//! What the two ACL tries must hold for a plan, and writing the change.
//!
//! The datapath asks its trie once per packet and the longest covering
//! entry answers. For "deny wins" to hold whatever the lengths, an allow
//! prefix inside a deny prefix of the same service is written as a deny:
//! then the longest entry covering a denied source is a deny, or an allow
//! inside a deny, which is written as one.

use std::collections::BTreeMap;
use std::net::IpAddr;

use aya::maps::{
    MapData,
    lpm_trie::{Key, LpmTrie},
};
use lb_common::abi::{ACL_ALLOW, ACL_DENY, AclV4, AclV6, MAP_ACL_V4, MAP_ACL_V6};

use super::{DatapathError, Plan, kernel::Datapath, plan::PlannedService};
use crate::config::Prefix;

/// One trie's entries: (prefix length as the trie counts it, data) ->
/// `ACL_ALLOW` or `ACL_DENY`.
pub type Trie<K> = BTreeMap<(u32, K), u32>;

/// Both tries' entries for `plan`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tries {
    /// IPv4 sources.
    pub v4: Trie<AclV4>,
    /// IPv6 sources.
    pub v6: Trie<AclV6>,
}

/// The entries of every service of `plan`.
pub fn tries(plan: &Plan) -> Tries {
    let mut out = Tries::default();
    for svc in &plan.services {
        for (prefix, verdict) in verdicts(svc) {
            // The service id takes the key's first 32 bits.
            let len = 32 + u32::from(prefix.bits());
            let service_id = svc.record.id;
            match prefix.addr() {
                IpAddr::V4(a) => {
                    out.v4.insert((len, AclV4 { service_id, addr: a.octets() }), verdict);
                }
                IpAddr::V6(a) => {
                    out.v6.insert((len, AclV6 { service_id, addr: a.octets() }), verdict);
                }
            }
        }
    }
    out
}

/// Each listed prefix of `svc` with what its trie entry says.
fn verdicts(svc: &PlannedService) -> impl Iterator<Item = (Prefix, u32)> + '_ {
    let allow = svc.allow.iter().map(|a| {
        let denied = svc.deny.iter().any(|d| d.covers(a));
        (*a, if denied { ACL_DENY } else { ACL_ALLOW })
    });
    // Denies last: a prefix in both lists is denied.
    allow.chain(svc.deny.iter().map(|d| (*d, ACL_DENY)))
}

/// Writes the entries `want` has and `had` lacks or holds otherwise.
pub fn insert(dp: &mut Datapath, had: &Tries, want: &Tries) -> Result<(), DatapathError> {
    let mut v4: LpmTrie<&mut MapData, AclV4, u32> = dp.map_mut(MAP_ACL_V4)?;
    put(&mut v4, &had.v4, &want.v4, MAP_ACL_V4)?;
    let mut v6: LpmTrie<&mut MapData, AclV6, u32> = dp.map_mut(MAP_ACL_V6)?;
    put(&mut v6, &had.v6, &want.v6, MAP_ACL_V6)
}

/// Removes the entries `had` has and `want` lacks.
pub fn remove(dp: &mut Datapath, had: &Tries, want: &Tries) -> Result<(), DatapathError> {
    let mut v4: LpmTrie<&mut MapData, AclV4, u32> = dp.map_mut(MAP_ACL_V4)?;
    prune(&mut v4, &had.v4, &want.v4, MAP_ACL_V4)?;
    let mut v6: LpmTrie<&mut MapData, AclV6, u32> = dp.map_mut(MAP_ACL_V6)?;
    prune(&mut v6, &had.v6, &want.v6, MAP_ACL_V6)
}

fn put<K: aya::Pod + Ord>(
    map: &mut LpmTrie<&mut MapData, K, u32>,
    had: &Trie<K>,
    want: &Trie<K>,
    name: &'static str,
) -> Result<(), DatapathError> {
    for (&(len, data), verdict) in want {
        if had.get(&(len, data)) != Some(verdict) {
            map.insert(&Key::new(len, data), verdict, 0)
                .map_err(|source| DatapathError::Map { map: name, source })?;
        }
    }
    Ok(())
}

fn prune<K: aya::Pod + Ord>(
    map: &mut LpmTrie<&mut MapData, K, u32>,
    had: &Trie<K>,
    want: &Trie<K>,
    name: &'static str,
) -> Result<(), DatapathError> {
    for &(len, data) in had.keys().filter(|k| !want.contains_key(k)) {
        map.remove(&Key::new(len, data))
            .map_err(|source| DatapathError::Map { map: name, source })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{config, datapath::plan};
    use std::path::Path;

    fn tries_of(keys: &str) -> Tries {
        let text = format!(
            "[[service]]\nname = \"web\"\nvip = \"10.0.0.100:80\"\ntable_size = 7\n{keys}\n\
             [[service.backend]]\naddr = \"10.0.1.1:80\"\n"
        );
        tries(&plan::plan(&config::parse(&text, Path::new("t.toml")).unwrap()).unwrap())
    }

    #[test]
    fn an_allow_inside_a_deny_is_written_as_a_deny() {
        let t = tries_of(
            "allow = [\"10.0.0.0/8\", \"10.1.2.0/24\", \"2001:db8::/32\"]\n\
             deny = [\"10.1.0.0/16\", \"10.0.0.0/8\"]",
        );
        let v4: Vec<(u32, [u8; 4], u32)> =
            t.v4.iter().map(|((len, k), &v)| (*len, k.addr, v)).collect();
        assert_eq!(
            v4,
            vec![
                (40, [10, 0, 0, 0], ACL_DENY),
                (48, [10, 1, 0, 0], ACL_DENY),
                (56, [10, 1, 2, 0], ACL_DENY),
            ],
            "in both lists: denied; inside a deny: denied"
        );
        assert_eq!(t.v6.values().copied().collect::<Vec<_>>(), vec![ACL_ALLOW]);
        assert_eq!(t.v6.keys().next().map(|k| k.0), Some(64));
        let t = tries_of("allow = [\"10.0.0.0/8\"]\ndeny = [\"10.1.0.0/16\"]");
        assert_eq!(t.v4.values().copied().collect::<Vec<_>>(), vec![ACL_ALLOW, ACL_DENY]);
    }

    #[test]
    fn no_lists_no_entries() {
        assert_eq!(tries_of(""), Tries::default());
    }
}
