//! The decapsulating program (`lb decap`) under test: loaded for
//! BPF_PROG_TEST_RUN, and IP-in-IP frames built around the packet
//! builder's frames.

use std::{collections::BTreeSet, net::IpAddr};

use lb_common::abi::DecapCounters;
use lb_userspace::{decap::Decap, object};

use crate::{
    fixture::{Prog, TC_ACT_SHOT, TC_ACT_UNSPEC, XDP_DROP, XDP_PASS, test_run, test_run_tc},
    packet::Frame,
};

/// IP protocol number of IPv4 in IP.
pub const PROTO_IPIP: u8 = 4;
/// IP protocol number of IPv6 in IP.
pub const PROTO_IPV6: u8 = 41;

/// `inner` (an IPv4 or IPv6 packet) carried in an outer header from `src`
/// to `dst` (bare addresses, of either family), behind `inner`'s MACs, as
/// the balancer's `dsr-ipip` forwarding sends it. TTL 64, checksum from
/// scratch (the builder's).
pub fn ipip(src: &str, dst: &str, inner: &Frame) -> Frame {
    let proto = if inner.is_ipv4() { PROTO_IPIP } else { PROTO_IPV6 };
    let bytes = inner.bytes();
    let l3 = inner.l3_offset();
    Frame::ip(proto, src, dst).macs(inner.src_mac, inner.dst_mac).payload(&bytes[l3..])
}

/// The decap programs loaded (no pins, no interface), listing `addrs`.
#[derive(Debug)]
pub struct Loaded {
    /// The programs and maps.
    pub dp: Decap,
    /// The hook [`Loaded::run`] runs.
    pub prog: Prog,
}

impl Loaded {
    /// Loads the embedded object's decap programs, decapsulating for `addrs`.
    pub fn new(prog: Prog, addrs: &[&str]) -> Self {
        let obj =
            object::resolve(None).expect("embedded eBPF object: run `cargo xtask build-ebpf`");
        let mut dp = Decap::load(&obj, None).expect("load the decap programs");
        let want: BTreeSet<IpAddr> =
            addrs.iter().map(|a| a.parse().expect("address literal")).collect();
        dp.set_addresses(&want).expect("fill LB_DECAP_ADDRS");
        Self { dp, prog }
    }

    /// Runs the program on `input` (arriving on ifindex 1): the action as
    /// XDP names it (the tc program's PASS/DROP mapped), and the output.
    pub fn run(&mut self, input: &[u8]) -> (u32, Vec<u8>) {
        match self.prog {
            Prog::Xdp => {
                let (action, out, _) = test_run(self.dp.xdp().expect("xdp program"), input, 1, 1);
                (action, out)
            }
            Prog::Tc => {
                let prog = self.dp.tc().expect("tc program");
                let (action, out, _) = test_run_tc(prog, input, 1, 1, 0);
                let action = match action {
                    TC_ACT_UNSPEC => XDP_PASS,
                    TC_ACT_SHOT => XDP_DROP,
                    other => panic!("the tc decap program returned {other}, which it never should"),
                };
                (action, out)
            }
        }
    }

    /// The counters so far.
    pub fn counters(&self) -> DecapCounters {
        self.dp.counters().expect("decap counters")
    }
}

/// `lb decap` on `iface` at hook `attach` ("tc" or "native"), pinned in
/// `pins`: the command line (the lb binary first).
pub fn command(iface: &str, attach: &str, pins: &str) -> Vec<String> {
    let lb = crate::agent::lb_binary().to_string_lossy().into_owned();
    [lb.as_str(), "decap", "--interface", iface, "--attach", attach, "--pin-dir", pins]
        .map(str::to_owned)
        .to_vec()
}

/// Runs [`command`] in `ns`.
pub fn spawn(
    ns: &crate::netns::NetNs,
    iface: &str,
    attach: &str,
    pins: &str,
) -> crate::netns::Proc {
    let cmd = command(iface, attach, pins);
    ns.spawn(&cmd.iter().map(String::as_str).collect::<Vec<_>>())
}

/// Readies `ns` as a direct-server-return backend the README's way: the
/// VIP `vip` on `lo` (answered from, never announced) and a loose
/// reverse-path check on `iface` (the client is not behind the tunnel's
/// source). The one place the tests and the bench set a DSR backend up.
pub fn hold_vip(ns: &crate::netns::NetNs, vip: &str, iface: &str) {
    ns.ip(&format!("addr add {vip}/32 dev lo"));
    ns.ip("link set lo up");
    for key in ["all", iface] {
        ns.sysctl(&format!("net.ipv4.conf.{key}.rp_filter"), "2");
    }
}
