//! Stamps the object with the fingerprint of the sources it is built from, so
//! the agent can refuse an object that does not match its own sources.

#[path = "../build-support/fingerprint.rs"]
mod fingerprint;

fn main() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let id = fingerprint::source_fingerprint(&root).expect("fingerprint the eBPF sources");
    for path in fingerprint::inputs(&root).expect("list the eBPF sources") {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    println!("cargo:rustc-env=LB_BUILD_ID={id}");
}
