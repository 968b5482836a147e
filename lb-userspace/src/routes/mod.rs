//! A local route for every VIP (`agent.vip_routes = "local"`): what
//! `ip route add local VIP/32 dev lo table local proto 252` makes (`/128`
//! for IPv6).
//!
//! The datapath balances the ports its services define and passes the rest
//! of a VIP's traffic to the kernel: ping, ports no service defines, ICMP
//! errors about nothing it balanced. With the route, the kernel takes them
//! as its own (an echo reply, an RST, an ICMP port unreachable, an error
//! consumed); without it they get "net unreachable", or loop along a
//! default route. Splice mode's listeners accept on the VIP through it.
//!
//! lb marks its routes with protocol [`PROTOCOL`] (252; `252 lb` in
//! `/etc/iproute2/rt_protos.d/lb.conf` names it for `ip`), so it finds its own
//! (`ip route show table local proto 252`) and a routing daemon can export
//! them by protocol. One lb per network namespace owns that number: a start
//! removes every lb route for an address no longer a VIP (what an agent that
//! crashed left).
//!
//! A VIP already local (an address of an interface, or under another local
//! route) gets no route: it is noted, not an error.

pub mod announce;
pub mod netlink;

use std::{collections::BTreeSet, net::IpAddr};

use netlink::{LocalRoute, Netlink, NetlinkError, Place};
use nix::errno::Errno;

use crate::config::{Config, VipRoutes as Setting};

/// The `rtm_protocol` of lb's routes (unused in iproute2's `rt_protos`).
pub const PROTOCOL: u8 = 252;

/// Why managing the VIP routes failed.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// A netlink request failed (the message says which and why).
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// The loopback interface the routes go through is missing.
    #[error(
        "the VIP routes go through the loopback interface, and this network namespace has no \
         \"lo\" ({0}); bring it up (`ip link set lo up`) or set agent.vip_routes = \"none\""
    )]
    NoLoopback(Errno),
}

/// What one [`VipRoutes::sync`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Routes added.
    pub added: Vec<IpAddr>,
    /// lb routes removed (their address is no longer a VIP).
    pub removed: Vec<IpAddr>,
    /// VIPs newly found already local (no route added for them).
    pub already_local: Vec<IpAddr>,
}

/// The VIP routes lb holds in this network namespace.
#[derive(Debug)]
pub struct VipRoutes {
    setting: Setting,
    /// Addresses with an lb route (this agent's, or taken over).
    held: BTreeSet<IpAddr>,
    /// VIPs that were already local, so have no lb route.
    already_local: BTreeSet<IpAddr>,
}

/// The addresses of `cfg`'s VIPs that want a route (none with
/// `agent.vip_routes = "none"`).
pub fn wanted(cfg: &Config) -> BTreeSet<IpAddr> {
    match cfg.agent.vip_routes {
        Setting::Local => cfg.services.iter().map(|s| s.vip.ip()).collect(),
        Setting::None => BTreeSet::new(),
    }
}

fn lo_index() -> Result<u32, RouteError> {
    nix::net::if_::if_nametoindex("lo").map_err(RouteError::NoLoopback)
}

