//! The tc hook on kernels without tcx links (before Linux 6.6): a cls_bpf
//! filter in the interface's clsact qdisc, attached over netlink.
//!
//! Such a filter is not tied to a file descriptor and cannot be pinned: it
//! stays in the kernel after the agent exits (so the datapath keeps
//! forwarding, as a pinned link does) until someone deletes it. lb finds its
//! own filter again by a fixed slot, priority ([`Slot::priority`]) and handle
//! 1 at ingress, holding a program of lb's name:
//!
//! - attaching finds the slot empty and creates the filter, or finds lb's
//!   filter there (a previous agent's, also one that crashed) and swaps the
//!   new program into it (`RTM_NEWTFILTER` without `NLM_F_CREATE`, one
//!   atomic replacement in cls_bpf): never two lb filters on an interface;
//! - a filter of another program in that slot is left alone, and attaching
//!   fails naming it and the fix;
//! - the pin directory records each interface given a filter
//!   (`<pin_dir>/netlink/<iface>:<program>`, an empty directory: bpffs holds
//!   no plain files), so removing the pins (`lb stop`, `lb decap --stop`)
//!   deletes the filters too.
//!
//! The clsact qdisc is added if the interface has none, and never deleted:
//! others' filters may be in it (or added later by tools that expect it),
//! and an empty clsact costs next to nothing. `tc qdisc del dev IF clsact`
//! removes it (with every filter in it).

use std::{io, os::fd::AsRawFd};

use aya::programs::{
    LinkOrder, ProgramError, SchedClassifier, TcAttachType,
    tc::{
        self, NlOptions, SchedClassifierLink, SchedClassifierLinkId, TcAttachOptions, TcError,
        TcHandle,
    },
};
use nix::{errno::Errno, libc, sys::socket::MsgFlags};

use super::pins::Pins;
use crate::routes::netlink::{self as nl, NLM_F_REQUEST, NLMSG_ERROR};

/// The environment variable that forces the netlink filter where tcx links
/// exist (tests; see [`forced`]).
pub const ENV: &str = "LB_TC_LINK";

/// Where one program's filter sits at an interface's tc ingress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// The program (the filter's name, as `tc filter show` prints it).
    pub program: &'static str,
    /// The filter's priority (`pref` in `tc filter show`).
    pub priority: u16,
}

/// The filter's handle within its priority.
pub const HANDLE: u16 = 1;

/// `lb run`'s datapath: "LB" in ASCII.
pub const RUN: Slot = Slot { program: "lb_tc", priority: 0x4c42 };
/// `lb decap`'s program: "LD" in ASCII, apart from lb run's, so both can
/// run on one interface.
pub const DECAP: Slot = Slot { program: "lb_decap_tc", priority: 0x4c44 };

impl Slot {
    /// The slot of `program`, one of lb's.
    pub fn of(program: &str) -> Option<Self> {
        [RUN, DECAP].into_iter().find(|s| s.program == program)
    }

    /// How `lb status` and the log describe a filter in this slot.
    pub fn describe(self) -> String {
        format!("a netlink filter (clsact ingress, pref {} handle {HANDLE})", self.priority)
    }
}

/// Whether [`ENV`] forces the netlink filter (`LB_TC_LINK=netlink`); unset,
/// empty or `auto`: tcx, and the netlink filter only where the kernel has
/// no tcx links. Test-only: it lets a kernel with tcx exercise the path
/// older kernels take.
pub fn forced() -> Result<bool, String> {
    forced_by(std::env::var(ENV).ok().as_deref())
}

/// [`forced`] for the variable's value.
fn forced_by(value: Option<&str>) -> Result<bool, String> {
    match value {
        None | Some("" | "auto") => Ok(false),
        Some("netlink") => Ok(true),
        Some(other) => Err(format!(
            "{ENV}={other:?} is not a tc link kind: unset it (tcx, or a netlink filter where the \
             kernel has no tcx) or set {ENV}=netlink (tests: force the netlink filter)"
        )),
    }
}

/// Whether the kernel lacks tcx links: a query of `iface`'s tcx ingress is
/// refused as an unknown attach type (EINVAL) by kernels before 6.6, and
/// answered by later ones. Any other answer (a missing interface, no
/// permission) is not taken for a missing tcx: the attach error stands.
pub fn tcx_missing(iface: &str) -> bool {
    match SchedClassifier::query_tcx(iface, TcAttachType::Ingress) {
        Err(ProgramError::SyscallError(e)) => e.io_error.raw_os_error() == Some(libc::EINVAL),
        _ => false,
    }
}

