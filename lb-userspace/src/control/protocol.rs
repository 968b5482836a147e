//! Messages on the control socket.

use serde::{Deserialize, Serialize};

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    /// Services, backends, counters.
    Status,
    /// Re-read and apply the config file (as SIGHUP).
    Reload {
        /// The file the operator meant (`lb reload --config FILE`): the
        /// agent re-reads its own file, and refuses if that is another
        /// one, rather than report a reload of a file it never read.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        config: Option<std::path::PathBuf>,
    },
    /// Remove the datapath (program, pins, state) and exit.
    Stop,
    /// Which backend a flow gets, and why.
    Flow {
        /// Client "ip:port".
        src: String,
        /// VIP "ip:port".
        dst: String,
        /// "tcp" or "udp".
        protocol: String,
    },
    /// Trace packets through the datapath (`lb trace`): the agent answers
    /// with `Done` once the filter is set, then one `Trace` per record,
    /// until the client closes its side (the agent then clears the filter
    /// and ends with `Done`).
    Trace(crate::trace::TraceSpec),
    /// Change one backend.
    Backend {
        /// The service's name.
        service: String,
        /// The backend, "ip:port" as in the config.
        backend: String,
        /// What to do.
        action: BackendAction,
    },
}

/// Operator actions on one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum BackendAction {
    /// Keep established flows, send new ones elsewhere.
    Drain,
    /// Send it nothing; its flows move to other backends.
    Disable,
    /// Follow the health checks again.
    Enable,
    /// Set its weight (1-65535) until the next reload.
    Weight {
        /// The new weight.
        weight: u32,
    },
}

/// What the agent answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "response", rename_all = "snake_case")]
// One response a request, moved once onto the socket: the status report's
// size (hundreds of bytes, not a hot path) is not worth a box.
#[allow(clippy::large_enum_variant)]
pub enum Response {
    /// Answer to [`Request::Status`].
    Status(StatusReport),
    /// Answer to [`Request::Flow`].
    Flow(FlowReport),
    /// One record of a trace session.
    Trace {
        /// The record, readable.
        line: String,
    },
    /// The request was carried out.
    Done {
        /// What was done.
        message: String,
    },
    /// The request failed.
    Error {
        /// Why.
        message: String,
    },
}

/// A snapshot of the running balancer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// "xdp" or "splice".
    pub mode: String,
    /// Why this mode (splice: forced by the config, or why XDP could not run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode_reason: Option<String>,
    /// Interfaces and how the program is attached to each.
    pub interfaces: Vec<InterfaceStatus>,
    /// Services in config order.
    pub services: Vec<ServiceStatus>,
    /// Exception counters, one per reason.
    pub exceptions: Vec<ExceptionStatus>,
    /// How old the backends' flow counts are, in milliseconds: XDP mode
    /// counts them by sweeping the flow table (about every second; the
    /// largest u64 before the first sweep); 0 where they are live (splice
    /// mode).
    #[serde(default)]
    pub flows_age_ms: u64,
    /// The local routes lb holds for its VIPs (`agent.vip_routes`).
    #[serde(default)]
    pub vip_routes: VipRouteStatus,
    /// The announced routes (`[agent.announce]`), when configured.
    #[serde(default)]
    pub announce: Option<AnnounceStatus>,
    /// What the running `lb trace` session traces, if one runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
    /// Flood mode (`flows.flood_threshold`).
    #[serde(default)]
    pub flood: FloodStatus,
    /// Health probe rounds this host could not make (out of descriptors,
    /// say): their backends kept the health they had.
    #[serde(default)]
    pub probes_skipped: u64,
    /// Splice mode's descriptors: in use by connections, pipes and UDP
    /// sessions, and the budget they may take (`splice::budget`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub descriptors: Option<DescriptorStatus>,
}

/// Splice mode's descriptors against its budget.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescriptorStatus {
    /// Counted against the budget now.
    pub used: u64,
    /// The budget: the open-file limit less what lb needs besides.
    pub budget: u64,
}

/// The announced routes of `[agent.announce]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnounceStatus {
    /// The kernel table they go in.
    pub table: u32,
    /// Their `rtm_protocol`.
    pub protocol: u8,
    /// Every VIP, in address order.
    pub vips: Vec<VipAnnouncement>,
    /// Why the last change of the routes failed, if it did (they may not
    /// match the verdicts until a retry succeeds).
    #[serde(default)]
    pub error: Option<String>,
}

/// One VIP's announcement.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VipAnnouncement {
    /// The prefix, e.g. "10.0.0.100/32".
    pub vip: String,
    /// Its route is in the table.
    pub announced: bool,
    /// A backend of a service on it is usable (it should be announced).
    pub servable: bool,
    /// Why, e.g. "web 0 of 2 usable (2 down)".
    pub why: String,
}

/// Flood mode: on while new flows arrive faster than the threshold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FloodStatus {
    /// Whether it is on.
    pub on: bool,
    /// New flows a second over every service, as last measured (in splice
    /// mode with the SYNs the kernel answered with a cookie).
    pub rate: u64,
    /// `flows.flood_threshold`: on above it, off below half of it for 5 s.
    pub threshold: u32,
    /// How long it has been on, in ms (0 when off).
    pub on_for_ms: u64,
    /// How many times it turned on since the agent started.
    pub episodes: u64,
    /// Whether SYNs from sources not verified are being answered with a
    /// SYN challenge (flood mode on, a kernel mode, `flows.syn_challenge`).
    #[serde(default)]
    pub challenging: bool,
}

