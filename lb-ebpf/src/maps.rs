//! The program's maps. Layouts live in `lb_common::abi`; names must match
//! `lb_common::abi::MAP_*` (a userspace test checks the built object).
//!
//! The flow table is one shared LRU hash rather than per-CPU tables: the
//! reply of a flow usually arrives on another CPU than its request (another
//! NIC queue, often another NIC) and must find the same entry, and a flow
//! must keep its backend if RSS moves it to another queue. The kernel's LRU
//! keeps per-CPU free lists, so a shared table costs little on insert.
//! `BPF_F_NO_COMMON_LRU` gives each CPU its own LRU list (the table stays
//! shared), so inserting a new flow takes no lock other CPUs contend for.
//!
//! There is no second, reverse-direction table: replies find their flow
//! through `LB_REPLIES` (see `reverse`), so the two directions of a flow
//! share one entry and cannot be evicted apart.

use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_F_NO_COMMON_LRU, bpf_fib_lookup},
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use lb_common::{
    abi::{
        AclV4, AclV6, Addr, BackendRecord, BucketKey, Counters, DEFAULT_FLOW_CAPACITY,
        DEFAULT_MAGLEV_SLOTS, DropReason, EVENTS_BYTES, Endpoint, FlowKey, FlowTimeouts, FlowValue,
        FragKey, FragPorts, MAX_ACL_ENTRIES, MAX_BACKEND_ENDPOINTS, MAX_BACKENDS, MAX_BUCKETS,
        MAX_FRAGS, MAX_HAIRPIN_SOURCES, MAX_PEER_DEVICES, MAX_SERVICES, NextHop, Replies,
        SERVICE_CACHE_SLOTS, ServiceKey, ServiceRecord, SynCounters, TraceFilter, VerifiedKey,
        pending_capacity,
    },
    parse::{Fragment, IcmpError, L4Packet},
};

#[map]
pub static LB_SERVICES: HashMap<ServiceKey, ServiceRecord> =
    HashMap::with_max_entries(MAX_SERVICES, 0);

#[map]
pub static LB_BACKENDS: Array<BackendRecord> = Array::with_max_entries(MAX_BACKENDS, 0);

#[map]
pub static LB_MAGLEV: Array<u32> = Array::with_max_entries(DEFAULT_MAGLEV_SLOTS, BPF_F_MMAPABLE);

#[map]
pub static LB_FLOWS: LruHashMap<FlowKey, FlowValue> =
    LruHashMap::with_max_entries(DEFAULT_FLOW_CAPACITY, BPF_F_NO_COMMON_LRU);

/// Flows not answered yet (see `flows`); the agent sizes it from the flow
/// table's capacity (`pending_capacity`).
#[map]
pub static LB_PENDING: LruHashMap<FlowKey, FlowValue> =
    LruHashMap::with_max_entries(pending_capacity(DEFAULT_FLOW_CAPACITY), BPF_F_NO_COMMON_LRU);

#[map]
pub static LB_REPLIES: HashMap<Endpoint, Replies> =
    HashMap::with_max_entries(MAX_BACKEND_ENDPOINTS, 0);

#[map]
pub static LB_SETTINGS: Array<FlowTimeouts> = Array::with_max_entries(1, 0);

#[map]
pub static LB_SYNS: Array<SynCounters> = Array::with_max_entries(MAX_BACKENDS, BPF_F_MMAPABLE);

#[map]
pub static LB_SERVICE_COUNTERS: PerCpuArray<Counters> =
    PerCpuArray::with_max_entries(MAX_SERVICES, 0);

#[map]
pub static LB_BACKEND_COUNTERS: PerCpuArray<Counters> =
    PerCpuArray::with_max_entries(MAX_BACKENDS, 0);

#[map]
pub static LB_EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

#[map]
pub static LB_DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DropReason::COUNT, 0);

#[map]
pub static LB_PEER_DEVICES: HashMap<u32, u32> = HashMap::with_max_entries(MAX_PEER_DEVICES, 0);

#[map]
pub static LB_HAIRPIN: HashMap<Addr, u32> = HashMap::with_max_entries(MAX_HAIRPIN_SOURCES, 0);

