//! Defaults for every optional setting, and the limits validation enforces.
//!
//! `config/example.toml` documents each of these; keep the two in step (a test
//! parses the example, and the example states these values).
//!
//! Health defaults favour fast failover: a dead backend is out of rotation
//! after `DEFAULT_FALL` missed probes, i.e. within about
//! `DEFAULT_FALL × DEFAULT_INTERVAL` (100 ms).

use std::time::Duration;

/// Unix socket of the control interface.
pub const CONTROL_SOCKET: &str = "/run/lb/control.sock";
/// Where the datapath is pinned (a directory of the BPF file system).
pub const PIN_DIR: &str = "/sys/fs/bpf/lb";
/// Maglev table size per service; prime, and large enough for good balance up
/// to several hundred backends.
pub const TABLE_SIZE: u32 = lb_common::abi::DEFAULT_TABLE_SIZE;
/// Time between health probes.
pub const INTERVAL: Duration = Duration::from_millis(50);
/// Time a probe may take; below `INTERVAL` so probes never overlap.
pub const TIMEOUT: Duration = Duration::from_millis(40);
/// Consecutive successes before a backend comes back; higher than `FALL` so a
/// flapping backend is not re-admitted on one lucky probe.
pub const RISE: u32 = 3;
/// Consecutive failures before a backend is taken out.
pub const FALL: u32 = 2;
/// HTTP probe path.
pub const HTTP_PATH: &str = "/";
/// HTTP status that means healthy.
pub const HTTP_EXPECT_STATUS: u16 = 200;
/// Backend weight.
pub const WEIGHT: u32 = 1;
/// Passive signal: a forwarded SYN the backend has not answered after this
/// long counts as unanswered. A few round trips of a LAN, well below the
/// client's own SYN retransmission (1 s).
pub const SYN_TIMEOUT: Duration = Duration::from_millis(25);
/// Passive signal: this many unanswered SYNs in a row take the backend down
/// before its next probe; more than one so a single lost SYN does not.
pub const SYN_UNANSWERED: u32 = 3;

/// Shortest `health.interval` and `timeout` and splice connect and idle
/// timeout. lb's timers (tokio's) tick once a millisecond and round a
/// shorter wait up to the next tick, so "2ns" would neither be what runs
/// nor mean more than zero does, which is refused as a busy loop or a
/// timeout nothing could meet.
pub const MIN_TIMER: Duration = Duration::from_millis(1);

/// Largest backend weight. Weights only set relative shares of the Maglev
/// table, so a bigger range buys nothing and risks overflow when summed.
pub const MAX_WEIGHT: u32 = 65535;
/// Longest service name; names appear in CLI commands and metric labels.
pub const MAX_NAME_LEN: usize = 64;
/// Longest interface name the kernel accepts (`IFNAMSIZ` minus the NUL).
pub const MAX_IFNAME_LEN: usize = 15;
/// Balance is good when the table has at least this many slots per backend
/// (the Maglev paper's guidance); smaller tables are allowed but noted.
pub const SLOTS_PER_BACKEND: u64 = 100;
/// Largest Maglev table size: the first prime from `SLOTS_PER_BACKEND` slots
/// for each of the `MAX_BACKENDS` (16384) backends the datapath holds over
/// all services, so every service the datapath can hold can balance well;
/// a larger table buys no balance, only cost. That cost is per service and
/// grows faster than the table: the table is rebuilt, with the agent's
/// state locked, on every health change (release build, 2-core VM: 1.2 ms
/// at 65537 slots, 50 ms at this size, 400 ms at 4.2 M, 3 s at 16.8 M), and
/// it takes 2 x 8 bytes a slot of kernel memory (26 MB here). Even
/// `MAX_SERVICES` tables this size fit a `u32`-indexed Maglev map.
pub const MAX_TABLE_SIZE: u32 = 1_638_431;

/// Splice mode: connections relayed at once per TCP service. Each costs two
/// sockets and up to two pipes (six descriptors at most); `lb run` raises its descriptor
/// limit to fit.
pub const MAX_CONNECTIONS: u32 = 16384;
/// Splice mode: time to connect to one backend before trying the next.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Splice mode: backends tried per connection.
pub const CONNECT_TRIES: u32 = 3;
/// Splice mode: a TCP connection idle this long is closed (HAProxy's common
/// `timeout client/server` setting is of this order).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Splice mode: a UDP session idle this long is dropped (Katran's UDP flow
/// lifetime).
pub const UDP_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Splice mode: how long open connections may finish on shutdown; below
/// the unit file's TimeoutStopSec so systemd never has to kill lb.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(20);

/// XDP flow table: an established TCP flow idle this long is forgotten
/// (the same order as the splice proxy's `IDLE_TIMEOUT`).
pub const FLOW_TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// XDP flow table: a TCP flow after FIN or RST, or whose SYN was never
/// answered, is forgotten after this much idle time (long enough for the
/// last ACKs and retransmissions, short enough to free the entry soon).
pub const FLOW_TCP_CLOSING_TIMEOUT: Duration = Duration::from_secs(10);
/// XDP flow table: a UDP flow idle this long is over (Katran's UDP flow
/// lifetime, as `UDP_IDLE_TIMEOUT` is for splice mode).
pub const FLOW_UDP_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// `flows.flood_threshold`: new flows a second above which flood mode
/// turns on. Well above the few thousand a second of a busy service's
/// ordinary traffic, well below what a single flooding host sends.
pub const FLOOD_THRESHOLD: u32 = 20_000;

/// DNS backends: the longest time between two resolutions of a name (a
/// shorter TTL in the answer brings the next one forward).
pub const DNS_INTERVAL: Duration = Duration::from_secs(5);
/// DNS backends: the shortest time between two resolutions, whatever the
/// TTL says (dnsmasq and CoreDNS answer with TTL 0 or a few seconds; a
/// resolution per answer would hammer them).
pub const DNS_MIN_INTERVAL: Duration = Duration::from_secs(1);
/// DNS backends: the longest `dns.interval` accepted.
pub const DNS_MAX_INTERVAL: Duration = Duration::from_secs(3600);
/// DNS backends: the port of a `dns.resolver` written without one.
pub const DNS_PORT: u16 = 53;
