use super::abi_type;

/// Per-CPU traffic counters, one record per service and one per backend.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Packets forwarded.
    pub packets: u64,
    /// Bytes forwarded (L2 frame length).
    pub bytes: u64,
    /// Flows created (flow-table misses that picked a backend).
    pub new_flows: u64,
    /// Packets from a source the service's lists refuse (services only).
    pub acl_denied: u64,
    /// New flows over their source's new-flow limit (services only).
    pub rate_limited: u64,
}
abi_type!(Counters, size = 40, align = 8);

impl Counters {
    /// Sum of per-CPU values.
    pub fn sum<'a>(per_cpu: impl IntoIterator<Item = &'a Counters>) -> Counters {
        per_cpu.into_iter().fold(Counters::default(), |acc, c| Counters {
            packets: acc.packets.wrapping_add(c.packets),
            bytes: acc.bytes.wrapping_add(c.bytes),
            new_flows: acc.new_flows.wrapping_add(c.new_flows),
            acl_denied: acc.acl_denied.wrapping_add(c.acl_denied),
            rate_limited: acc.rate_limited.wrapping_add(c.rate_limited),
        })
    }
}

/// Why the datapath dropped a packet or declined to balance it: the index
/// into the per-CPU exception counters. Each reason has one fixed action,
/// listed here and in the README.
///
/// The enum is only a name for an index; maps store plain `u64` counts.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Frame shorter than its Ethernet (+VLAN) header. Dropped (the kernel
    /// would drop it too).
    TruncatedEthernet = 0,
    /// IP header truncated, wrong version, IHL < 5 or lengths beyond the
    /// frame. Dropped (the kernel's IP input drops these too).
    MalformedIp = 1,
    /// A later IP fragment whose first fragment (the only one carrying the
    /// ports) was not seen first, or whose record was evicted: it cannot be
    /// matched to a flow. Passed to the kernel untouched. (Fragments whose
    /// first was seen are balanced with it.)
    Fragment = 2,
    /// TCP/UDP header cut short: its ports are unknown. Passed to the
    /// kernel untouched.
    TruncatedL4 = 3,
    /// VIP packet of a new flow whose service has no backend able to take
    /// it. Dropped.
    NoBackend = 4,
    /// A Maglev slot or backend id pointed outside its map (a table being
    /// rewritten wrongly). Dropped.
    BadTableEntry = 5,
    /// The kernel has no route to the backend (or back to the client).
    /// Dropped.
    NoRoute = 6,
    /// The flow table refused a new entry. The packet is still forwarded by
    /// Maglev, just not pinned.
    FlowTableFull = 7,
    /// The packet's TTL or hop limit would expire here. Dropped, and
    /// answered with ICMP time exceeded from the VIP (as a router would).
    TtlExpired = 8,
    /// Larger than the MTU towards its destination, and not to be
    /// fragmented (IPv4 with DF set, or IPv6). Dropped, and answered with
    /// ICMP "fragmentation needed" / "packet too big" from the VIP, quoting
    /// the packet as its sender sent it, so path MTU discovery works.
    TooBig = 9,
    /// Larger than the MTU towards the backend, IPv4 without DF: rewritten
    /// and passed to the kernel, which fragments it on the way.
    FragmentedByKernel = 10,
    /// IPv6 UDP with checksum 0, which IPv6 forbids (RFC 8200 §8.1): the
    /// receiver would drop it. Dropped.
    Udp6ZeroChecksum = 11,
    /// A backend called a VIP and was picked for itself (hairpin), but the
    /// kernel gave no source address of this host towards it to stand in
    /// for the caller (needs Linux 6.7's BPF_FIB_LOOKUP_SRC). Dropped.
    HairpinNoSource = 12,
    /// From a source the service's `allow` / `deny` lists refuse (counted
    /// per service too, as `acl_denied`). Dropped.
    AclDenied = 13,
    /// A new flow over its source prefix's new-flow limit (counted per
    /// service too, as `rate_limited`). Dropped.
    RateLimited = 14,
    /// Direct server return by IP-in-IP could not put the outer header in
    /// front: a VLAN tag in line (the XDP hook keeps the Ethernet header
    /// as it is), or no room in front of the packet; or an ICMP error for a
    /// DSR backend too big to pass on wrapped (no error is answered about
    /// an error). Dropped.
    EncapFailed = 15,
    /// Direct server return on L2 at the XDP hook, and the backend's MAC is
    /// not known yet (XDP cannot hand the kernel the packet to resolve it,
    /// as it is still addressed to the VIP). Dropped; the agent's health
    /// probes towards the backend make the kernel learn it.
    NoNeighbour = 16,
    /// The table of unanswered flows refused a new entry. The packet is
    /// still forwarded by Maglev, just not pinned.
    PendingTableFull = 17,
    /// Flood mode: a TCP SYN to a VIP from a source not known to receive
    /// what is sent to it. Not forwarded: answered with a SYN challenge
    /// (`crate::challenge`), which a real client answers with a reset and
    /// its SYN again, then forwarded.
    SynChallenged = 18,
    /// Flood mode: a reset answering a SYN challenge. Its source is
    /// verified (its next SYNs reach a backend); the reset was meant for
    /// the balancer and is dropped.
    ChallengeAnswered = 19,
    /// Flood mode, with SYN challenges: a TCP packet to a VIP that is no
    /// SYN and belongs to no flow, from a source not verified: a spoofed
    /// ACK (or FIN, RST) flood's, which would otherwise be picked up as a
    /// flow and sent to a backend. Dropped. A real connection lb lost track
    /// of (a restart without takeover) is picked up again once flood mode
    /// is off.
    NoFlowUnverified = 20,
    /// The packet's TTL or hop limit would expire here, and this CPU has
    /// answered its share of time-exceeded errors (`crate::icmp::
    /// TIME_EXCEEDED_PER_SEC`, as routers limit theirs): dropped
    /// unanswered, so a flood of them (spoofed, say) makes the hook no
    /// reflector. "Packet too big" is never limited: path MTU discovery
    /// needs every one, as the kernel's own limits exempt it.
    TtlExpiredUnanswered = 21,
}

