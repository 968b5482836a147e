//! The validated configuration: the types the rest of the agent works with.
//!
//! Every value here has passed validation, so consumers never re-check ranges
//! or cross-field rules; a `Config` that exists is one the agent may apply.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A complete, validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it came from, for messages and for `lb check` output.
    pub source: PathBuf,
    /// Agent-wide settings.
    pub agent: Agent,
    /// How splice mode treats connections.
    pub splice: Splice,
    /// How long the XDP datapath remembers idle flows.
    pub flows: Flows,
    /// The services to balance, in file order (at least one, unless the
    /// file is a backend's: `decap` and no services).
    pub services: Vec<Service>,
    /// `[decap]`: this host is a direct-server-return backend, the role
    /// `lb decap --config` runs.
    pub decap: Option<DecapRole>,
}

/// `[decap]`: what `lb decap --config FILE` runs (the command's flags, as
/// a file a unit can be pointed at).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecapRole {
    /// Interfaces the balancers' encapsulated packets arrive on (at least one).
    pub interfaces: Vec<String>,
    /// Outer destinations to decapsulate for; empty: every address of the
    /// host, followed as they change.
    pub addresses: Vec<std::net::IpAddr>,
    /// The hook.
    pub attach: Attach,
    /// The bpffs directory it pins under.
    pub pin_dir: PathBuf,
}

impl Config {
    /// Number of backends over all services.
    pub fn backend_count(&self) -> usize {
        self.services.iter().map(|s| s.backends.len()).sum()
    }
}

/// Agent-wide settings: where and how the datapath runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Agent {
    /// Interfaces the XDP program attaches to; may be empty unless `mode` is
    /// [`Mode::Xdp`].
    pub interfaces: Vec<String>,
    /// Which datapath to run.
    pub mode: Mode,
    /// Which hook the datapath is attached at (`agent.attach`).
    pub attach: Attach,
    /// Per-interface exceptions to `attach` (`[agent.attach_by_interface]`),
    /// each for an interface `interfaces` lists.
    pub attach_by_interface: BTreeMap<String, Attach>,
    /// Address of the metrics endpoint; `None` disables it.
    pub metrics_addr: Option<SocketAddr>,
    /// Unix socket the `lb` CLI talks to the running agent through.
    pub control_socket: PathBuf,
    /// Directory in bpffs where the datapath is pinned, so a restarted agent
    /// takes it over without interrupting traffic.
    pub pin_dir: PathBuf,
    /// Whether lb gives every VIP a local route (`agent.vip_routes`).
    pub vip_routes: VipRoutes,
    /// Routes a routing daemon exports while a VIP can be served
    /// (`[agent.announce]`); `None`: no announcement.
    pub announce: Option<Announce>,
}

/// `[agent.announce]`: a blackhole route per servable VIP in a kernel table
/// of its own, for a routing daemon (BIRD, FRR) to learn and export by BGP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Announce {
    /// The kernel routing table the routes go in (not 0, 253 or 255).
    pub table: u32,
    /// Their `rtm_protocol`, what a daemon's filter can match on.
    pub protocol: u8,
}

/// One interface's hook choice, and the setting it came from (what
/// `lb status` gives as the reason for an explicit choice).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachChoice {
    /// The interface.
    pub interface: String,
    /// The choice.
    pub how: Attach,
    /// Where it came from, e.g. `agent.attach = "tc"`.
    pub setting: String,
}

impl Agent {
    /// Each interface's hook choice: `cli` (`--attach`) for every interface
    /// when given, else the interface's `agent.attach_by_interface` entry,
    /// else `agent.attach`.
    pub fn attach_choices(&self, cli: Option<Attach>) -> Vec<AttachChoice> {
        self.interfaces
            .iter()
            .map(|iface| {
                let (how, setting) = match (cli, self.attach_by_interface.get(iface)) {
                    (Some(a), _) => (a, format!("--attach {}", a.name())),
                    (None, Some(&a)) => {
                        (a, format!("agent.attach_by_interface.{iface} = \"{}\"", a.name()))
                    }
                    (None, None) => {
                        (self.attach, format!("agent.attach = \"{}\"", self.attach.name()))
                    }
                };
                AttachChoice { interface: iface.clone(), how, setting }
            })
            .collect()
    }
}

