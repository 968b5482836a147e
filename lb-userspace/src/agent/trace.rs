//! `lb trace` from the agent: one session at a time, named from the plan.

use std::sync::Arc;

use super::{Agent, State};
use crate::trace::{Names, Session, TraceSpec, Tracer};

impl Agent {
    /// Gives the agent the datapath's trace machinery (XDP mode).
    pub fn with_tracer(mut self, tracer: Tracer) -> Self {
        self.tracer = Some(Arc::new(tracer));
        self
    }

    /// Starts a trace session for `spec`, or says why not: splice mode has
    /// no kernel datapath to trace, and only one session runs at a time.
    pub fn start_trace(&self, spec: TraceSpec) -> Result<Session, String> {
        let Some(tracer) = &self.tracer else {
            let mode = self.lock().datapath.mode();
            return Err(format!(
                "lb trace follows packets through the kernel datapath (XDP or tc hook); this \
                 agent runs in {mode} mode{}, a userspace proxy with no datapath to trace: its \
                 connections show in its log (lb run -v)",
                self.mode_reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
            ));
        };
        let filter = spec.filter().map_err(|e| e.to_string())?;
        let names = names(&self.lock());
        tracer.start(filter, names, spec.to_string())
    }
}

/// The names of the services and backends the plan holds, by id.
fn names(st: &State) -> Names {
    let mut names = Names::default();
    for (svc, planned) in st.config.services.iter().zip(&st.plan.services) {
        names
            .services
            .insert(planned.record.id, format!("{} ({} {})", svc.name, svc.vip, svc.protocol));
        for (id, b) in planned.backend_ids.iter().zip(&svc.backends) {
            names.backends.insert(*id, b.addr.to_string());
        }
    }
    names
}
