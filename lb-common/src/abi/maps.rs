//! Names and sizes of the program's maps.
//!
//! aya-ebpf names a map after its `static`, which an attribute cannot take from
//! a constant; a userspace test checks the built object against these names.

/// Services: `ServiceKey` -> `ServiceRecord` (hash; replaced atomically).
pub const MAP_SERVICES: &str = "LB_SERVICES";
/// Backends: backend id (`u32`) -> `BackendRecord` (array).
pub const MAP_BACKENDS: &str = "LB_BACKENDS";
/// Maglev tables of every service, back to back: slot -> backend id (array).
pub const MAP_MAGLEV: &str = "LB_MAGLEV";
/// Flow table: forward `FlowKey` -> `FlowValue` (LRU hash).
pub const MAP_FLOWS: &str = "LB_FLOWS";
/// Flows not answered yet: forward `FlowKey` -> `FlowValue` (LRU hash, an
/// eighth of the flow table: see [`pending_capacity`]). A new flow is
/// pinned here and moves to [`MAP_FLOWS`] at its first answer, so flows
/// never answered (a spoofed SYN flood) churn only this table.
pub const MAP_PENDING: &str = "LB_PENDING";
/// Replies: backend `Endpoint` -> `Replies`, the VIPs it answers for (hash).
pub const MAP_REPLIES: &str = "LB_REPLIES";
/// Settings: index 0 -> `FlowTimeouts` (array of one): idle timeouts and
/// the flood-mode flag.
pub const MAP_SETTINGS: &str = "LB_SETTINGS";
/// Connections opened and answered per backend id: `SynCounters` (array,
/// memory-mappable, updated with atomic adds).
pub const MAP_SYNS: &str = "LB_SYNS";
/// Per-service counters: service id -> `Counters` (per-CPU array).
pub const MAP_SERVICE_COUNTERS: &str = "LB_SERVICE_COUNTERS";
/// Per-backend counters: backend id -> `Counters` (per-CPU array).
pub const MAP_BACKEND_COUNTERS: &str = "LB_BACKEND_COUNTERS";
/// Drop counters: `DropReason` -> `u64` (per-CPU array).
pub const MAP_DROPS: &str = "LB_DROPS";
/// Passive failure signals: `PassiveEvent` records (ring buffer).
pub const MAP_EVENTS: &str = "LB_EVENTS";
/// Next hops: backend id -> `NextHop` (array; written by the datapath
/// after a FIB lookup, read for every forwarded packet of that backend).
pub const MAP_NEXT_HOPS: &str = "LB_NEXT_HOPS";
/// Interfaces with a peer device (veth, netkit): ifindex (`u32`) -> `u32`
/// (1), so the tc hook forwards into them with `bpf_redirect_peer` (hash;
/// the agent fills it from the interfaces of its namespace).
pub const MAP_PEER_DEVICES: &str = "LB_PEER_DEVICES";
/// Hairpin sources: the balancer addresses (`Addr`) hairpin flows' packets
/// were given as their source -> `u32` (1) (hash; written by the datapath,
/// so replies to them are looked for among hairpin flows).
pub const MAP_HAIRPIN: &str = "LB_HAIRPIN";
/// Scratch space of the datapath: one `bpf_fib_lookup` per CPU, kept off
/// the BPF stack (per-CPU array of one; never read by the agent).
pub const MAP_SCRATCH: &str = "LB_SCRATCH";
/// Fragments: `FragKey` (a fragmented datagram) -> `FragPorts`, the ports
/// its first fragment carried (LRU hash; written by the datapath).
pub const MAP_FRAGS: &str = "LB_FRAGS";
/// Source lists of every service, IPv4: `Key<AclV4>` (prefix length 32 +
/// the source prefix's) -> `ACL_ALLOW` / `ACL_DENY` (LPM trie).
pub const MAP_ACL_V4: &str = "LB_ACL_V4";
/// Source lists of every service, IPv6: `Key<AclV6>`, as [`MAP_ACL_V4`].
pub const MAP_ACL_V6: &str = "LB_ACL_V6";
/// New-flow buckets: `BucketKey` (service, source prefix) -> `u64`, the
/// bucket's theoretical arrival time in ns (LRU hash; written by the
/// datapath).
pub const MAP_BUCKETS: &str = "LB_BUCKETS";
/// `lb trace`'s filter: index 0 -> `TraceFilter` (array of one; written
/// by the agent while a trace session runs, zero otherwise).
pub const MAP_TRACE: &str = "LB_TRACE";
/// `lb trace`'s switch: the datapath's global `LB_TRACE_ON` (`u32`, 1 while
/// a session runs), in a data section of its own that the loader makes an
/// array of one value. Each loaded program has its own: never pinned.
pub const MAP_TRACE_ON: &str = ".data.lb_trace_on";
/// The "maybe ours" prefilter: word -> `u64`, one bit per endpoint hash
/// ([`crate::prefilter`]) of every VIP and backend endpoint (array of
/// [`crate::prefilter::WORDS`]; written by the agent).
pub const MAP_PREFILTER: &str = "LB_PREFILTER";
/// Sources shown to receive what is sent to them: `VerifiedKey` -> `u32`,
/// the tick they last showed it (LRU hash, sized as [`MAP_PENDING`];
/// written by the datapath). In flood mode a SYN from a source not in it
/// is answered with a challenge (`crate::challenge`) instead of reaching a
/// backend.
pub const MAP_VERIFIED: &str = "LB_VERIFIED";
/// The services' generation: index 0 -> `u32`, bumped by the agent after
/// every change it writes to [`MAP_SERVICES`] (array of one). 0: the
/// agent has written none, and the datapath does not cache services.
pub const MAP_SERVICES_GEN: &str = "LB_SERVICES_GEN";
/// Each CPU's cache of service records, in front of [`MAP_SERVICES`]: two
/// slots per prefilter bit's low bits, a record kept with the generation
/// it was read in (per-CPU array, written by the datapath). Each loaded
/// program has its own, which starts empty: never pinned.
pub const MAP_SERVICE_CACHE: &str = "LB_SERVICE_CACHE";
/// Slots of [`MAP_SERVICE_CACHE`] (a power of two), in sets of two: a VIP
/// may take either slot of the set its prefilter bit's low bits choose.
pub const SERVICE_CACHE_SLOTS: u32 = 1024;
/// The maps of the object that belong to each loaded program (their
/// contents are rebuilt from the others), never pinned.
pub const UNPINNED_MAPS: [&str; 1] = [MAP_SERVICE_CACHE];
/// Size of the events ring buffer: 32768 events.
pub const EVENTS_BYTES: u32 = 256 * 1024;

