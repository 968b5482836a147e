//! What kind of interface a name is, as far as choosing a hook goes: its
//! driver, asked of the kernel with the `ETHTOOL_GDRVINFO` ioctl (what
//! `ethtool -i` prints), and every interface of the namespace with a peer
//! device (veth, netkit), which the tc hook forwards into with
//! `bpf_redirect_peer`.

use std::{fs, io, os::fd::AsRawFd};

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
    data: *mut DrvInfo,
    _pad: [u8; 16],
}

/// The driver of interface `name` ("veth", "netkit", "mlx5_core", ...).
pub fn driver(name: &str) -> io::Result<String> {
    let bytes = name.as_bytes();
    if bytes.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "interface name too long"));
    }
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    // SAFETY: all-zero is a valid value of this plain C struct.
    let mut info: DrvInfo = unsafe { std::mem::zeroed() };
    info.cmd = ETHTOOL_GDRVINFO;
    let mut req = IfReq { name: [0; libc::IFNAMSIZ], data: &mut info, _pad: [0; 16] };
    req.name[..bytes.len()].copy_from_slice(bytes);
    // SAFETY: SIOCETHTOOL with ETHTOOL_GDRVINFO writes at most
    // size_of::<DrvInfo>() bytes through `req.data`, which points at `info`,
    // alive for the call; `req` is a valid ifreq.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL as _, &mut req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let end = info.driver.iter().position(|&b| b == 0).unwrap_or(info.driver.len());
    Ok(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}

/// Whether driver `name` makes a device with a peer in another namespace.
pub fn has_peer(driver: &str) -> bool {
    matches!(driver, "veth" | "netkit")
}

/// The index of every interface of this namespace that has a peer device.
pub fn peer_devices() -> io::Result<Vec<u32>> {
    let mut out = Vec::new();
    for entry in fs::read_dir("/sys/class/net")? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if driver(name).is_ok_and(|d| has_peer(&d))
            && let Ok(index) = fs::read_to_string(format!("/sys/class/net/{name}/ifindex"))
            && let Ok(index) = index.trim().parse()
        {
            out.push(index);
        }
    }
    out.sort_unstable();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_no_peer_device() {
        // Every namespace has `lo`; its driver has no peer.
        let d = driver("lo");
        if let Ok(d) = &d {
            assert!(!has_peer(d), "{d}");
        }
        assert!(driver("no-such-if-x").is_err());
    }
}
