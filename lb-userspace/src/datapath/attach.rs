//! Attaching the program to interfaces, natively where the driver can.

use aya::programs::{ProgramError, XdpMode, xdp::XdpLinkId};

use super::kernel::{Datapath, DatapathError};
use crate::config::XdpAttach;

/// How the program ended up attached to one interface.
#[derive(Debug)]
pub struct Attached {
    /// The interface.
    pub interface: String,
    /// "native" or "generic".
    pub mode: &'static str,
    /// The link, for detaching.
    pub link: XdpLinkId,
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
pub fn attach_all(
    dp: &mut Datapath,
    interfaces: &[String],
    how: XdpAttach,
) -> Result<Vec<Attached>, AttachError> {
    let mut done = Vec::with_capacity(interfaces.len());
    for iface in interfaces {
        done.push(attach_one(dp, iface, how)?);
    }
    Ok(done)
}

fn attach_one(dp: &mut Datapath, iface: &str, how: XdpAttach) -> Result<Attached, AttachError> {
    let prog = dp.program_mut()?;
    let refused = |mode, source, hint| AttachError::Refused {
        interface: iface.to_owned(),
        mode,
        source: Box::new(source),
        hint,
    };
    match how {
        XdpAttach::Generic => prog
            .attach(iface, XdpMode::Skb)
            .map(|link| Attached { interface: iface.to_owned(), mode: "generic", link })
            .map_err(|e| refused("generic", e, "")),
        XdpAttach::Native => prog
            .attach(iface, XdpMode::Driver)
            .map(|link| Attached { interface: iface.to_owned(), mode: "native", link })
            .map_err(|e| {
                refused(
                    "native",
                    e,
                    "; the driver may lack XDP support: try xdp_attach = \"generic\"",
                )
            }),
        XdpAttach::Auto => match prog.attach(iface, XdpMode::Driver) {
            Ok(link) => Ok(Attached { interface: iface.to_owned(), mode: "native", link }),
            Err(native) => {
                tracing::warn!(
                    interface = iface,
                    error = %native,
                    "native XDP attach failed; falling back to generic (slower)"
                );
                prog.attach(iface, XdpMode::Skb)
                    .map(|link| Attached { interface: iface.to_owned(), mode: "generic", link })
                    .map_err(|e| refused("generic", e, ""))
            }
        },
    }
}
