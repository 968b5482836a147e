//! Asking DNS, through hickory-resolver: one resolver per service, built
//! from its `dns` table, with no cache of its own, so every resolution
//! reaches the server and a change is seen on the next one (the TTL sets
//! when that is, see [`super::state::next_delay`]).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_resolver::{
    ResolveError, TokioResolver,
    config::{NameServerConfigGroup, ResolveHosts, ResolverConfig},
    name_server::TokioConnectionProvider,
    proto::{ProtoErrorKind, op::ResponseCode},
};

use super::records::Found;
use super::state::Outcome;
use crate::config::{Dns, DnsRecords};

/// How long one query may take: short, since the server is on the local
/// network (a cluster's DNS, Consul), and a slow answer only delays the
/// next resolution.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// The resolver `dns` asks for: its `resolver`, or `/etc/resolv.conf`.
pub fn resolver(dns: &Dns) -> Result<TokioResolver, String> {
    let provider = TokioConnectionProvider::default();
    let mut builder = match dns.resolver {
        Some(server) => {
            let servers =
                NameServerConfigGroup::from_ips_clear(&[server.ip()], server.port(), true);
            TokioResolver::builder_with_config(
                ResolverConfig::from_parts(None, vec![], servers),
                provider,
            )
        }
        None => TokioResolver::builder(provider)
            .map_err(|e| format!("reading /etc/resolv.conf: {e}"))?,
    };
    let opts = builder.options_mut();
    opts.cache_size = 0;
    opts.timeout = QUERY_TIMEOUT;
    opts.attempts = 1;
    // DNS only: /etc/hosts has no TTL and no way to tell lb it changed.
    opts.use_hosts_file = ResolveHosts::Never;
    Ok(builder.build())
}

/// Resolves `dns.name` for a service on `vip` (A for an IPv4 VIP, AAAA for
/// IPv6; SRV targets the same way).
pub async fn resolve(resolver: &TokioResolver, dns: &Dns, vip: SocketAddr) -> Outcome {
    let started = Instant::now();
    let result = match dns.records {
        DnsRecords::Address { port } => {
            addresses(resolver, &dns.name, vip.is_ipv4()).await.map(|(ips, until)| {
                let found = ips
                    .into_iter()
                    .map(|ip| Found {
                        addr: SocketAddr::new(ip, port),
                        weight: None,
                        priority: 0,
                        record: dns.name.clone(),
                    })
                    .collect();
                (found, until)
            })
        }
        DnsRecords::Srv => srv(resolver, &dns.name, vip.is_ipv4()).await,
    };
    match result {
        Ok((found, until)) => {
            Outcome::Found { found, ttl: until.saturating_duration_since(started) }
        }
        Err(e) => classify(&e),
    }
}

/// A and AAAA records of `name`, and until when they are valid.
async fn addresses(
    resolver: &TokioResolver,
    name: &str,
    v4: bool,
) -> Result<(Vec<IpAddr>, Instant), ResolveError> {
    if v4 {
        let l = resolver.ipv4_lookup(name).await?;
        Ok((l.iter().map(|a| IpAddr::V4(a.0)).collect(), l.valid_until()))
    } else {
        let l = resolver.ipv6_lookup(name).await?;
        Ok((l.iter().map(|a| IpAddr::V6(a.0)).collect(), l.valid_until()))
    }
}

/// SRV records of `name`, each target resolved to its addresses. A target
/// that does not exist (or has no address of the family) is skipped; a
/// target whose resolution fails fails the whole answer, which then keeps
/// the last set rather than lose that target's backends.
async fn srv(
    resolver: &TokioResolver,
    name: &str,
    v4: bool,
) -> Result<(Vec<Found>, Instant), ResolveError> {
    let lookup = resolver.srv_lookup(name).await?;
    let mut until = lookup.as_lookup().valid_until();
    let mut found = Vec::new();
    let mut targets = tokio::task::JoinSet::new();
    let records: Vec<_> = lookup.iter().cloned().collect();
    let mut names: Vec<String> = records.iter().map(|r| r.target().to_ascii()).collect();
    names.sort();
    names.dedup();
    // "." means "no such service here" (RFC 2782): not a target to resolve.
    names.retain(|n| n != ".");
    for target in names {
        let r = resolver.clone();
        targets.spawn(async move {
            let got = addresses(&r, &target, v4).await;
            (target, got)
        });
    }
    while let Some(joined) = targets.join_next().await {
        let Ok((target, got)) = joined else { continue };
        let (ips, valid) = match got {
            Ok(ok) => ok,
            Err(e) if matches!(classify(&e), Outcome::Empty { .. }) => {
                tracing::debug!(target, "SRV target has no address: skipped");
                continue;
            }
            Err(e) => return Err(e),
        };
        until = until.min(valid);
        for rec in records.iter().filter(|r| r.target().to_ascii() == target) {
            found.extend(ips.iter().map(|&ip| Found {
                addr: SocketAddr::new(ip, rec.port()),
                weight: Some(rec.weight()),
                priority: rec.priority(),
                record: target.trim_end_matches('.').to_owned(),
            }));
        }
    }
    Ok((found, until))
}

/// An error as a DNS outcome: NXDOMAIN and NOERROR-without-records are
/// answers (empty ones); anything else is a failure.
fn classify(e: &ResolveError) -> Outcome {
    if let Some(proto) = e.proto()
        && let ProtoErrorKind::NoRecordsFound { response_code, .. } = proto.kind()
    {
        match *response_code {
            ResponseCode::NXDomain => return Outcome::Empty { nxdomain: true },
            ResponseCode::NoError => return Outcome::Empty { nxdomain: false },
            _ => {}
        }
    }
    Outcome::Failed(e.to_string())
}
