//! Wire layouts of the headers the balancer reads or rewrites.
//!
//! Byte arrays only (alignment 1): a header may sit at any offset, e.g. IPv4
//! at 14 or 18 bytes. Offsets of fields the datapath rewrites are constants
//! here, so the rewrite code and the tests agree on them.

use super::view::Header;

/// EtherType of IPv4.
pub const ETH_P_IP: u16 = 0x0800;
/// EtherType of IPv6.
pub const ETH_P_IPV6: u16 = 0x86dd;
/// EtherType of an 802.1Q VLAN tag.
pub const ETH_P_8021Q: u16 = 0x8100;

/// Ethernet II header.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EthHdr {
    /// Destination MAC.
    pub dst: [u8; 6],
    /// Source MAC.
    pub src: [u8; 6],
    /// EtherType, network order.
    pub ethertype: [u8; 2],
}

/// 802.1Q tag that follows the MACs when the outer EtherType is 0x8100.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct VlanHdr {
    /// Priority, DEI and VLAN id.
    pub tci: [u8; 2],
    /// Inner EtherType, network order.
    pub ethertype: [u8; 2],
}

/// IPv4 header without options.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Ipv4Hdr {
    /// Version (high nibble) and header length in words (low nibble).
    pub version_ihl: u8,
    /// DSCP and ECN.
    pub tos: u8,
    /// Total length, network order.
    pub total_len: [u8; 2],
    /// Identification.
    pub id: [u8; 2],
    /// Flags and fragment offset, network order.
    pub frag: [u8; 2],
    /// Time to live.
    pub ttl: u8,
    /// Protocol of the payload.
    pub proto: u8,
    /// Header checksum.
    pub check: [u8; 2],
    /// Source address.
    pub src: [u8; 4],
    /// Destination address.
    pub dst: [u8; 4],
}

impl Ipv4Hdr {
    /// Offset of the checksum in the header.
    pub const CHECK_OFF: usize = 10;
    /// Offset of the source address in the header.
    pub const SRC_OFF: usize = 12;
    /// Offset of the destination address in the header.
    pub const DST_OFF: usize = 16;
    /// "More fragments" flag in `frag`.
    pub const MF: u16 = 0x2000;
    /// Fragment offset mask in `frag`.
    pub const OFFSET_MASK: u16 = 0x1fff;
}

/// IPv6 fixed header.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Ipv6Hdr {
    /// Version, traffic class and flow label.
    pub vtc_flow: [u8; 4],
    /// Payload length, network order.
    pub payload_len: [u8; 2],
    /// First next-header value.
    pub next_header: u8,
    /// Hop limit.
    pub hop_limit: u8,
    /// Source address.
    pub src: [u8; 16],
    /// Destination address.
    pub dst: [u8; 16],
}

impl Ipv6Hdr {
    /// Offset of the source address in the header.
    pub const SRC_OFF: usize = 8;
    /// Offset of the destination address in the header.
    pub const DST_OFF: usize = 24;
}

/// The first two bytes shared by the IPv6 extension headers lb skips
/// (hop-by-hop, routing, destination options).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Ipv6ExtHdr {
    /// Next header.
    pub next_header: u8,
    /// Length in 8-byte units, not counting the first 8 bytes.
    pub len: u8,
}

/// IPv6 fragment extension header.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Ipv6FragHdr {
    /// Next header.
    pub next_header: u8,
    /// Reserved.
    pub reserved: u8,
    /// Fragment offset (13 bits) and flags; bit 0 is "more fragments".
    pub offset_flags: [u8; 2],
    /// Identification.
    pub id: [u8; 4],
}

/// The leading bytes of TCP and UDP: both start with the ports.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PortsHdr {
    /// Source port, network order.
    pub src: [u8; 2],
    /// Destination port, network order.
    pub dst: [u8; 2],
}

