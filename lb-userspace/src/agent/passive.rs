//! Passive failure signals: what the datapath saw in passing traffic
//! (refusals, ICMP unreachables, SYNs left unanswered) takes a backend down
//! at once, before its next probe, unless damped (see
//! `Runtime::probe_after_passive`) or the service has no probes (nothing
//! would bring the backend back).

use std::{
    collections::HashMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use lb_common::abi::{BACKEND_DOWN, EVENT_REFUSED, EVENT_UNREACHABLE, PassiveEvent};

use super::{Agent, State, apply, backend_of};
use crate::{
    config::{HealthKind, Protocol, Service},
    datapath::syns::SynView,
    health::{
        Health,
        unanswered::{SynWatch, Unanswered},
    },
};

/// What found a health change; logged as `signal=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// The health checks.
    Probe,
    /// A TCP reset answering a forwarded SYN.
    Refused,
    /// An ICMP destination unreachable about a forwarded flow.
    Unreachable,
    /// Forwarded SYNs left unanswered past the service's `syn_timeout`.
    Unanswered,
}

impl Signal {
    /// The name logged.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Probe => "probe",
            Signal::Refused => "refused",
            Signal::Unreachable => "unreachable",
            Signal::Unanswered => "unanswered",
        }
    }
}

/// How the unanswered-SYN signal is set for a service: the time after which
/// a SYN counts as unanswered and how many it takes (0: off).
pub fn syn_settings(svc: &Service) -> (Duration, u32) {
    (svc.health.syn_timeout, svc.health.syn_unanswered)
}

/// The SYN watch of every backend the unanswered-SYN signal covers, by
/// backend id (stable across reloads), with the sample it was last seen in.
#[derive(Debug, Default)]
pub struct Watches {
    by_id: HashMap<u32, (SynWatch, u64)>,
    sample: u64,
}

impl Agent {
    /// Acts on an event from the datapath's ring buffer (or the splice
    /// proxy's channel).
    pub fn on_event(&self, ev: PassiveEvent) {
        let (signal, reason) = match ev.kind {
            EVENT_REFUSED => {
                (Signal::Refused, "refused a forwarded connection (TCP reset to a SYN)".to_owned())
            }
            EVENT_UNREACHABLE => (
                Signal::Unreachable,
                "ICMP destination unreachable about a forwarded flow".to_owned(),
            ),
            _ => return,
        };
        let mut st = self.lock();
        let Some((service, addr, probed)) = backend_of(&st, ev.backend_id) else { return };
        if probed {
            self.passive_down(&mut st, service, addr, signal, &reason);
        }
    }

    /// Samples the SYN counters of every backend the unanswered-SYN signal
    /// covers (up, in a probed TCP service that has the signal on) and takes
    /// down those that stopped answering.
    pub fn check_unanswered(&self, view: &SynView, watches: &mut Watches) {
        // Runs every few milliseconds over every backend: nothing here
        // allocates unless a backend is reported.
        let now = Instant::now();
        let mut st = self.lock();
        let mut down = Vec::new();
        watches.sample += 1;
        let sample = watches.sample;
        for (svc, planned) in st.config.services.iter().zip(&st.plan.services) {
            let (timeout, needed) = syn_settings(svc);
            if svc.protocol != Protocol::Tcp || svc.health.kind == HealthKind::None || needed == 0 {
                continue;
            }
            for (b, &id) in svc.backends.iter().zip(&planned.backend_ids) {
                // The plan's state already says whether its checks (and the
                // operator) let it take flows: down covers both.
                if st.plan.backends.get(id as usize).is_none_or(|r| r.state == BACKEND_DOWN) {
                    continue;
                }
                let counters = view.get(id);
                let (w, seen) =
                    watches.by_id.entry(id).or_insert_with(|| (SynWatch::new(counters), sample));
                *seen = sample;
                if let Some(Unanswered { connections }) = w.observe(now, counters, timeout, needed)
                {
                    down.push(((svc.name.clone(), b.addr), connections, timeout));
                }
            }
        }
        // Backends no longer watched start afresh when they are again.
        watches.by_id.retain(|_, (_, seen)| *seen == sample);
        for ((service, addr), n, timeout) in down {
            let reason = format!(
                "{n} forwarded SYNs unanswered for over {} ms",
                timeout.as_secs_f64() * 1e3
            );
            self.passive_down(&mut st, service, addr, Signal::Unanswered, &reason);
        }
    }

    /// Takes a backend down on a passive signal, unless damped.
    fn passive_down(
        &self,
        st: &mut State,
        service: String,
        addr: SocketAddr,
        signal: Signal,
        reason: &str,
    ) {
        let key = (service.clone(), addr);
        let Some(rt) = st.runtimes.get_mut(&key) else { return };
        if rt.tracker.health() == Health::Down || !rt.passive_allowed(Instant::now()) {
            return;
        }
        let Some(_) = rt.tracker.force_down() else { return };
        rt.transitions += 1;
        let started = Instant::now();
        match apply(st, &self.state_file) {
            Ok(()) => tracing::warn!(
                service,
                backend = %addr,
                to = "down",
                signal = signal.name(),
                reason,
                apply_us = started.elapsed().as_micros() as u64,
                "backend health changed"
            ),
            Err(e) => {
                tracing::error!(service, backend = %addr, "applying a passive signal failed: {e}")
            }
        }
    }
}