/// Why the netlink filter could not be attached or found.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The clsact qdisc could not be added.
    #[error(
        "adding a clsact qdisc to {interface} failed: {source}; the tc hook without tcx links \
         needs one (`tc qdisc add dev {interface} clsact`), or use attach = \"native\" or \"generic\""
    )]
    Qdisc {
        /// The interface.
        interface: String,
        /// What aya said.
        source: TcError,
    },
    /// The kernel refused the filter.
    #[error("attaching {program} to {interface} as {slot} failed: {source}")]
    Filter {
        /// The interface.
        interface: String,
        /// The program.
        program: &'static str,
        /// Where.
        slot: String,
        /// What aya said (boxed: it is large).
        source: Box<ProgramError>,
    },
    /// Another program's filter holds lb's slot.
    #[error(
        "{interface}: the tc ingress filter at pref {priority} handle {HANDLE} is {held_by}, not \
         {program}; lb attaches there when the kernel has no tcx links: move that filter to \
         another priority, or delete it (`tc filter del dev {interface} ingress pref {priority}`)"
    )]
    Taken {
        /// The interface.
        interface: String,
        /// lb's program.
        program: &'static str,
        /// The priority.
        priority: u16,
        /// What holds it.
        held_by: String,
    },
    /// The slot could not be read.
    #[error("reading the tc ingress filters of {interface}: {source}")]
    Query {
        /// The interface.
        interface: String,
        /// Why.
        source: io::Error,
    },
}

/// How the tc hook was attached to one interface.
#[derive(Debug)]
pub enum Via {
    /// A tcx link (its id in the program, to take and pin; `None` once
    /// taken).
    Tcx(Option<SchedClassifierLinkId>),
    /// A netlink filter.
    Netlink {
        /// Its slot.
        slot: Slot,
        /// Whether lb's filter was already there (and took the program).
        taken: bool,
        /// Whether [`ENV`] forced it (else the kernel has no tcx).
        forced: bool,
    },
}

impl Via {
    /// What `lb status` adds to the interface's reason: nothing for tcx,
    /// the usual way; the filter, and why, for a netlink filter.
    pub fn describe(&self) -> Option<String> {
        match self {
            Self::Tcx(_) => None,
            Self::Netlink { slot, forced, .. } => Some(format!(
                "{}, not a tcx link: {}",
                slot.describe(),
                if *forced { "LB_TC_LINK=netlink" } else { "this kernel has no tcx links" }
            )),
        }
    }
}