/// `[splice]`: bounds of the userspace proxy (splice mode only; the XDP
/// datapath holds no connections).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Splice {
    /// Connections relayed at once per TCP service; beyond it new ones are
    /// closed at once rather than left waiting.
    pub max_connections: u32,
    /// Time to connect to one backend before trying the next.
    pub connect_timeout: Duration,
    /// Backends tried per connection, in Maglev order (at least 1).
    pub connect_tries: u32,
    /// A TCP connection with no byte moved either way for this long is closed.
    pub idle_timeout: Duration,
    /// A UDP session with no datagram either way for this long is dropped.
    pub udp_idle_timeout: Duration,
    /// On shutdown, how long open connections may take to finish before they
    /// are closed.
    pub shutdown_timeout: Duration,
}

impl Default for Splice {
    /// What an absent `[splice]` table means.
    fn default() -> Self {
        use super::defaults as d;
        Self {
            max_connections: d::MAX_CONNECTIONS,
            connect_timeout: d::CONNECT_TIMEOUT,
            connect_tries: d::CONNECT_TRIES,
            idle_timeout: d::IDLE_TIMEOUT,
            udp_idle_timeout: d::UDP_IDLE_TIMEOUT,
            shutdown_timeout: d::SHUTDOWN_TIMEOUT,
        }
    }
}

/// `[flows]`: idle timeouts of the XDP datapath's flow table (splice mode
/// has its own in [`Splice`]). A reload that changes them applies them live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flows {
    /// An established TCP flow idle this long is forgotten; its next packet
    /// is balanced like a new flow (the same backend unless the service's
    /// table changed).
    pub tcp_idle_timeout: Duration,
    /// A TCP flow after a FIN or RST, or whose SYN was never answered, is
    /// forgotten after this much idle time.
    pub tcp_closing_timeout: Duration,
    /// A UDP flow idle this long is over.
    pub udp_idle_timeout: Duration,
    /// Entries of the flow table (fixed when the datapath is created: a
    /// taken-over datapath keeps its table, and a reload cannot change it).
    pub capacity: u32,
    /// New flows a second (over every service) above which the agent turns
    /// flood mode on; it turns it off below half of it for 5 s.
    pub flood_threshold: u32,
    /// In flood mode, answer a SYN from a source not verified yet with a
    /// SYN challenge instead of forwarding it (kernel modes).
    pub syn_challenge: bool,
}

impl Default for Flows {
    /// What an absent `[flows]` table means.
    fn default() -> Self {
        use super::defaults as d;
        Self {
            tcp_idle_timeout: d::FLOW_TCP_IDLE_TIMEOUT,
            tcp_closing_timeout: d::FLOW_TCP_CLOSING_TIMEOUT,
            udp_idle_timeout: d::FLOW_UDP_IDLE_TIMEOUT,
            capacity: lb_common::abi::DEFAULT_FLOW_CAPACITY,
            flood_threshold: d::FLOOD_THRESHOLD,
            syn_challenge: true,
        }
    }
}

/// Which datapath the agent runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// XDP where it can be attached, the splice proxy otherwise.
    Auto,
    /// XDP only; failing to attach is an error.
    Xdp,
    /// The userspace splice proxy only.
    Splice,
}

/// What lb does about routes to its VIPs on its own host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VipRoutes {
    /// A local route for every VIP address (`ip route add local VIP dev lo
    /// table local proto 252`), added and removed with the services.
    Local,
    /// None: the VIPs are assigned to an interface, or managed by someone
    /// else (keepalived, policy routing).
    None,
}

/// Which hook the datapath is attached at on an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Attach {
    /// Per interface: tc on veth and netkit (no copy, no offload changes,
    /// `bpf_redirect_peer`), native XDP elsewhere, tc where the driver has
    /// no native XDP.
    Auto,
    /// Native (driver) XDP only.
    Native,
    /// Generic (skb) XDP: works everywhere, slowest.
    Generic,
    /// The tc ingress hook (a tcx link).
    Tc,
}

