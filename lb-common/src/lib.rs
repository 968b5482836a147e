//! Types shared by the `lb` XDP program and its userspace agent, and the pure
//! logic both sides must agree on.
//!
//! - [`abi`]: the key and value layout of every BPF map. These structs are the
//!   only definition of that layout; kernel and userspace both use them.
//! - [`challenge`]: the SYN challenge of flood mode.
//! - [`csum`]: incremental checksum updates for rewritten headers.
//! - [`encap`]: the outer header of direct server return by IP-in-IP.
//! - [`icmp`]: the ICMP errors the datapath answers with itself.
//! - [`hash`]: the flow hash that picks a Maglev slot. XDP mode and the splice
//!   fallback call the same function, so both pick the same backend for a flow.
//! - [`parse`]: Ethernet/VLAN/IPv4/IPv6/TCP/UDP header parsing, generic over a
//!   bounds-checked packet view so the XDP program and host tests share it.
//! - [`maglev`] (feature `alloc`): the Maglev lookup-table builder.
//!
//! The crate is `no_std` so the eBPF program can use it. The `user` feature
//! adds `aya::Pod` impls for the map types.
#![no_std]
#![deny(missing_docs)]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod abi;
pub mod challenge;
pub mod csum;
pub mod encap;
pub mod hash;
pub mod icmp;
pub mod iphdr;
#[cfg(feature = "alloc")]
pub mod maglev;
pub mod parse;
pub mod prefilter;
