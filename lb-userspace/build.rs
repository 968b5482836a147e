//! Embeds the eBPF object when `cargo xtask build-ebpf` has produced one that
//! matches the current sources.
//!
//! Without one, `lb` still builds (the splice fallback must never need the
//! eBPF toolchain); XDP mode then asks for `--bpf-object` or a rebuild. A
//! stale object is never embedded.

#[path = "../build-support/fingerprint.rs"]
mod fingerprint;

use std::{fs, path::Path};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let expected = fingerprint::source_fingerprint(&root).expect("fingerprint the eBPF sources");
    for path in fingerprint::inputs(&root).expect("list the eBPF sources") {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    println!("cargo:rustc-env=LB_EXPECTED_BUILD_ID={expected}");
    println!("cargo::rustc-check-cfg=cfg(lb_embedded_object)");

    // Watch the directory rather than the file: a missing file would make
    // cargo rerun this script, and rebuild lb, on every build.
    let dir = root.join("target/bpf");
    fs::create_dir_all(&dir).expect("create target/bpf");
    println!("cargo:rerun-if-changed={}", dir.display());

    let out = Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("lb-ebpf.o");
    let stamp = format!("LB_BUILD_ID={expected}");
    match fs::read(dir.join("lb-ebpf.o")) {
        Ok(data) if data.windows(stamp.len()).any(|w| w == stamp.as_bytes()) => {
            fs::write(&out, data).expect("copy the eBPF object");
            println!("cargo:rustc-cfg=lb_embedded_object");
            println!("cargo:rustc-env=LB_OBJECT_STATUS=embedded eBPF object {expected}");
        }
        Ok(_) => {
            println!(
                "cargo:warning=target/bpf/lb-ebpf.o is stale (built from other sources); \
                 not embedding it. Run `cargo xtask build-ebpf --release`, then rebuild."
            );
            fs::write(&out, b"").expect("write placeholder");
            println!("cargo:rustc-env=LB_OBJECT_STATUS=no eBPF object (the built one was stale)");
        }
        Err(_) => {
            fs::write(&out, b"").expect("write placeholder");
            println!("cargo:rustc-env=LB_OBJECT_STATUS=no eBPF object");
        }
    }
}