fn full_length(addr: IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

impl VipRoutes {
    /// Holding nothing yet, for `setting`.
    pub fn new(setting: Setting) -> Self {
        Self { setting, held: BTreeSet::new(), already_local: BTreeSet::new() }
    }

    /// The setting the agent started with.
    pub fn setting(&self) -> Setting {
        self.setting
    }

    /// Addresses with an lb route.
    pub fn held(&self) -> &BTreeSet<IpAddr> {
        &self.held
    }

    /// VIPs that were already local.
    pub fn already_local(&self) -> &BTreeSet<IpAddr> {
        &self.already_local
    }

    /// Gives every address of `want` a local route unless it is already
    /// local; with `remove`, also removes lb's routes to any other address.
    /// lb's routes found in place (a previous agent's) are kept and held.
    /// On error the routes this call added are removed again.
    pub fn sync(&mut self, want: &BTreeSet<IpAddr>, remove: bool) -> Result<Changes, RouteError> {
        let mut nl = Netlink::open()?;
        let routes = nl.routes(Place::LOCAL)?;
        let ours: BTreeSet<IpAddr> = routes
            .iter()
            .filter(|r| r.protocol == PROTOCOL && r.prefix_len == full_length(r.addr))
            .map(|r| r.addr)
            .collect();
        let local: BTreeSet<IpAddr> = want
            .iter()
            .copied()
            .filter(|&vip| {
                !ours.contains(&vip)
                    && routes.iter().any(|r| r.protocol != PROTOCOL && r.covers(vip))
            })
            .collect();
        let mut changes = Changes {
            already_local: local.difference(&self.already_local).copied().collect(),
            ..Changes::default()
        };
        let missing: Vec<IpAddr> =
            want.iter().copied().filter(|v| !ours.contains(v) && !local.contains(v)).collect();
        if !missing.is_empty() {
            let lo = lo_index()?;
            for vip in missing {
                match nl.change(true, Place::LOCAL, &LocalRoute::host(vip, lo, PROTOCOL)) {
                    Ok(()) => changes.added.push(vip),
                    // Added since the dump: by another lb of this namespace.
                    Err(e) if e.errno() == Some(Errno::EEXIST) => {}
                    Err(e) => {
                        for &added in &changes.added {
                            let _ = nl.change(
                                false,
                                Place::LOCAL,
                                &LocalRoute::host(added, lo, PROTOCOL),
                            );
                        }
                        return Err(e.into());
                    }
                }
            }
        }
        if remove {
            for r in routes.iter().filter(|r| {
                r.protocol == PROTOCOL
                    && r.prefix_len == full_length(r.addr)
                    && !want.contains(&r.addr)
            }) {
                match nl.change(false, Place::LOCAL, r) {
                    Ok(()) => changes.removed.push(r.addr),
                    Err(e) if e.errno() == Some(Errno::ESRCH) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        self.held = ours.union(&changes.added.iter().copied().collect()).copied().collect();
        for gone in &changes.removed {
            self.held.remove(gone);
        }
        self.already_local = local;
        Ok(changes)
    }

    /// Removes every lb route (a stop that removes the datapath). Returns
    /// the addresses whose route went.
    pub fn remove_all(&mut self) -> Result<Vec<IpAddr>, RouteError> {
        let changes = self.sync(&BTreeSet::new(), true)?;
        self.already_local.clear();
        Ok(changes.removed)
    }

    /// For `lb status`.
    pub fn status(&self) -> crate::control::protocol::VipRouteStatus {
        let with_len = |a: &IpAddr| format!("{a}/{}", full_length(*a));
        crate::control::protocol::VipRouteStatus {
            setting: self.setting.name().to_owned(),
            protocol: PROTOCOL,
            held: self.held.iter().map(with_len).collect(),
            already_local: self.already_local.iter().map(IpAddr::to_string).collect(),
        }
    }
}

/// Lets each of `interfaces` take IPv4 packets whose source is a local
/// address (`net.ipv4.conf.<iface>.accept_local = 1`). The XDP hook hands
/// the kernel a reply it has already rewritten to come from the VIP when the
/// client's neighbour is not resolved yet, for the kernel to forward (and
/// resolve it); once the VIP is local, the kernel's source check would drop
/// it as martian. (IPv6 has no such check; the tc hook resolves neighbours
/// itself.) Failures are logged: only first packets to new neighbours
/// suffer.
pub fn accept_local_sources(interfaces: &[String]) {
    for iface in interfaces {
        let path = format!("/proc/sys/net/ipv4/conf/{iface}/accept_local");
        match std::fs::write(&path, "1") {
            Ok(()) => tracing::debug!(interface = %iface, "accept_local = 1 (the VIPs are local)"),
            Err(e) => tracing::warn!(
                interface = %iface,
                "cannot set {path} to 1 ({e}): with the VIPs local, replies the XDP hook passes \
                 to the kernel to resolve a client's neighbour are dropped as martian; set it \
                 (sysctl -w net.ipv4.conf.{iface}.accept_local=1)"
            ),
        }
    }
}

/// Logs what a sync changed; `when` says at which step ("start", "reload").
pub fn log_changes(changes: &Changes, when: &str) {
    for a in &changes.added {
        tracing::info!(vip = %a, protocol = PROTOCOL, "{when}: VIP route added (local, dev lo)");
    }
    for a in &changes.removed {
        tracing::info!(
            address = %a,
            protocol = PROTOCOL,
            "{when}: VIP route removed (the address is no longer a VIP{})",
            if when == "start" { "; left by an lb that did not stop cleanly" } else { "" }
        );
    }
    for a in &changes.already_local {
        tracing::info!(
            vip = %a,
            "{when}: the VIP is already a local address (of an interface, or under another local \
             route): lb adds no route for it"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::PROTOCOL;

    /// The name the Debian package gives the protocol is the number lb uses.
    #[test]
    fn the_packaged_protocol_name_is_for_lbs_number() {
        let conf = include_str!("../../../deploy/iproute2/lb.conf");
        let entry = conf.lines().find(|l| !l.starts_with('#')).expect("an entry");
        assert_eq!(
            entry.split_whitespace().collect::<Vec<_>>(),
            [PROTOCOL.to_string(), "lb".into()]
        );
    }
}
