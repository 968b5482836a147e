//! Attaching the datapath to interfaces, at the hook that is fastest for
//! each: tc ingress on veth and netkit (the skb arrives with no copy, GSO
//! and partial checksums intact, and leaves by `bpf_redirect_peer`), native
//! XDP on drivers that have it, tc again on drivers that do not (generic
//! XDP only when asked for).
//!
//! Links are pinned, so the next agent takes them over (the new program
//! swapped in atomically): `<pin_dir>/links/<iface>` for XDP (the name
//! earlier agents used) and `<pin_dir>/links/tc-<iface>` for tc. On kernels
//! without tcx links (before 6.6) the tc hook is a netlink filter instead
//! ([`tc_netlink`]), which outlives the agent unpinned and is found again by
//! its slot. When an interface moves to the other hook (or the tc hook to
//! the other kind of attachment), the new one is attached before the old
//! one is removed, so the interface is never without the datapath.

use std::path::PathBuf;

use aya::programs::{
    ProgramError, SchedClassifier, XdpMode,
    links::{FdLink, PinnedLink},
    tc::SchedClassifierLink,
    xdp::XdpLink,
};

use super::{
    ifaces,
    kernel::{Datapath, DatapathError},
    pins::Pins,
    tc_netlink::{self, TcAttachFailure, Via},
};
use crate::config::{Attach, AttachChoice};

/// The hook the datapath runs at on one interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// Driver (native) XDP.
    Native,
    /// Generic (skb) XDP.
    Generic,
    /// tc ingress (a tcx link; a netlink filter where the kernel has no
    /// tcx links).
    Tc,
}

impl Hook {
    /// As `lb status` and `agent.attach` name it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Generic => "generic",
            Self::Tc => "tc",
        }
    }

    fn is_xdp(self) -> bool {
        self != Self::Tc
    }
}

/// How the datapath ended up attached to one interface.
#[derive(Debug)]
pub struct Attached {
    /// The interface.
    pub interface: String,
    /// The hook.
    pub hook: Hook,
    /// What holds the program there: `"xdp"` (an XDP link), `"tcx"` (a tcx
    /// link) or `"netlink"` (a netlink tc filter).
    pub link: &'static str,
    /// Why that hook, and whether it was taken over from a previous agent.
    pub why: String,
}

/// Why attaching failed.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// The datapath itself failed.
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    /// The netlink filter (kernels without tcx) failed.
    #[error(transparent)]
    Netlink(#[from] tc_netlink::Error),
    /// `LB_TC_LINK` is set to something else than a link kind.
    #[error("{0}")]
    Env(String),
    /// The kernel refused the attachment.
    #[error("attaching the datapath to {interface} at the {hook} hook failed: {source}{hint}")]
    Refused {
        /// The interface.
        interface: String,
        /// The hook tried last.
        hook: &'static str,
        /// The error (boxed: it is large).
        source: Box<ProgramError>,
        /// What to try instead.
        hint: &'static str,
    },
}

/// Attaches to every interface, each at the hook `how` selects for it.
/// With `pins`, links are pinned, and links pinned by a previous agent are
/// taken over. Interfaces with a peer device are recorded for the tc hook.
pub fn attach_all(
    dp: &mut Datapath,
    choices: &[AttachChoice],
    pins: Option<&Pins>,
) -> Result<Vec<Attached>, AttachError> {
    let forced = tc_netlink::forced().map_err(AttachError::Env)?;
    let mut done = Vec::with_capacity(choices.len());
    for choice in choices {
        done.push(attach_one(dp, choice, pins, forced)?);
    }
    if done.iter().any(|a| a.hook == Hook::Tc) {
        match ifaces::peer_devices() {
            Ok(peers) => dp.set_peer_devices(&peers)?,
            Err(e) => tracing::warn!(
                "cannot list the interfaces ({e}); the tc hook forwards with bpf_redirect \
                 instead of bpf_redirect_peer (slower)"
            ),
        }
    }
    Ok(done)
}

