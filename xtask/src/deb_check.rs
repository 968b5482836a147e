//! `cargo xtask deb --check`: installs the package and removes it again in a
//! throwaway copy of this host, never on the host itself: a private mount
//! namespace, an overlay over `/` whose writes go to a tmpfs, and a chroot
//! into it. Needs root on Debian; nothing of it outlives the check.

use std::{path::Path, process::Command};

use anyhow::{Context, Result, bail};

use crate::cmd;

/// What runs inside the copy, as root; `set -e` and explicit checks, each
/// failure saying what it expected.
const SCRIPT: &str = r#"
set -eu
fail() { echo "deb check: $*" >&2; exit 1; }
dpkg -i /tmp/lb.deb
lb --version
lb check --config /etc/lb/lb.toml | grep -q 'config OK' || fail "lb check of /etc/lb/lb.toml"
[ "$(systemctl is-enabled lb.service)" = enabled ] || fail "lb.service is not enabled"
[ -e /etc/systemd/system/multi-user.target.wants/lb.service ] || fail "no multi-user.target.wants link"
[ ! -e /run/lb/control.sock ] || fail "the install started an agent"
grep -q '^ExecStart=/usr/bin/lb run ' /lib/systemd/system/lb.service || fail "unit names another binary"
grep -q '^252[[:space:]]lb$' /etc/iproute2/rt_protos.d/lb.conf || fail "no name for route protocol 252"
grep -q '^ExecStart=/usr/bin/lb decap --config ' /lib/systemd/system/lb-decap.service || fail "the decap unit names another binary"
[ "$(systemctl is-enabled lb-decap.service 2>/dev/null || true)" != enabled ] || fail "lb-decap.service is enabled"
lb check --config /usr/share/lb/backend.toml | grep -q 'config OK' || fail "lb check of the backend example"
[ -e /usr/share/lb/bird.conf.example ] && [ -e /usr/share/lb/frr.conf.example ] || fail "no BIRD/FRR examples"
echo "deb check: installed, lb check passes, unit enabled and not started"
dpkg -r lb
[ ! -e /usr/bin/lb ] || fail "dpkg -r left /usr/bin/lb"
[ ! -e /lib/systemd/system/lb.service ] || fail "dpkg -r left the unit"
[ ! -e /lib/systemd/system/lb-decap.service ] || fail "dpkg -r left the decap unit"
[ ! -e /etc/systemd/system/multi-user.target.wants/lb.service ] || fail "dpkg -r left the unit enabled"
[ -e /etc/lb/lb.toml ] || fail "dpkg -r removed the conffile (only purge should)"
dpkg --purge lb
[ ! -e /etc/lb ] || fail "dpkg --purge left /etc/lb"
[ ! -e /etc/iproute2/rt_protos.d/lb.conf ] || fail "dpkg --purge left the route protocol name"
! dpkg -s lb >/dev/null 2>&1 || fail "dpkg still lists lb"
echo "deb check: removed and purged, nothing left"
"#;

/// Installs and removes `deb` in a throwaway copy of this host.
pub fn check(deb: &Path, scratch: &Path) -> Result<()> {
    if !crate::prereqs::is_root() {
        bail!("the package check needs root (a mount namespace and a chroot)");
    }
    let merged = scratch.join("merged");
    let upper = scratch.join("tmpfs");
    std::fs::create_dir_all(&merged)?;
    std::fs::create_dir_all(&upper)?;
    let deb = std::fs::canonicalize(deb).with_context(|| format!("{}", deb.display()))?;
    // The mounts live only in the unshared namespace: they vanish with it,
    // also when the script fails.
    let setup = format!(
        "set -e\n\
         mount -t tmpfs lb-deb-check {upper}\n\
         mkdir {upper}/u {upper}/w\n\
         mount -t overlay lb-deb-check -o lowerdir=/,upperdir={upper}/u,workdir={upper}/w {merged}\n\
         mount -t proc proc {merged}/proc\n\
         mount -t tmpfs tmpfs {merged}/run\n\
         mount -t tmpfs tmpfs {merged}/tmp\n\
         cp {deb} {merged}/tmp/lb.deb\n\
         exec chroot {merged} /bin/sh -c \"$0\"",
        upper = upper.display(),
        merged = merged.display(),
        deb = deb.display(),
    );
    let result = cmd::run(
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--fork", "/bin/sh", "-c"])
            .arg(&setup)
            .arg(SCRIPT),
    );
    let _ = std::fs::remove_dir_all(scratch);
    result.context("the package's install/remove check failed; see its output above")
}
