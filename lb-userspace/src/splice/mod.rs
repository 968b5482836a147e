//! The userspace fallback datapath: a TCP/UDP proxy serving the same config
//! where XDP cannot run. Built so far: the splice(2) relay (`relay`), the
//! backend choice shared with XDP (`pick`) and the TCP frontend (`tcp`); not
//! yet wired into `lb run --mode splice`.

pub mod forwarder;
pub mod pick;
pub mod relay;
pub mod tcp;
pub mod udp;