/// Every map the agent expects in the object.
pub const ALL_MAPS: [&str; 24] = [
    MAP_SERVICES,
    MAP_BACKENDS,
    MAP_MAGLEV,
    MAP_FLOWS,
    MAP_PENDING,
    MAP_REPLIES,
    MAP_SETTINGS,
    MAP_SYNS,
    MAP_SERVICE_COUNTERS,
    MAP_BACKEND_COUNTERS,
    MAP_DROPS,
    MAP_EVENTS,
    MAP_PEER_DEVICES,
    MAP_NEXT_HOPS,
    MAP_HAIRPIN,
    MAP_SCRATCH,
    MAP_FRAGS,
    MAP_ACL_V4,
    MAP_ACL_V6,
    MAP_BUCKETS,
    MAP_TRACE,
    MAP_PREFILTER,
    MAP_VERIFIED,
    MAP_SERVICES_GEN,
];

/// Most services one program serves.
pub const MAX_SERVICES: u32 = 1024;
/// Most backends over all services.
pub const MAX_BACKENDS: u32 = 16384;
/// Default Maglev table size per service (a prime, as Maglev requires).
pub const DEFAULT_TABLE_SIZE: u32 = 65537;
/// Default number of slots of the Maglev map, shared by all services'
/// double-buffered tables; the agent sizes it from the config at load time.
pub const DEFAULT_MAGLEV_SLOTS: u32 = 2 * 4 * DEFAULT_TABLE_SIZE;
/// Default flow-table capacity.
pub const DEFAULT_FLOW_CAPACITY: u32 = 1 << 18;
/// Smallest table of unanswered flows: an LRU hash with per-CPU lists
/// gives each CPU its share, and a share of a few entries would turn over
/// faster than a backend answers a SYN.
pub const MIN_PENDING_CAPACITY: u32 = 1024;

/// Entries of the table of unanswered flows (`LB_PENDING`) for a flow table
/// of `flow_capacity`: an eighth (a flood of unanswered flows then holds at
/// most that much memory), at least [`MIN_PENDING_CAPACITY`].
pub const fn pending_capacity(flow_capacity: u32) -> u32 {
    let eighth = flow_capacity / 8;
    if eighth < MIN_PENDING_CAPACITY { MIN_PENDING_CAPACITY } else { eighth }
}

/// Most distinct backend endpoints (address, port, protocol).
pub const MAX_BACKEND_ENDPOINTS: u32 = MAX_BACKENDS;
/// Fragmented datagrams whose ports `LB_FRAGS` remembers at once.
pub const MAX_FRAGS: u32 = 8192;
/// Most balancer addresses recorded in `LB_HAIRPIN`.
pub const MAX_HAIRPIN_SOURCES: u32 = 256;
/// Most interfaces recorded in `LB_PEER_DEVICES`.
pub const MAX_PEER_DEVICES: u32 = 4096;
/// Most entries of each ACL trie (allow and deny prefixes over all
/// services, per family).
pub const MAX_ACL_ENTRIES: u32 = 65536;
/// Source prefixes whose new-flow buckets `LB_BUCKETS` holds at once; the
/// least recently used are forgotten (a forgotten bucket is full again).
pub const MAX_BUCKETS: u32 = 65536;
