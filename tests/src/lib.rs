//! Support for lb's integration tests.
//!
//! - [`packet`]: builds frames byte by byte with checksums computed from
//!   scratch, so golden expectations never reuse the datapath's own code.
//! - [`bird`]: BIRD 2 exporting lb's announced routes by BGP, and a router
//!   learning them.
//! - [`bulk`]: bulk TCP transfers checked end to end, against a deadline.
//! - [`browser`]: headless Chromium in a namespace (DOM dumps, screenshots).
//! - [`decap`]: the decapsulating program (`lb decap`) and IP-in-IP frames.
//! - [`dnsmasq`]: a real DNS server whose records a test changes.
//! - [`fixture`]: the golden-packet namespace and BPF_PROG_TEST_RUN.
//! - [`netns`]: network namespaces with unique names, removed on drop.
//! - [`flood`]: a bounded flood of new flows from a raw socket.
//! - [`icmp`]: ping, ICMP errors read off a raw socket, path-MTU options.
//! - [`inproc`]: backend servers on the test's own threads.
//! - [`stream`]: digests and block streams for transfers checked end to end.
//! - [`mode`]: XDP or splice, and what differs between them end to end.
//! - [`ping`]: ICMP echo through a ping socket, duplicates counted.
//! - [`predict`]: the backend a flow must reach, from the userspace plan.
//! - [`router`]: the topology plus a router with a 1280-byte link beyond it.
//! - [`scale_out`]: a client, an ECMP router, three lb hosts and a backend LAN.
//! - [`under_load`]: connections kept asking and new ones started, timed.
//! - [`udpgen`]: a small-packet generator (tc clones), a dropping sink, and
//!   loading a program from its instructions (also for [`xdp_pass`]).
//! - [`topology`]: client, balancer and backend namespaces for end-to-end tests.
//! - [`xdp_pass`]: an XDP_PASS program for the far end of an XDP-mode veth.
pub mod agent;
pub mod bird;
pub mod browser;
pub mod bulk;
pub mod client;
pub mod decap;
pub mod dnsmasq;
pub mod fixture;
pub mod flood;
pub mod icmp;
pub mod inproc;
pub mod mode;
pub mod netns;
pub mod packet;
pub mod ping;
pub mod predict;
pub mod router;
pub mod scale_out;
pub mod stream;
pub mod topology;
pub mod udpgen;
pub mod under_load;
pub mod xdp_pass;
