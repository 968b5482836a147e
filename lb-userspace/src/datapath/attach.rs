//! Attaching the program to interfaces, natively where the driver can.

use aya::programs::{
    ProgramError, XdpMode,
    links::{FdLink, PinnedLink},
    xdp::XdpLink,
};

use super::{
    kernel::{Datapath, DatapathError},
    pins::Pins,
};
use crate::config::XdpAttach;

/// How the program ended up attached to one interface.
#[derive(Debug)]
pub struct Attached {
    /// The interface.
    pub interface: String,
    /// "native", "generic" or "taken over" (from a previous agent).
    pub mode: &'static str,
}

/// Why attaching failed.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// The datapath itself failed.
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    /// The kernel refused the attachment.
    #[error("attaching XDP to {interface} in {mode} mode failed: {source}{hint}")]
    Refused {
        /// The interface.
        interface: String,
        /// The mode tried last.
        mode: &'static str,
        /// The error (boxed: it is large).
        source: Box<ProgramError>,
        /// What to try instead.
        hint: &'static str,
    },
}

/// Attaches to every interface. `Auto` tries native (driver) mode and falls
/// back to generic with a warning, since generic works on any interface.
/// With `pins`, links are pinned, and links pinned by a previous agent are
/// taken over (the new program replaces the old one atomically).
pub fn attach_all(
    dp: &mut Datapath,
    interfaces: &[String],
    how: XdpAttach,
    pins: Option<&Pins>,
) -> Result<Vec<Attached>, AttachError> {
    let mut done = Vec::with_capacity(interfaces.len());
    for iface in interfaces {
        done.push(attach_one(dp, iface, how, pins)?);
    }
    Ok(done)
}

fn attach_one(
    dp: &mut Datapath,
    iface: &str,
    how: XdpAttach,
    pins: Option<&Pins>,
) -> Result<Attached, AttachError> {
    let prog = dp.program_mut()?;
    let refused = |mode, source, hint| AttachError::Refused {
        interface: iface.to_owned(),
        mode,
        source: Box::new(source),
        hint,
    };
    // A link pinned by the agent before this one: swap the new program in,
    // atomically, so the interface never runs without one.
    if let Some(path) = pins.map(|p| p.link(iface)).filter(|p| p.exists()) {
        let taken = PinnedLink::from_pin(&path)
            .map_err(|e| e.to_string())
            .and_then(|pinned| XdpLink::try_from(FdLink::from(pinned)).map_err(|e| e.to_string()));
        match taken {
            Ok(link) => {
                prog.attach_to_link(link).map_err(|e| refused("takeover", e, ""))?;
                return Ok(Attached { interface: iface.to_owned(), mode: "taken over" });
            }
            Err(e) => {
                tracing::warn!(
                    interface = iface,
                    "the pinned XDP link is unusable ({e}); attaching anew"
                );
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    let (id, mode) = match how {
        XdpAttach::Generic => {
            (prog.attach(iface, XdpMode::Skb).map_err(|e| refused("generic", e, ""))?, "generic")
        }
        XdpAttach::Native => (
            prog.attach(iface, XdpMode::Driver).map_err(|e| {
                refused(
                    "native",
                    e,
                    "; the driver may lack XDP support: try xdp_attach = \"generic\"",
                )
            })?,
            "native",
        ),
        XdpAttach::Auto => match prog.attach(iface, XdpMode::Driver) {
            Ok(id) => (id, "native"),
            Err(native) => {
                tracing::warn!(
                    interface = iface,
                    error = %native,
                    "native XDP attach failed; falling back to generic (slower)"
                );
                (
                    prog.attach(iface, XdpMode::Skb).map_err(|e| refused("generic", e, ""))?,
                    "generic",
                )
            }
        },
    };
    if let Some(p) = pins {
        // Pinned, the link outlives this agent: the next one takes it over.
        let link = prog.take_link(id).map_err(|e| refused(mode, e, ""))?;
        match FdLink::try_from(link) {
            Ok(fd) => {
                if let Err(e) = fd.pin(p.link(iface)) {
                    tracing::warn!(
                        interface = iface,
                        "cannot pin the XDP link ({e}): a restart will interrupt traffic"
                    );
                }
            }
            Err(e) => tracing::warn!(
                interface = iface,
                "the XDP link is not a BPF link ({e}): a restart will interrupt traffic"
            ),
        }
    }
    Ok(Attached { interface: iface.to_owned(), mode })
}
