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
    config: Config,
    plan: Plan,
    interfaces: Vec<InterfaceStatus>,
    datapath: Mutex<Datapath>,
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
            config,
            plan,
            interfaces,
            datapath: Mutex::new(datapath),
        }
    }

    /// Services, backends and counters now.
    pub fn status(&self) -> Result<StatusReport, DatapathError> {
        let totals = {
            let dp = self.datapath.lock().unwrap_or_else(|p| p.into_inner());
            stats::read(
                &dp,
                self.plan.services.len() as u32,
                self.plan.backends.len() as u32,
            )?
        };
        let services = self
            .config
            .services
            .iter()
            .zip(&self.plan.services)
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
                        state: state_name(self.plan.backends.get(id as usize).map(|r| r.state)),
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
