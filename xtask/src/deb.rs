//! `cargo xtask deb`: a Debian package of `lb`, built with Debian's own
//! `dpkg-deb` and `dpkg-shlibdeps` (no extra tool to install): the binary
//! (release build, eBPF object embedded), the systemd unit, the example
//! config as `/etc/lb/lb.toml` (a conffile) and the Grafana dashboard.
//! Installing enables the unit and does not start it: the config is to be
//! edited first.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::{cmd, deb_check, ebpf, toolchain};

/// Where the packaged binary is installed (the unit names it).
const BIN: &str = "/usr/bin/lb";
/// Where the name of lb's route protocol goes (iproute2 reads every
/// `rt_protos.d/*.conf`).
const RT_PROTOS: &str = "etc/iproute2/rt_protos.d/lb.conf";

/// The maintainer scripts, each with the argument dpkg gives it.
const POSTINST: &str = r#"#!/bin/sh
# A first install enables lb.service for the next boot but never starts it:
# /etc/lb/lb.toml is the example config, to be edited first
# (`lb check --config /etc/lb/lb.toml`, then `systemctl start lb`). An upgrade
# restarts a running agent, which takes the pinned datapath over without
# interruption.
set -e
if [ "$1" = configure ]; then
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload
    fi
    if [ -z "$2" ]; then
        systemctl enable lb.service
    elif [ -d /run/systemd/system ]; then
        systemctl try-restart lb.service
    fi
fi
"#;

const PRERM: &str = r#"#!/bin/sh
# On removal (not upgrade) the datapath goes too: a pinned XDP program left
# without its agent would keep forwarding with nobody checking backends.
set -e
if [ "$1" = remove ]; then
    lb stop --config /etc/lb/lb.toml || echo "lb: lb stop failed; check /sys/fs/bpf/lb" >&2
    if [ -d /run/systemd/system ]; then
        systemctl stop lb.service || true
    fi
    systemctl disable lb.service || true
fi
"#;

const POSTRM: &str = r#"#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
fi
"#;

/// `cargo xtask deb [--check]`: builds the release binary and the package
/// in target/deb/, then, with `check`, installs and removes it in a
/// throwaway copy of this host.
pub fn run(root: &Path, check: bool) -> Result<()> {
    let tc = toolchain::ensure(root)?;
    ebpf::build(root, &tc, ebpf::Profile::Release)?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    cmd::run(Command::new(cargo).current_dir(root).args([
        "build",
        "--release",
        "-p",
        "lb-userspace",
        "--bin",
        "lb",
    ]))?;
    let out = root.join("target/deb");
    fs::create_dir_all(&out)?;
    let deb = build(root, &root.join("target/release/lb"), &out)?;
    println!("package: {}", deb.display());
    if check {
        deb_check::check(&deb, &out.join("check"))?;
    }
    Ok(())
}