/// Why neither a tcx link nor a netlink filter could be attached.
#[derive(Debug, thiserror::Error)]
pub enum TcAttachFailure {
    /// The kernel has tcx links and refused this one.
    #[error("{0}")]
    Tcx(ProgramError),
    /// The kernel has no tcx links (or [`ENV`] forced it), and the netlink
    /// filter failed.
    #[error(transparent)]
    Netlink(#[from] Error),
}

/// Attaches `prog` at `iface`'s tc ingress: with a new tcx link, or, where
/// the kernel has none (or `forced`), with lb's netlink filter in `slot`
/// (recorded in `pins`, so that removing them deletes it).
pub fn attach_tcx_or_netlink(
    prog: &mut SchedClassifier,
    iface: &str,
    slot: Slot,
    forced: bool,
    pins: Option<&Pins>,
) -> Result<Via, TcAttachFailure> {
    if !forced {
        match prog.attach_with_options(
            iface,
            TcAttachType::Ingress,
            TcAttachOptions::TcxOrder(LinkOrder::default()),
        ) {
            Ok(id) => return Ok(Via::Tcx(Some(id))),
            Err(e) if !tcx_missing(iface) => return Err(TcAttachFailure::Tcx(e)),
            Err(_) => {}
        }
    }
    let taken = attach(prog, iface, slot)?;
    if let Some(pins) = pins
        && let Err(e) = pins.mark_netlink(iface, slot)
    {
        tracing::warn!(
            interface = iface,
            "cannot record the tc filter in {} ({e}): stopping will not remove it \
             (`tc filter del dev {iface} ingress pref {}` will)",
            pins.dir().display(),
            slot.priority
        );
    }
    Ok(Via::Netlink { slot, taken, forced })
}

/// Gives `iface` the program `prog` in `slot`: creates the filter, or swaps
/// `prog` into lb's filter already there. Returns whether one was there
/// (taken over). The filter stays when `prog` is dropped.
pub fn attach(prog: &mut SchedClassifier, iface: &str, slot: Slot) -> Result<bool, Error> {
    match tc::qdisc_add_clsact(iface) {
        Err(TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => {}
        r => r.map_err(|source| Error::Qdisc { interface: iface.to_owned(), source })?,
    }
    let query = |source| Error::Query { interface: iface.to_owned(), source };
    let taken = match find(iface, slot).map_err(query)? {
        None => false,
        Some(f) if f.holds(slot) => true,
        Some(other) => {
            return Err(Error::Taken {
                interface: iface.to_owned(),
                program: slot.program,
                priority: slot.priority,
                held_by: other.to_string(),
            });
        }
    };
    let handle = TcHandle::new(0, HANDLE);
    let id = if taken {
        let link = SchedClassifierLink::attached(
            iface,
            TcAttachType::Ingress,
            slot.priority,
            handle,
            None,
        )
        .map_err(query)?;
        prog.attach_to_link(link)
    } else {
        prog.attach_with_options(
            iface,
            TcAttachType::Ingress,
            TcAttachOptions::Netlink(NlOptions { priority: slot.priority, handle, classid: None }),
        )
    };
    let filter = |e| Error::Filter {
        interface: iface.to_owned(),
        program: slot.program,
        slot: slot.describe(),
        source: Box::new(e),
    };
    let link = id.and_then(|id| prog.take_link(id)).map_err(filter)?;
    // Dropping the link would delete the filter: it is meant to outlive
    // this agent. It holds no descriptor, so nothing leaks.
    std::mem::forget(link);
    Ok(taken)
}

/// Deletes lb's filter in `slot` of `iface`, if it is there and holds
/// `slot`'s program. Returns whether one was deleted. A missing interface
/// or qdisc has no filter.
pub fn detach(iface: &str, slot: Slot) -> io::Result<bool> {
    if !find(iface, slot)?.is_some_and(|f| f.holds(slot)) {
        return Ok(false);
    }
    let link = SchedClassifierLink::attached(
        iface,
        TcAttachType::Ingress,
        slot.priority,
        TcHandle::new(0, HANDLE),
        None,
    )?;
    aya::programs::Link::detach(link).map_err(io::Error::other)?;
    Ok(true)
}

/// A filter found in a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// The classifier (`bpf` for lb's).
    pub kind: String,
    /// Its program's name (bpf filters; empty if none was given).
    pub name: String,
}

impl Filter {
    /// Whether it is lb's filter of `slot`.
    pub fn holds(&self, slot: Slot) -> bool {
        self.kind == "bpf" && self.name == slot.program
    }
}

impl std::fmt::Display for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.kind.as_str(), self.name.as_str()) {
            ("bpf", "") => f.write_str("an unnamed bpf filter"),
            ("bpf", name) => write!(f, "the bpf filter of program {name:?}"),
            (kind, _) => write!(f, "a {kind} filter"),
        }
    }
}

/// The filter at `slot` of `iface`'s tc ingress, or `None` if the slot is
/// empty (or the interface or its clsact qdisc is missing).
pub fn find(iface: &str, slot: Slot) -> io::Result<Option<Filter>> {
    let ifindex = match nix::net::if_::if_nametoindex(iface) {
        Ok(i) => i,
        Err(Errno::ENODEV) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let fd = nl::socket_route()?;
    let seq = std::process::id();
    nix::sys::socket::send(fd.as_raw_fd(), &encode_get(ifindex, slot, seq), MsgFlags::empty())?;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = nix::sys::socket::recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty())?;
        for m in nl::messages(&buf[..n]).map_err(io::Error::other)? {
            if m.seq != seq {
                continue;
            }
            match m.kind {
                RTM_NEWTFILTER => return parse(m.payload).map(Some).map_err(io::Error::other),
                NLMSG_ERROR => {
                    return match -nl::error_code(m.payload).map_err(io::Error::other)? {
                        0 => Ok(None),
                        // No filter there (ENOENT), no clsact qdisc or a
                        // filter of another protocol at that priority
                        // (EINVAL: then creating ours fails with its reason).
                        libc::ENOENT | libc::EINVAL | libc::ENODEV => Ok(None),
                        errno => Err(io::Error::from_raw_os_error(errno)),
                    };
                }
                _ => {}
            }
        }
    }
}

const RTM_NEWTFILTER: u16 = 44;
const RTM_GETTFILTER: u16 = 46;
const TCMSG_LEN: usize = 20;
const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
const TCA_BPF_NAME: u16 = 7;
/// `TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS)`.
const INGRESS_PARENT: u32 = 0xffff_fff2;
/// `ETH_P_ALL`, as the filters lb makes match (aya sets it).
const ETH_P_ALL: u16 = 0x0003;

