//! Attaching the decapsulating program to interfaces: at the hook asked
//! for, or with `auto` at tc on veth and netkit (their skbs need no copy)
//! and native XDP elsewhere, tc where the driver has no native XDP. Every
//! link is pinned, so `lb decap --stop` from another process can detach it.

use std::path::Path;

use aya::programs::{
    LinkOrder, ProgramError, XdpMode,
    links::FdLink,
    tc::{TcAttachOptions, TcAttachType},
};

use super::{Decap, DecapError};
use crate::{
    config::Attach,
    datapath::{attach::Hook, ifaces, pins::Pins},
};

/// Why an interface could not be given the program.
#[derive(Debug, thiserror::Error)]
pub enum DecapAttachError {
    /// The program itself is missing or refused.
    #[error(transparent)]
    Decap(#[from] DecapError),
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

/// Attaches to `iface` at the hook `how` selects; returns the hook.
pub fn attach(
    decap: &mut Decap,
    iface: &str,
    how: Attach,
    pins: &Pins,
) -> Result<Hook, DecapAttachError> {
    let driver = ifaces::driver(iface).unwrap_or_default();
    let hook = match how {
        Attach::Tc => Hook::Tc,
        Attach::Generic => Hook::Generic,
        Attach::Native => Hook::Native,
        Attach::Auto if ifaces::has_peer(&driver) => Hook::Tc,
        Attach::Auto => Hook::Native,
    };
    if hook == Hook::Tc {
        attach_tc(decap, iface, pins)?;
        return Ok(hook);
    }
    let mode = if hook == Hook::Native { XdpMode::Driver } else { XdpMode::Skb };
    let prog = decap.xdp()?;
    match prog.attach(iface, mode) {
        Ok(id) => {
            let link = prog.take_link(id).map_err(|e| refused(iface, hook, e, ""))?;
            pin(FdLink::try_from(link).map_err(|e| e.to_string()), iface, &pins.link(iface))?;
            Ok(hook)
        }
        Err(e) if how == Attach::Auto => {
            tracing::info!(interface = iface, error = %e, "no native XDP; decapsulating at tc");
            attach_tc(decap, iface, pins)?;
            Ok(Hook::Tc)
        }
        Err(e) => Err(refused(iface, hook, e, "; try --attach tc")),
    }
}

fn attach_tc(decap: &mut Decap, iface: &str, pins: &Pins) -> Result<(), DecapAttachError> {
    let prog = decap.tc()?;
    let id = prog
        .attach_with_options(
            iface,
            TcAttachType::Ingress,
            TcAttachOptions::TcxOrder(LinkOrder::default()),
        )
        .map_err(|e| refused(iface, Hook::Tc, e, "; the tc hook needs tcx links (Linux 6.6)"))?;
    let link = prog.take_link(id).map_err(|e| refused(iface, Hook::Tc, e, ""))?;
    pin(FdLink::try_from(link).map_err(|e| e.to_string()), iface, &pins.tc_link(iface))
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