/// Builds the package from `binary` into `out_dir`; returns its path.
pub fn build(root: &Path, binary: &Path, out_dir: &Path) -> Result<PathBuf> {
    let version = workspace_version(root)?;
    let arch = cmd::output(Command::new("dpkg").arg("--print-architecture"))
        .context("dpkg --print-architecture failed: is this Debian?")?;
    let arch = arch.trim();
    let stage = out_dir.join(format!("lb_{version}_{arch}"));
    if stage.exists() {
        fs::remove_dir_all(&stage).with_context(|| format!("clearing {}", stage.display()))?;
    }
    let unit =
        fs::read_to_string(root.join("deploy/lb.service")).context("reading deploy/lb.service")?;
    if !unit.contains("/usr/local/bin/lb ") {
        bail!("deploy/lb.service no longer names /usr/local/bin/lb; update xtask/src/deb.rs");
    }
    let unit = unit.replace("/usr/local/bin/lb ", &format!("{BIN} "));
    // The backend role's unit, installed but never enabled: a host is a
    // balancer or a direct-server-return backend, and the package cannot
    // tell which.
    let decap_unit = fs::read_to_string(root.join("deploy/lb-decap.service"))
        .context("reading deploy/lb-decap.service")?;
    if !decap_unit.contains("/usr/local/bin/lb ") {
        bail!("deploy/lb-decap.service no longer names /usr/local/bin/lb; update xtask/src/deb.rs");
    }
    let decap_unit = decap_unit.replace("/usr/local/bin/lb ", &format!("{BIN} "));
    let files: [(&str, Content, u32); 11] = [
        ("usr/bin/lb", Content::File(binary.to_owned()), 0o755),
        ("lib/systemd/system/lb.service", Content::Text(unit), 0o644),
        ("lib/systemd/system/lb-decap.service", Content::Text(decap_unit), 0o644),
        ("usr/share/lb/backend.toml", Content::File(root.join("config/backend.toml")), 0o644),
        (
            "usr/share/lb/bird.conf.example",
            Content::File(root.join("config/bird.conf.example")),
            0o644,
        ),
        (
            "usr/share/lb/frr.conf.example",
            Content::File(root.join("config/frr.conf.example")),
            0o644,
        ),
        ("etc/lb/lb.toml", Content::File(root.join("config/example.toml")), 0o644),
        // `ip route` shows lb's VIP routes as `proto lb` instead of `proto 252`.
        (RT_PROTOS, Content::File(root.join("deploy/iproute2/lb.conf")), 0o644),
        ("usr/share/doc/lb/README.md", Content::File(root.join("README.md")), 0o644),
        (
            "usr/share/lb/grafana-dashboard.json",
            Content::File(root.join("deploy/grafana-dashboard.json")),
            0o644,
        ),
        ("usr/share/doc/lb/copyright", Content::Text(copyright(root)?), 0o644),
    ];
    for (path, content, mode) in &files {
        let dest = stage.join(path);
        fs::create_dir_all(dest.parent().expect("a directory"))?;
        match content {
            Content::File(src) => {
                fs::copy(src, &dest).with_context(|| format!("copying {}", src.display()))?;
            }
            Content::Text(text) => fs::write(&dest, text)?,
        }
        fs::set_permissions(&dest, fs::Permissions::from_mode(*mode))?;
    }
    // Line tables are for local backtraces; the package ships without them.
    let packaged = stage.join("usr/bin/lb");
    cmd::run(Command::new("strip").arg("--strip-debug").arg(&packaged))?;
    let mut installed_bytes = 0;
    for (path, _, _) in &files {
        installed_bytes += fs::metadata(stage.join(path))?.len();
    }
    let control = stage.join("DEBIAN");
    fs::create_dir_all(&control)?;
    let depends = shlib_depends(binary, out_dir)?;
    fs::write(
        control.join("control"),
        format!(
            "Package: lb\nVersion: {version}\nArchitecture: {arch}\n\
             Maintainer: lb developers <lb@localhost>\nInstalled-Size: {}\n\
             Depends: {depends}\nSection: net\nPriority: optional\n\
             Description: Layer-4 TCP/UDP load balancer with an XDP fast path\n \
             lb balances TCP and UDP services across backends with Maglev hashing\n \
             in an XDP/eBPF program, with health checks, live reload and a\n \
             splice(2) userspace proxy where XDP cannot run.\n",
            installed_bytes.div_ceil(1024)
        ),
    )?;
    fs::write(control.join("conffiles"), format!("/etc/lb/lb.toml\n/{RT_PROTOS}\n"))?;
    for (name, text) in [("postinst", POSTINST), ("prerm", PRERM), ("postrm", POSTRM)] {
        let path = control.join(name);
        fs::write(&path, text)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
    }
    let deb = out_dir.join(format!("lb_{version}_{arch}.deb"));
    cmd::run(
        Command::new("dpkg-deb").args(["--root-owner-group", "--build"]).arg(&stage).arg(&deb),
    )?;
    Ok(deb)
}

/// What a packaged file holds.
enum Content {
    File(PathBuf),
    Text(String),
}

/// The libraries `binary` links, as Debian dependencies with versions
/// (`dpkg-shlibdeps`, which reads a `debian/control` in its directory).
fn shlib_depends(binary: &Path, out_dir: &Path) -> Result<String> {
    let dir = out_dir.join("shlibdeps");
    fs::create_dir_all(dir.join("debian"))?;
    fs::write(dir.join("debian/control"), "Source: lb\n\nPackage: lb\nArchitecture: any\n")?;
    let binary = fs::canonicalize(binary)?;
    let out = cmd::output(Command::new("dpkg-shlibdeps").arg("-O").arg(&binary).current_dir(&dir))
        .context("dpkg-shlibdeps failed (apt-get install dpkg-dev)")?;
    let depends = out
        .lines()
        .find_map(|l| l.strip_prefix("shlibs:Depends="))
        .context("dpkg-shlibdeps printed no shlibs:Depends")?;
    Ok(depends.trim().to_owned())
}

/// The workspace's `version = "..."`.
fn workspace_version(root: &Path) -> Result<String> {
    let manifest = fs::read_to_string(root.join("Cargo.toml"))?;
    manifest
        .lines()
        .find_map(|l| l.strip_prefix("version = \"")?.strip_suffix('"').map(str::to_owned))
        .context("no version = \"...\" in Cargo.toml")
}

fn copyright(root: &Path) -> Result<String> {
    let manifest = fs::read_to_string(root.join("Cargo.toml"))?;
    let license = manifest
        .lines()
        .find_map(|l| l.strip_prefix("license = \"")?.strip_suffix('"'))
        .context("no license = \"...\" in Cargo.toml")?;
    Ok(format!("lb\nLicense: {license}\n"))
}
