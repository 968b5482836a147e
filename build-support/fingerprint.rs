//! Fingerprint of the sources the eBPF object is built from.
//!
//! Included by path into `lb-ebpf/build.rs` (which stamps the object with it)
//! and `lb-userspace/build.rs` (which expects it), so both compute it the same
//! way. It covers the eBPF crate, the shared ABI crate and the lock entries
//! of the eBPF crate's dependencies (`aya-ebpf*`, `aya-log-ebpf*` and the
//! `aya-log-common` / `aya-log-parser` they build on): any change to what the
//! kernel program is made of gives a new fingerprint, and nothing else does
//! (adding a userspace dependency must not make the object stale).

use std::{
    fs, io,
    path::{Path, PathBuf},
};

/// The files that make up the eBPF object, in a stable order.
pub fn inputs(root: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files = vec![
        root.join("Cargo.lock"),
        root.join("lb-ebpf/Cargo.toml"),
        root.join("lb-common/Cargo.toml"),
    ];
    for dir in ["lb-ebpf/src", "lb-common/src"] {
        collect_rs(&root.join(dir), &mut files)?;
    }
    files.sort();
    Ok(files)
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_rs(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// 32 hex digits: FNV-1a (128-bit) over each input's path relative to `root`
/// and its contents. Not cryptographic; it only has to notice edits.
pub fn source_fingerprint(root: &Path) -> io::Result<String> {
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    let mut h: u128 = 0x6c62_2721_1c1c_81a1_4d0c_7b4e_2d4a_0ad5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h = (h ^ u128::from(*b)).wrapping_mul(PRIME);
        }
    };
    for path in inputs(root)? {
        let rel = path.strip_prefix(root).unwrap_or(&path);
        feed(rel.to_string_lossy().as_bytes());
        feed(&[0]);
        // A missing Cargo.lock (fresh clone before the first build) counts as empty.
        let mut data = fs::read(&path).or_else(|e| {
            if e.kind() == io::ErrorKind::NotFound { Ok(Vec::new()) } else { Err(e) }
        })?;
        if rel == Path::new("Cargo.lock") {
            data = ebpf_lock_entries(&data);
        }
        feed(&(data.len() as u64).to_le_bytes());
        feed(&data);
    }
    Ok(format!("{h:032x}"))
}

/// The `[[package]]` entries of a lock file that belong to the eBPF crate's
/// dependencies.
fn ebpf_lock_entries(lock: &[u8]) -> Vec<u8> {
    const EBPF: [&str; 4] = [
        "name = \"aya-ebpf",
        "name = \"aya-log-ebpf",
        "name = \"aya-log-common\"",
        "name = \"aya-log-parser\"",
    ];
    String::from_utf8_lossy(lock)
        .split("[[package]]")
        .filter(|entry| EBPF.iter().any(|name| entry.trim_start().starts_with(name)))
        .flat_map(|entry| entry.bytes())
        .collect()
}
