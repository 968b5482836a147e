//! A minimal rtnetlink client for local host routes: `RTM_NEWROUTE`,
//! `RTM_DELROUTE` and an `RTM_GETROUTE` dump of the local table, over a
//! `NETLINK_ROUTE` socket, with the kernel's ACKs and errnos.
//!
//! Only what VIP routes need: one address per route (`/32` or `/128`) with
//! a protocol number that marks the route as lb's, in one of two
//! [`Place`]s: type `local` in table `local` through the loopback (the VIP
//! routes), or type `blackhole` in a table of the operator's choosing (the
//! announced routes, which a routing daemon exports).
//!
//! Message layout (all host byte order, 4-byte aligned):
//! ```text
//! nlmsghdr  len u32 | type u16 | flags u16 | seq u32 | pid u32
//! rtmsg     family u8 | dst_len u8 | src_len u8 | tos u8 | table u8 |
//!           protocol u8 | scope u8 | type u8 | flags u32
//! rtattr    len u16 | type u16 | value, padded to 4
//! ```

use std::{
    net::IpAddr,
    os::fd::{AsFd, OwnedFd},
};

use nix::{
    errno::Errno,
    libc,
    sys::socket::{
        AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, send,
        setsockopt, socket, sockopt,
    },
};

const NLMSG_HDRLEN: usize = 16;
const RTMSG_LEN: usize = 12;
const RTATTR_HDRLEN: usize = 4;

const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTM_GETROUTE: u16 = 26;
/// `NLMSG_ERROR`: an ACK (errno 0) or the kernel's refusal.
pub const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;

/// `NLM_F_REQUEST`.
pub const NLM_F_REQUEST: u16 = 0x1;
#[cfg(test)]
const NLM_F_MULTI: u16 = 0x2;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;

const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_TABLE: u16 = 15;

/// `RT_TABLE_LOCAL`: the table of local and broadcast addresses.
pub const TABLE_LOCAL: u32 = 255;
/// `RTN_LOCAL`: delivered to this host.
const RTN_LOCAL: u8 = 2;
/// `RTN_BLACKHOLE`: dropped silently.
const RTN_BLACKHOLE: u8 = 6;
/// `RT_SCOPE_HOST`.
const RT_SCOPE_HOST: u8 = 254;
/// `RT_SCOPE_UNIVERSE`.
const RT_SCOPE_UNIVERSE: u8 = 0;

/// Which routes a request is about: their table and type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Place {
    /// The routing table.
    pub table: u32,
    /// `rtm_type`: [`RTN_LOCAL`] or [`RTN_BLACKHOLE`].
    rtype: u8,
}

impl Place {
    /// Local routes in the local table (through an interface, the loopback).
    pub const LOCAL: Place = Place { table: TABLE_LOCAL, rtype: RTN_LOCAL };

    /// Blackhole routes in `table`: what lb announces. No interface, and no
    /// effect on forwarding while no rule points at the table; BIRD and FRR
    /// learn them (both ignore type `local`).
    pub fn blackhole(table: u32) -> Self {
        Place { table, rtype: RTN_BLACKHOLE }
    }

    fn announced(self) -> bool {
        self.rtype != RTN_LOCAL
    }

    fn scope(self) -> u8 {
        if self.announced() { RT_SCOPE_UNIVERSE } else { RT_SCOPE_HOST }
    }

    /// `rtm_table` is a u8: tables beyond it are carried by `RTA_TABLE`
    /// alone, with `RT_TABLE_UNSPEC` here (as iproute2 does).
    fn table_byte(self) -> u8 {
        u8::try_from(self.table).unwrap_or(0)
    }
}

/// `SOL_NETLINK` / `NETLINK_GET_STRICT_CHK`: the kernel then applies the
/// dump request's table and type as filters (Linux 4.20+; older kernels
/// send everything, which [`parse_dump`] filters again).
const SOL_NETLINK: libc::c_int = 270;
const NETLINK_GET_STRICT_CHK: libc::c_int = 12;

/// A local route to one address, as lb adds, removes and finds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LocalRoute {
    /// The destination prefix's address.
    pub addr: IpAddr,
    /// Its length (32 or 128 for a route lb adds).
    pub prefix_len: u8,
    /// `rtm_protocol`: who made the route (lb's own number, `kernel` for
    /// an address assigned to an interface, `boot` for `ip route add`).
    pub protocol: u8,
    /// The output interface's index (0 if the route names none).
    pub oif: u32,
}

