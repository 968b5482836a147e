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
}
abi_type!(Counters, size = 24, align = 8);

impl Counters {
    /// Sum of per-CPU values.
    pub fn sum<'a>(per_cpu: impl IntoIterator<Item = &'a Counters>) -> Counters {
        per_cpu
            .into_iter()
            .fold(Counters::default(), |acc, c| Counters {
                packets: acc.packets.wrapping_add(c.packets),
                bytes: acc.bytes.wrapping_add(c.bytes),
                new_flows: acc.new_flows.wrapping_add(c.new_flows),
            })
    }
}

/// Why the datapath dropped or refused a packet: the index into the per-CPU
/// drop counter array.
///
/// The enum is only a name for an index; maps store plain `u64` counts.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Frame shorter than its Ethernet (+VLAN) header.
    TruncatedEthernet = 0,
    /// Frame shorter than its IP header, or IHL/length fields inconsistent.
    MalformedIp = 1,
    /// Fragment of a VIP-bound datagram: ports are unknown, cannot be balanced.
    Fragment = 2,
    /// VIP-bound packet shorter than its TCP/UDP header.
    TruncatedL4 = 3,
    /// The service has no backend able to take a new flow.
    NoBackend = 4,
    /// A Maglev slot or backend id pointed outside its map.
    BadTableEntry = 5,
    /// The kernel has no route to the chosen backend.
    NoRoute = 6,
    /// The flow table could not store a new flow.
    FlowTableFull = 7,
}

impl DropReason {
    /// Number of drop reasons: the size of the drop counter array.
    pub const COUNT: u32 = 8;

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
}
