//! What kind of interface a name is, as far as choosing a hook goes: its
//! driver, asked of the kernel with the `ETHTOOL_GDRVINFO` ioctl (what
//! `ethtool -i` prints), and every interface of the namespace with a peer
//! device (veth, netkit), which the tc hook forwards into with
//! `bpf_redirect_peer`.

use std::{io, os::fd::AsRawFd};

use nix::libc;

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GDRVINFO: u32 = 3;

/// `struct ethtool_drvinfo` (linux/ethtool.h).
#[repr(C)]
struct DrvInfo {
    cmd: u32,
    driver: [u8; 32],
    version: [u8; 32],
    fw_version: [u8; 32],
    bus_info: [u8; 32],
    erom_version: [u8; 32],
    reserved2: [u8; 12],
    n_priv_flags: u32,
    n_stats: u32,
    testinfo_len: u32,
    eedump_len: u32,
    regdump_len: u32,
}

/// `struct ifreq` with its data pointer member.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    data: *mut u8,
    _pad: [u8; 16],
}

/// Runs the ethtool command that starts the buffer `data` on interface
/// `name`.
///
/// # Safety
/// `data` must be valid for the whole reply the command writes.
unsafe fn ethtool(name: &str, data: *mut u8) -> io::Result<()> {
    let bytes = name.as_bytes();
    if bytes.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "interface name too long"));
    }
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    let mut req = IfReq { name: [0; libc::IFNAMSIZ], data, _pad: [0; 16] };
    req.name[..bytes.len()].copy_from_slice(bytes);
    // SAFETY: `req` is a valid ifreq; what the kernel writes through
    // `req.data` fits, by the caller's promise.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL as _, &mut req) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// The driver of interface `name` ("veth", "netkit", "mlx5_core", ...).
pub fn driver(name: &str) -> io::Result<String> {
    // SAFETY: all-zero is a valid value of this plain C struct.
    let mut info: DrvInfo = unsafe { std::mem::zeroed() };
    info.cmd = ETHTOOL_GDRVINFO;
    // SAFETY: ETHTOOL_GDRVINFO writes one `struct ethtool_drvinfo`.
    unsafe { ethtool(name, (&raw mut info).cast())? };
    let end = info.driver.iter().position(|&b| b == 0).unwrap_or(info.driver.len());
    Ok(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}

const ETHTOOL_GSSET_INFO: u32 = 0x37;
const ETHTOOL_GSTRINGS: u32 = 0x1b;
const ETHTOOL_GSTATS: u32 = 0x1d;
const ETH_SS_STATS: u32 = 1;
const ETH_GSTRING_LEN: usize = 32;

/// The driver's own statistics of interface `name` (what `ethtool -S`
/// prints), by name.
pub fn driver_stats(name: &str) -> io::Result<Vec<(String, u64)>> {
    // struct ethtool_sset_info: cmd, reserved, sset_mask (u64), then one
    // u32 per set in the mask.
    let mut info = [0u32; 5];
    info[0] = ETHTOOL_GSSET_INFO;
    info[2] = 1 << ETH_SS_STATS;
    // SAFETY: the reply is the 16-byte header and one u32: 20 bytes.
    unsafe { ethtool(name, info.as_mut_ptr().cast())? };
    let n = if info[2] & (1 << ETH_SS_STATS) != 0 { info[4] as usize } else { 0 };
    if n == 0 {
        return Ok(Vec::new());
    }
    // struct ethtool_gstrings: cmd, string_set, len, then len strings.
    let mut strings = vec![0u8; 12 + n * ETH_GSTRING_LEN];
    strings[..4].copy_from_slice(&ETHTOOL_GSTRINGS.to_ne_bytes());
    strings[4..8].copy_from_slice(&ETH_SS_STATS.to_ne_bytes());
    strings[8..12].copy_from_slice(&(n as u32).to_ne_bytes());
    // SAFETY: at most `n` strings of ETH_GSTRING_LEN after the header.
    unsafe { ethtool(name, strings.as_mut_ptr())? };
    // struct ethtool_stats: cmd, n_stats, then n u64 (8-aligned).
    let mut stats = vec![0u64; 1 + n];
    stats[0] = u64::from(ETHTOOL_GSTATS) | ((n as u64) << 32);
    // SAFETY: at most `n` u64 after the 8-byte header.
    unsafe { ethtool(name, stats.as_mut_ptr().cast())? };
    Ok(strings[12..]
        .chunks(ETH_GSTRING_LEN)
        .zip(&stats[1..])
        .map(|(s, &v)| {
            let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
            (String::from_utf8_lossy(&s[..end]).into_owned(), v)
        })
        .collect())
}

/// Whether driver `name` makes a device with a peer in another namespace.
pub fn has_peer(driver: &str) -> bool {
    matches!(driver, "veth" | "netkit")
}

/// The index of every interface of this thread's network namespace that
/// has a peer device (asked of the kernel, not of /sys, which shows the
/// namespace it was mounted in).
pub fn peer_devices() -> io::Result<Vec<u32>> {
    let mut out: Vec<u32> = nix::net::if_::if_nameindex()
        .map_err(io::Error::from)?
        .iter()
        .filter(|i| i.name().to_str().is_ok_and(|n| driver(n).is_ok_and(|d| has_peer(&d))))
        .map(|i| i.index())
        .collect();
    out.sort_unstable();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_stats_are_read_by_name() {
        // In a network namespace of this thread's own, gone with it.
        let got = std::thread::spawn(|| {
            if nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).is_err() {
                return None;
            }
            let made = std::process::Command::new("ip")
                .args(["link", "add", "va", "type", "veth", "peer", "name", "vb"])
                .status();
            assert!(made.is_ok_and(|s| s.success()), "ip link add in a new namespace");
            Some((driver("va"), driver_stats("va"), peer_devices()))
        })
        .join()
        .expect("the test thread");
        let Some((driver, stats, peers)) = got else {
            eprintln!("skipped: no CAP_SYS_ADMIN for a network namespace");
            return;
        };
        assert_eq!(driver.expect("driver"), "veth");
        let stats = stats.expect("ethtool stats of a veth");
        assert!(stats.iter().any(|(n, _)| n.contains("xdp_xmit_err")), "{stats:?}");
        assert_eq!(peers.expect("peer devices").len(), 2, "va and vb, and not lo");
    }

    #[test]
    fn only_veth_and_netkit_have_peers_and_unknown_interfaces_have_no_driver() {
        for (driver, peer) in [("veth", true), ("netkit", true), ("mlx5_core", false), ("", false)]
        {
            assert_eq!(has_peer(driver), peer, "{driver:?}");
        }
        // `lo` answers no driver query at all (EOPNOTSUPP), like a missing
        // interface: neither is taken for a peer device.
        assert!(driver("no-such-if-x").is_err());
    }
}
