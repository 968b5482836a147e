//! The userspace fallback datapath: a TCP/UDP proxy serving the same config
//! where XDP cannot run. (Being built: the splice(2) relay first.)

pub mod relay;