impl DropReason {
    /// Number of reasons: the size of the counter array.
    pub const COUNT: u32 = 22;

    /// Every reason, in index order.
    pub const ALL: [DropReason; Self::COUNT as usize] = [
        DropReason::TruncatedEthernet,
        DropReason::MalformedIp,
        DropReason::Fragment,
        DropReason::TruncatedL4,
        DropReason::NoBackend,
        DropReason::BadTableEntry,
        DropReason::NoRoute,
        DropReason::FlowTableFull,
        DropReason::TtlExpired,
        DropReason::TooBig,
        DropReason::FragmentedByKernel,
        DropReason::Udp6ZeroChecksum,
        DropReason::HairpinNoSource,
        DropReason::AclDenied,
        DropReason::RateLimited,
        DropReason::EncapFailed,
        DropReason::NoNeighbour,
        DropReason::PendingTableFull,
        DropReason::SynChallenged,
        DropReason::ChallengeAnswered,
        DropReason::NoFlowUnverified,
        DropReason::TtlExpiredUnanswered,
    ];

    /// Stable snake_case name, used in status output and metric labels.
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::TruncatedEthernet => "truncated_ethernet",
            DropReason::MalformedIp => "malformed_ip",
            DropReason::Fragment => "fragment",
            DropReason::TruncatedL4 => "truncated_l4",
            DropReason::NoBackend => "no_backend",
            DropReason::BadTableEntry => "bad_table_entry",
            DropReason::NoRoute => "no_route",
            DropReason::FlowTableFull => "flow_table_full",
            DropReason::TtlExpired => "ttl_expired",
            DropReason::TooBig => "too_big",
            DropReason::FragmentedByKernel => "fragmented_by_kernel",
            DropReason::Udp6ZeroChecksum => "udp6_zero_checksum",
            DropReason::HairpinNoSource => "hairpin_no_source",
            DropReason::AclDenied => "acl_denied",
            DropReason::RateLimited => "rate_limited",
            DropReason::EncapFailed => "encap_failed",
            DropReason::NoNeighbour => "no_neighbour",
            DropReason::PendingTableFull => "pending_table_full",
            DropReason::SynChallenged => "syn_challenged",
            DropReason::ChallengeAnswered => "challenge_answered",
            DropReason::NoFlowUnverified => "no_flow_unverified",
            DropReason::TtlExpiredUnanswered => "ttl_expired_unanswered",
        }
    }

    /// Whether packets counted under this reason are dropped (else they are
    /// passed to the kernel, or forwarded unpinned).
    pub const fn drops(self) -> bool {
        matches!(
            self,
            DropReason::TruncatedEthernet
                | DropReason::MalformedIp
                | DropReason::NoBackend
                | DropReason::BadTableEntry
                | DropReason::NoRoute
                | DropReason::TtlExpired
                | DropReason::TooBig
                | DropReason::Udp6ZeroChecksum
                | DropReason::HairpinNoSource
                | DropReason::AclDenied
                | DropReason::RateLimited
                | DropReason::EncapFailed
                | DropReason::NoNeighbour
                | DropReason::SynChallenged
                | DropReason::ChallengeAnswered
                | DropReason::NoFlowUnverified
                | DropReason::TtlExpiredUnanswered
        )
    }

    /// Whether the datapath answers the sender in place of the packet
    /// (which it drops): with an ICMP error, or a SYN challenge.
    pub const fn answers(self) -> bool {
        matches!(self, DropReason::TtlExpired | DropReason::TooBig | DropReason::SynChallenged)
    }

    /// What happens to a packet counted under this reason, as status and
    /// the README name it.
    pub const fn action(self) -> &'static str {
        if self.answers() {
            "answer"
        } else if self.drops() {
            "drop"
        } else {
            "pass"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_reason_at_its_index() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{}", r.name());
        }
    }

    /// Every variant is in `ALL` (and so counted and shown): the match is
    /// exhaustive, so a new variant does not compile until it is listed
    /// here, and the loop then fails until it is in `ALL` too.
    #[test]
    fn every_reason_is_in_all() {
        let listed = |r: DropReason| match r {
            DropReason::TruncatedEthernet
            | DropReason::MalformedIp
            | DropReason::Fragment
            | DropReason::TruncatedL4
            | DropReason::NoBackend
            | DropReason::BadTableEntry
            | DropReason::NoRoute
            | DropReason::FlowTableFull
            | DropReason::TtlExpired
            | DropReason::TooBig
            | DropReason::FragmentedByKernel
            | DropReason::Udp6ZeroChecksum
            | DropReason::HairpinNoSource
            | DropReason::AclDenied
            | DropReason::RateLimited
            | DropReason::EncapFailed
            | DropReason::NoNeighbour
            | DropReason::PendingTableFull
            | DropReason::SynChallenged
            | DropReason::ChallengeAnswered
            | DropReason::NoFlowUnverified
            | DropReason::TtlExpiredUnanswered => DropReason::ALL.contains(&r),
        };
        let every = [
            DropReason::TruncatedEthernet,
            DropReason::MalformedIp,
            DropReason::Fragment,
            DropReason::TruncatedL4,
            DropReason::NoBackend,
            DropReason::BadTableEntry,
            DropReason::NoRoute,
            DropReason::FlowTableFull,
            DropReason::TtlExpired,
            DropReason::TooBig,
            DropReason::FragmentedByKernel,
            DropReason::Udp6ZeroChecksum,
            DropReason::HairpinNoSource,
            DropReason::AclDenied,
            DropReason::RateLimited,
            DropReason::EncapFailed,
            DropReason::NoNeighbour,
            DropReason::PendingTableFull,
            DropReason::SynChallenged,
            DropReason::ChallengeAnswered,
            DropReason::NoFlowUnverified,
            DropReason::TtlExpiredUnanswered,
        ];
        for r in every {
            assert!(listed(r), "{} is missing from DropReason::ALL", r.name());
        }
        let mut names: [&str; DropReason::COUNT as usize] = DropReason::ALL.map(DropReason::name);
        names.sort_unstable();
        assert!(names.windows(2).all(|w| w[0] != w[1]), "a name or a reason twice: {names:?}");
    }
}