impl LocalRoute {
    /// The host route to `addr` through interface `oif`, marked `protocol`.
    pub fn host(addr: IpAddr, oif: u32, protocol: u8) -> Self {
        let prefix_len = if addr.is_ipv4() { 32 } else { 128 };
        Self { addr, prefix_len, protocol, oif }
    }

    /// Whether `ip` is inside this route's prefix.
    pub fn covers(&self, ip: IpAddr) -> bool {
        fn within(a: u128, b: u128, len: u32, width: u32) -> bool {
            let len = len.min(width);
            len == 0 || (a ^ b) >> (width - len) == 0
        }
        let len = u32::from(self.prefix_len);
        match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                within(u32::from(a).into(), u32::from(b).into(), len, 32)
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => within(a.into(), b.into(), len, 128),
            _ => false,
        }
    }
}

impl std::fmt::Display for LocalRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// What a request was doing, for its error message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `RTM_NEWROUTE` of a local route.
    Add,
    /// `RTM_DELROUTE` of a local route.
    Delete,
    /// `RTM_GETROUTE` dump of the local routes.
    List,
    /// `RTM_NEWROUTE` of an announced route.
    Announce,
    /// `RTM_DELROUTE` of an announced route.
    Withdraw,
    /// `RTM_GETROUTE` dump of the announced routes.
    ListAnnounced,
}

impl Op {
    fn change(place: Place, add: bool) -> Self {
        match (place.announced(), add) {
            (false, true) => Op::Add,
            (false, false) => Op::Delete,
            (true, true) => Op::Announce,
            (true, false) => Op::Withdraw,
        }
    }

    fn list(place: Place) -> Self {
        if place.announced() { Op::ListAnnounced } else { Op::List }
    }

    /// The setting that turns these routes off, for the fix of a refusal.
    fn setting(self) -> &'static str {
        match self {
            Op::Add | Op::Delete | Op::List => {
                "set agent.vip_routes = \"none\" and route the VIPs yourself"
            }
            Op::Announce | Op::Withdraw | Op::ListAnnounced => {
                "remove [agent.announce] and have the routing daemon announce the VIPs itself"
            }
        }
    }
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Op::Add => "adding the local route",
            Op::Delete => "removing the local route",
            Op::List => "listing the local routes",
            Op::Announce => "announcing (adding the blackhole route)",
            Op::Withdraw => "withdrawing (removing the blackhole route)",
            Op::ListAnnounced => "listing the announced routes",
        })
    }
}

/// Why a netlink request failed.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The socket could not be opened or bound.
    #[error("opening a NETLINK_ROUTE socket: {0}")]
    Socket(#[source] Errno),
    /// Sending or receiving failed (a timeout included).
    #[error("{op}{}: netlink {errno}", route.map(|r| format!(" {r}")).unwrap_or_default())]
    Io {
        /// What was asked.
        op: Op,
        /// The route it was about (not for a dump).
        route: Option<LocalRoute>,
        /// What send or recv said.
        #[source]
        errno: Errno,
    },
    /// The kernel refused the request.
    #[error("{op}{}: {errno}{}", route.map(|r| format!(" {r}")).unwrap_or_default(), fix(*op, *.errno))]
    Kernel {
        /// What was asked.
        op: Op,
        /// The route it was about (not for a dump).
        route: Option<LocalRoute>,
        /// The kernel's answer.
        errno: Errno,
    },
    /// The answer did not parse.
    #[error("{0}: the kernel's netlink answer is malformed ({1})")]
    Malformed(Op, &'static str),
}

impl NetlinkError {
    /// The errno the kernel answered with, if it answered one.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Self::Kernel { errno, .. } | Self::Socket(errno) | Self::Io { errno, .. } => {
                Some(*errno)
            }
            Self::Malformed(..) => None,
        }
    }
}

