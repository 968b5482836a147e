//! The userspace fallback datapath: a TCP/UDP proxy serving the same config
//! where XDP cannot run, programmed by the agent like the XDP datapath
//! (`forwarder`). TCP is served by one thread per CPU (`cores`), each
//! accepting from the VIP's one listener (`bind`). TCP bulk moves with splice(2), small messages are copied
//! (`relay`); backends are chosen exactly as XDP would (`pick`); PROXY
//! protocol v2 tells backends the client (`proxy_v2`); source lists and
//! new-flow limits as the datapath applies them (`sources`); open connections are
//! counted for graceful shutdown (`inflight`); UDP moves in batches (`mmsg`);
//! descriptors are taken from a budget below the open-file limit (`budget`).

pub mod bind;
pub mod budget;
pub mod cores;
pub mod forwarder;
pub mod inflight;
pub mod mmsg;
pub mod pick;
pub mod proxy_v2;
pub mod relay;
pub mod sources;
pub mod tcp;
pub mod udp;
