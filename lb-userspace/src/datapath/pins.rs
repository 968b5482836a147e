//! Where a running datapath lives between agents: pins in the BPF file
//! system, so that a restarted or upgraded agent takes it over while
//! packets keep flowing.
//!
//! ```text
//! <pin_dir>/maps/LB_*        every map (flow table included: flows survive)
//! <pin_dir>/links/<iface>    the XDP link of an interface at the XDP hook
//! <pin_dir>/links/tc-<iface> the tcx link of an interface at the tc hook
//! <pin_dir>/netlink/<iface>:<program>  an interface given a netlink tc
//!                            filter (kernels without tcx; an empty
//!                            directory: see `tc_netlink`)
//! ```
//! The agent's own state (the plan the maps hold) cannot live in bpffs,
//! which holds only BPF objects; it is a JSON file beside the control
//! socket.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use super::tc_netlink::{self, Slot};

/// The BPF file system's mount point and magic number.
const BPFFS: &str = "/sys/fs/bpf";
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// The pin layout under one directory.
#[derive(Debug, Clone)]
pub struct Pins {
    dir: PathBuf,
}

impl Pins {
    /// Pins under `dir` (a directory of the BPF file system).
    pub fn new(dir: &Path) -> Self {
        Self { dir: dir.to_path_buf() }
    }

    /// Creates the pin directories, mounting the BPF file system at
    /// /sys/fs/bpf first if the directory is under it and it is not there.
    /// A directory elsewhere must already be on a BPF file system.
    ///
    /// Pins outlive the agent only if that file system outlives it: one
    /// mounted in the agent's own mount namespace (a service with private
    /// mounts, `ip netns exec`) goes away with it. systemd mounts
    /// /sys/fs/bpf on the host at boot.
    pub fn prepare(&self) -> io::Result<()> {
        if self.dir.starts_with(BPFFS) && !is_bpffs(Path::new(BPFFS)) {
            fs::create_dir_all(BPFFS)?;
            nix::mount::mount(
                Some("bpf"),
                BPFFS,
                Some("bpf"),
                nix::mount::MsFlags::empty(),
                None::<&str>,
            )
            .map_err(io::Error::from)?;
            tracing::info!("mounted the BPF file system at {BPFFS}");
        }
        let parent = self.dir.parent().unwrap_or(&self.dir);
        if !is_bpffs(parent) {
            return Err(io::Error::other(format!(
                "{} is not on a BPF file system; mount one (mount -t bpf bpf {}) or use {BPFFS}/...",
                self.dir.display(),
                parent.display()
            )));
        }
        fs::create_dir_all(self.dir.join("maps"))?;
        fs::create_dir_all(self.dir.join("links"))
    }

    /// Where map `name` is pinned.
    pub fn map(&self, name: &str) -> PathBuf {
        self.dir.join("maps").join(name)
    }

    /// Where the XDP link of `iface` is pinned.
    pub fn link(&self, iface: &str) -> PathBuf {
        self.dir.join("links").join(iface)
    }

    /// Where the tc link of `iface` is pinned.
    pub fn tc_link(&self, iface: &str) -> PathBuf {
        self.dir.join("links").join(format!("tc-{iface}"))
    }

    /// Records that `iface` has `slot`'s netlink tc filter (which no pin
    /// holds), so [`Pins::remove`] deletes it.
    pub fn mark_netlink(&self, iface: &str, slot: Slot) -> io::Result<()> {
        fs::create_dir_all(self.netlink_mark(iface, slot))
    }

    /// Forgets [`Pins::mark_netlink`] (the filter was deleted).
    pub fn unmark_netlink(&self, iface: &str, slot: Slot) {
        let _ = fs::remove_dir(self.netlink_mark(iface, slot));
    }

    fn netlink_mark(&self, iface: &str, slot: Slot) -> PathBuf {
        // ':' is in no interface name (the kernel refuses it there).
        self.dir.join("netlink").join(format!("{iface}:{}", slot.program))
    }

    /// Whether a datapath is pinned here.
    pub fn exist(&self) -> bool {
        fs::read_dir(self.dir.join("maps")).is_ok_and(|mut d| d.next().is_some())
    }

    /// Removes every pin: each link is detached from its hook first, then
    /// the pins go; maps are freed once no program uses them.
    ///
    /// Unpinning alone would leave the detach to the kernel: a link's last
    /// reference is put from a workqueue, and not at all while a process
    /// still holds it, so an interface could keep its program a moment
    /// after `lb stop` returned (seen once in the e2e stop test).
    pub fn remove(&self) -> io::Result<()> {
        if let Ok(links) = fs::read_dir(self.dir.join("links")) {
            for link in links.flatten() {
                if let Err(e) = detach_now(&link.path()) {
                    tracing::warn!("detaching the link pinned at {}: {e}", link.path().display());
                }
            }
        }
        self.remove_netlink_filters();
        match fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Deletes the netlink tc filters [`Pins::mark_netlink`] recorded.
    fn remove_netlink_filters(&self) {
        let Ok(marks) = fs::read_dir(self.dir.join("netlink")) else { return };
        for mark in marks.flatten() {
            let name = mark.file_name().to_string_lossy().into_owned();
            let Some((iface, slot)) =
                name.split_once(':').and_then(|(i, p)| Some((i, Slot::of(p)?)))
            else {
                tracing::warn!("{}: not a netlink filter record; skipped", mark.path().display());
                continue;
            };
            match tc_netlink::detach(iface, slot) {
                Ok(true) => tracing::info!(
                    interface = iface,
                    "removed the tc filter {} ({})",
                    slot.program,
                    slot.describe()
                ),
                Ok(false) => {}
                Err(e) => tracing::warn!(
                    interface = iface,
                    "removing the tc filter {} ({}): {e}",
                    slot.program,
                    slot.describe()
                ),
            }
        }
    }

    /// Removes the directories `prepare` made if nothing was pinned in
    /// them (a start that failed before pinning); a pinned datapath, even
    /// one left by another agent, is never touched.
    pub fn remove_if_empty(&self) {
        for sub in ["links", "maps", "netlink"] {
            let _ = fs::remove_dir(self.dir.join(sub));
        }
        let _ = fs::remove_dir(&self.dir);
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Detaches the BPF link pinned at `path` from its hook now
/// (`BPF_LINK_DETACH`; aya only detaches by dropping the last reference).
fn detach_now(path: &Path) -> io::Result<()> {
    use std::os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    };

    use super::sys::{BPF_LINK_DETACH, BPF_OBJ_GET, bpf};

    /// The head of `union bpf_attr` for BPF_OBJ_GET.
    #[repr(C)]
    struct ObjGet {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    /// The head of `union bpf_attr` for BPF_LINK_DETACH.
    #[repr(C)]
    struct LinkDetach {
        link_fd: u32,
    }

    let name = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let mut get = ObjGet { pathname: name.as_ptr() as u64, bpf_fd: 0, file_flags: 0 };
    let fd = bpf(BPF_OBJ_GET, &mut get)?;
    // SAFETY: the kernel just returned this descriptor, owned by no one else.
    let link = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    bpf(BPF_LINK_DETACH, &mut LinkDetach { link_fd: link.as_raw_fd() as u32 }).map(drop)
}

/// The agent's state file for a control socket path.
pub fn state_file(control_socket: &Path) -> PathBuf {
    control_socket.with_extension("state.json")
}

/// Whether `path` is on a BPF file system.
pub fn is_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type().0 == BPF_FS_MAGIC)
}
