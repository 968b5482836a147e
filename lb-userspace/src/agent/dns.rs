//! DNS answers applied to the running agent: a changed set of DNS backends
//! becomes a config like the running one but for those backends, and goes
//! the way of a reload ([`change`]): planned from the running plan, backend
//! ids kept, new tables beside the live ones, records swapped. Established
//! flows keep their backends, removed ones included, in every mode.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use super::{Agent, State, change, runtime, saved::SavedDnsBackend};
use crate::{
    config::{Backend, Config, Dns},
    dns::{
        DnsState, Outcome, Verdict,
        resolve::{self, resolve},
        state::next_delay,
    },
};

/// A resolution that takes longer than this counts as failed: the resolver
/// has its own query timeout, this bounds a whole SRV answer.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// What tells two backends apart (an IPv6 scope id does not).
fn identity(a: SocketAddr) -> (std::net::IpAddr, u16) {
    (a.ip(), a.port())
}

/// `cfg` with `service`'s DNS backends replaced by `set`.
fn with_dns_backends(cfg: &Config, service: &str, set: &[Backend]) -> Config {
    let mut cfg = cfg.clone();
    if let Some(svc) = cfg.services.iter_mut().find(|s| s.name == service) {
        svc.backends.retain(|b| b.dns.is_none());
        svc.backends.extend(set.iter().cloned());
    }
    cfg
}

/// A file config just loaded, given the DNS backends the running agent
/// holds (a reload does not wait for DNS, nor empty a service until it
/// answers): services that keep a `dns` table keep their last set, less the
/// backends the file now lists itself. The states of services that no
/// longer have one are dropped.
pub(super) fn keep_across_reload(cfg: &mut Config, dns: &mut BTreeMap<String, DnsState>) {
    dns.retain(|name, _| cfg.services.iter().any(|s| &s.name == name && s.dns.is_some()));
    for svc in cfg.services.iter_mut().filter(|s| s.dns.is_some()) {
        let Some(state) = dns.get_mut(&svc.name) else { continue };
        let file: Vec<Backend> = svc.backends.clone();
        state.backends.retain(|b| {
            b.addr.is_ipv4() == svc.vip.is_ipv4()
                && !file.iter().any(|f| identity(f.addr) == identity(b.addr))
        });
        svc.backends.extend(state.backends.iter().cloned());
    }
}

/// One service's resolution, for its task.
#[derive(Debug, Clone)]
pub struct DnsJob {
    /// The service.
    pub service: String,
    /// Its `dns` table.
    pub dns: Dns,
    /// Its VIP (the family of the records asked for).
    pub vip: SocketAddr,
    /// Wait before the first resolution.
    pub first: Duration,
}

impl Agent {
    /// Records the DNS states `lb run` found before starting the datapath.
    pub fn with_dns(self, states: BTreeMap<String, DnsState>) -> Self {
        self.lock().dns = states;
        self
    }

    /// The DNS services of the running config; `now` resolves them at once
    /// (after a reload), else after their TTL or interval.
    pub fn dns_jobs(&self, now: bool) -> Vec<DnsJob> {
        let st = self.lock();
        st.config
            .services
            .iter()
            .filter_map(|s| {
                let dns = s.dns.clone()?;
                let ttl = st.dns.get(&s.name).and_then(|d| d.ttl);
                let first = if now { Duration::ZERO } else { next_delay(dns.interval, ttl) };
                Some(DnsJob { service: s.name.clone(), dns, vip: s.vip, first })
            })
            .collect()
    }

    /// Completes after DNS changed some service's backends.
    pub async fn dns_changed(&self) {
        self.dns_changed.notified().await;
    }

    /// Judges an answer for `service` by the rules of [`crate::dns::state`]
    /// and applies a changed set; returns the wait before the next
    /// resolution.
    pub fn on_dns(&self, service: &str, outcome: Outcome) -> Duration {
        let started = Instant::now();
        let mut st = self.lock();
        // A task of a service a reload just removed (or whose dns table it
        // removed) until it is aborted: nothing to do.
        let idle = crate::config::defaults::DNS_MIN_INTERVAL;
        let Some(svc) = st.config.services.iter().find(|s| s.name == service) else {
            return idle;
        };
        let Some(dns) = svc.dns.clone() else { return idle };
        let file: Vec<Backend> = svc.backends.iter().filter(|b| b.dns.is_none()).cloned().collect();
        let (vip, table_size) = (svc.vip, svc.table_size);
        let state = st.dns.entry(service.to_owned()).or_default();
        let (verdict, delay) =
            state.judge(outcome, &dns, vip, &file, table_size, SystemTime::now());
        let set = match verdict {
            Verdict::Keep => {
                let why = state.last_error.as_ref().map_or("", |e| e.1.as_str());
                tracing::warn!(
                    service,
                    name = %dns.name,
                    failures = state.failures,
                    empty = state.empty,
                    backends = state.backends.len(),
                    "DNS: {why}"
                );
                return delay;
            }
            Verdict::Apply(set) if set == state.backends => return delay,
            Verdict::Apply(set) => set,
        };
        let diff = Diff::between(&state.backends, &set);
        if let Err(e) = apply_set(&mut st, service, &set, &self.state_file) {
            // Ids are never reused while the datapath runs (a flow pinned to
            // a removed backend must not reach a newcomer), so a name that
            // keeps giving new addresses uses them up.
            let advice = match &e {
                super::ChangeError::Plan(crate::datapath::PlanError::TooMany {
                    what: "backends",
                    ..
                }) => {
                    "; every new address DNS gave took a backend id: `lb stop`, then start lb, \
                     renumbers them (established flows break)"
                }
                _ => "",
            };
            let why = format!("applying the answer failed, the last set stays: {e}{advice}");
            tracing::error!(service, name = %dns.name, "DNS: {why}");
            st.dns.entry(service.to_owned()).or_default().fail(why, SystemTime::now());
            return delay;
        }
        let state = st.dns.entry(service.to_owned()).or_default();
        state.backends = set;
        state.changes += 1;
        tracing::info!(
            service,
            name = %dns.name,
            added = %diff.added.join(","),
            removed = %diff.removed.join(","),
            reweighted = %diff.reweighted.join(","),
            backends = state.backends.len(),
            apply_us = started.elapsed().as_micros() as u64,
            "DNS: backends changed"
        );
        drop(st);
        self.dns_changed.notify_one();
        delay
    }
}

