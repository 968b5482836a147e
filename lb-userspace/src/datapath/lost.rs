//! Frames lost where the datapath cannot see it: after an XDP redirect, in
//! the target device (a veth's ring, or a peer without NAPI), and in the
//! device's own queues. The kernel counts them; this reads its counters and
//! says what to do about them.

use std::{collections::HashMap, fs, time::Instant};

use super::{attach::Hook, ifaces};
use crate::control::protocol::{InterfaceStatus, LostFrames};

/// How often one interface's loss is logged at most.
const WARN_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// The kernel's counts for interface `name` (zeros for what it does not
/// count, or for an interface that is gone).
pub fn read(name: &str) -> LostFrames {
    let xdp_xmit_errors = ifaces::driver_stats(name)
        .map(|s| s.iter().filter(|(n, _)| n.contains("xdp_xmit_err")).map(|(_, v)| v).sum())
        .unwrap_or(0);
    let sysfs = |counter: &str| -> u64 {
        fs::read_to_string(format!("/sys/class/net/{name}/statistics/{counter}"))
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    LostFrames { xdp_xmit_errors, dropped: sysfs("rx_dropped") + sysfs("tx_dropped") }
}

/// What to do about frames lost on `iface`, at hook `hook`.
pub fn advice(iface: &str, hook: &str, lost: &LostFrames) -> String {
    if lost.total() > 0 && hook != Hook::Tc.name() {
        // The kernel counts a frame XDP redirected and the target refused
        // either on the target (xdp_xmit errors) or on the interface it
        // came in on (dropped), depending on the driver and version.
        format!(
            "frames were lost at {iface} or after XDP redirected them from it: a veth the \
             datapath redirects into whose peer has no NAPI (GRO off and no XDP program), or \
             whose XDP ring overflowed, drops them; enable GRO on the peers (ethtool -K PEER \
             gro on), attach an XDP program to them, or use attach = \"tc\" (what attach = \
             \"auto\" picks for veth)"
        )
    } else {
        format!(
            "{iface} dropped frames; `ethtool -S {iface}` and `ip -s link show {iface}` say where"
        )
    }
}

/// Watches the interfaces' losses between calls and warns when they grow,
/// at most once a minute per interface.
#[derive(Debug, Default)]
pub struct LossWatch {
    seen: HashMap<String, (LostFrames, Option<Instant>)>,
}

impl LossWatch {
    /// Reads every interface's counters; logs those that grew since the
    /// last call (the first call only records).
    pub fn check(&mut self, interfaces: &[InterfaceStatus]) {
        for i in interfaces {
            let now = read(&i.name);
            let Some((before, warned)) = self.seen.get_mut(&i.name) else {
                self.seen.insert(i.name.clone(), (now, None));
                continue;
            };
            let grew = LostFrames {
                xdp_xmit_errors: now.xdp_xmit_errors.saturating_sub(before.xdp_xmit_errors),
                dropped: now.dropped.saturating_sub(before.dropped),
            };
            *before = now;
            if grew.total() > 0 && warned.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                *warned = Some(Instant::now());
                tracing::warn!(
                    interface = %i.name,
                    hook = %i.attach,
                    xdp_xmit_errors = grew.xdp_xmit_errors,
                    dropped = grew.dropped,
                    "frames lost: {}",
                    advice(&i.name, &i.attach, &grew)
                );
            }
        }
    }
}
