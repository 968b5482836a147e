//! The running XDP balancer: owns the loaded datapath and answers the
//! control socket from it.

use std::sync::Mutex;

use lb_common::abi::{BACKEND_ACTIVE, BACKEND_DRAINING, Counters, DropReason};

use crate::{
    config::Config,
    control::{
        Request, Response,
        protocol::{
            BackendStatus, ExceptionStatus, InterfaceStatus, ServiceStatus, StatusReport, Traffic,
        },
        server::Handler,
    },
    datapath::{Datapath, DatapathError, Plan, stats},
};

/// The XDP-mode agent. Dropping it detaches the program everywhere.
#[derive(Debug)]
pub struct XdpAgent {
    interfaces: Vec<InterfaceStatus>,
    state: Mutex<State>,
}

/// What a reload replaces, under one lock so readers never see a config
/// and a plan that disagree.
#[derive(Debug)]
struct State {
    config: Config,
    plan: Plan,
    datapath: Datapath,
}

/// Why a reload was refused; the running config stays in force.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new file is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The change cannot be applied live.
    #[error(transparent)]
    Plan(#[from] crate::datapath::PlanError),
    /// Writing the maps failed.
    #[error(transparent)]
    Datapath(#[from] DatapathError),
}

impl XdpAgent {
    /// An agent for a datapath already loaded with `plan` and attached to
    /// `interfaces` (name, attach mode).
    pub fn new(
        config: Config,
        plan: Plan,
        datapath: Datapath,
        interfaces: Vec<(String, String)>,
    ) -> Self {
        let interfaces = interfaces
            .into_iter()
            .map(|(name, attach)| InterfaceStatus { name, attach })
            .collect();
        Self {
            interfaces,
            state: Mutex::new(State {
                config,
                plan,
                datapath,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Re-reads the config file the agent was started with and applies the
    /// backend and weight changes: new tables are written beside the live
    /// ones and switched to atomically, established flows keep their
    /// backends. An invalid file, or a change that needs a restart, leaves
    /// everything as it was. Returns how many services' tables changed.
    pub fn reload(&self) -> Result<usize, ReloadError> {
        let mut st = self.lock();
        let config = crate::config::load(&st.config.source)?;
        let plan = crate::datapath::plan::replan(&st.plan, &config)?;
        st.datapath.apply(&plan)?;
        let changed = plan
            .services
            .iter()
            .zip(&st.plan.services)
            .filter(|(n, o)| n.table != o.table)
            .count();
        st.config = config;
        st.plan = plan;
        Ok(changed)
    }

    /// Services, backends and counters now.
    pub fn status(&self) -> Result<StatusReport, DatapathError> {
        let st = self.lock();
        let totals = stats::read(
            &st.datapath,
            st.plan.services.len() as u32,
            st.plan.backends.len() as u32,
        )?;
        let services = st
            .config
            .services
            .iter()
            .zip(&st.plan.services)
            .map(|(svc, planned)| ServiceStatus {
                name: svc.name.clone(),
                vip: svc.vip.to_string(),
                protocol: svc.protocol.to_string(),
                scheduler: svc.scheduler.to_string(),
                traffic: traffic(totals.services.get(planned.record.id as usize)),
                backends: svc
                    .backends
                    .iter()
                    .zip(&planned.backend_ids)
                    .map(|(b, &id)| BackendStatus {
                        addr: b.addr.to_string(),
                        weight: b.weight,
                        state: state_name(st.plan.backends.get(id as usize).map(|r| r.state)),
                        slots: planned.table.iter().filter(|&&slot| slot == id).count() as u32,
                        traffic: traffic(totals.backends.get(id as usize)),
                    })
                    .collect(),
            })
            .collect();
        let exceptions = DropReason::ALL
            .iter()
            .zip(&totals.exceptions)
            .map(|(r, &packets)| ExceptionStatus {
                reason: r.name().to_owned(),
                action: if r.drops() { "drop" } else { "pass" }.to_owned(),
                packets,
            })
            .collect();
        Ok(StatusReport {
            mode: "xdp".to_owned(),
            interfaces: self.interfaces.clone(),
            services,
            exceptions,
        })
    }
}

impl Handler for XdpAgent {
    fn handle(&self, req: Request) -> Response {
        match req {
            Request::Status => match self.status() {
                Ok(report) => Response::Status(report),
                Err(e) => Response::Error {
                    message: e.to_string(),
                },
            },
        }
    }
}

fn traffic(c: Option<&Counters>) -> Traffic {
    let c = c.copied().unwrap_or_default();
    Traffic {
        packets: c.packets,
        bytes: c.bytes,
        new_flows: c.new_flows,
    }
}

fn state_name(state: Option<u8>) -> String {
    match state {
        Some(BACKEND_ACTIVE) => "active",
        Some(BACKEND_DRAINING) => "draining",
        _ => "down",
    }
    .to_owned()
}