/// Puts `set` in as `service`'s DNS backends, the way a reload would.
fn apply_set(
    st: &mut State,
    service: &str,
    set: &[Backend],
    state_file: &std::path::Path,
) -> Result<(), super::ChangeError> {
    let config = with_dns_backends(&st.config, service, set);
    let runtimes = runtime::for_config(&config, st.runtimes.clone());
    st.plan = change(&mut *st.datapath, &st.plan, &config, &runtimes, state_file)?;
    st.config = config;
    st.runtimes = runtimes;
    super::announce::sync(st, "dns");
    Ok(())
}

/// What changed between two sets, for the log.
#[derive(Debug, Default)]
struct Diff {
    added: Vec<String>,
    removed: Vec<String>,
    reweighted: Vec<String>,
}

impl Diff {
    fn between(old: &[Backend], new: &[Backend]) -> Self {
        let mut d = Diff::default();
        for n in new {
            match old.iter().find(|o| o.addr == n.addr) {
                None => d.added.push(format!("{}/{}", n.addr, n.weight)),
                Some(o) if o.weight != n.weight => {
                    d.reweighted.push(format!("{}/{}->{}", n.addr, o.weight, n.weight))
                }
                Some(_) => {}
            }
        }
        d.removed = old
            .iter()
            .filter(|o| !new.iter().any(|n| n.addr == o.addr))
            .map(|o| o.addr.to_string())
            .collect();
        d
    }
}

/// Starts one task per DNS service, each resolving its name and handing
/// the answers to the agent; aborted and restarted on a reload.
pub fn spawn(agent: &Arc<Agent>, now: bool) -> Vec<tokio::task::JoinHandle<()>> {
    agent
        .dns_jobs(now)
        .into_iter()
        .map(|job| {
            let agent = agent.clone();
            tokio::spawn(async move {
                tokio::time::sleep(job.first).await;
                // Made until it is made: an unreadable /etc/resolv.conf may
                // be fixed meanwhile.
                let mut resolver = None;
                loop {
                    let outcome = match resolver.as_ref() {
                        Some(r) => resolve_bounded(r, &job.dns, job.vip).await,
                        None => match resolve::resolver(&job.dns) {
                            Ok(r) => resolve_bounded(resolver.insert(r), &job.dns, job.vip).await,
                            Err(e) => Outcome::Failed(e),
                        },
                    };
                    let wait = agent.on_dns(&job.service, outcome);
                    tokio::time::sleep(wait).await;
                }
            })
        })
        .collect()
}

async fn resolve_bounded(
    r: &hickory_resolver::TokioResolver,
    dns: &Dns,
    vip: SocketAddr,
) -> Outcome {
    tokio::time::timeout(RESOLVE_TIMEOUT, resolve(r, dns, vip))
        .await
        .unwrap_or_else(|_| Outcome::Failed(format!("no answer within {RESOLVE_TIMEOUT:?}")))
}

