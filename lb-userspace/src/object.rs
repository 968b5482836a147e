//! Finding the eBPF object and refusing one that does not match this `lb`.
//!
//! Every object is stamped at build time with `LB_BUILD_ID=<fingerprint of
//! its sources>`, and `lb` is built knowing the fingerprint it expects. An
//! object with another fingerprint was built from other sources: its maps may
//! not have the layout this `lb` writes, so loading it could corrupt traffic.

use std::{
    borrow::Cow,
    fmt, fs, io,
    path::{Path, PathBuf},
};

/// The fingerprint this `lb` expects its eBPF object to carry.
pub const EXPECTED_BUILD_ID: &str = env!("LB_EXPECTED_BUILD_ID");

const STAMP_PREFIX: &[u8] = b"LB_BUILD_ID=";
const ID_LEN: usize = 32;

/// The ELF parser reads the object in place, so it must be 8-byte aligned.
#[cfg(lb_embedded_object)]
#[repr(C, align(8))]
struct Aligned<B: ?Sized>(B);

#[cfg(lb_embedded_object)]
static EMBEDDED: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/lb-ebpf.o")));

/// The object embedded at build time, if there was a matching one.
pub fn embedded() -> Option<&'static [u8]> {
    #[cfg(lb_embedded_object)]
    {
        Some(&EMBEDDED.0)
    }
    #[cfg(not(lb_embedded_object))]
    {
        None
    }
}

/// Where an object came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Embedded in the `lb` binary.
    Embedded,
    /// Read from a file given with `--bpf-object`.
    File(PathBuf),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Embedded => f.write_str("embedded object"),
            Origin::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A verified eBPF object.
#[derive(Debug)]
pub struct BpfObject {
    /// The ELF bytes.
    pub bytes: Cow<'static, [u8]>,
    /// Where they came from.
    pub origin: Origin,
}

/// Why no usable object was found.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// No object was given and none is embedded.
    #[error(
        "this lb was built without its eBPF object, so XDP mode cannot start; \
         build it with `cargo xtask build-ebpf --release` and rebuild lb \
         (`cargo build --release`), or pass --bpf-object PATH, or use --mode splice"
    )]
    Missing,
    /// The given file could not be read.
    #[error("cannot read the eBPF object {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error (not a `source`: the message carries it, and a source
        /// would print it twice in a `{:#}` chain).
        reason: io::Error,
    },
    /// The file carries no build stamp.
    #[error(
        "{origin} is not an lb eBPF object (it has no LB_BUILD_ID stamp); \
         pass the object `cargo xtask build-ebpf --release` writes to target/bpf/lb-ebpf.o"
    )]
    NotLb {
        /// The object.
        origin: Origin,
    },
    /// The object was built from other sources than this `lb`.
    #[error(
        "{origin} is stale: it was built from sources {found}, this lb expects {expected}; \
         rebuild it with `cargo xtask build-ebpf --release` (and rebuild lb to embed it)"
    )]
    Stale {
        /// The object.
        origin: Origin,
        /// Its fingerprint.
        found: String,
        /// The fingerprint this `lb` expects.
        expected: &'static str,
    },
}

/// The fingerprint stamped into an object, if any.
pub fn build_id(elf: &[u8]) -> Option<&str> {
    let at = elf.windows(STAMP_PREFIX.len()).position(|w| w == STAMP_PREFIX)?;
    let id = elf.get(at + STAMP_PREFIX.len()..at + STAMP_PREFIX.len() + ID_LEN)?;
    std::str::from_utf8(id).ok()
}

/// Checks that `bytes` carry the fingerprint this `lb` expects.
pub fn verify(bytes: &[u8], origin: &Origin) -> Result<(), ObjectError> {
    match build_id(bytes) {
        None => Err(ObjectError::NotLb { origin: origin.clone() }),
        Some(id) if id == EXPECTED_BUILD_ID => Ok(()),
        Some(id) => Err(ObjectError::Stale {
            origin: origin.clone(),
            found: id.to_owned(),
            expected: EXPECTED_BUILD_ID,
        }),
    }
}

/// The object to load: `path` if given, else the embedded one.
pub fn resolve(path: Option<&Path>) -> Result<BpfObject, ObjectError> {
    let (bytes, origin) = match path {
        Some(p) => {
            let data =
                fs::read(p).map_err(|reason| ObjectError::Read { path: p.into(), reason })?;
            // A heap buffer is aligned enough, as aya's own `load_file` relies on.
            (Cow::Owned(data), Origin::File(p.into()))
        }
        None => (Cow::Borrowed(embedded().ok_or(ObjectError::Missing)?), Origin::Embedded),
    };
    verify(&bytes, &origin)?;
    Ok(BpfObject { bytes, origin })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamped(id: &str) -> Vec<u8> {
        let mut v = b"\x7fELF....".to_vec();
        v.extend_from_slice(STAMP_PREFIX);
        v.extend_from_slice(id.as_bytes());
        v.extend_from_slice(b"\0rest");
        v
    }

    #[test]
    fn accepts_matching_stamp() {
        verify(&stamped(EXPECTED_BUILD_ID), &Origin::Embedded).unwrap();
    }

    #[test]
    fn refuses_stale_with_fix() {
        let err = verify(&stamped(&"0".repeat(32)), &Origin::File("x.o".into())).unwrap_err();
        assert!(matches!(err, ObjectError::Stale { .. }));
        let msg = err.to_string();
        assert!(msg.contains("x.o is stale") && msg.contains("cargo xtask build-ebpf"), "{msg}");
    }

    #[test]
    fn refuses_unstamped() {
        let err = verify(b"\x7fELF no stamp", &Origin::Embedded).unwrap_err();
        assert!(matches!(err, ObjectError::NotLb { .. }), "{err}");
    }

    #[test]
    fn truncated_stamp_is_not_an_id() {
        assert_eq!(build_id(b"LB_BUILD_ID=abc"), None);
    }

    #[test]
    fn missing_file_is_named() {
        let err = resolve(Some(Path::new("/nonexistent/lb.o"))).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/lb.o"), "{err}");
    }

    /// Set by `cargo xtask test`, which builds the object first: there a
    /// missing object is a failure, not a reason to check nothing.
    const REQUIRE: &str = "LB_REQUIRE_EBPF_OBJECT";

    #[test]
    fn embedded_object_if_any_is_current() {
        match embedded() {
            Some(bytes) => {
                verify(bytes, &Origin::Embedded).unwrap();
                assert_eq!(bytes.as_ptr().align_offset(8), 0);
            }
            None => assert!(
                std::env::var_os(REQUIRE).is_none(),
                "{REQUIRE} is set but lb embeds no eBPF object (stale or not built)"
            ),
        }
    }

    #[test]
    fn every_error_formats() {
        // Each says what went wrong with what, and how to fix it.
        let errs = [
            (ObjectError::Missing, &["without its eBPF object", "cargo xtask build-ebpf"][..]),
            (
                ObjectError::Read { path: "/x/p.o".into(), reason: io::Error::other("gone") },
                &["/x/p.o", "gone"],
            ),
            (ObjectError::NotLb { origin: Origin::Embedded }, &["no LB_BUILD_ID", "build-ebpf"]),
            (
                ObjectError::Stale { origin: Origin::Embedded, found: "f0".into(), expected: "e1" },
                &["stale", "f0", "e1", "build-ebpf"],
            ),
        ];
        for (e, wanted) in errs {
            let text = e.to_string();
            for w in wanted {
                assert!(text.contains(w), "{text:?} lacks {w:?}");
            }
        }
    }
}