#[map]
pub static LB_FRAGS: LruHashMap<FragKey, FragPorts> = LruHashMap::with_max_entries(MAX_FRAGS, 0);

#[map]
pub static LB_ACL_V4: LpmTrie<AclV4, u32> = LpmTrie::with_max_entries(MAX_ACL_ENTRIES, 0);

#[map]
pub static LB_ACL_V6: LpmTrie<AclV6, u32> = LpmTrie::with_max_entries(MAX_ACL_ENTRIES, 0);

#[map]
pub static LB_BUCKETS: LruHashMap<BucketKey, u64> = LruHashMap::with_max_entries(MAX_BUCKETS, 0);

/// Sources known to receive what is sent to them (see `challenge`); the
/// agent sizes it as `LB_PENDING`.
#[map]
pub static LB_VERIFIED: LruHashMap<VerifiedKey, u32> =
    LruHashMap::with_max_entries(pending_capacity(DEFAULT_FLOW_CAPACITY), 0);

/// Per-CPU room for what the 512-byte BPF stack cannot hold: the parse
/// result every branch reads, and a FIB query (see `route`).
pub struct Scratch {
    pub pkt: L4Packet,
    pub icmp: IcmpError,
    pub frag: Fragment,
    pub fib: bpf_fib_lookup,
    pub pending: crate::answer::Pending,
    pub reply_vip: Endpoint,
    /// The new-flow bucket looked up, and its new time (see `sources`).
    pub bucket: BucketKey,
    pub bucket_tat: u64,
    /// A direct-server-return flow's backend (see `dsr::later`).
    pub dsr: crate::dsr::Target,
    /// What a direct-server-return packet is routed by (see `dsr`).
    pub dsr_to: FlowKey,
    /// The flow an ICMP error for a DSR backend is about (see `dsr`).
    pub dsr_key: FlowKey,
    /// Where a `dsr-ipip` packet goes once wrapped (see `dsr`).
    pub dsr_route: crate::route::Route,
    /// Whether this packet is traced (`trace`; written only while a trace
    /// session runs).
    pub traced: u32,
    /// Where `flows::find` found the flow last (`flows::IN_*`).
    pub flow_in: u32,
    /// The key of the pending flow `flows::find` found (or
    /// `flows::adopt` pinned) last.
    pub pending_key: FlowKey,
    /// The backend endpoint and flow `flows::adopt` works on.
    pub adopt_backend: Endpoint,
    pub adopt_flow: FlowValue,
    /// The source `challenge` looks up or records.
    pub verified: VerifiedKey,
    /// Set by `flows::promote` when a client acknowledged its backend's
    /// SYN-ACK: the datapath then records its source (`challenge`).
    pub promoted: u32,
    /// This CPU's time-exceeded allowance, as a GCRA time (see `answer`).
    pub time_exceeded_tat: u64,
}

#[map]
pub static LB_SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

#[map]
pub static LB_NEXT_HOPS: Array<NextHop> = Array::with_max_entries(MAX_BACKENDS, 0);

/// `lb trace`'s filter (array of one; see `trace`).
#[map]
pub static LB_TRACE: Array<TraceFilter> = Array::with_max_entries(1, 0);

/// See `lb_common::abi::MAP_SERVICES_GEN`.
#[map]
pub static LB_SERVICES_GEN: Array<u32> = Array::with_max_entries(1, 0);

/// A service record as the datapath last read it (see `services`).
pub struct CachedService {
    pub key: ServiceKey,
    /// `LB_SERVICES_GEN` when the record was read; 0: empty.
    pub generation: u32,
    pub record: ServiceRecord,
}

/// See `lb_common::abi::MAP_SERVICE_CACHE`.
#[map]
pub static LB_SERVICE_CACHE: PerCpuArray<CachedService> =
    PerCpuArray::with_max_entries(SERVICE_CACHE_SLOTS, 0);

#[map]
pub static LB_PREFILTER: Array<u64> = Array::with_max_entries(lb_common::prefilter::WORDS, 0);
