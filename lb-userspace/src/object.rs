//! eBPF object.
