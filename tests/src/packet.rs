//! A small scapy-like frame builder for tests.
//!
//! A [`Frame`] is a plain description of an Ethernet frame (MACs, optional
//! 802.1Q tag, IPv4 or IPv6 with options / extension headers, TCP, UDP or a
//! raw IP payload); [`Frame::bytes`] lays it out byte for byte. Every length
//! and checksum is computed from scratch by the code in this module (RFC 1071
//! one's-complement sums over the IPv4 header and over pseudo-header + L4),
//! deliberately *not* by `lb_common::csum`: golden tests compare the
//! datapath's incrementally updated checksums with these fresh ones, so the
//! two must not share code.
//!
//! ```
//! use lb_tests::packet::{Frame, mac};
//!
//! let syn = Frame::tcp("10.0.0.2:40000", "10.0.0.100:80")
//!     .macs(mac("02:00:00:00:00:02"), mac("02:00:00:00:00:01"))
//!     .vlan(7)
//!     .bytes();
//! assert_eq!(syn.len(), 14 + 4 + 20 + 20);
//! ```
//!
//! Fixed field values, so expected frames can be written by hand:
//! - Ethernet II; an 802.1Q tag has PCP 0, DEI 0.
//! - IPv4: version 4, IHL from the options, TOS 0, id 0, flags 0 (DF only
//!   with [`Frame::dont_fragment`], MF only with [`Frame::fragment`]).
//! - IPv6: traffic class 0, flow label 0.
//! - TCP: 20-byte header (data offset 5), window 65535, urgent pointer 0,
//!   ack 0 unless set with [`Frame::ack`].
//! - UDP: length of header + payload; a checksum computing to 0 is sent as
//!   0xffff (RFC 768).

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// IP protocol number of ICMP.
pub const PROTO_ICMP: u8 = 1;
/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const PROTO_UDP: u8 = 17;
/// IP protocol number of ICMPv6.
pub const PROTO_ICMPV6: u8 = 58;

/// IPv6 next-header value of the hop-by-hop options header.
pub const EXT_HOP_BY_HOP: u8 = 0;
/// IPv6 next-header value of the routing header.
pub const EXT_ROUTING: u8 = 43;
/// IPv6 next-header value of the fragment header.
pub const EXT_FRAGMENT: u8 = 44;
/// IPv6 next-header value of the destination options header.
pub const EXT_DEST_OPTS: u8 = 60;

/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// EtherType of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// EtherType of an 802.1Q VLAN tag.
pub const ETHERTYPE_VLAN: u16 = 0x8100;

/// TCP FIN flag.
pub const TCP_FIN: u8 = 0x01;
/// TCP SYN flag.
pub const TCP_SYN: u8 = 0x02;
/// TCP RST flag.
pub const TCP_RST: u8 = 0x04;
/// TCP PSH flag.
pub const TCP_PSH: u8 = 0x08;
/// TCP ACK flag.
pub const TCP_ACK: u8 = 0x10;

/// Default source MAC, 02:00:00:00:00:02.
pub const DEFAULT_SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
/// Default destination MAC, 02:00:00:00:00:01.
pub const DEFAULT_DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

const ETH_LEN: usize = 14;
const VLAN_LEN: usize = 4;
const IPV4_LEN: usize = 20;
const IPV6_LEN: usize = 40;
const TCP_LEN: usize = 20;
const UDP_LEN: usize = 8;
const IPV6_FRAG_LEN: usize = 8;

/// One IPv6 extension header, in the order it appears in the chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ipv6Ext {
    /// A header of `(len_units + 1) * 8` bytes whose first two bytes are
    /// next-header and `len_units` (hop-by-hop, routing, destination options,
    /// or any other kind, laid out the same way).
    Generic {
        /// Its own next-header value (e.g. [`EXT_HOP_BY_HOP`]).
        kind: u8,
        /// The header's length field: 8-byte units beyond the first 8.
        len_units: u8,
    },
    /// A fragment header (8 bytes, identification [`Frame::ip_id`]).
    Fragment {
        /// Fragment offset in 8-byte units (13 bits).
        offset_units: u16,
        /// The "more fragments" flag.
        more: bool,
    },
}

impl Ipv6Ext {
    /// The next-header value that announces this header.
    pub fn kind(&self) -> u8 {
        match *self {
            Ipv6Ext::Generic { kind, .. } => kind,
            Ipv6Ext::Fragment { .. } => EXT_FRAGMENT,
        }
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        match *self {
            Ipv6Ext::Generic { len_units, .. } => (usize::from(len_units) + 1) * 8,
            Ipv6Ext::Fragment { .. } => IPV6_FRAG_LEN,
        }
    }

    /// Always false: every extension header has at least 8 bytes.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// Why a [`Frame`] cannot be laid out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Source and destination are of different address families.
    FamilyMismatch {
        /// The source endpoint.
        src: SocketAddr,
        /// The destination endpoint.
        dst: SocketAddr,
    },
    /// IPv4 options on an IPv6 frame.
    OptionsOnIpv6,
    /// IPv6 extension headers on an IPv4 frame.
    ExtOnIpv4,
    /// IPv4 options longer than 40 bytes (after padding).
    OptionsTooLong(usize),
    /// A VLAN id above 4095.
    VlanIdOutOfRange(u16),
    /// A fragment offset above 8191 units.
    FragmentOffsetOutOfRange(u16),
    /// The datagram (or UDP datagram) exceeds its 16-bit length field.
    TooLong(usize),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::FamilyMismatch { src, dst } => {
                write!(f, "source {src} and destination {dst} are of different families")
            }
            FrameError::OptionsOnIpv6 => write!(f, "IPv4 options on an IPv6 frame"),
            FrameError::ExtOnIpv4 => write!(f, "IPv6 extension headers on an IPv4 frame"),
            FrameError::OptionsTooLong(n) => write!(f, "{n} bytes of IPv4 options, at most 40"),
            FrameError::VlanIdOutOfRange(id) => write!(f, "VLAN id {id} above 4095"),
            FrameError::FragmentOffsetOutOfRange(o) => {
                write!(f, "fragment offset {o} above 8191 units")
            }
            FrameError::TooLong(n) => write!(f, "{n} bytes do not fit a 16-bit length field"),
        }
    }
}

