//! `lb backend drain|disable|enable|weight` and `lb reload`: requests to the
//! running agent that are answered "done" or with an error.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use lb_userspace::control::{
    Request, Response,
    protocol::{BackendAction, BackendStatus},
};

use super::target::Target;

pub fn run(target: &Target, service: &str, backend: &str, action: BackendAction) -> Result<()> {
    request(
        target,
        Request::Backend { service: service.to_owned(), backend: backend.to_owned(), action },
    )
}

/// Sends a request that is answered "done" or an error, and prints the answer.
pub fn request(target: &Target, req: Request) -> Result<()> {
    match target.request(&req)? {
        Response::Done { message } => {
            println!("{message}");
            Ok(())
        }
        Response::Error { message } => bail!("{message}"),
        Response::Status(_) | Response::Flow(_) | Response::Trace { .. } => {
            bail!("the agent answered something else")
        }
    }
}

/// How often `drain --wait` asks the agent.
const POLL: Duration = Duration::from_millis(200);

/// `lb backend drain --wait`: drains, then waits until the backend has no
/// active flows (closing ones do not hold it), or fails after `limit`
/// saying how many remain.
pub fn drain_and_wait(
    target: &Target,
    service: &str,
    backend: &str,
    limit: Duration,
) -> Result<()> {
    run(target, service, backend, BackendAction::Drain)?;
    let drained_at = Instant::now();
    loop {
        let (b, age) = backend_status(target, service, backend)?;
        // Counts from before the drain say nothing about it.
        let fresh = Duration::from_millis(age) < drained_at.elapsed();
        if fresh && b.active_flows == 0 {
            println!(
                "backend {backend} of {service}: drained after {:.1} s (0 active flows, {} closing)",
                drained_at.elapsed().as_secs_f64(),
                b.closing_flows
            );
            return Ok(());
        }
        if drained_at.elapsed() >= limit {
            bail!(
                "backend {backend} of {service}: still {} active flows after {} s of draining \
                 (it takes no new ones; idle flows expire after flows.tcp_idle_timeout or \
                 flows.udp_idle_timeout)",
                b.active_flows,
                limit.as_secs()
            );
        }
        std::thread::sleep(POLL);
    }
}

/// The status of one backend and the age of its flow counts (ms).
fn backend_status(target: &Target, service: &str, backend: &str) -> Result<(BackendStatus, u64)> {
    let report = match target.request(&Request::Status)? {
        Response::Status(r) => r,
        Response::Error { message } => bail!("{message}"),
        _ => bail!("the agent answered something other than a status"),
    };
    let found = report
        .services
        .into_iter()
        .find(|s| s.name == service)
        .and_then(|s| s.backends.into_iter().find(|b| b.addr == backend));
    match found {
        Some(b) => Ok((b, report.flows_age_ms)),
        None => {
            bail!("no backend {backend} in service {service:?} any more (a reload removed it?)")
        }
    }
}