/// The usual fix for a kernel errno.
fn fix(op: Op, errno: Errno) -> String {
    match errno {
        Errno::EPERM | Errno::EACCES => format!(
            " (lb needs CAP_NET_ADMIN to manage VIP routes: run it as root or grant it, or {})",
            op.setting()
        ),
        Errno::EAFNOSUPPORT => {
            " (IPv6 looks disabled on this host: enable it, or remove the IPv6 services)".into()
        }
        Errno::ENODEV => " (no loopback interface in this network namespace?)".into(),
        Errno::ENETDOWN => " (the loopback interface is down: `ip link set lo up`)".into(),
        _ => String::new(),
    }
}

/// Appends one rtattr.
fn put_attr(buf: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = RTATTR_HDRLEN + value.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(value);
    buf.resize(align(buf.len()), 0);
}

fn align(n: usize) -> usize {
    (n + 3) & !3
}

fn family(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => libc::AF_INET as u8,
        IpAddr::V6(_) => libc::AF_INET6 as u8,
    }
}

/// A header and rtmsg with `len` still 0, which [`finish`] fills.
#[allow(clippy::too_many_arguments)]
fn start(
    kind: u16,
    flags: u16,
    seq: u32,
    family: u8,
    dst_len: u8,
    protocol: u8,
    scope: u8,
    (table, rtype): (u8, u8),
) -> Vec<u8> {
    let mut buf = Vec::with_capacity(64);
    buf.extend_from_slice(&0u32.to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
    // rtm_table is a u8: RTA_TABLE carries the table in full.
    buf.extend_from_slice(&[family, dst_len, 0, 0, table, protocol, scope, rtype]);
    buf.extend_from_slice(&0u32.to_ne_bytes());
    buf
}

fn finish(mut buf: Vec<u8>) -> Vec<u8> {
    let len = buf.len() as u32;
    buf[..4].copy_from_slice(&len.to_ne_bytes());
    buf
}

/// `RTM_NEWROUTE` (`add` true: create, failing if it exists) or
/// `RTM_DELROUTE` for `route` at `place`, asking for an ACK.
pub fn encode_change(add: bool, place: Place, route: &LocalRoute, seq: u32) -> Vec<u8> {
    let (kind, flags) = if add {
        (RTM_NEWROUTE, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)
    } else {
        (RTM_DELROUTE, NLM_F_REQUEST | NLM_F_ACK)
    };
    let mut buf = start(
        kind,
        flags,
        seq,
        family(route.addr),
        route.prefix_len,
        route.protocol,
        place.scope(),
        (place.table_byte(), place.rtype),
    );
    match route.addr {
        IpAddr::V4(a) => put_attr(&mut buf, RTA_DST, &a.octets()),
        IpAddr::V6(a) => put_attr(&mut buf, RTA_DST, &a.octets()),
    }
    put_attr(&mut buf, RTA_TABLE, &place.table.to_ne_bytes());
    if route.oif != 0 {
        put_attr(&mut buf, RTA_OIF, &route.oif.to_ne_bytes());
    }
    finish(buf)
}

/// An `RTM_GETROUTE` dump of the routes at `place` of one family
/// (`AF_INET` or `AF_INET6`).
pub fn encode_dump(family: u8, place: Place, seq: u32) -> Vec<u8> {
    // A strict dump request: dst_len, scope and protocol 0 (protocol would
    // filter too, but lb wants every local route, to see addresses that are
    // already local).
    let mut buf = start(
        RTM_GETROUTE,
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        family,
        0,
        0,
        0,
        (place.table_byte(), place.rtype),
    );
    put_attr(&mut buf, RTA_TABLE, &place.table.to_ne_bytes());
    finish(buf)
}

/// One netlink message of a received buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Message<'a> {
    /// `nlmsg_type`.
    pub kind: u16,
    /// `nlmsg_flags`.
    pub flags: u16,
    /// `nlmsg_seq`.
    pub seq: u32,
    /// What follows the header.
    pub payload: &'a [u8],
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Splits a received buffer into its messages.
pub fn messages(mut buf: &[u8]) -> Result<Vec<Message<'_>>, &'static str> {
    let mut out = Vec::new();
    while buf.len() >= NLMSG_HDRLEN {
        let len = u32_at(buf, 0).ok_or("short header")? as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return Err("message length out of bounds");
        }
        out.push(Message {
            kind: u16_at(buf, 4).ok_or("short header")?,
            flags: u16_at(buf, 6).ok_or("short header")?,
            seq: u32_at(buf, 8).ok_or("short header")?,
            payload: &buf[NLMSG_HDRLEN..len],
        });
        buf = &buf[align(len).min(buf.len())..];
    }
    Ok(out)
}