impl std::error::Error for FrameError {}

/// A description of an Ethernet frame; [`Frame::bytes`] lays it out.
///
/// Built with [`Frame::tcp`], [`Frame::udp`] or [`Frame::ip`] and the
/// chaining setters; the fields are public for tests that need something the
/// setters do not offer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Source MAC.
    pub src_mac: [u8; 6],
    /// Destination MAC.
    pub dst_mac: [u8; 6],
    /// VLAN id of one 802.1Q tag, if any.
    pub vlan: Option<u16>,
    /// Source address and port (the port is ignored unless TCP or UDP).
    pub src: SocketAddr,
    /// Destination address and port (the port is ignored unless TCP or UDP).
    pub dst: SocketAddr,
    /// IP protocol: [`PROTO_TCP`] and [`PROTO_UDP`] get a header built here;
    /// anything else carries [`Frame::payload`] as its whole IP payload.
    pub proto: u8,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    /// IPv4 "don't fragment" flag.
    pub dont_fragment: bool,
    /// IPv4 options as given; zero-padded to a multiple of 4 when laid out.
    pub ip_options: Vec<u8>,
    /// IPv6 extension headers, in chain order.
    pub ipv6_ext: Vec<Ipv6Ext>,
    /// IPv4 fragment offset (8-byte units) and "more fragments" flag.
    pub ipv4_fragment: Option<(u16, bool)>,
    /// The datagram's identification: the IPv4 header's (low 16 bits) and
    /// an IPv6 fragment header's.
    pub ip_id: u32,
    /// TCP flags (ignored unless TCP).
    pub tcp_flags: u8,
    /// TCP sequence number (ignored unless TCP).
    pub seq: u32,
    /// TCP acknowledgement number (ignored unless TCP).
    pub ack: u32,
    /// Bytes after the L4 header (the whole IP payload for other protocols).
    pub payload: Vec<u8>,
    /// Send UDP with checksum 0, "no checksum" (ignored unless UDP; valid on
    /// the wire only over IPv4, RFC 8200 §8.1).
    pub udp_checksum_zero: bool,
    /// Zero bytes appended after the IP datagram until the frame is this
    /// long, like Ethernet padding to the 60-byte minimum.
    pub pad_to: usize,
}

/// Parses `"ip:port"`, `"[v6]:port"` or a bare IP (port 0).
///
/// # Panics
/// If `s` is none of those: meant for address literals in tests.
pub fn endpoint(s: &str) -> SocketAddr {
    try_endpoint(s).unwrap_or_else(|| {
        panic!("invalid endpoint {s:?}: expected \"ip:port\", \"[v6]:port\" or an IP address")
    })
}

/// Parses `"ip:port"`, `"[v6]:port"` or a bare IP (port 0); `None` if `s`
/// is none of those.
pub fn try_endpoint(s: &str) -> Option<SocketAddr> {
    s.parse::<SocketAddr>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 0)))
}

/// Parses a MAC address written `"02:00:00:00:00:10"`.
///
/// # Panics
/// If `s` is not six colon-separated hex bytes: meant for literals in tests.
pub fn mac(s: &str) -> [u8; 6] {
    try_mac(s).unwrap_or_else(|| {
        panic!("invalid MAC {s:?}: expected six hex bytes like 02:00:00:00:00:01")
    })
}