/// The VIP routes of `agent.vip_routes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VipRouteStatus {
    /// The setting: "local" or "none".
    pub setting: String,
    /// The `rtm_protocol` lb's routes carry (252).
    pub protocol: u8,
    /// The routes lb holds, e.g. "10.0.0.100/32".
    pub held: Vec<String>,
    /// VIPs that were already local addresses, so have no lb route.
    #[serde(default)]
    pub already_local: Vec<String>,
}

/// One interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceStatus {
    /// Its name.
    pub name: String,
    /// The hook: "tc", "native" or "generic".
    pub attach: String,
    /// Why that hook (the driver, or the config), and whether it was taken
    /// over from a previous agent.
    #[serde(default)]
    pub why: String,
    /// Frames the kernel lost on it, as it counts them (since the
    /// interface was made).
    #[serde(default)]
    pub lost: LostFrames,
}

/// Frames an interface lost, from the kernel's own counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostFrames {
    /// Frames redirected into it by XDP that it could not take (`ethtool
    /// -S`: `*xdp_xmit_err*`): a veth whose peer has no NAPI, or whose
    /// ring overflowed.
    pub xdp_xmit_errors: u64,
    /// Frames it dropped on receive or transmit (`rx_dropped` +
    /// `tx_dropped`): at the XDP hook, also frames it redirected that the
    /// target refused, as some drivers count them.
    pub dropped: u64,
}

impl LostFrames {
    /// Both counts.
    pub fn total(&self) -> u64 {
        self.xdp_xmit_errors + self.dropped
    }
}

/// Traffic counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Traffic {
    /// Packets forwarded.
    pub packets: u64,
    /// Bytes forwarded.
    pub bytes: u64,
    /// Flows created.
    pub new_flows: u64,
}

/// One service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// Config name.
    pub name: String,
    /// "ip:port".
    pub vip: String,
    /// "tcp" or "udp".
    pub protocol: String,
    /// Scheduler name.
    pub scheduler: String,
    /// Client -> VIP traffic.
    pub traffic: Traffic,
    /// Who may reach it, as the config says ("allow 10.0.0.0/8; deny
    /// 10.1.0.0/16; new flows 100/s burst 200 per /32 /64"); empty: everyone,
    /// unlimited.
    #[serde(default)]
    pub sources: String,
    /// Packets (splice mode: connections and datagrams) refused by its
    /// source lists.
    #[serde(default)]
    pub acl_denied: u64,
    /// New flows refused over their source's new-flow limit.
    #[serde(default)]
    pub rate_limited: u64,
    /// Backends: the file's in file order, then those from DNS.
    pub backends: Vec<BackendStatus>,
    /// Where its DNS backends come from and how resolving goes, for a
    /// service with a `dns` table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsStatus>,
}

/// A service's DNS name and what resolving it gave.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsStatus {
    /// The name resolved.
    pub name: String,
    /// "a" (A/AAAA) or "srv".
    #[serde(rename = "type")]
    pub kind: String,
    /// The server asked, or "/etc/resolv.conf".
    pub resolver: String,
    /// `dns.interval`, in milliseconds.
    pub interval_ms: u64,
    /// The TTL of the last answer with records, in milliseconds.
    #[serde(default)]
    pub ttl_ms: Option<u64>,
    /// Whether an empty answer or NXDOMAIN is applied (else the last set is kept).
    pub allow_empty: bool,
    /// Backends the service has from DNS now.
    pub backends: u32,
    /// When an answer was last accepted (Unix time, milliseconds).
    #[serde(default)]
    pub last_success_unix_ms: Option<u64>,
    /// The last failure or refused answer.
    #[serde(default)]
    pub last_error: Option<String>,
    /// When it happened (Unix time, milliseconds).
    #[serde(default)]
    pub last_error_unix_ms: Option<u64>,
    /// Answers accepted.
    pub resolutions: u64,
    /// Accepted answers that changed the backends.
    pub changes: u64,
    /// Resolutions that failed (no answer, or an answer that could not be
    /// applied): the last set stayed.
    pub failures: u64,
    /// Empty answers and NXDOMAINs.
    pub empty: u64,
}

/// One backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendStatus {
    /// "ip:port".
    pub addr: String,
    /// Configured weight (from the file, DNS, or the operator).
    pub weight: u32,
    /// The DNS record it came from; absent for a backend of the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<String>,
    /// What the datapath does with it: "active", "draining" or "down".
    pub state: String,
    /// What its health checks say: "up" or "down".
    pub health: String,
    /// What the operator said: "enabled", "draining" or "disabled".
    pub admin: String,
    /// Health changes since the agent started.
    pub transitions: u64,
    /// Slots of the service's Maglev table it owns.
    pub slots: u32,
    /// Traffic forwarded to it.
    pub traffic: Traffic,
    /// Flows pinned to it that are opening or established and not idle
    /// past their timeout (splice mode: open connections and sessions).
    #[serde(default)]
    pub active_flows: u64,
    /// Its flows after a FIN or RST, until the closing timeout.
    #[serde(default)]
    pub closing_flows: u64,
}

/// One exception counter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExceptionStatus {
    /// The reason's name.
    pub reason: String,
    /// "drop" or "pass".
    pub action: String,
    /// Packets counted.
    pub packets: u64,
}

/// Where a flow goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowReport {
    /// The service the destination belongs to.
    pub service: String,
    /// The backend, "ip:port", or empty if none can take it.
    pub backend: String,
    /// "flow-table" (pinned), "maglev" (a new flow) or "refused" (by the
    /// service's source lists).
    pub source: String,
    /// The flow hash, for a Maglev pick.
    pub hash: u32,
    /// The slot of the service's table it hashes to.
    pub slot: u32,
    /// The table's size.
    pub table_size: u32,
    /// One-line explanation.
    pub why: String,
}