/// TCP header without options.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TcpHdr {
    /// Source port, network order.
    pub src: [u8; 2],
    /// Destination port, network order.
    pub dst: [u8; 2],
    /// Sequence number.
    pub seq: [u8; 4],
    /// Acknowledgement number.
    pub ack: [u8; 4],
    /// Data offset (high nibble) and reserved bits.
    pub doff: u8,
    /// Flags (FIN, SYN, RST, PSH, ACK, URG, ECE, CWR).
    pub flags: u8,
    /// Window.
    pub window: [u8; 2],
    /// Checksum.
    pub check: [u8; 2],
    /// Urgent pointer.
    pub urg: [u8; 2],
}

impl TcpHdr {
    /// Offset of the checksum in the header.
    pub const CHECK_OFF: usize = 16;
    /// Offset of the sequence number in the header.
    pub const SEQ_OFF: usize = 4;
    /// Offset of the acknowledgement number in the header.
    pub const ACK_OFF: usize = 8;
    /// FIN flag.
    pub const FIN: u8 = 0x01;
    /// SYN flag.
    pub const SYN: u8 = 0x02;
    /// RST flag.
    pub const RST: u8 = 0x04;
    /// ACK flag.
    pub const ACK: u8 = 0x10;
}

/// UDP header.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct UdpHdr {
    /// Source port, network order.
    pub src: [u8; 2],
    /// Destination port, network order.
    pub dst: [u8; 2],
    /// Length of header and payload.
    pub len: [u8; 2],
    /// Checksum; 0 means none (IPv4 only).
    pub check: [u8; 2],
}

impl UdpHdr {
    /// Offset of the checksum in the header.
    pub const CHECK_OFF: usize = 6;
}

/// ICMP and ICMPv6 header: type, code, checksum and four bytes whose meaning
/// depends on the type. An error message quotes the offending packet's IP
/// header and at least the first 8 bytes of its payload right after it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct IcmpHdr {
    /// Message type.
    pub kind: u8,
    /// Code within the type.
    pub code: u8,
    /// Checksum.
    pub check: [u8; 2],
    /// Type-specific (unused, or the next-hop MTU for "too big").
    pub rest: [u8; 4],
}

/// IP protocol number of ICMP.
pub const PROTO_ICMP: u8 = 1;
/// IPv6 next-header value of ICMPv6.
pub const PROTO_ICMPV6: u8 = 58;
/// ICMP type "destination unreachable".
pub const ICMP_DEST_UNREACH: u8 = 3;
/// ICMP destination-unreachable code "fragmentation needed" (a path MTU
/// signal, not a failure).
pub const ICMP_FRAG_NEEDED: u8 = 4;
/// ICMP type "time exceeded".
pub const ICMP_TIME_EXCEEDED: u8 = 11;
/// ICMP type "parameter problem".
pub const ICMP_PARAMETER_PROBLEM: u8 = 12;
/// ICMPv6 type "destination unreachable".
pub const ICMPV6_DEST_UNREACH: u8 = 1;
/// ICMPv6 type "packet too big".
pub const ICMPV6_PACKET_TOO_BIG: u8 = 2;
/// ICMPv6 type "time exceeded".
pub const ICMPV6_TIME_EXCEEDED: u8 = 3;
/// ICMPv6 type "parameter problem".
pub const ICMPV6_PARAMETER_PROBLEM: u8 = 4;
/// Offset of the checksum in ICMP and ICMPv6 headers.
pub const ICMP_CHECK_OFF: usize = 2;

/// Offset of the source port in TCP and UDP headers.
pub const L4_SRC_PORT_OFF: usize = 0;
/// Offset of the destination port in TCP and UDP headers.
pub const L4_DST_PORT_OFF: usize = 2;

macro_rules! headers {
    ($($t:ty = $size:expr),* $(,)?) => {$(
        const _: () = assert!(core::mem::size_of::<$t>() == $size);
        const _: () = assert!(core::mem::align_of::<$t>() == 1);
        // SAFETY: repr(C), only u8 / [u8; N] fields (alignment 1, asserted above).
        unsafe impl Header for $t {}
    )*};
}
headers!(
    EthHdr = 14,
    VlanHdr = 4,
    Ipv4Hdr = 20,
    Ipv6Hdr = 40,
    Ipv6ExtHdr = 2,
    Ipv6FragHdr = 8,
    PortsHdr = 4,
    TcpHdr = 20,
    UdpHdr = 8,
    IcmpHdr = 8,
);