/// Parses a MAC address written `"02:00:00:00:00:10"`; `None` if malformed.
pub fn try_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut out {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// An Ethernet II frame carrying `body` under `ethertype`, for frames this
/// builder has no model of (ARP, LLDP, ...).
pub fn ethernet(src_mac: [u8; 6], dst_mac: [u8; 6], ethertype: u16, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ETH_LEN + body.len());
    out.extend_from_slice(&dst_mac);
    out.extend_from_slice(&src_mac);
    out.extend_from_slice(&ethertype.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// The RFC 1071 Internet checksum of the concatenation of `parts`, as a
/// host-order value to be stored big-endian.
///
/// Sums big-endian 16-bit words into a wide accumulator and folds once at the
/// end; a part of odd length is continued by the next part (the words are
/// those of the concatenation), and an odd final byte is padded with zero.
pub fn internet_checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u64 = 0;
    let mut pending: Option<u8> = None;
    for part in parts {
        for &b in *part {
            match pending.take() {
                Some(hi) => sum += u64::from(u16::from_be_bytes([hi, b])),
                None => pending = Some(b),
            }
        }
    }
    if let Some(hi) = pending {
        sum += u64::from(u16::from_be_bytes([hi, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // `sum` is at most 0xffff after the loop.
    !(sum as u16)
}

impl Frame {
    /// A frame of IP protocol `proto` between two endpoints, with every other
    /// field at its default (default MACs, no VLAN, TTL 64, SYN, seq 0, no
    /// payload). Never panics; mismatched families are reported by
    /// [`Frame::try_bytes`].
    pub fn new(proto: u8, src: SocketAddr, dst: SocketAddr) -> Frame {
        Frame {
            src_mac: DEFAULT_SRC_MAC,
            dst_mac: DEFAULT_DST_MAC,
            vlan: None,
            src,
            dst,
            proto,
            ttl: 64,
            dont_fragment: false,
            ip_options: Vec::new(),
            ipv6_ext: Vec::new(),
            ipv4_fragment: None,
            ip_id: 0,
            tcp_flags: TCP_SYN,
            seq: 0,
            ack: 0,
            payload: Vec::new(),
            udp_checksum_zero: false,
            pad_to: 0,
        }
    }

    fn checked(proto: u8, src: &str, dst: &str) -> Frame {
        let (src, dst) = (endpoint(src), endpoint(dst));
        assert_eq!(
            src.is_ipv4(),
            dst.is_ipv4(),
            "source {src} and destination {dst} are of different families"
        );
        Frame::new(proto, src, dst)
    }

    /// A TCP SYN from `src` to `dst` (`"10.0.0.2:40000"`,
    /// `"[2001:db8::2]:40000"`); the family follows from the addresses.
    ///
    /// # Panics
    /// On a malformed literal or if the two families differ.
    pub fn tcp(src: &str, dst: &str) -> Frame {
        Frame::checked(PROTO_TCP, src, dst)
    }

    /// A UDP datagram from `src` to `dst`, as for [`Frame::tcp`].
    ///
    /// # Panics
    /// On a malformed literal or if the two families differ.
    pub fn udp(src: &str, dst: &str) -> Frame {
        Frame::checked(PROTO_UDP, src, dst)
    }

    /// An IP packet of protocol `proto` (e.g. [`PROTO_ICMP`]) whose whole
    /// payload is [`Frame::payload`]; `src` and `dst` may be bare addresses.
    ///
    /// # Panics
    /// On a malformed literal or if the two families differ.
    pub fn ip(proto: u8, src: &str, dst: &str) -> Frame {
        Frame::checked(proto, src, dst)
    }

    /// An ICMP "port unreachable" (ICMPv6 for IPv6) from `from` to `to`
    /// quoting `quoted`'s IP header and the first 8 bytes after it, as a
    /// host answering a datagram to a closed port does.
    ///
    /// # Panics
    /// On a malformed literal or if the families differ.
    pub fn icmp_port_unreachable(from: &str, to: &str, quoted: &Frame) -> Frame {
        let (kind, code) = if quoted.is_ipv4() { (3, 3) } else { (1, 4) };
        Frame::icmp_error(from, to, kind, code, [0; 4], &quoted.quote(8))
    }

    /// An ICMP (ICMPv6 for IPv6 addresses) error of `kind` and `code` from
    /// `from` to `to`, its four type-specific bytes `rest`, quoting `quote`;
    /// the checksum is computed from scratch (ICMPv6's over its
    /// pseudo-header).
    ///
    /// # Panics
    /// On a malformed literal or if the families differ.
    pub fn icmp_error(
        from: &str,
        to: &str,
        kind: u8,
        code: u8,
        rest: [u8; 4],
        quote: &[u8],
    ) -> Frame {
        let frame = Frame::ip(PROTO_ICMP, from, to);
        let mut msg = vec![kind, code, 0, 0];
        msg.extend_from_slice(&rest);
        msg.extend_from_slice(quote);
        let sum = match (frame.src.ip(), frame.dst.ip()) {
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let mut pseudo = Vec::with_capacity(40);
                pseudo.extend_from_slice(&s.octets());
                pseudo.extend_from_slice(&d.octets());
                pseudo.extend_from_slice(&(msg.len() as u32).to_be_bytes());
                pseudo.extend_from_slice(&[0, 0, 0, PROTO_ICMPV6]);
                internet_checksum(&[&pseudo, &msg])
            }
            _ => internet_checksum(&[&msg]),
        };
        msg[2..4].copy_from_slice(&sum.to_be_bytes());
        let proto = if frame.is_ipv4() { PROTO_ICMP } else { PROTO_ICMPV6 };
        Frame { proto, ..frame }.payload(&msg)
    }

    /// What an ICMP error about this frame quotes: its IP header (options
    /// and extension headers included) and the first `l4` bytes after it.
    pub fn quote(&self, l4: usize) -> Vec<u8> {
        let bytes = self.bytes();
        bytes[self.l3_offset()..(self.l4_offset() + l4).min(bytes.len())].to_vec()
    }

    /// Whether the frame is IPv4 (by its source address).
    pub fn is_ipv4(&self) -> bool {
        self.src.is_ipv4()
    }

    /// Sets the MACs.
    pub fn macs(mut self, src: [u8; 6], dst: [u8; 6]) -> Frame {
        self.src_mac = src;
        self.dst_mac = dst;
        self
    }

    /// Adds one 802.1Q tag with VLAN id `id` (0..=4095).
    pub fn vlan(mut self, id: u16) -> Frame {
        self.vlan = Some(id);
        self
    }

    /// Sets the IPv4 TTL or IPv6 hop limit (default 64).
    pub fn ttl(mut self, ttl: u8) -> Frame {
        self.ttl = ttl;
        self
    }

    /// Sets the IPv4 "don't fragment" flag (default clear).
    pub fn dont_fragment(mut self, df: bool) -> Frame {
        self.dont_fragment = df;
        self
    }

    /// Sets IPv4 options; they are zero-padded (EOL) to a multiple of 4 and
    /// the IHL grows to match. At most 40 bytes.
    pub fn ip_options(mut self, opts: &[u8]) -> Frame {
        self.ip_options = opts.to_vec();
        self
    }

    /// Appends an IPv6 extension header of kind `next_header_kind` (0
    /// hop-by-hop, 43 routing, 60 destination options, ...) and
    /// `(body_len_units + 1) * 8` bytes. Options headers are filled with
    /// padding options, a routing header is type 253 (experimental) with no
    /// segments left; any other kind is zero-filled after its first two bytes.
    pub fn ipv6_ext(mut self, next_header_kind: u8, body_len_units: u8) -> Frame {
        self.ipv6_ext.push(Ipv6Ext::Generic { kind: next_header_kind, len_units: body_len_units });
        self
    }

    /// Makes the packet a fragment at `offset_units` * 8 bytes, with "more
    /// fragments" set if `more`. IPv4: sets the header's offset and MF; IPv6:
    /// appends a fragment header to the extension chain (so call it after
    /// headers that must precede it).
    ///
    /// With an offset above 0 no TCP/UDP header is laid out (a later fragment
    /// does not carry one): the payload follows the IP headers directly.
    pub fn fragment(mut self, offset_units: u16, more: bool) -> Frame {
        if self.is_ipv4() {
            self.ipv4_fragment = Some((offset_units, more));
        } else {
            self.ipv6_ext.push(Ipv6Ext::Fragment { offset_units, more });
        }
        self
    }

    /// Sets the datagram's identification (default 0; IPv4 keeps the low
    /// 16 bits).
    pub fn ip_id(mut self, id: u32) -> Frame {
        self.ip_id = id;
        self
    }

    /// Sets the TCP flags (default SYN).
    pub fn tcp_flags(mut self, flags: u8) -> Frame {
        self.tcp_flags = flags;
        self
    }

    /// Sets the TCP sequence number (default 0).
    pub fn seq(mut self, seq: u32) -> Frame {
        self.seq = seq;
        self
    }

    /// Sets the TCP acknowledgement number (default 0).
    pub fn ack(mut self, ack: u32) -> Frame {
        self.ack = ack;
        self
    }

    /// Sets the bytes after the L4 header.
    pub fn payload(mut self, data: &[u8]) -> Frame {
        self.payload = data.to_vec();
        self
    }

    /// Sends UDP with checksum 0 ("none", IPv4 only on real networks).
    pub fn udp_checksum_zero(mut self) -> Frame {
        self.udp_checksum_zero = true;
        self
    }

    /// Pads the frame with zero bytes after the IP datagram up to `len`
    /// bytes (e.g. 60, the Ethernet minimum without FCS).
    pub fn pad_to(mut self, len: usize) -> Frame {
        self.pad_to = len;
        self
    }

    /// Replaces the source endpoint (`"ip:port"`, `"[v6]:port"` or bare IP).
    ///
    /// # Panics
    /// On a malformed literal or one of the other family than the frame's.
    pub fn src(mut self, addr: &str) -> Frame {
        let src = endpoint(addr);
        assert_eq!(src.is_ipv4(), self.dst.is_ipv4(), "{src} is not of the frame's family");
        self.src = src;
        self
    }

    /// Replaces the destination endpoint, as [`Frame::src`].
    ///
    /// # Panics
    /// On a malformed literal or one of the other family than the frame's.
    pub fn dst(mut self, addr: &str) -> Frame {
        let dst = endpoint(addr);
        assert_eq!(dst.is_ipv4(), self.src.is_ipv4(), "{dst} is not of the frame's family");
        self.dst = dst;
        self
    }

    /// Offset of the IP header: 14, or 18 behind a VLAN tag.
    pub fn l3_offset(&self) -> usize {
        ETH_LEN + if self.vlan.is_some() { VLAN_LEN } else { 0 }
    }

    fn ipv4_header_len(&self) -> usize {
        IPV4_LEN + self.ip_options.len().div_ceil(4) * 4
    }

    /// Offset of the TCP/UDP header (or of the IP payload): after the IPv4
    /// header with options, or the IPv6 header and every extension header.
    pub fn l4_offset(&self) -> usize {
        self.l3_offset()
            + if self.is_ipv4() {
                self.ipv4_header_len()
            } else {
                IPV6_LEN + self.ipv6_ext.iter().map(Ipv6Ext::len).sum::<usize>()
            }
    }

    /// Whether this is a later fragment, which carries no L4 header.
    fn later_fragment(&self) -> bool {
        let v4 = self.ipv4_fragment.is_some_and(|(off, _)| off > 0) && self.is_ipv4();
        let v6 = !self.is_ipv4()
            && self
                .ipv6_ext
                .iter()
                .any(|e| matches!(e, Ipv6Ext::Fragment { offset_units, .. } if *offset_units > 0));
        v4 || v6
    }

    /// The frame's bytes, with fresh lengths and checksums.
    ///
    /// # Panics
    /// If the description is inconsistent; see [`Frame::try_bytes`].
    pub fn bytes(&self) -> Vec<u8> {
        self.try_bytes().unwrap_or_else(|e| panic!("cannot lay out frame: {e}\n{self:#?}"))
    }

    /// The frame's bytes, or why the description cannot be laid out.
    pub fn try_bytes(&self) -> Result<Vec<u8>, FrameError> {
        let (src_ip, dst_ip) = match (self.src.ip(), self.dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => (s.octets().to_vec(), d.octets().to_vec()),
            (IpAddr::V6(s), IpAddr::V6(d)) => (s.octets().to_vec(), d.octets().to_vec()),
            _ => {
                return Err(FrameError::FamilyMismatch { src: self.src, dst: self.dst });
            }
        };
        let v4 = self.is_ipv4();
        let l4 = self.l4_bytes(&src_ip, &dst_ip)?;

        let mut out = Vec::with_capacity(self.l4_offset() + l4.len() + self.pad_to);
        out.extend_from_slice(&self.dst_mac);
        out.extend_from_slice(&self.src_mac);
        if let Some(id) = self.vlan {
            if id > 0x0fff {
                return Err(FrameError::VlanIdOutOfRange(id));
            }
            out.extend_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
            out.extend_from_slice(&id.to_be_bytes());
        }
        if v4 {
            out.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
            out.extend_from_slice(&self.ipv4_header(&src_ip, &dst_ip, l4.len())?);
        } else {
            out.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
            out.extend_from_slice(&self.ipv6_headers(&src_ip, &dst_ip, l4.len())?);
        }
        out.extend_from_slice(&l4);
        if out.len() < self.pad_to {
            out.resize(self.pad_to, 0);
        }
        Ok(out)
    }

    /// The IPv4 header with options and checksum, for `l4_len` bytes of payload.
    fn ipv4_header(&self, src: &[u8], dst: &[u8], l4_len: usize) -> Result<Vec<u8>, FrameError> {
        if !self.ipv6_ext.is_empty() {
            return Err(FrameError::ExtOnIpv4);
        }
        let hlen = self.ipv4_header_len();
        if hlen > 60 {
            return Err(FrameError::OptionsTooLong(hlen - IPV4_LEN));
        }
        let total = hlen + l4_len;
        let total16 = u16::try_from(total).map_err(|_| FrameError::TooLong(total))?;
        let mut frag: u16 = if self.dont_fragment { 0x4000 } else { 0 };
        if let Some((offset, more)) = self.ipv4_fragment {
            if offset > 0x1fff {
                return Err(FrameError::FragmentOffsetOutOfRange(offset));
            }
            frag |= offset | if more { 0x2000 } else { 0 };
        }
        // hlen <= 60, so hlen / 4 <= 15 fits the nibble.
        let ihl = (hlen / 4) as u8;
        let mut h = Vec::with_capacity(hlen);
        h.push(0x40 | ihl);
        h.push(0); // TOS
        h.extend_from_slice(&total16.to_be_bytes());
        h.extend_from_slice(&(self.ip_id as u16).to_be_bytes());
        h.extend_from_slice(&frag.to_be_bytes());
        h.push(self.ttl);
        h.push(self.proto);
        h.extend_from_slice(&[0, 0]); // checksum, filled below
        h.extend_from_slice(src);
        h.extend_from_slice(dst);
        h.extend_from_slice(&self.ip_options);
        h.resize(hlen, 0);
        let check = internet_checksum(&[&h]);
        h[10..12].copy_from_slice(&check.to_be_bytes());
        Ok(h)
    }

    /// The IPv6 header and its extension chain, for `l4_len` bytes after them.
    fn ipv6_headers(&self, src: &[u8], dst: &[u8], l4_len: usize) -> Result<Vec<u8>, FrameError> {
        if !self.ip_options.is_empty() {
            return Err(FrameError::OptionsOnIpv6);
        }
        let ext_len: usize = self.ipv6_ext.iter().map(Ipv6Ext::len).sum();
        let payload = ext_len + l4_len;
        let payload16 = u16::try_from(payload).map_err(|_| FrameError::TooLong(payload))?;
        let first = self.ipv6_ext.first().map_or(self.proto, Ipv6Ext::kind);
        let mut h = Vec::with_capacity(IPV6_LEN + ext_len);
        h.extend_from_slice(&[0x60, 0, 0, 0]); // version 6, TC 0, flow label 0
        h.extend_from_slice(&payload16.to_be_bytes());
        h.push(first);
        h.push(self.ttl);
        h.extend_from_slice(src);
        h.extend_from_slice(dst);
        for (i, ext) in self.ipv6_ext.iter().enumerate() {
            let next = self.ipv6_ext.get(i + 1).map_or(self.proto, Ipv6Ext::kind);
            match *ext {
                Ipv6Ext::Generic { kind, len_units } => {
                    let len = ext.len();
                    h.push(next);
                    h.push(len_units);
                    match kind {
                        EXT_HOP_BY_HOP | EXT_DEST_OPTS => push_padding_options(&mut h, len - 2),
                        EXT_ROUTING => {
                            h.push(253); // routing type: experimental (RFC 4727)
                            h.push(0); // segments left: nothing to route
                            h.resize(h.len() + len - 4, 0);
                        }
                        _ => h.resize(h.len() + len - 2, 0),
                    }
                }
                Ipv6Ext::Fragment { offset_units, more } => {
                    if offset_units > 0x1fff {
                        return Err(FrameError::FragmentOffsetOutOfRange(offset_units));
                    }
                    let offset_flags = (offset_units << 3) | u16::from(more);
                    h.push(next);
                    h.push(0); // reserved
                    h.extend_from_slice(&offset_flags.to_be_bytes());
                    h.extend_from_slice(&self.ip_id.to_be_bytes());
                }
            }
        }
        Ok(h)
    }

    /// The TCP or UDP header with checksum, then the payload (only the
    /// payload for other protocols and for later fragments).
    fn l4_bytes(&self, src: &[u8], dst: &[u8]) -> Result<Vec<u8>, FrameError> {
        if self.later_fragment() || !matches!(self.proto, PROTO_TCP | PROTO_UDP) {
            return Ok(self.payload.clone());
        }
        let mut l4 = Vec::with_capacity(TCP_LEN + self.payload.len());
        l4.extend_from_slice(&self.src.port().to_be_bytes());
        l4.extend_from_slice(&self.dst.port().to_be_bytes());
        let check_at = if self.proto == PROTO_TCP {
            l4.extend_from_slice(&self.seq.to_be_bytes());
            l4.extend_from_slice(&self.ack.to_be_bytes());
            l4.push(5 << 4); // data offset 5 words, no options
            l4.push(self.tcp_flags);
            l4.extend_from_slice(&0xffffu16.to_be_bytes()); // window
            l4.extend_from_slice(&[0, 0]); // checksum, filled below
            l4.extend_from_slice(&[0, 0]); // urgent pointer
            16
        } else {
            let len = UDP_LEN + self.payload.len();
            let len16 = u16::try_from(len).map_err(|_| FrameError::TooLong(len))?;
            l4.extend_from_slice(&len16.to_be_bytes());
            l4.extend_from_slice(&[0, 0]); // checksum, filled below
            6
        };
        l4.extend_from_slice(&self.payload);
        if self.proto == PROTO_UDP && self.udp_checksum_zero {
            return Ok(l4);
        }
        let len = l4.len();
        let mut pseudo = Vec::with_capacity(40);
        pseudo.extend_from_slice(src);
        pseudo.extend_from_slice(dst);
        if self.is_ipv4() {
            let len16 = u16::try_from(len).map_err(|_| FrameError::TooLong(len))?;
            pseudo.extend_from_slice(&[0, self.proto]);
            pseudo.extend_from_slice(&len16.to_be_bytes());
        } else {
            let len32 = u32::try_from(len).map_err(|_| FrameError::TooLong(len))?;
            pseudo.extend_from_slice(&len32.to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, self.proto]);
        }
        let mut check = internet_checksum(&[&pseudo, &l4]);
        if self.proto == PROTO_UDP && check == 0 {
            check = 0xffff; // 0 would mean "no checksum"
        }
        l4[check_at..check_at + 2].copy_from_slice(&check.to_be_bytes());
        Ok(l4)
    }
}

/// Fills `n` bytes of an IPv6 options header with Pad1 / PadN options.
fn push_padding_options(h: &mut Vec<u8>, mut n: usize) {
    while n > 0 {
        if n == 1 {
            h.push(0); // Pad1
            return;
        }
        // A PadN option is 2 + up to 255 bytes; never leave a single byte
        // that would need a Pad1 mid-way when a longer PadN can take it.
        let mut take = n.min(257);
        if n - take == 1 {
            take -= 1;
        }
        h.push(1); // PadN
        // take - 2 <= 255 by the min above.
        h.push((take - 2) as u8);
        h.resize(h.len() + take - 2, 0);
        n -= take;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An independent verifier: lb-common's from-scratch checksum over the
    /// given bytes (checksum field included) is 0 when the checksum is right.
    fn verifies(parts: &[&[u8]]) -> bool {
        lb_common::csum::full(&parts.concat()) == 0
    }

    fn ipv4_pseudo(frame: &[u8], l3: usize, proto: u8, l4_len: usize) -> Vec<u8> {
        let mut p = frame[l3 + 12..l3 + 20].to_vec();
        p.extend_from_slice(&[0, proto]);
        p.extend_from_slice(&(l4_len as u16).to_be_bytes());
        p
    }

    fn ipv6_pseudo(frame: &[u8], l3: usize, proto: u8, l4_len: usize) -> Vec<u8> {
        let mut p = frame[l3 + 8..l3 + 40].to_vec();
        p.extend_from_slice(&(l4_len as u32).to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, proto]);
        p
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
        assert_eq!(
            internet_checksum(&[&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]]),
            !0xddf2
        );
        // Split at an odd boundary: same words.
        assert_eq!(
            internet_checksum(&[&[0x00, 0x01, 0xf2], &[0x03, 0xf4, 0xf5, 0xf6, 0xf7]]),
            !0xddf2
        );
        // Odd length: last byte padded with zero.
        assert_eq!(internet_checksum(&[&[0x12, 0x34, 0x56]]), !(0x1234u16 + 0x5600));
    }

    #[test]
    fn ipv4_header_checksum_matches_hand_computed() {
        // The well-known header 4500 0073 0000 4000 4011 b861 c0a8 0001
        // c0a8 00c7: UDP, total length 115 (so 87 bytes of payload), DF.
        let f = Frame::udp("192.168.0.1:1000", "192.168.0.199:2000")
            .dont_fragment(true)
            .payload(&[0u8; 87])
            .bytes();
        let expected = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(&f[14..34], &expected);
        // Without DF (the default): sum 0x079e by hand, checksum 0xf861.
        let f = Frame::udp("192.168.0.1:1000", "192.168.0.199:2000").payload(&[0u8; 87]).bytes();
        assert_eq!(&f[20..22], &[0x00, 0x00]);
        assert_eq!(&f[24..26], &[0xf8, 0x61]);
    }

    #[test]
    fn tcp_v4_syn_byte_for_byte() {
        let f = Frame::tcp("10.0.0.2:40000", "10.0.0.100:80").seq(1).bytes();
        // IPv4 header sum by hand: 4500+0028+0000+0000+4006+0a00+0002+0a00+0064
        // = 0x9994, checksum 0x666b.
        // TCP: pseudo 0a00+0002+0a00+0064+0006+0014 = 0x1480; header
        // 9c40+0050+0000+0001+0000+0000+5002+ffff+0000+0000 = 0x1ec92;
        // total 0x20112 -> 0x0114, checksum 0xfeeb.
        #[rustfmt::skip]
        let expected: [u8; 54] = [
            // Ethernet: dst, src, IPv4
            0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02, 0x08, 0x00,
            // IPv4
            0x45, 0x00, 0x00, 0x28, 0x00, 0x00, 0x00, 0x00, 0x40, 0x06, 0x66, 0x6b,
            10, 0, 0, 2, 10, 0, 0, 100,
            // TCP
            0x9c, 0x40, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff,
            0xfe, 0xeb, 0x00, 0x00,
        ];
        assert_eq!(f, expected);
        assert!(verifies(&[&f[14..34]]));
        assert!(verifies(&[&ipv4_pseudo(&f, 14, 6, 20), &f[34..]]));
    }

    #[test]
    fn udp_v6_byte_for_byte() {
        let f = Frame::udp("[2001:db8::2]:5353", "[2001:db8::100]:53")
            .payload(b"hi!")
            .vlan(5)
            .ttl(7)
            .bytes();
        // UDP sum by hand: pseudo 2001+0db8+0002+2001+0db8+0100+000b+0011
        // = 0x5c90; header 14e9+0035+000b = 0x1529; payload 6869+2100
        // = 0x8969; total 0xfb22, checksum 0x04dd.
        #[rustfmt::skip]
        let expected: Vec<u8> = [
            &[0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02, 0x81, 0x00, 0x00, 0x05, 0x86, 0xdd][..],
            &[0x60, 0, 0, 0, 0x00, 0x0b, 17, 7],
            &[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02],
            &[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00],
            &[0x14, 0xe9, 0x00, 0x35, 0x00, 0x0b, 0x04, 0xdd, b'h', b'i', b'!'],
        ]
        .concat();
        assert_eq!(f, expected);
        assert!(verifies(&[&ipv6_pseudo(&f, 18, 17, 11), &f[58..]]));
    }

    #[test]
    fn checksums_verify_across_shapes() {
        let frames = [
            Frame::tcp("10.1.2.3:1", "10.9.8.7:65535").payload(b"odd").tcp_flags(0x18),
            Frame::udp("10.1.2.3:1", "10.9.8.7:2").payload(&[0xff; 33]).ip_options(&[1, 1, 1]),
            Frame::tcp("[fe80::1]:443", "[2001:db8::ffff]:80").ipv6_ext(0, 1).ipv6_ext(60, 0),
            Frame::udp("[::1]:7", "[::2]:9").payload(&[0xab; 100]).fragment(0, false),
        ];
        for frame in frames {
            let f = frame.bytes();
            let (l3, l4) = (frame.l3_offset(), frame.l4_offset());
            if frame.is_ipv4() {
                assert!(verifies(&[&f[l3..l4]]), "{frame:?}");
                assert!(verifies(&[&ipv4_pseudo(&f, l3, frame.proto, f.len() - l4), &f[l4..]]));
            } else {
                assert!(verifies(&[&ipv6_pseudo(&f, l3, frame.proto, f.len() - l4), &f[l4..]]));
            }
        }
    }

    #[test]
    fn udp_zero_checksum_becomes_ffff() {
        // Find a payload whose checksum computes to 0 by adjusting one word:
        // with checksum field 0 the sum S gives check !S; choose the payload
        // word so that the sum is 0xffff (check 0).
        let base = Frame::udp("10.0.0.1:1", "10.0.0.2:2").payload(&[0, 0]);
        let f = base.clone().udp_checksum_zero().bytes();
        let pseudo = ipv4_pseudo(&f, 14, 17, 10);
        let sum_without = !internet_checksum(&[&pseudo, &f[34..]]);
        // Add w to reach 0xffff in one's complement: w = 0xffff - sum.
        let w = 0xffff - sum_without;
        let f = base.payload(&w.to_be_bytes()).bytes();
        assert_eq!(&f[40..42], &[0xff, 0xff]);
    }

    #[test]
    fn udp_checksum_zero_is_zero() {
        let f = Frame::udp("10.0.0.1:1", "10.0.0.2:2").payload(b"x").udp_checksum_zero().bytes();
        assert_eq!(&f[40..42], &[0, 0]);
        assert_eq!(&f[38..40], &[0, 9]);
    }

    #[test]
    fn ip_options_pad_and_grow_ihl() {
        let frame = Frame::tcp("10.0.0.1:1", "10.0.0.2:2").ip_options(&[0x94, 0x04, 0, 0, 1]);
        let f = frame.bytes();
        assert_eq!(f[14], 0x47);
        assert_eq!(&f[34..42], &[0x94, 0x04, 0, 0, 1, 0, 0, 0]);
        assert_eq!(frame.l4_offset(), 14 + 28);
        assert_eq!(u16::from_be_bytes([f[16], f[17]]), 28 + 20);
        let too_long = Frame::tcp("10.0.0.1:1", "10.0.0.2:2").ip_options(&[1; 41]);
        assert_eq!(too_long.try_bytes(), Err(FrameError::OptionsTooLong(44)));
    }

    #[test]
    fn ipv6_extension_chain() {
        let frame = Frame::udp("[::1]:1", "[::2]:2")
            .ipv6_ext(EXT_HOP_BY_HOP, 0)
            .ipv6_ext(EXT_ROUTING, 1)
            .fragment(0, false)
            .ipv6_ext(EXT_DEST_OPTS, 2);
        let f = frame.bytes();
        assert_eq!(f[14 + 6], EXT_HOP_BY_HOP);
        // payload length: 8 + 16 + 8 + 24 + 8
        assert_eq!(u16::from_be_bytes([f[18], f[19]]), 64);
        let hbh = &f[54..62];
        assert_eq!(hbh, &[EXT_ROUTING, 0, 1, 4, 0, 0, 0, 0]);
        let rt = &f[62..78];
        assert_eq!(&rt[..4], &[EXT_FRAGMENT, 1, 253, 0]);
        assert_eq!(&f[78..86], &[EXT_DEST_OPTS, 0, 0, 0, 0, 0, 0, 0]);
        let dst = &f[86..110];
        assert_eq!(&dst[..4], &[PROTO_UDP, 2, 1, 20]);
        assert_eq!(frame.l4_offset(), 110);
        assert_eq!(f.len(), 118);
    }

    #[test]
    fn padding_options_fill_exactly() {
        for n in 0..600 {
            let mut h = Vec::new();
            push_padding_options(&mut h, n);
            assert_eq!(h.len(), n);
            // Walk the options: every one is Pad1 or a well-formed PadN.
            let mut i = 0;
            while i < h.len() {
                match h[i] {
                    0 => i += 1,
                    1 => i += 2 + usize::from(h[i + 1]),
                    other => panic!("option type {other}"),
                }
            }
            assert_eq!(i, n);
        }
    }

    #[test]
    fn fragments() {
        let f = Frame::udp("10.0.0.1:1", "10.0.0.2:2").fragment(3, true).payload(b"abc").bytes();
        assert_eq!(&f[20..22], &[0x20, 0x03]);
        // Later fragment: no UDP header.
        assert_eq!(f.len(), 34 + 3);
        let f = Frame::udp("10.0.0.1:1", "10.0.0.2:2").fragment(0, true).bytes();
        assert_eq!(&f[20..22], &[0x20, 0x00]);
        assert_eq!(f.len(), 34 + 8);
        let f = Frame::tcp("[::1]:1", "[::2]:2").fragment(0x1fff, true).bytes();
        assert_eq!(f[20], EXT_FRAGMENT);
        assert_eq!(&f[54..62], &[PROTO_TCP, 0, 0xff, 0xf9, 0, 0, 0, 0]);
        assert_eq!(f.len(), 62);
        let bad = Frame::tcp("[::1]:1", "[::2]:2").fragment(0x2000, false);
        assert_eq!(bad.try_bytes(), Err(FrameError::FragmentOffsetOutOfRange(0x2000)));
    }

    #[test]
    fn other_protocols_and_ethernet() {
        let f = Frame::ip(PROTO_ICMP, "10.0.0.1", "10.0.0.2").payload(&[8, 0, 0xf7, 0xff]).bytes();
        assert_eq!(f[23], PROTO_ICMP);
        assert_eq!(&f[34..], &[8, 0, 0xf7, 0xff]);
        let arp = ethernet(DEFAULT_SRC_MAC, DEFAULT_DST_MAC, ETHERTYPE_ARP, &[0; 28]);
        assert_eq!(&arp[12..14], &[0x08, 0x06]);
        assert_eq!(arp.len(), 42);
    }

    #[test]
    fn padding_and_setters() {
        let f = Frame::udp("10.0.0.1:1", "10.0.0.2:2")
            .macs(mac("02:00:00:00:00:10"), mac("0a:0b:0c:0d:0e:0f"))
            .src("10.0.0.3:3")
            .dst("10.0.0.4")
            .ttl(1)
            .pad_to(60)
            .bytes();
        assert_eq!(f.len(), 60);
        assert_eq!(&f[..12], &[0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 2, 0, 0, 0, 0, 0x10]);
        assert_eq!(f[22], 1);
        assert_eq!(&f[26..34], &[10, 0, 0, 3, 10, 0, 0, 4]);
        assert_eq!(&f[34..38], &[0, 3, 0, 0]);
        assert_eq!(u16::from_be_bytes([f[16], f[17]]), 28);
        assert!(f[42..].iter().all(|&b| b == 0));
    }

    #[test]
    fn bad_input_is_reported() {
        assert_eq!(try_mac("02:00:00:00:00"), None);
        assert_eq!(try_mac("02:00:00:00:00:00:00"), None);
        assert_eq!(try_mac("02:00:00:00:00:zz"), None);
        assert_eq!(try_mac("2:0:0:0:0:a"), Some([2, 0, 0, 0, 0, 10]));
        assert_eq!(try_endpoint("10.0.0.1:99999"), None);
        assert_eq!(try_endpoint("[::1]:5"), Some("[::1]:5".parse().unwrap()));
        let mixed = Frame::new(PROTO_TCP, endpoint("10.0.0.1:1"), endpoint("[::1]:1"));
        assert!(matches!(mixed.try_bytes(), Err(FrameError::FamilyMismatch { .. })));
        let vlan = Frame::tcp("10.0.0.1:1", "10.0.0.2:2").vlan(4096);
        assert_eq!(vlan.try_bytes(), Err(FrameError::VlanIdOutOfRange(4096)));
        let big = Frame::udp("10.0.0.1:1", "10.0.0.2:2").payload(&vec![0; 65536]);
        assert!(matches!(big.try_bytes(), Err(FrameError::TooLong(_))));
        let ext = Frame::tcp("10.0.0.1:1", "10.0.0.2:2").ipv6_ext(0, 0);
        assert_eq!(ext.try_bytes(), Err(FrameError::ExtOnIpv4));
        let opts = Frame::tcp("[::1]:1", "[::2]:2").ip_options(&[1]);
        assert_eq!(opts.try_bytes(), Err(FrameError::OptionsOnIpv6));
    }

    #[test]
    #[should_panic(expected = "different families")]
    fn mixed_families_panic() {
        let _ = Frame::tcp("10.0.0.1:1", "[::1]:1");
    }
}