/// One virtual service: a VIP and the backends behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    /// Unique name, used in CLI commands and metric labels.
    pub name: String,
    /// The virtual address clients connect to.
    pub vip: SocketAddr,
    /// Transport protocol served on the VIP.
    pub protocol: Protocol,
    /// How a flow is mapped to a backend.
    pub scheduler: Scheduler,
    /// Maglev lookup-table size: a prime at least the number of backends.
    pub table_size: u32,
    /// What the backends are told about the client (splice mode).
    pub proxy_protocol: ProxyProtocol,
    /// How backends are probed.
    pub health: Health,
    /// Where further backends come from in DNS, if anywhere.
    pub dns: Option<Dns>,
    /// Who may reach the service, and how fast they may open flows.
    pub sources: Sources,
    /// How packets reach the backends (the kernel datapath; splice mode
    /// proxies every service).
    pub forwarding: Forwarding,
    /// `dsr-ipip`: the prefix the outer source is taken from (set exactly
    /// when `forwarding` is `DsrIpip`, of the VIP's family, at most
    /// [`MAX_SOURCE_HOST_BITS`](lb_common::encap::MAX_SOURCE_HOST_BITS)
    /// host bits).
    pub tunnel_source: Option<super::prefix::Prefix>,
    /// Backends: those of the file, in file order, then those DNS gave
    /// (unique addresses; at least one from the file unless `dns` is set).
    pub backends: Vec<Backend>,
}

/// `dns`: a service's backends from a DNS name, beside the file's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dns {
    /// The name resolved, as written (absolute or searched as
    /// `/etc/resolv.conf` says).
    pub name: String,
    /// Which records, and the port they do not carry.
    pub records: DnsRecords,
    /// Longest time between resolutions; a shorter TTL comes first, but
    /// never below [`DNS_MIN_INTERVAL`](super::defaults::DNS_MIN_INTERVAL).
    pub interval: std::time::Duration,
    /// The server asked; `None` uses `/etc/resolv.conf`.
    pub resolver: Option<SocketAddr>,
    /// Whether an empty answer or NXDOMAIN removes the DNS backends; by
    /// default the last set is kept (counted and logged), so a DNS mistake
    /// cannot empty a service.
    pub allow_empty: bool,
}

/// What `dns.type` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DnsRecords {
    /// A (IPv4 VIP) or AAAA (IPv6 VIP) records, every backend on `port`.
    Address {
        /// The backends' port (`dns.port`).
        port: u16,
    },
    /// SRV records: each gives a target, a port and a weight.
    Srv,
}

impl DnsRecords {
    /// The `dns.type` value as written in the config file.
    pub fn name(self) -> &'static str {
        match self {
            DnsRecords::Address { .. } => "a",
            DnsRecords::Srv => "srv",
        }
    }
}

/// A service's source lists and per-source new-flow limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sources {
    /// Sources that may reach the service; empty: every source.
    pub allow: Vec<super::Prefix>,
    /// Sources that may not, even if an allow entry covers them (deny
    /// wins).
    pub deny: Vec<super::Prefix>,
    /// New flows each source prefix may open; `None`: no limit.
    pub new_flow_limit: Option<NewFlowLimit>,
}

impl Sources {
    /// One line for status and `lb check`: "allow 10.0.0.0/8; deny
    /// 10.1.0.0/16; new flows 100/s burst 200 per /32 /64"; empty when the
    /// service admits everyone, unlimited.
    pub fn describe(&self) -> String {
        let list = |name: &str, l: &[super::Prefix]| {
            (!l.is_empty()).then(|| {
                let l: Vec<String> = l.iter().map(ToString::to_string).collect();
                format!("{name} {}", l.join(", "))
            })
        };
        let limit = self.new_flow_limit.map(|l| {
            format!(
                "new flows {}/s burst {} per /{} /{}",
                l.rate, l.burst, l.prefix_v4, l.prefix_v6
            )
        });
        [list("allow", &self.allow), list("deny", &self.deny), limit]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// `new_flow_limit = { rate, burst, prefix_v4, prefix_v6 }`: a token bucket
/// per source prefix. Only new flows take from it; established flows are
/// never limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewFlowLimit {
    /// New flows a second, sustained (1 to 1 000 000).
    pub rate: u32,
    /// New flows at once (at least 1; default: `rate`).
    pub burst: u32,
    /// Bits of an IPv4 source that make one prefix (0 to 32; default 32).
    pub prefix_v4: u8,
    /// Bits of an IPv6 source that make one prefix (0 to 128; default 64).
    pub prefix_v6: u8,
}

/// Transport protocol of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// Whether splice mode tells the backends the client address with a PROXY
/// protocol header (the XDP datapath keeps the client address as the
/// packets' source, so it never needs one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProxyProtocol {
    /// No header: the backend sees the balancer's address.
    None,
    /// A PROXY protocol version 2 header starts each backend connection.
    V2,
}

/// How a flow is mapped to a Maglev slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheduler {
    /// Hash of the 5-tuple: each connection is balanced on its own.
    Maglev,
    /// Hash of the client address only: a client sticks to one backend.
    MaglevClientIp,
}

