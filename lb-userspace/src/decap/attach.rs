//! Attaching the decapsulating program to interfaces: at the hook asked
//! for, or with `auto` at tc on veth and netkit (their skbs need no copy)
//! and native XDP elsewhere, tc where the driver has no native XDP. Every
//! link is pinned, so `lb decap --stop` from another process can detach it;
//! on kernels without tcx links the tc hook is a netlink filter
//! ([`tc_netlink::DECAP`]), recorded in the pin directory so that `--stop`
//! deletes it too.

use std::path::Path;

use aya::programs::{ProgramError, XdpMode, links::FdLink};

use super::{Decap, DecapError};
use crate::{
    config::Attach,
    datapath::{
        attach::Hook,
        ifaces,
        pins::Pins,
        tc_netlink::{self, TcAttachFailure, Via},
    },
};

/// Why an interface could not be given the program.
#[derive(Debug, thiserror::Error)]
pub enum DecapAttachError {
    /// The program itself is missing or refused.
    #[error(transparent)]
    Decap(#[from] DecapError),
    /// The netlink filter (kernels without tcx) failed.
    #[error(transparent)]
    Netlink(#[from] tc_netlink::Error),
    /// The kernel refused the attachment.
    #[error("attaching the decap program to {interface} at the {hook} hook failed: {source}{hint}")]
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
    /// The link could not be pinned (then `--stop` could not detach it).
    #[error("pinning the decap link of {interface} at {path} failed: {reason}")]
    Pin {
        /// The interface.
        interface: String,
        /// Where.
        path: String,
        /// Why.
        reason: String,
    },
}

/// Attaches to `iface` at the hook `how` selects; returns the hook and,
/// for the tc hook with a netlink filter, what `tc_netlink` says of it.
/// `netlink`: the tc hook with a netlink filter even where tcx links exist.
pub fn attach(
    decap: &mut Decap,
    iface: &str,
    how: Attach,
    pins: &Pins,
    netlink: bool,
) -> Result<(Hook, Option<String>), DecapAttachError> {
    let driver = ifaces::driver(iface).unwrap_or_default();
    let hook = match how {
        Attach::Tc => Hook::Tc,
        Attach::Generic => Hook::Generic,
        Attach::Native => Hook::Native,
        Attach::Auto if ifaces::has_peer(&driver) => Hook::Tc,
        Attach::Auto => Hook::Native,
    };
    if hook == Hook::Tc {
        return Ok((hook, attach_tc(decap, iface, pins, netlink)?));
    }
    let mode = if hook == Hook::Native { XdpMode::Driver } else { XdpMode::Skb };
    let prog = decap.xdp()?;
    match prog.attach(iface, mode) {
        Ok(id) => {
            let link = prog.take_link(id).map_err(|e| refused(iface, hook, e, ""))?;
            pin(FdLink::try_from(link).map_err(|e| e.to_string()), iface, &pins.link(iface))?;
            Ok((hook, None))
        }
        Err(e) if how == Attach::Auto => {
            tracing::info!(interface = iface, error = %e, "no native XDP; decapsulating at tc");
            Ok((Hook::Tc, attach_tc(decap, iface, pins, netlink)?))
        }
        Err(e) => Err(refused(iface, hook, e, "; try --attach tc")),
    }
}

/// A pinned tcx link, or on kernels without tcx (or `netlink`) the decap
/// filter; returns what `tc_netlink` says of the filter (nothing for tcx).
fn attach_tc(
    decap: &mut Decap,
    iface: &str,
    pins: &Pins,
    netlink: bool,
) -> Result<Option<String>, DecapAttachError> {
    let prog = decap.tc()?;
    let via =
        tc_netlink::attach_tcx_or_netlink(prog, iface, tc_netlink::DECAP, netlink, Some(pins))
            .map_err(|e| match e {
                TcAttachFailure::Tcx(e) => refused(iface, Hook::Tc, e, "; try --attach native"),
                TcAttachFailure::Netlink(e) => e.into(),
            })?;
    if let Via::Tcx(Some(id)) = via {
        let link = prog.take_link(id).map_err(|e| refused(iface, Hook::Tc, e, ""))?;
        pin(FdLink::try_from(link).map_err(|e| e.to_string()), iface, &pins.tc_link(iface))?;
        return Ok(None);
    }
    Ok(via.describe())
}

fn pin(link: Result<FdLink, String>, iface: &str, at: &Path) -> Result<(), DecapAttachError> {
    let err = |reason: String| DecapAttachError::Pin {
        interface: iface.to_owned(),
        path: at.display().to_string(),
        reason,
    };
    link.map_err(err)?.pin(at).map(drop).map_err(|e| err(e.to_string()))
}

fn refused(iface: &str, hook: Hook, e: ProgramError, hint: &'static str) -> DecapAttachError {
    DecapAttachError::Refused {
        interface: iface.to_owned(),
        hook: hook.name(),
        source: Box::new(e),
        hint,
    }
}
