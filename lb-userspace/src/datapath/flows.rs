//! Live flows per backend: counted by sweeping the flow table (XDP mode),
//! or kept as gauges by the splice proxy.
//!
//! A flow is live while it is not idle past its timeout (the datapath and
//! the sweep judge that with the same `FlowValue::expired`); of the live
//! ones, "active" are those opening or established, "closing" those after
//! a FIN or RST. Expired entries are not deleted: the datapath already
//! treats them as gone, and the LRU recycles them first, whereas a delete
//! could race with a packet that just revived the flow.

use std::{collections::HashMap, io, os::fd::BorrowedFd, time::Duration};

use lb_common::abi::{FLOW_CLOSING, FlowKey, FlowTimeouts, FlowValue, ticks};

use super::batch;

/// Live flows of one backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Live {
    /// Opening or established.
    pub active: u64,
    /// After FIN or RST, until the closing timeout.
    pub closing: u64,
}

/// Live flows per backend id.
pub type FlowCounts = HashMap<u32, Live>;

/// Entries read per syscall.
const CHUNK: u32 = 8192;

/// Now on the datapath's clock (`bpf_ktime_get_coarse_ns` is
/// `CLOCK_MONOTONIC_COARSE`), in ticks.
pub fn now_ticks() -> u32 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC_COARSE)
        .map(|t| ticks(Duration::from(t).as_nanos() as u64))
        .unwrap_or(0)
}

/// Counts the live flows of the flow table `table` per backend at `now`
/// (ticks).
pub fn sweep(table: BorrowedFd<'_>, timeouts: &FlowTimeouts, now: u32) -> io::Result<FlowCounts> {
    let mut counts = FlowCounts::new();
    batch::for_each(table, CHUNK, |k: &FlowKey, v: &FlowValue| {
        tally(&mut counts, k, v, timeouts, now)
    })?;
    Ok(counts)
}

fn tally(counts: &mut FlowCounts, k: &FlowKey, v: &FlowValue, t: &FlowTimeouts, now: u32) {
    if v.expired(k.proto, now, t) {
        return;
    }
    let live = counts.entry(v.backend_id).or_default();
    if v.state == FLOW_CLOSING {
        live.closing += 1;
    } else {
        live.active += 1;
    }
}

#[cfg(test)]
mod tests {
    use lb_common::abi::{FLOW_ESTABLISHED, FLOW_OPENING, PROTO_TCP, PROTO_UDP};

    use super::*;

    fn count(
        flows: impl Iterator<Item = (FlowKey, FlowValue)>,
        t: &FlowTimeouts,
        now: u32,
    ) -> FlowCounts {
        let mut counts = FlowCounts::new();
        for (k, v) in flows {
            tally(&mut counts, &k, &v, t, now);
        }
        counts
    }

    fn flow(proto: u8, backend_id: u32, state: u8, last_seen: u32) -> (FlowKey, FlowValue) {
        (
            FlowKey { proto, ..Default::default() },
            FlowValue { backend_id, last_seen, syn_seq: 0, state, _pad: [0; 3] },
        )
    }

    #[test]
    fn counts_live_flows_by_state_and_skips_expired_ones() {
        let t = FlowTimeouts { tcp: 1000, tcp_closing: 100, udp: 300, flood: 0 };
        let now = 50_000;
        // A flow expires REFRESH_TICKS after its limit (last_seen lags).
        let seen = |idle: u32| now - idle - lb_common::abi::REFRESH_TICKS;
        let flows = [
            flow(PROTO_TCP, 1, FLOW_ESTABLISHED, seen(1000)),
            flow(PROTO_TCP, 1, FLOW_ESTABLISHED, seen(1001)), // idle too long
            flow(PROTO_TCP, 1, FLOW_OPENING, seen(50)),
            flow(PROTO_TCP, 1, FLOW_OPENING, seen(101)), // SYN never answered
            flow(PROTO_TCP, 1, FLOW_CLOSING, seen(100)),
            flow(PROTO_TCP, 2, FLOW_CLOSING, seen(101)),
            flow(PROTO_UDP, 2, FLOW_ESTABLISHED, seen(300)),
            flow(PROTO_UDP, 3, FLOW_ESTABLISHED, seen(301)),
        ];
        let c = count(flows.into_iter(), &t, now);
        assert_eq!(c[&1], Live { active: 2, closing: 1 });
        assert_eq!(c[&2], Live { active: 1, closing: 0 });
        assert!(!c.contains_key(&3));
    }

    #[test]
    fn ages_wrap_with_the_tick_counter() {
        let t = FlowTimeouts { tcp: 1000, tcp_closing: 100, udp: 300, flood: 0 };
        let c = count([flow(PROTO_UDP, 7, FLOW_ESTABLISHED, u32::MAX - 10)].into_iter(), &t, 20);
        assert_eq!(c[&7].active, 1);
    }
}
