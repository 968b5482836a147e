//! Which backend a connection goes to in splice mode: the same Maglev table
//! and the same flow hash as the XDP datapath, so both modes send a flow to
//! the same backend; then, if that backend refuses, the owners of the
//! following slots, in table order.

use lb_common::{
    abi::{FlowKey, NO_BACKEND},
    hash::{client_hash, flow_hash, slot_for},
};

/// The hash XDP uses for this flow: of the client address for affinity
/// services, of the 5-tuple otherwise.
pub fn hash(key: &FlowKey, client_affinity: bool) -> u32 {
    if client_affinity { client_hash(&key.src) } else { flow_hash(key) }
}

/// Up to `budget` distinct backend ids to try, best first: the one at the
/// flow's slot, then those of the next slots.
pub fn candidates(table: &[u32], hash: u32, budget: usize) -> Vec<u32> {
    let mut out = Vec::with_capacity(budget);
    let Some(first) = slot_for(hash, table.len() as u32) else { return out };
    for step in 0..table.len() {
        if out.len() == budget {
            break;
        }
        let id = table[(first as usize + step) % table.len()];
        if id != NO_BACKEND && !out.contains(&id) {
            out.push(id);
        }
    }
    out
}

/// How many distinct backends own slots of `table`.
pub fn owners(table: &[u32]) -> usize {
    let mut ids: Vec<u32> = table.iter().copied().filter(|&id| id != NO_BACKEND).collect();
    ids.sort_unstable();
    ids.dedup();
    ids.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_candidate_is_the_slot_owner_then_new_ones_in_table_order() {
        let table = [7, 7, 3, 7, 5, 3];
        assert_eq!(candidates(&table, 0, 3), vec![7, 3, 5]);
        assert_eq!(candidates(&table, 4, 2), vec![5, 3]);
        assert_eq!(candidates(&table, 4, 9), vec![5, 3, 7], "no more than there are");
        assert!(candidates(&[NO_BACKEND; 5], 1, 3).is_empty());
        assert!(candidates(&[], 1, 3).is_empty());
        assert_eq!(owners(&table), 3);
        assert_eq!(owners(&[NO_BACKEND, 4, 4]), 1);
    }
}