/// How the kernel datapath sends a service's packets to its backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Forwarding {
    /// The backend's address replaces the VIP, and its replies come back
    /// through lb.
    Nat,
    /// Direct server return: the packet, unchanged, inside an outer IP
    /// header to the backend, which holds the VIP and answers the client
    /// itself (`lb decap` strips the header on the backend).
    DsrIpip,
    /// Direct server return on one L2 segment: only the destination MAC
    /// changes, to the backend's.
    DsrL2,
}

impl Forwarding {
    /// Whether backends answer clients directly.
    pub fn is_dsr(self) -> bool {
        self != Forwarding::Nat
    }
}

/// Health probing of a service's backends.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    /// What a probe does.
    pub kind: HealthKind,
    /// Time between probe starts (non-zero).
    pub interval: Duration,
    /// Time a probe may take before it counts as failed (below `interval`).
    pub timeout: Duration,
    /// Consecutive successes that bring a down backend up (at least 1).
    pub rise: u32,
    /// Consecutive failures that take an up backend down (at least 1).
    pub fall: u32,
    /// A SYN the datapath forwarded that the backend has not answered (no
    /// SYN-ACK, no RST) after this long counts as unanswered (positive, at
    /// most 10 s). TCP services only; a UDP service holds the default.
    pub syn_timeout: Duration,
    /// This many unanswered SYNs, with no answer from the backend since the
    /// first of them, take the backend down at once, before its next probe;
    /// 0 turns the signal off (at most 1000). Like the RST-to-SYN signal it
    /// only acts on TCP services whose `kind` is not `None`, since only
    /// probes bring a backend back; validation refuses a non-zero value set
    /// explicitly where it could not act, but a default stays here as is.
    pub syn_unanswered: u32,
    /// `dsr-ipip` services in a kernel mode: each probe also goes through
    /// the tunnel to the VIP, as the service's packets do (a SYN, or the
    /// `udp` kind's datagram), and must be answered from the VIP. Never set
    /// where it cannot apply (another forwarding, or kind `none`).
    pub tunnel: bool,
}

/// What a health probe does.
#[derive(Debug, Clone, PartialEq)]
pub enum HealthKind {
    /// No probing: backends are always considered up.
    None,
    /// A TCP connect to the backend address.
    Tcp,
    /// An HTTP GET of `path`, up when the status is `expect_status`.
    Http {
        /// Request path; starts with `/`.
        path: String,
        /// Status that means healthy, in `100..=599`.
        expect_status: u16,
    },
    /// A UDP datagram `send`; up on a reply (equal to `expect` if given).
    Udp {
        /// Payload sent to the backend.
        send: Vec<u8>,
        /// Reply that means healthy; `None` accepts any reply.
        expect: Option<Vec<u8>>,
    },
}

/// One backend of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// Where traffic is sent; same address family as the service's VIP.
    pub addr: SocketAddr,
    /// Relative share of Maglev slots, in `1..=`[`MAX_WEIGHT`](super::defaults::MAX_WEIGHT).
    pub weight: u32,
    /// The DNS record it came from (`None`: the file lists it).
    pub dns: Option<String>,
}

/// Spelling of each variant in the config file, in one place so parsing,
/// error messages and the summary cannot drift apart.
macro_rules! config_names {
    ($ty:ty { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// Every variant, in the order the docs list them.
            pub const ALL: &[$ty] = &[$(<$ty>::$variant),+];

            /// The value as written in the config file.
            pub fn name(self) -> &'static str {
                match self {
                    $(<$ty>::$variant => $name),+
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

config_names!(Mode { Auto => "auto", Xdp => "xdp", Splice => "splice" });
config_names!(VipRoutes { Local => "local", None => "none" });
config_names!(Attach { Auto => "auto", Native => "native", Generic => "generic", Tc => "tc" });
config_names!(Protocol { Tcp => "tcp", Udp => "udp" });
config_names!(ProxyProtocol { None => "none", V2 => "v2" });
config_names!(Forwarding { Nat => "nat", DsrIpip => "dsr-ipip", DsrL2 => "dsr-l2" });
config_names!(Scheduler { Maglev => "maglev", MaglevClientIp => "maglev-client-ip" });

impl HealthKind {
    /// The `kind` value as written in the config file.
    pub fn name(&self) -> &'static str {
        match self {
            HealthKind::None => "none",
            HealthKind::Tcp => "tcp",
            HealthKind::Http { .. } => "http",
            HealthKind::Udp { .. } => "udp",
        }
    }
}
