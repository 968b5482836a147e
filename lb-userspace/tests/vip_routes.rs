//! The VIP routes' netlink requests against the real kernel, in a network
//! namespace of their own (a thread that unshared it). Needs root; skipped
//! without it.

use std::{collections::BTreeSet, net::IpAddr, process::Command};

use lb_userspace::{
    config::VipRoutes as Setting,
    routes::{PROTOCOL, VipRoutes},
};

/// Runs `f` on a thread in a new network namespace with lo up.
fn in_new_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return None;
    }
    let t = std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare");
        ip(&["link", "set", "lo", "up"]);
        f()
    });
    Some(t.join().expect("the namespace thread"))
}

/// `ip ARGS` (children inherit the calling thread's network namespace).
fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The destinations of `ip route show table local proto 252`, both families.
fn lb_routes() -> Vec<String> {
    let mut v = Vec::new();
    for fam in ["-4", "-6"] {
        let out = ip(&[fam, "route", "show", "table", "local", "proto", &PROTOCOL.to_string()]);
        for line in out.lines() {
            assert!(line.starts_with("local "), "{line}");
            assert!(line.contains("dev lo"), "{line}");
            v.push(line.split_whitespace().nth(1).expect("dst").to_owned());
        }
    }
    v.sort();
    v
}

fn set(addrs: &[&str]) -> BTreeSet<IpAddr> {
    addrs.iter().map(|a| a.parse().expect("address")).collect()
}

#[test]
fn routes_are_added_kept_in_step_and_removed() {
    in_new_netns(|| {
        let mut routes = VipRoutes::new(Setting::Local);
        let c = routes.sync(&set(&["10.201.0.100", "fd00:201::100"]), true).expect("sync");
        assert_eq!(c.added.len(), 2, "{c:?}");
        assert_eq!(lb_routes(), ["10.201.0.100", "fd00:201::100"]);
        // The kernel answers for it now: a plain bind works.
        std::net::UdpSocket::bind("10.201.0.100:0").expect("bind to a routed VIP");
        // A second agent (a takeover) finds them held: nothing added.
        let mut next = VipRoutes::new(Setting::Local);
        let c = next.sync(&set(&["10.201.0.100", "fd00:201::100"]), true).expect("sync");
        assert!(c.added.is_empty() && c.removed.is_empty(), "{c:?}");
        assert_eq!(next.held().len(), 2);
        // A reload: the new VIP added first, the old one removed after.
        let want = set(&["10.201.0.100", "10.201.0.101"]);
        let c = next.sync(&want, false).expect("add");
        assert_eq!(c.added, vec!["10.201.0.101".parse::<IpAddr>().expect("ip")]);
        assert_eq!(lb_routes().len(), 3);
        let c = next.sync(&want, true).expect("remove");
        assert_eq!(c.removed, vec!["fd00:201::100".parse::<IpAddr>().expect("ip")]);
        assert_eq!(lb_routes(), ["10.201.0.100", "10.201.0.101"]);
        // A stop.
        assert_eq!(next.remove_all().expect("remove all").len(), 2);
        assert!(lb_routes().is_empty());
    });
}

#[test]
fn a_vip_already_local_gets_no_route_and_other_routes_are_left_alone() {
    in_new_netns(|| {
        ip(&["link", "add", "v0", "type", "veth", "peer", "name", "v1"]);
        ip(&["link", "set", "v0", "up"]);
        ip(&["addr", "add", "10.201.0.100/24", "dev", "v0"]);
        // Someone else's local route, by hand (protocol boot).
        ip(&["route", "add", "local", "10.202.0.0/24", "dev", "lo", "table", "local"]);
        let mut routes = VipRoutes::new(Setting::Local);
        let want = set(&["10.201.0.100", "10.202.0.7", "10.203.0.1"]);
        let c = routes.sync(&want, true).expect("sync");
        assert_eq!(c.added, vec!["10.203.0.1".parse::<IpAddr>().expect("ip")]);
        assert_eq!(c.already_local.len(), 2, "{c:?}");
        assert_eq!(lb_routes(), ["10.203.0.1"]);
        routes.remove_all().expect("remove all");
        assert!(lb_routes().is_empty());
        let rest = ip(&["route", "show", "table", "local"]);
        assert!(rest.contains("local 10.202.0.0/24 dev lo"), "{rest}");
        assert!(rest.contains("local 10.201.0.100 dev v0"), "{rest}");
    });
}

#[test]
fn a_start_removes_stale_lb_routes() {
    in_new_netns(|| {
        // Left by an lb that crashed.
        for (fam, dst) in [("-4", "10.9.9.9/32"), ("-6", "fd00:9::9/128")] {
            let route = "route add local DST dev lo table local proto 252".replace("DST", dst);
            ip(&[&[fam], route.split(' ').collect::<Vec<_>>().as_slice()].concat());
        }
        let mut routes = VipRoutes::new(Setting::None);
        let c = routes.sync(&BTreeSet::new(), true).expect("sync");
        assert_eq!(c.removed.len(), 2, "{c:?}");
        assert!(lb_routes().is_empty());
    });
}

/// Drops CAP_NET_ADMIN from the calling thread's effective set (capsets
/// are per thread: the raw syscall leaves the others alone).
fn drop_net_admin() {
    use nix::libc::{SYS_capget, SYS_capset, c_long, syscall};
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Default, Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const CAP_NET_ADMIN: u32 = 12;
    let mut header = Header { version: 0x2008_0522, pid: 0 };
    let mut data = [Data::default(); 2];
    // SAFETY: header and data are the layouts capget and capset take
    // (version 3: two data structs), and outlive the calls.
    let r: c_long = unsafe { syscall(SYS_capget, &raw mut header, data.as_mut_ptr()) };
    assert_eq!(r, 0, "capget");
    data[0].effective &= !(1 << CAP_NET_ADMIN);
    // SAFETY: as above.
    let r: c_long = unsafe { syscall(SYS_capset, &raw mut header, data.as_ptr()) };
    assert_eq!(r, 0, "capset");
}

#[test]
fn errors_say_what_failed_and_how_to_fix_it() {
    in_new_netns(|| {
        drop_net_admin();
        let mut routes = VipRoutes::new(Setting::Local);
        let e = routes.sync(&set(&["10.201.0.100"]), true).expect_err("no CAP_NET_ADMIN");
        let text = e.to_string();
        assert!(text.contains("adding the local route 10.201.0.100/32: EPERM"), "{text}");
        assert!(text.contains("CAP_NET_ADMIN"), "{text}");
        assert!(text.contains("agent.vip_routes = \"none\""), "{text}");
    });
}