/// The errno of an `NLMSG_ERROR` payload (0 for an ACK).
pub fn error_code(payload: &[u8]) -> Result<i32, &'static str> {
    Ok(u32_at(payload, 0).ok_or("short error message")? as i32)
}

/// The attributes (type, value) of a run of rtattrs, in order. The type's
/// nested and byte-order flags are cleared.
pub fn attributes(mut attrs: &[u8]) -> Result<Vec<(u16, &[u8])>, &'static str> {
    let mut out = Vec::new();
    while attrs.len() >= RTATTR_HDRLEN {
        let len = usize::from(u16_at(attrs, 0).ok_or("short rtattr")?);
        let kind = u16_at(attrs, 2).ok_or("short rtattr")? & 0x3fff;
        if len < RTATTR_HDRLEN || len > attrs.len() {
            return Err("rtattr length out of bounds");
        }
        out.push((kind, &attrs[RTATTR_HDRLEN..len]));
        attrs = &attrs[align(len).min(attrs.len())..];
    }
    Ok(out)
}

/// The route of an `RTM_NEWROUTE` dump entry, if it is of `place`'s type
/// and table (others are skipped: `None`).
pub fn parse_route(payload: &[u8], place: Place) -> Result<Option<LocalRoute>, &'static str> {
    let head = payload.get(..RTMSG_LEN).ok_or("short rtmsg")?;
    let (fam, dst_len, table8, protocol, rtype) = (head[0], head[1], head[4], head[5], head[7]);
    let mut table = u32::from(table8);
    let mut dst = None;
    let mut oif = 0;
    for (kind, value) in attributes(&payload[RTMSG_LEN..])? {
        match kind {
            RTA_TABLE => table = u32_at(value, 0).ok_or("short RTA_TABLE")?,
            RTA_OIF => oif = u32_at(value, 0).ok_or("short RTA_OIF")?,
            RTA_DST => dst = Some(value),
            _ => {}
        }
    }
    if rtype != place.rtype || table != place.table {
        return Ok(None);
    }
    let addr = match (i32::from(fam), dst) {
        (libc::AF_INET, Some(d)) => {
            IpAddr::from(<[u8; 4]>::try_from(d).map_err(|_| "RTA_DST is not 4 bytes")?)
        }
        (libc::AF_INET6, Some(d)) => {
            IpAddr::from(<[u8; 16]>::try_from(d).map_err(|_| "RTA_DST is not 16 bytes")?)
        }
        // A default local route, or another family: not a VIP's.
        _ => return Ok(None),
    };
    Ok(Some(LocalRoute { addr, prefix_len: dst_len, protocol, oif }))
}

/// A bound `NETLINK_ROUTE` socket whose receives time out after 5 s, with
/// strict dump checking asked for (older kernels ignore it). The tc hook's
/// netlink filters (`datapath::tc_netlink`) use it too.
pub fn socket_route() -> Result<OwnedFd, Errno> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )?;
    bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &NetlinkAddr::new(0, 0))?;
    let timeout = nix::sys::time::TimeVal::new(5, 0);
    setsockopt(&fd, sockopt::ReceiveTimeout, &timeout)?;
    let on: libc::c_int = 1;
    // SAFETY: `on` outlives the call and its size is passed with it.
    let _ = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            SOL_NETLINK,
            NETLINK_GET_STRICT_CHK,
            (&raw const on).cast(),
            std::mem::size_of_val(&on) as libc::socklen_t,
        )
    };
    Ok(fd)
}

/// An open `NETLINK_ROUTE` socket.
#[derive(Debug)]
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

/// Big enough for any one datagram of a route dump.
const RECV_BUF: usize = 64 * 1024;