/// Before the datapath starts: resolves every DNS service of `cfg` once (at
/// most [`RESOLVE_TIMEOUT`] in all, the services in parallel), so it starts
/// with its DNS backends. Where the answer is refused by the rules (no
/// answer; empty, without `allow_empty`), the last set is the one the
/// previous agent saved (`previous`), as it would be for a running agent;
/// with none, the service has the file's backends (or none) until its task
/// gets an answer.
pub fn resolve_at_start(
    cfg: &Config,
    previous: &[SavedDnsBackend],
) -> anyhow::Result<(Config, BTreeMap<String, DnsState>)> {
    use anyhow::Context;
    let mut states = BTreeMap::new();
    let jobs: Vec<(String, Dns, SocketAddr)> =
        cfg.services.iter().filter_map(|s| Some((s.name.clone(), s.dns.clone()?, s.vip))).collect();
    if jobs.is_empty() {
        return Ok((cfg.clone(), states));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime of the first DNS resolutions")?;
    let outcomes: Vec<Outcome> = rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for (i, (_, dns, vip)) in jobs.iter().cloned().enumerate() {
            set.spawn(async move {
                let o = match resolve::resolver(&dns) {
                    Ok(r) => resolve_bounded(&r, &dns, vip).await,
                    Err(e) => Outcome::Failed(e),
                };
                (i, o)
            });
        }
        let mut out = vec![Outcome::Failed("not resolved".into()); jobs.len()];
        while let Some(Ok((i, o))) = set.join_next().await {
            if let Some(slot) = out.get_mut(i) {
                *slot = o;
            }
        }
        out
    });
    let mut cfg = cfg.clone();
    for ((service, dns, vip), outcome) in jobs.into_iter().zip(outcomes) {
        let Some(svc) = cfg.services.iter_mut().find(|s| s.name == service) else { continue };
        let mut state = DnsState::default();
        let (verdict, _) =
            state.judge(outcome, &dns, vip, &svc.backends, svc.table_size, SystemTime::now());
        match verdict {
            Verdict::Apply(set) => {
                tracing::info!(service, name = %dns.name, backends = set.len(), "DNS: first answer");
                svc.backends.extend(set.iter().cloned());
                state.backends = set;
                state.changes = 1;
            }
            Verdict::Keep => {
                let why = state.last_error.as_ref().map_or("", |e| e.1.as_str()).to_owned();
                let file = svc.backends.clone();
                state.backends = previous
                    .iter()
                    .filter(|p| p.service == service && p.addr.is_ipv4() == vip.is_ipv4())
                    .filter(|p| !file.iter().any(|f| identity(f.addr) == identity(p.addr)))
                    .map(|p| Backend {
                        addr: p.addr,
                        weight: p.weight,
                        dns: Some(p.record.clone()),
                    })
                    .take(svc.table_size.saturating_sub(file.len() as u32) as usize)
                    .collect();
                svc.backends.extend(state.backends.iter().cloned());
                tracing::warn!(
                    service,
                    name = %dns.name,
                    kept = state.backends.len(),
                    "DNS: no usable answer at start ({why}); starting with the backends the \
                     previous agent had from it (kept), retrying every {:?}",
                    dns.interval
                );
            }
        }
        states.insert(service, state);
    }
    Ok((cfg, states))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dns: bool, file: &[&str]) -> Config {
        let mut text = String::from("[[service]]\nname = \"web\"\nvip = \"10.0.0.100:80\"\n");
        if dns {
            text += "dns = { name = \"web.example\", port = 80 }\n";
        }
        for b in file {
            text += &format!("[[service.backend]]\naddr = \"{b}\"\n");
        }
        crate::config::parse(&text, std::path::Path::new("lb.toml")).expect("valid")
    }

    fn from_dns(addr: &str) -> Backend {
        Backend { addr: addr.parse().expect("addr"), weight: 2, dns: Some("web.example".into()) }
    }

    fn addrs(c: &Config) -> Vec<String> {
        c.services[0].backends.iter().map(|b| b.addr.to_string()).collect()
    }

    #[test]
    fn a_new_set_replaces_only_the_dns_backends() {
        let base = cfg(true, &["10.0.1.9:80"]);
        let one =
            with_dns_backends(&base, "web", &[from_dns("10.0.1.1:80"), from_dns("10.0.1.2:80")]);
        assert_eq!(addrs(&one), ["10.0.1.9:80", "10.0.1.1:80", "10.0.1.2:80"]);
        let two = with_dns_backends(&one, "web", &[from_dns("10.0.1.3:80")]);
        assert_eq!(addrs(&two), ["10.0.1.9:80", "10.0.1.3:80"]);
        assert_eq!(addrs(&with_dns_backends(&two, "web", &[])), ["10.0.1.9:80"]);
    }

    #[test]
    fn a_reload_keeps_the_last_set_less_what_the_file_now_lists() {
        let mut states = BTreeMap::from([(
            "web".to_owned(),
            DnsState {
                backends: vec![from_dns("10.0.1.1:80"), from_dns("10.0.1.2:80")],
                ..Default::default()
            },
        )]);
        let mut reloaded = cfg(true, &["10.0.1.2:80"]);
        keep_across_reload(&mut reloaded, &mut states);
        assert_eq!(addrs(&reloaded), ["10.0.1.2:80", "10.0.1.1:80"]);
        assert_eq!(reloaded.services[0].backends[0].dns, None, "the file's entry wins");
        assert_eq!(states["web"].backends.len(), 1);
        // The dns table gone: so are its backends and its state.
        let mut plain = cfg(false, &["10.0.1.9:80"]);
        keep_across_reload(&mut plain, &mut states);
        assert_eq!(addrs(&plain), ["10.0.1.9:80"]);
        assert!(states.is_empty());
    }
}