/// `RTM_GETTFILTER` of the filter at `slot` on ingress of `ifindex`.
fn encode_get(ifindex: u32, slot: Slot, seq: u32) -> Vec<u8> {
    let len = 16 + TCMSG_LEN;
    let mut buf = Vec::with_capacity(len);
    buf.extend_from_slice(&(len as u32).to_ne_bytes());
    buf.extend_from_slice(&RTM_GETTFILTER.to_ne_bytes());
    buf.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
    // tcmsg: family, padding, ifindex, handle, parent, info (priority in
    // the upper half, the protocol in network order in the lower).
    buf.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]);
    buf.extend_from_slice(&ifindex.to_ne_bytes());
    buf.extend_from_slice(&u32::from(HANDLE).to_ne_bytes());
    buf.extend_from_slice(&INGRESS_PARENT.to_ne_bytes());
    let info = (u32::from(slot.priority) << 16) | u32::from(ETH_P_ALL.to_be());
    buf.extend_from_slice(&info.to_ne_bytes());
    buf
}

/// The kind and program name of a filter (`RTM_NEWTFILTER` payload).
fn parse(payload: &[u8]) -> Result<Filter, &'static str> {
    let attrs = nl::attributes(payload.get(TCMSG_LEN..).ok_or("short tcmsg")?)?;
    let text =
        |v: &[u8]| String::from_utf8_lossy(v.split(|&b| b == 0).next().unwrap_or(v)).into_owned();
    let value =
        |attrs: &[(u16, &[u8])], kind| attrs.iter().find(|a| a.0 == kind).map(|a| text(a.1));
    let kind = value(&attrs, TCA_KIND).unwrap_or_default();
    let name = match attrs.iter().find(|a| a.0 == TCA_OPTIONS) {
        Some((_, options)) if kind == "bpf" => {
            value(&nl::attributes(options)?, TCA_BPF_NAME).unwrap_or_default()
        }
        _ => String::new(),
    };
    Ok(Filter { kind, name })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(value);
        a.resize((a.len() + 3) & !3, 0);
        a
    }

    fn filter(kind: &str, options: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; TCMSG_LEN];
        p.extend(attr(TCA_KIND, format!("{kind}\0").as_bytes()));
        p.extend(attr(TCA_OPTIONS | 0x8000, options));
        p
    }

    #[test]
    fn a_bpf_filters_program_name_is_read() {
        let opts = [attr(6, &7u32.to_ne_bytes()), attr(TCA_BPF_NAME, b"lb_tc\0")].concat();
        let ours = parse(&filter("bpf", &opts)).unwrap();
        assert!(ours.holds(RUN) && !ours.holds(DECAP), "{ours:?}");
        let unnamed = parse(&filter("bpf", &[])).unwrap();
        assert_eq!(unnamed.to_string(), "an unnamed bpf filter");
        let other = parse(&filter("u32", &opts)).unwrap();
        assert!(!other.holds(RUN));
        assert_eq!(other.to_string(), "a u32 filter");
        assert!(parse(&[0; 4]).is_err());
    }

    #[test]
    fn the_request_names_ingress_the_slot_and_every_protocol() {
        let m = encode_get(7, RUN, 9);
        assert_eq!(m.len(), 36);
        let msgs = nl::messages(&m).unwrap();
        assert_eq!((msgs[0].kind, msgs[0].seq), (RTM_GETTFILTER, 9));
        let t = msgs[0].payload;
        let word = |at: usize| u32::from_ne_bytes(t[at..at + 4].try_into().unwrap());
        assert_eq!((word(4), word(8), word(12)), (7, 1, 0xffff_fff2));
        assert_eq!(word(16) >> 16, 0x4c42);
        assert_eq!((word(16) as u16).to_ne_bytes(), [0, 3], "ETH_P_ALL in network order");
    }

    #[test]
    fn only_netlink_forces_the_filter_and_a_typo_names_the_fix() {
        assert_eq!(forced_by(None), Ok(false));
        assert_eq!(forced_by(Some("auto")), Ok(false));
        assert_eq!(forced_by(Some("netlink")), Ok(true));
        let e = forced_by(Some("netlnk")).unwrap_err();
        assert!(e.contains("LB_TC_LINK=\"netlnk\"") && e.contains("LB_TC_LINK=netlink"), "{e}");
    }

    #[test]
    fn slots_are_found_by_program_and_apart() {
        assert_eq!(Slot::of("lb_tc"), Some(RUN));
        assert_eq!(Slot::of("lb_decap_tc"), Some(DECAP));
        assert_eq!(Slot::of("other"), None);
        assert_ne!(RUN.priority, DECAP.priority);
    }
}