impl Netlink {
    /// Opens and binds a socket; each answer is awaited at most 5 s.
    pub fn open() -> Result<Self, NetlinkError> {
        Ok(Self { fd: socket_route().map_err(NetlinkError::Socket)?, seq: std::process::id() })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn send(&self, msg: &[u8], op: Op, route: Option<LocalRoute>) -> Result<(), NetlinkError> {
        use std::os::fd::AsRawFd;
        send(self.fd.as_fd().as_raw_fd(), msg, MsgFlags::empty())
            .map(drop)
            .map_err(|errno| NetlinkError::Io { op, route, errno })
    }

    fn recv<'b>(
        &self,
        buf: &'b mut [u8],
        op: Op,
        route: Option<LocalRoute>,
    ) -> Result<&'b [u8], NetlinkError> {
        use std::os::fd::AsRawFd;
        let n = recv(self.fd.as_fd().as_raw_fd(), buf, MsgFlags::empty())
            .map_err(|errno| NetlinkError::Io { op, route, errno })?;
        Ok(&buf[..n])
    }

    /// Adds (`add`) or removes `route` at `place`, waiting for the kernel's
    /// ACK.
    pub fn change(
        &mut self,
        add: bool,
        place: Place,
        route: &LocalRoute,
    ) -> Result<(), NetlinkError> {
        let op = Op::change(place, add);
        let seq = self.next_seq();
        self.send(&encode_change(add, place, route, seq), op, Some(*route))?;
        let mut buf = vec![0u8; RECV_BUF];
        loop {
            let got = self.recv(&mut buf, op, Some(*route))?;
            for m in messages(got).map_err(|why| NetlinkError::Malformed(op, why))? {
                if m.seq != seq || m.kind != NLMSG_ERROR {
                    continue;
                }
                return match error_code(m.payload)
                    .map_err(|why| NetlinkError::Malformed(op, why))?
                {
                    0 => Ok(()),
                    code => Err(NetlinkError::Kernel {
                        op,
                        route: Some(*route),
                        errno: Errno::from_raw(-code),
                    }),
                };
            }
        }
    }

    /// Every route at `place`, IPv4 and IPv6.
    pub fn routes(&mut self, place: Place) -> Result<Vec<LocalRoute>, NetlinkError> {
        let mut routes = Vec::new();
        for fam in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
            match self.dump(fam, place, &mut routes) {
                // IPv6 disabled (or compiled out): it has no routes.
                Err(NetlinkError::Kernel { errno: Errno::EAFNOSUPPORT, .. })
                    if fam == libc::AF_INET6 as u8 => {}
                r => r?,
            }
        }
        Ok(routes)
    }

    fn dump(
        &mut self,
        fam: u8,
        place: Place,
        into: &mut Vec<LocalRoute>,
    ) -> Result<(), NetlinkError> {
        let op = Op::list(place);
        let seq = self.next_seq();
        self.send(&encode_dump(fam, place, seq), op, None)?;
        let mut buf = vec![0u8; RECV_BUF];
        loop {
            let got = self.recv(&mut buf, op, None)?;
            for m in messages(got).map_err(|why| NetlinkError::Malformed(op, why))? {
                if m.seq != seq {
                    continue;
                }
                match m.kind {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let code = error_code(m.payload)
                            .map_err(|why| NetlinkError::Malformed(op, why))?;
                        if code == 0 {
                            return Ok(());
                        }
                        return Err(NetlinkError::Kernel {
                            op,
                            route: None,
                            errno: Errno::from_raw(-code),
                        });
                    }
                    RTM_NEWROUTE => {
                        let parsed = parse_route(m.payload, place)
                            .map_err(|why| NetlinkError::Malformed(op, why))?;
                        into.extend(parsed);
                    }
                    _ => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn new_route_v4_is_encoded_as_ip_route_add_local() {
        let r = LocalRoute::host(v4("10.201.0.100"), 1, 252);
        let m = encode_change(true, Place::LOCAL, &r, 7);
        // 16 header + 12 rtmsg + 8 dst + 8 table + 8 oif.
        assert_eq!(m.len(), 52);
        assert_eq!(u32_at(&m, 0), Some(52));
        assert_eq!(u16_at(&m, 4), Some(RTM_NEWROUTE));
        assert_eq!(u16_at(&m, 6), Some(0x605), "REQUEST | ACK | EXCL | CREATE");
        assert_eq!(u32_at(&m, 8), Some(7));
        assert_eq!(&m[16..24], &[libc::AF_INET as u8, 32, 0, 0, 255, 252, 254, 2]);
        assert_eq!(&m[28..36], &[8, 0, 1, 0, 10, 201, 0, 100][..]);
        assert_eq!(u16_at(&m, 36), Some(8));
        assert_eq!(u16_at(&m, 38), Some(RTA_TABLE));
        assert_eq!(u32_at(&m, 40), Some(255));
        assert_eq!(u16_at(&m, 46), Some(RTA_OIF));
        assert_eq!(u32_at(&m, 48), Some(1));
    }

    #[test]
    fn del_route_v6_carries_the_128_bit_prefix() {
        let r = LocalRoute::host(v4("fd00:201::100"), 1, 252);
        let m = encode_change(false, Place::LOCAL, &r, 9);
        assert_eq!(m.len(), 16 + 12 + 20 + 8 + 8);
        assert_eq!(u16_at(&m, 4), Some(RTM_DELROUTE));
        assert_eq!(u16_at(&m, 6), Some(NLM_F_REQUEST | NLM_F_ACK));
        assert_eq!(&m[16..20], &[libc::AF_INET6 as u8, 128, 0, 0]);
        assert_eq!(u16_at(&m, 28), Some(20));
        assert_eq!(u16_at(&m, 30), Some(RTA_DST));
        let want: std::net::Ipv6Addr = "fd00:201::100".parse().expect("v6");
        assert_eq!(m[32..48], want.octets());
    }

    #[test]
    fn dump_request_asks_for_local_routes_of_the_local_table() {
        let m = encode_dump(libc::AF_INET6 as u8, Place::LOCAL, 3);
        assert_eq!(m.len(), 16 + 12 + 8);
        assert_eq!(u16_at(&m, 4), Some(RTM_GETROUTE));
        assert_eq!(u16_at(&m, 6), Some(NLM_F_REQUEST | NLM_F_DUMP));
        assert_eq!(&m[16..24], &[libc::AF_INET6 as u8, 0, 0, 0, 255, 0, 0, RTN_LOCAL]);
    }

    /// A kernel dump entry as the kernel writes it: the header the kernel
    /// sends back (type RTM_NEWROUTE) and extra attributes lb ignores.
    fn entry(route: &LocalRoute, rtype: u8, table: u32, seq: u32) -> Vec<u8> {
        let mut m = start(
            RTM_NEWROUTE,
            NLM_F_MULTI,
            seq,
            family(route.addr),
            route.prefix_len,
            route.protocol,
            RT_SCOPE_HOST,
            (0, rtype),
        );
        put_attr(&mut m, RTA_TABLE, &table.to_ne_bytes());
        match route.addr {
            IpAddr::V4(a) => put_attr(&mut m, RTA_DST, &a.octets()),
            IpAddr::V6(a) => put_attr(&mut m, RTA_DST, &a.octets()),
        }
        put_attr(&mut m, 7, &[10, 0, 0, 1]); // RTA_PREFSRC
        put_attr(&mut m, 3, &[1]); // odd length, padded
        put_attr(&mut m, RTA_OIF, &route.oif.to_ne_bytes());
        finish(m)
    }

    #[test]
    fn dump_entries_decode_and_others_are_skipped() {
        let ours = LocalRoute::host(v4("10.201.0.100"), 1, 252);
        let kernel = LocalRoute { addr: v4("fd00:200::1"), prefix_len: 128, protocol: 2, oif: 3 };
        let mut buf = entry(&ours, RTN_LOCAL, 255, 5);
        buf.extend(entry(&kernel, RTN_LOCAL, 255, 5));
        buf.extend(entry(&ours, 3, 255, 5)); // broadcast
        buf.extend(entry(&ours, RTN_LOCAL, 254, 5)); // main table
        let msgs = messages(&buf).expect("messages");
        assert_eq!(msgs.len(), 4);
        assert!(msgs.iter().all(|m| m.seq == 5 && m.kind == RTM_NEWROUTE));
        let parsed: Vec<_> =
            msgs.iter().map(|m| parse_route(m.payload, Place::LOCAL).expect("parses")).collect();
        assert_eq!(parsed, vec![Some(ours), Some(kernel), None, None]);
    }

    #[test]
    fn errors_and_acks_decode() {
        let mut ack = start(NLMSG_ERROR, 0, 4, 0, 0, 0, 0, (0, 0));
        ack.truncate(NLMSG_HDRLEN);
        ack.extend_from_slice(&(-libc::EEXIST).to_ne_bytes());
        ack.extend_from_slice(&[0; 16]); // the request's header, echoed
        let ack = finish(ack);
        let msgs = messages(&ack).expect("messages");
        assert_eq!(msgs[0].kind, NLMSG_ERROR);
        assert_eq!(error_code(msgs[0].payload), Ok(-libc::EEXIST));
        assert_eq!(error_code(&[0, 0]), Err("short error message"));
    }

    #[test]
    fn malformed_buffers_are_refused() {
        let mut m = encode_dump(libc::AF_INET as u8, Place::LOCAL, 1);
        m[0] = 200; // longer than the buffer
        assert!(messages(&m).is_err());
        let mut r = entry(&LocalRoute::host(v4("10.0.0.1"), 1, 252), RTN_LOCAL, 255, 1);
        r[NLMSG_HDRLEN + RTMSG_LEN] = 99; // first rtattr overruns
        assert!(parse_route(&r[NLMSG_HDRLEN..], Place::LOCAL).is_err());
        assert!(parse_route(&[0; 4], Place::LOCAL).is_err());
    }

    #[test]
    fn prefixes_cover_addresses_of_their_family() {
        let net = LocalRoute { addr: v4("10.201.0.0"), prefix_len: 24, protocol: 3, oif: 1 };
        assert!(net.covers(v4("10.201.0.100")));
        assert!(!net.covers(v4("10.201.1.100")));
        assert!(!net.covers(v4("fd00::1")));
        let host = LocalRoute::host(v4("fd00:201::100"), 1, 2);
        assert!(host.covers(v4("fd00:201::100")));
        assert!(!host.covers(v4("fd00:201::101")));
        let all = LocalRoute { addr: v4("0.0.0.0"), prefix_len: 0, protocol: 3, oif: 1 };
        assert!(all.covers(v4("192.0.2.1")));
    }

    #[test]
    fn errors_name_the_route_and_the_fix() {
        let r = LocalRoute::host(v4("10.201.0.100"), 1, 252);
        let e = NetlinkError::Kernel { op: Op::Add, route: Some(r), errno: Errno::EPERM };
        let text = e.to_string();
        assert!(text.starts_with("adding the local route 10.201.0.100/32: EPERM"), "{text}");
        assert!(text.contains("agent.vip_routes = \"none\""), "{text}");
    }

    #[test]
    fn announced_routes_are_blackholes_in_their_table_with_no_interface() {
        let r = LocalRoute::host(v4("10.201.0.100"), 0, 253);
        let m = encode_change(true, Place::blackhole(100), &r, 7);
        // 16 header + 12 rtmsg + 8 dst + 8 table: no RTA_OIF.
        assert_eq!(m.len(), 44);
        assert_eq!(&m[16..24], &[libc::AF_INET as u8, 32, 0, 0, 100, 253, 0, RTN_BLACKHOLE]);
        assert_eq!(u32_at(&m, 40), Some(100));
        // A table beyond a byte: RT_TABLE_UNSPEC in the header, RTA_TABLE in full.
        let m = encode_change(false, Place::blackhole(1000), &r, 8);
        assert_eq!(m[20], 0);
        assert_eq!(u32_at(&m, 40), Some(1000));
        let d = encode_dump(libc::AF_INET as u8, Place::blackhole(1000), 9);
        assert_eq!(&d[16..24], &[libc::AF_INET as u8, 0, 0, 0, 0, 0, 0, RTN_BLACKHOLE]);
        assert_eq!(u32_at(&d, 32), Some(1000));
        // A dump keeps the blackholes of its table only.
        let place = Place::blackhole(1000);
        let mine = entry(&r, RTN_BLACKHOLE, 1000, 1);
        let other = entry(&r, RTN_BLACKHOLE, 100, 1);
        let local = entry(&r, RTN_LOCAL, 1000, 1);
        assert_eq!(parse_route(&mine[NLMSG_HDRLEN..], place), Ok(Some(r)));
        assert_eq!(parse_route(&other[NLMSG_HDRLEN..], place), Ok(None));
        assert_eq!(parse_route(&local[NLMSG_HDRLEN..], place), Ok(None));
        let e = NetlinkError::Kernel { op: Op::Announce, route: Some(r), errno: Errno::EPERM };
        assert!(e.to_string().contains("remove [agent.announce]"), "{e}");
    }
}
