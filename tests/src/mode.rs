//! The two datapaths one end-to-end suite runs against, and what genuinely
//! differs between them as a client or a backend sees it.
//!
//! - XDP rewrites packets: the backend sees the client's own address.
//! - Splice is a proxy: the backend sees the balancer's address on its link
//!   (the client's address would need the PROXY protocol), and the VIP must be
//!   a local address of the balancer namespace so the proxy can accept on it.

use std::net::{IpAddr, SocketAddr};

use crate::topology::{Topology, VIP4, VIP6, lb_side4, lb_side6};

/// Which datapath `lb run` serves with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The XDP program.
    Xdp,
    /// The userspace proxy (`--mode splice`).
    Splice,
}

impl Mode {
    /// The name `agent.mode` and `lb status` use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Xdp => "xdp",
            Self::Splice => "splice",
        }
    }

    /// The mode `lb status` reports (its first line is `mode <name>`).
    pub fn of_status(status: &str) -> Option<Self> {
        match status.lines().next()?.split_whitespace().nth(1)? {
            "xdp" => Some(Self::Xdp),
            "splice" => Some(Self::Splice),
            _ => None,
        }
    }

    /// Readies the balancer namespace: a proxy accepts only on local
    /// addresses, so splice mode routes both VIPs to the loopback.
    pub fn prepare(self, topo: &Topology) {
        if self == Self::Splice {
            topo.lb.ip(&format!("route add local {VIP4}/32 dev lo"));
            topo.lb.ip(&format!("-6 route add local {VIP6}/128 dev lo"));
        }
    }

    /// `cfg` (as [`crate::agent::config`] writes it) with `agent.mode` set.
    pub fn config(self, cfg: &str) -> String {
        cfg.replace("mode = \"xdp\"", &format!("mode = \"{}\"", self.name()))
    }

    /// The peer address backend `i` sees for a TCP connection a client made
    /// from `client`: the client itself in XDP mode, the balancer's address
    /// on the backend's link in splice mode.
    pub fn peer_at_backend(self, client: SocketAddr, i: usize) -> IpAddr {
        match (self, client.ip()) {
            (Self::Xdp, ip) => ip,
            (Self::Splice, IpAddr::V4(_)) => lb_side4(i),
            (Self::Splice, IpAddr::V6(_)) => lb_side6(i),
        }
    }
}

/// Generates, for each named case `fn case(mode: Mode)`, the tests
/// `case::xdp` and `case::splice`, so one suite runs against both modes and
/// `cargo test splice` (or `xdp`) selects one of them.
#[macro_export]
macro_rules! in_both_modes {
    ($($case:ident),* $(,)?) => {
        $(
            mod $case {
                #[test]
                fn xdp() {
                    super::$case($crate::mode::Mode::Xdp);
                }
                #[test]
                fn splice() {
                    super::$case($crate::mode::Mode::Splice);
                }
            }
        )*
    };
}