/// `netlink`: the tc hook with a netlink filter even where tcx links exist.
fn attach_one(
    dp: &mut Datapath,
    choice: &AttachChoice,
    pins: Option<&Pins>,
    netlink: bool,
) -> Result<Attached, AttachError> {
    let (iface, how) = (choice.interface.as_str(), choice.how);
    let driver = ifaces::driver(iface).unwrap_or_default();
    let (mut hook, mut why) = match how {
        Attach::Tc => (Hook::Tc, choice.setting.clone()),
        Attach::Native => (Hook::Native, choice.setting.clone()),
        Attach::Generic => (Hook::Generic, choice.setting.clone()),
        Attach::Auto if ifaces::has_peer(&driver) => (
            Hook::Tc,
            format!(
                "{driver}: tc sees its skbs without a copy and forwards with bpf_redirect_peer"
            ),
        ),
        Attach::Auto => (Hook::Native, format!("{}: native XDP", driver_name(&driver))),
    };
    let xdp_pin = pins.map(|p| p.link(iface));
    let tc_pin = pins.map(|p| p.tc_link(iface));
    // How the tc hook was attached, once it is.
    let mut via = None;
    let taken = if hook.is_xdp() {
        let prog = dp.program_mut()?;
        take_over(iface, xdp_pin.as_ref(), hook, |l: XdpLink| prog.attach_to_link(l))?
    } else if netlink {
        // A tcx link pinned by an earlier agent goes once the filter runs.
        false
    } else {
        let prog = dp.tc_program_mut()?;
        take_over(iface, tc_pin.as_ref(), hook, |l: SchedClassifierLink| prog.attach_to_link(l))?
    };
    if taken {
        why.push_str("; taken over from the previous agent");
    } else if hook.is_xdp() {
        let prog = dp.program_mut()?;
        let mode = if hook == Hook::Native { XdpMode::Driver } else { XdpMode::Skb };
        match prog.attach(iface, mode) {
            Ok(id) => {
                if let Some(at) = &xdp_pin {
                    pin(prog.take_link(id), iface, at, hook)?;
                }
            }
            Err(native) if how == Attach::Auto => {
                tracing::info!(
                    interface = iface,
                    error = %native,
                    "no native XDP on this interface; attaching at the tc hook instead"
                );
                hook = Hook::Tc;
                why = format!("{}: no native XDP ({native})", driver_name(&driver));
                via = Some(attach_tc(dp.tc_program_mut()?, iface, tc_pin.as_ref(), pins, netlink)?);
            }
            Err(e) => {
                return Err(refused(
                    iface,
                    hook,
                    e,
                    if hook == Hook::Native {
                        "; the driver may lack native XDP: try attach = \"tc\" (or \"generic\")"
                    } else {
                        "; try attach = \"tc\""
                    },
                ));
            }
        }
    } else {
        via = Some(attach_tc(dp.tc_program_mut()?, iface, tc_pin.as_ref(), pins, netlink)?);
    }
    let by_netlink = matches!(via, Some(Via::Netlink { .. }));
    if let Some(v) = &via {
        if let Via::Netlink { taken: true, .. } = v {
            why.push_str("; taken over from the previous agent");
        }
        if let Some(link) = v.describe() {
            why = format!("{why}; {link}");
        }
    }
    // Only now that the new hook runs: drop the other hook's link, if an
    // earlier agent attached there (and the tcx link, if the tc hook is a
    // netlink filter now; lb's netlink filter, if it is not).
    if !by_netlink {
        remove_netlink_filter(iface, pins);
    }
    let others = match (hook.is_xdp(), by_netlink) {
        (true, _) => vec![tc_pin],
        (false, false) => vec![xdp_pin],
        (false, true) => vec![xdp_pin, tc_pin],
    };
    for path in others.into_iter().flatten().filter(|p| p.exists()) {
        match PinnedLink::from_pin(&path).map(PinnedLink::unpin) {
            Ok(_) => tracing::info!(
                interface = iface,
                hook = hook.name(),
                "removed the link of the hook this interface used before"
            ),
            Err(e) => tracing::warn!(
                interface = iface,
                "cannot remove the earlier link pinned at {} ({e})",
                path.display()
            ),
        }
    }
    if hook == Hook::Native && ifaces::has_peer(&driver) {
        // Seen on Linux 6.18: a GRO-only peer sometimes held frames sent
        // back out of the veth they came in on (hairpin calls, ICMP
        // answers) until its next frame, stalling those connections.
        tracing::warn!(
            interface = iface,
            "native XDP on a {driver}: what it redirects into the interface needs an XDP \
             program on the peer (with GRO alone, hairpin frames can be held there for \
             seconds); attach = \"auto\" or \"tc\" serves a {driver} without that"
        );
    }
    let link = match (hook, by_netlink) {
        (Hook::Tc, true) => "netlink",
        (Hook::Tc, false) => "tcx",
        _ => "xdp",
    };
    Ok(Attached { interface: iface.to_owned(), hook, link, why })
}

