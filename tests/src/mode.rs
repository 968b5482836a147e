//! The datapaths one end-to-end suite runs against, and what genuinely
//! differs between them as a client or a backend sees it.
//!
//! - XDP and tc (the same datapath at two hooks) rewrite packets: the
//!   backend sees the client's own address. tc runs at default veth
//!   settings (TX checksum offload and TSO on, GRO off: no NAPI), as a new
//!   veth has them; XDP at the topology's wire-like ones, with an XDP
//!   program at each endpoint (what XDP on a veth needs, see
//!   [`crate::xdp_pass`]).
//! - Splice is a proxy: the backend sees the balancer's address on its link
//!   (the client's address would need the PROXY protocol). The proxy accepts
//!   on the VIP because it is a local address of the balancer namespace: lb
//!   routes every VIP to the loopback itself (`agent.vip_routes`), in every
//!   mode.

use std::net::{IpAddr, SocketAddr};

use crate::topology::{Topology, VIP4, VIP6, lb_side4, lb_side6};

/// Routes both VIPs to the loopback of the balancer namespace by hand, as
/// splice mode needs when lb adds no route of its own (`agent.vip_routes =
/// "none"`).
pub fn route_vips_by_hand(topo: &Topology) {
    topo.lb.ip(&format!("route add local {VIP4}/32 dev lo"));
    topo.lb.ip(&format!("-6 route add local {VIP6}/128 dev lo"));
}

/// Which datapath `lb run` serves with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The kernel datapath at the XDP hook (native).
    Xdp,
    /// The kernel datapath at the tc hook.
    Tc,
    /// The userspace proxy (`--mode splice`).
    Splice,
}

impl Mode {
    /// The name `agent.mode` and `lb status` use (both hooks are the kernel
    /// datapath, `xdp`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Xdp | Self::Tc => "xdp",
            Self::Splice => "splice",
        }
    }

    /// Whether this is the kernel datapath (at either hook).
    pub fn kernel(self) -> bool {
        self != Self::Splice
    }

    /// The mode `lb status` reports (its first line is `mode <name>
    /// interfaces <name> (<hook>), ...`); the kernel datapath is `Tc` when
    /// its interfaces are all at the tc hook.
    pub fn of_status(status: &str) -> Option<Self> {
        let first = status.lines().next()?;
        match first.split_whitespace().nth(1)? {
            "xdp" if first.contains("(tc)") && !first.contains("(native)") => Some(Self::Tc),
            "xdp" => Some(Self::Xdp),
            "splice" => Some(Self::Splice),
            _ => None,
        }
    }

    /// Readies the topology for the mode: tc runs at default veth
    /// offloads; XDP with an XDP program at each endpoint, as the README
    /// asks of XDP on a veth (see [`crate::xdp_pass`]). (Splice mode needs
    /// nothing: lb's own VIP routes make the VIPs local addresses the proxy
    /// accepts on.)
    pub fn prepare(self, topo: &Topology) {
        match self {
            Self::Tc => topo.default_offloads(),
            Self::Xdp => topo.peer_xdp(),
            Self::Splice => {}
        }
    }

    /// `cfg` (as [`crate::agent::config`] writes it) with `agent.mode` and
    /// `agent.attach` set.
    pub fn config(self, cfg: &str) -> String {
        match self {
            Self::Xdp => cfg.to_owned(),
            Self::Tc => cfg.replace("attach = \"native\"", "attach = \"tc\""),
            Self::Splice => cfg.replace("mode = \"xdp\"", "mode = \"splice\""),
        }
    }

    /// The peer address backend `i` sees for a TCP connection a client made
    /// from `client`: the client itself in XDP mode, the balancer's address
    /// on the backend's link in splice mode.
    pub fn peer_at_backend(self, client: SocketAddr, i: usize) -> IpAddr {
        match (self, client.ip()) {
            (Self::Xdp | Self::Tc, ip) => ip,
            (Self::Splice, IpAddr::V4(_)) => lb_side4(i),
            (Self::Splice, IpAddr::V6(_)) => lb_side6(i),
        }
    }
}

/// Generates, for each named case `fn case(mode: Mode)`, the tests
/// `case::xdp`, `case::tc` and `case::splice`, so one suite runs against
/// every mode and `cargo test splice` (or `xdp`, `tc`) selects one of them.
#[macro_export]
macro_rules! in_both_modes {
    ($($case:ident),* $(,)?) => {
        $( $crate::in_modes!($case [xdp = Xdp, tc = Tc, splice = Splice]); )*
    };
}

/// As [`in_both_modes!`], for cases only the kernel datapath has (splice
/// mode terminates connections, so it neither rewrites nor translates
/// packets): `case::xdp` and `case::tc`.
#[macro_export]
macro_rules! in_kernel_modes {
    ($($case:ident),* $(,)?) => {
        $( $crate::in_modes!($case [xdp = Xdp, tc = Tc]); )*
    };
}

/// The module `case` with one test per `test = Mode` pair, each calling
/// `case(Mode)`: what [`in_both_modes!`] and [`in_kernel_modes!`] expand to.
#[macro_export]
macro_rules! in_modes {
    ($case:ident [$($test:ident = $mode:ident),*]) => {
        mod $case {
            $(
                #[test]
                fn $test() {
                    super::$case($crate::mode::Mode::$mode);
                }
            )*
        }
    };
}
