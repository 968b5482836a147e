//! What `lb trace` asks for, checked, and as the datapath's filter.

use std::fmt;

use lb_common::abi::{Addr, FAMILY_V4, FAMILY_V6, PROTO_TCP, PROTO_UDP, TRACE_ON, TraceFilter};
use serde::{Deserialize, Serialize};

use crate::config::Prefix;

/// The criteria of a trace session, as the client sends them: every one
/// left out matches anything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceSpec {
    /// Source prefix ("10.0.0.0/24", or one address).
    #[serde(default)]
    pub src: Option<String>,
    /// Destination prefix.
    #[serde(default)]
    pub dst: Option<String>,
    /// A port on either side; 0 or none: any.
    #[serde(default)]
    pub port: Option<u16>,
    /// "tcp" or "udp"; none: either.
    #[serde(default)]
    pub proto: Option<String>,
}

/// Why a trace could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceError {
    /// `--src` or `--dst` is not a prefix.
    #[error("--{flag}: {source}; give an address or a prefix such as 10.0.0.0/24")]
    Prefix {
        /// "src" or "dst".
        flag: &'static str,
        /// The parse error.
        source: crate::config::PrefixError,
    },
    /// The two prefixes are of different families: nothing matches both.
    #[error("--src {src} and --dst {dst} are of different address families; no packet has both")]
    Families {
        /// The source prefix.
        src: String,
        /// The destination prefix.
        dst: String,
    },
    /// `--proto` is not tcp or udp.
    #[error("--proto {0:?}: the datapath balances tcp and udp only")]
    Protocol(String),
}

impl TraceSpec {
    /// The datapath's filter for this spec, enabled.
    pub fn filter(&self) -> Result<TraceFilter, TraceError> {
        let prefix = |flag, text: &Option<String>| -> Result<Option<Prefix>, TraceError> {
            text.as_deref()
                .map(|t| t.parse::<Prefix>().map_err(|source| TraceError::Prefix { flag, source }))
                .transpose()
        };
        let (src, dst) = (prefix("src", &self.src)?, prefix("dst", &self.dst)?);
        let family = |p: &Prefix| if p.addr().is_ipv4() { FAMILY_V4 } else { FAMILY_V6 };
        if let (Some(s), Some(d)) = (&src, &dst)
            && family(s) != family(d)
        {
            return Err(TraceError::Families { src: s.to_string(), dst: d.to_string() });
        }
        let proto = match self.proto.as_deref() {
            None => 0,
            Some("tcp") => PROTO_TCP,
            Some("udp") => PROTO_UDP,
            Some(other) => return Err(TraceError::Protocol(other.to_owned())),
        };
        let part =
            |p: &Option<Prefix>| p.map_or((Addr::default(), 0), |p| (p.addr().into(), p.bits()));
        let ((src_addr, src_len), (dst_addr, dst_len)) = (part(&src), part(&dst));
        Ok(TraceFilter {
            src: src_addr,
            dst: dst_addr,
            enabled: TRACE_ON,
            // A /0 matches everything, as no prefix does; its family still
            // restricts.
            src_len,
            dst_len,
            proto,
            family: src.as_ref().or(dst.as_ref()).map_or(0, family),
            _pad: 0,
            port_be: self.port.unwrap_or(0).to_be(),
        })
    }
}

impl fmt::Display for TraceSpec {
    /// "src 10.0.0.0/24 port 40001 tcp", or "every packet".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(s) = &self.src {
            parts.push(format!("src {s}"));
        }
        if let Some(d) = &self.dst {
            parts.push(format!("dst {d}"));
        }
        if let Some(p) = self.port.filter(|&p| p != 0) {
            parts.push(format!("port {p}"));
        }
        if let Some(p) = &self.proto {
            parts.push(p.clone());
        }
        if parts.is_empty() { f.write_str("every packet") } else { f.write_str(&parts.join(" ")) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(
        src: Option<&str>,
        dst: Option<&str>,
        port: Option<u16>,
        proto: Option<&str>,
    ) -> TraceSpec {
        TraceSpec {
            src: src.map(Into::into),
            dst: dst.map(Into::into),
            port,
            proto: proto.map(Into::into),
        }
    }

    #[test]
    fn an_empty_spec_traces_everything() {
        let f = spec(None, None, None, None).filter().expect("valid");
        assert_eq!(f, TraceFilter { enabled: TRACE_ON, ..Default::default() });
        assert_eq!(spec(None, None, None, None).to_string(), "every packet");
    }

    #[test]
    fn prefixes_ports_and_protocols_are_written_as_the_datapath_reads_them() {
        let s = spec(Some("10.0.0.0/24"), Some("10.0.0.100"), Some(40001), Some("tcp"));
        let f = s.filter().expect("valid");
        assert_eq!(f.src, Addr::from_v4_bytes([10, 0, 0, 0]));
        assert_eq!((f.src_len, f.dst_len), (24, 32));
        assert_eq!(f.dst, Addr::from_v4_bytes([10, 0, 0, 100]));
        assert_eq!((f.family, f.proto, u16::from_be(f.port_be)), (FAMILY_V4, PROTO_TCP, 40001));
        assert_eq!(s.to_string(), "src 10.0.0.0/24 dst 10.0.0.100 port 40001 tcp");
    }

    #[test]
    fn bad_criteria_are_refused_naming_the_flag() {
        let e = spec(Some("10.0.0.300"), None, None, None).filter().expect_err("bad prefix");
        assert!(e.to_string().starts_with("--src"), "{e}");
        let e = spec(Some("10.0.0.1"), Some("fd00::1"), None, None).filter().expect_err("families");
        assert!(matches!(e, TraceError::Families { .. }), "{e}");
        let e = spec(None, None, None, Some("sctp")).filter().expect_err("protocol");
        assert!(e.to_string().contains("sctp"), "{e}");
    }
}