fn driver_name(driver: &str) -> &str {
    if driver.is_empty() { "unknown driver" } else { driver }
}

fn refused(iface: &str, hook: Hook, e: ProgramError, hint: &'static str) -> AttachError {
    AttachError::Refused {
        interface: iface.to_owned(),
        hook: hook.name(),
        source: Box::new(e),
        hint,
    }
}

/// Swaps the program into the link a previous agent pinned at `pin` for
/// `iface` (at `hook`), if there is one, with `attach_to_link`. An unusable
/// pin is removed, and the caller attaches anew.
fn take_over<L, T>(
    iface: &str,
    pin: Option<&PathBuf>,
    hook: Hook,
    attach_to_link: impl FnOnce(L) -> Result<T, ProgramError>,
) -> Result<bool, AttachError>
where
    L: TryFrom<FdLink>,
    <L as TryFrom<FdLink>>::Error: std::fmt::Display,
{
    let Some(path) = pin.filter(|p| p.exists()) else { return Ok(false) };
    let link = PinnedLink::from_pin(path)
        .map_err(|e| e.to_string())
        .and_then(|p| L::try_from(FdLink::from(p)).map_err(|e| e.to_string()));
    match link {
        Ok(link) => {
            attach_to_link(link).map_err(|e| refused(iface, hook, e, ""))?;
            Ok(true)
        }
        Err(e) => {
            tracing::warn!(
                interface = iface,
                "the pinned {} link is unusable ({e}); attaching anew",
                hook.name()
            );
            let _ = std::fs::remove_file(path);
            Ok(false)
        }
    }
}

/// Attaches at tc ingress with a tcx link (Linux 6.6), which can be pinned
/// and taken over like an XDP link; on older kernels (or `netlink`) with
/// lb's netlink filter, taken over in place if an earlier agent left it.
fn attach_tc(
    prog: &mut SchedClassifier,
    iface: &str,
    pin_at: Option<&PathBuf>,
    pins: Option<&Pins>,
    netlink: bool,
) -> Result<Via, AttachError> {
    let mut via = tc_netlink::attach_tcx_or_netlink(prog, iface, tc_netlink::RUN, netlink, pins)
        .map_err(|e| match e {
            TcAttachFailure::Tcx(e) => refused(
                iface,
                Hook::Tc,
                e,
                "; the kernel has tcx links but refused this one: try attach = \"native\" or \"generic\"",
            ),
            TcAttachFailure::Netlink(e) => e.into(),
        })?;
    if let (Via::Tcx(id), Some(at)) = (&mut via, pin_at)
        && let Some(id) = id.take()
    {
        pin(prog.take_link(id), iface, at, Hook::Tc)?;
    }
    Ok(via)
}

/// Deletes lb's netlink tc filter from `iface`, if an earlier agent left
/// one there (the interface is at another hook, or has a tcx link, now).
fn remove_netlink_filter(iface: &str, pins: Option<&Pins>) {
    let slot = tc_netlink::RUN;
    match tc_netlink::detach(iface, slot) {
        Ok(true) => tracing::info!(
            interface = iface,
            "removed the tc filter ({}) an earlier agent attached with",
            slot.describe()
        ),
        Ok(false) => {}
        Err(e) => tracing::warn!(
            interface = iface,
            "cannot remove the earlier tc filter ({}): {e}; `tc filter del dev {iface} ingress \
             pref {}` does",
            slot.describe(),
            slot.priority
        ),
    }
    if let Some(p) = pins {
        p.unmark_netlink(iface, slot);
    }
}

/// Pins a new link (taken out of its program, so it outlives this agent
/// and the next one takes it over). A link that cannot be pinned is
/// detached when this agent exits.
fn pin<L>(
    link: Result<L, ProgramError>,
    iface: &str,
    at: &PathBuf,
    hook: Hook,
) -> Result<(), AttachError>
where
    FdLink: TryFrom<L>,
    <FdLink as TryFrom<L>>::Error: std::fmt::Display,
{
    let link = link.map_err(|e| refused(iface, hook, e, ""))?;
    match FdLink::try_from(link) {
        Ok(fd) => {
            if let Err(e) = fd.pin(at) {
                tracing::warn!(
                    interface = iface,
                    "cannot pin the {} link ({e}): a restart will interrupt traffic",
                    hook.name()
                );
            }
        }
        Err(e) => tracing::warn!(
            interface = iface,
            "the {} link is not a BPF link ({e}): a restart will interrupt traffic",
            hook.name()
        ),
    }
    Ok(())
}
