//! Floods. A bounded flood of new flows: UDP datagrams to one VIP, each from a
//! source address and port no other datagram of the flood uses, sent from a
//! raw socket inside a namespace. Every datagram is a new flow for the
//! balancer, so a flood of N puts N entries through its flow table.
//!
//! Sources are taken from [`FLOOD_NET`] (10.202.0.0/16, nobody's address):
//! replies to them find no route at the balancer and end there.
//!
//! And a spoofed SYN flood by hping3 ([`SynFlood`]), started and stopped
//! by the caller.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    time::{Duration, Instant},
};

/// The network flood sources come from (addresses `10.202.x.y`).
pub const FLOOD_NET: [u8; 2] = [10, 202];

/// What a flood did.
#[derive(Debug, Clone, Copy)]
pub struct Flooded {
    /// Datagrams sent (each from its own source address and port).
    pub sent: u64,
    /// How long sending took.
    pub took: Duration,
}

/// Sends `count` datagrams to `vip` from namespace `ns`, one thread per CPU
/// (each pinned to its CPU, so every CPU's share of a per-CPU flow table
/// sees the flood), stopping early after `limit`.
pub fn udp_flows(ns: &str, vip: SocketAddrV4, count: u64, limit: Duration) -> Flooded {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let ns = ns.to_owned();
            std::thread::spawn(move || {
                let _inside = crate::netns::enter(&ns);
                let mut cpus = nix::sched::CpuSet::new();
                if cpus.set(t as usize).is_ok() {
                    // Best effort: unpinned, the flood still floods.
                    let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &cpus);
                }
                let mine = (t..count).step_by(threads as usize);
                send_from_raw_socket(vip, mine, start + limit)
            })
        })
        .collect();
    let sent = handles.into_iter().map(|h| h.join().expect("flood thread")).sum();
    Flooded { sent, took: start.elapsed() }
}

/// Sends datagram `j` of the flood for each `j` of `indices` (until
/// `deadline`); returns how many were sent.
fn send_from_raw_socket(
    vip: SocketAddrV4,
    indices: impl Iterator<Item = u64>,
    deadline: Instant,
) -> u64 {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    // IPPROTO_RAW: the datagram carries its own IP header (IP_HDRINCL); the
    // kernel fills in the total length, the identification and the header
    // checksum, and routes it by its destination.
    let sock = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(255))).expect("raw socket");
    let dst = SockAddr::from(vip);
    let mut packet = [0u8; 30];
    packet[0] = 0x45; // IPv4, 20-byte header
    packet[8] = 64; // TTL
    packet[9] = 17; // UDP
    packet[16..20].copy_from_slice(&vip.ip().octets());
    packet[22..24].copy_from_slice(&vip.port().to_be_bytes());
    packet[24..26].copy_from_slice(&10u16.to_be_bytes()); // UDP length; checksum 0: none
    packet[28..30].copy_from_slice(b"hi");
    let mut sent = 0;
    for j in indices {
        if sent % 1024 == 0 && Instant::now() >= deadline {
            break;
        }
        let (src, port) = source(j);
        packet[12..16].copy_from_slice(&src.octets());
        packet[20..22].copy_from_slice(&port.to_be_bytes());
        // A full queue is a lost datagram, not an error of the flood.
        if sock.send_to(&packet, &dst).is_ok() {
            sent += 1;
        }
    }
    sent
}

/// The source of datagram `j`: distinct for every `j` below 2^16 × 64511.
pub fn source(j: u64) -> (Ipv4Addr, u16) {
    let host = (j & 0xffff) as u16;
    let [hi, lo] = host.to_be_bytes();
    let port = 1024 + (j >> 16) as u16;
    (Ipv4Addr::new(FLOOD_NET[0], FLOOD_NET[1], hi, lo), port)
}

/// A spoofed TCP SYN flood (`hping3 --flood -S --rand-source`) from a
/// namespace at one VIP port, until [`SynFlood::stop`] or drop.
///
/// hping3 runs in a process group of its own (`ip netns exec` execs it in
/// place, so the group is hping3's), and stopping kills the whole group at
/// once (SIGKILL): hping3 was seen to go on flooding for seconds after a
/// SIGINT, which would have moved the flood's end. What it sent is
/// counted at the interfaces, not from its own statistics.
#[derive(Debug)]
pub struct SynFlood {
    child: Option<std::process::Child>,
}

impl SynFlood {
    /// Starts flooding `vip`:`port` from namespace `ns` with SYNs.
    pub fn start(ns: &str, vip: Ipv4Addr, port: u16) -> SynFlood {
        Self::with_flag(ns, vip, port, "-S")
    }

    /// As [`SynFlood::start`], with segments of hping3's TCP flag option
    /// `flag` (`-S` SYN, `-A` ACK, ...).
    pub fn with_flag(ns: &str, vip: Ipv4Addr, port: u16, flag: &str) -> SynFlood {
        use std::os::unix::process::CommandExt;
        let vip = vip.to_string();
        let port = port.to_string();
        let child = std::process::Command::new("ip")
            .args(["netns", "exec", ns, "hping3", "--flood", flag, "-p", &port, "--rand-source"])
            .arg(&vip)
            .process_group(0)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting hping3 in {ns} (is hping3 installed?): {e}"));
        SynFlood { child: Some(child) }
    }

    /// Stops the flood: SIGKILL to its process group, then reaps it.
    pub fn stop(mut self) {
        if let Some(child) = self.child.take() {
            kill_group(child);
        }
    }
}

impl Drop for SynFlood {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            kill_group(child);
        }
    }
}

/// Kills `child`'s process group and reaps it.
fn kill_group(mut child: std::process::Child) {
    use nix::{sys::signal, unistd::Pid};
    let _ = signal::killpg(Pid::from_raw(child.id() as i32), signal::Signal::SIGKILL);
    let _ = child.wait();
}
