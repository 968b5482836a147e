//! A namespace in which `bpf_fib_lookup` answers deterministically, and the
//! datapath loaded there: the golden-packet tests and the datapath benchmark
//! both run the program through BPF_PROG_TEST_RUN inside it.
//!
//! ```text
//!  gin  02:00:00:00:00:01  10.0.0.1/24 fd00::1/64   clients 10.0.0.2, fd00::2 (02:00:00:00:00:02)
//!                                                   "near" backend 10.0.0.50  (02:00:00:00:00:50)
//!  gout 02:00:00:00:01:01  10.1.0.1/24 fd01::1/64   backends 10.1.0.1x, fd01::1x (02:00:00:00:01:1x)
//! ```

use aya::programs::{SchedClassifier, TestRun, TestRunOptions, Xdp};
use lb_common::abi::{DropReason, MAP_MAGLEV};
use lb_userspace::{config, datapath, object};

use crate::netns::{Entered, NetNs};

/// XDP_DROP.
pub const XDP_DROP: u32 = 1;
/// XDP_PASS.
pub const XDP_PASS: u32 = 2;
/// XDP_TX.
pub const XDP_TX: u32 = 3;
/// XDP_REDIRECT.
pub const XDP_REDIRECT: u32 = 4;

/// TC_ACT_SHOT.
pub const TC_ACT_SHOT: u32 = 2;
/// TC_ACT_REDIRECT.
pub const TC_ACT_REDIRECT: u32 = 7;
/// TC_ACT_UNSPEC (-1): on to the next program, or the stack.
pub const TC_ACT_UNSPEC: u32 = u32::MAX;

/// The hook a golden case runs the datapath at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prog {
    /// `lb_xdp`, on an XDP frame.
    Xdp,
    /// `lb_tc`, on an skb.
    Tc,
}

/// MAC of the client-facing veth.
pub const GIN_MAC: &str = "02:00:00:00:00:01";
/// MAC of the backend-facing veth.
pub const GOUT_MAC: &str = "02:00:00:00:01:01";
/// MAC of the clients.
pub const CLIENT_MAC: &str = "02:00:00:00:00:02";

/// The services the fixture's datapath serves.
pub const CONFIG: &str = r#"
[[service]]
name = "tcp4"
vip = "10.100.0.1:80"
[[service.backend]]
addr = "10.1.0.10:8080"

[[service]]
name = "udp4"
vip = "10.100.0.1:53"
protocol = "udp"
[[service.backend]]
addr = "10.1.0.11:5300"

[[service]]
name = "tcp6"
vip = "[fd64::1]:443"
[[service.backend]]
addr = "[fd01::10]:8443"

[[service]]
name = "udp6"
vip = "[fd64::1]:53"
protocol = "udp"
[[service.backend]]
addr = "[fd01::11]:5300"

[[service]]
name = "near"
vip = "10.100.0.2:80"
[[service.backend]]
addr = "10.0.0.50:80"

[[service]]
name = "three"
vip = "10.100.0.3:80"
table_size = 307
[[service.backend]]
addr = "10.1.0.12:80"
[[service.backend]]
addr = "10.1.0.13:80"
[[service.backend]]
addr = "10.1.0.14:80"
"#;

/// The namespace with its two veths, the calling thread inside it, and the
/// program loaded with [`CONFIG`].
#[derive(Debug)]
pub struct Golden {
    /// The loaded datapath.
    pub dp: datapath::Datapath,
    /// What was written to its maps.
    pub plan: datapath::Plan,
    /// Index of the client-facing veth.
    pub gin: u32,
    /// Index of the backend-facing veth.
    pub gout: u32,
    /// The program [`Golden::run`] runs.
    pub prog: Prog,
    /// `gso_size` of the skbs the tc program is given (0: not GSO).
    pub gso_size: u32,
    _inside: Entered,
    _ns: NetNs,
}

impl Golden {
    /// Builds the namespace, enters it and loads the program (flow tables of
    /// `flow_capacity` entries).
    pub fn new(flow_capacity: u32) -> Self {
        Self::build(flow_capacity, Prog::Xdp)
    }

    /// As [`Golden::new`], running the program of hook `prog`.
    pub fn with_prog(flow_capacity: u32, prog: Prog) -> Self {
        Self::build(flow_capacity, prog)
    }

    /// As [`Golden::with_prog`], serving the services of `config` (TOML)
    /// instead of [`CONFIG`].
    pub fn with_config(config: &str, flow_capacity: u32, prog: Prog) -> Self {
        Self::build_with(config, flow_capacity, prog)
    }

    fn build(flow_capacity: u32, prog: Prog) -> Self {
        Self::build_with(CONFIG, flow_capacity, prog)
    }

    fn build_with(config: &str, flow_capacity: u32, prog: Prog) -> Self {
        let ns = NetNs::new();
        ns.sysctl("net.ipv4.ip_forward", "1");
        ns.sysctl("net.ipv6.conf.all.forwarding", "1");
        ns.sysctl("net.ipv6.conf.default.forwarding", "1");
        ns.ip("link add gin type veth peer name gout");
        ns.ip(&format!("link set gin address {GIN_MAC} up"));
        ns.ip(&format!("link set gout address {GOUT_MAC} up"));
        ns.ip("addr add 10.0.0.1/24 dev gin");
        ns.ip("addr add fd00::1/64 dev gin nodad");
        ns.ip("addr add 10.1.0.1/24 dev gout");
        ns.ip("addr add fd01::1/64 dev gout nodad");
        for (ip, lladdr, dev) in [
            ("10.0.0.2", CLIENT_MAC, "gin"),
            ("fd00::2", CLIENT_MAC, "gin"),
            ("10.0.0.50", "02:00:00:00:00:50", "gin"),
            ("10.1.0.10", "02:00:00:00:01:10", "gout"),
            ("10.1.0.11", "02:00:00:00:01:11", "gout"),
            ("10.1.0.12", "02:00:00:00:01:12", "gout"),
            ("10.1.0.13", "02:00:00:00:01:13", "gout"),
            ("10.1.0.14", "02:00:00:00:01:14", "gout"),
            ("fd01::10", "02:00:00:00:01:10", "gout"),
            ("fd01::11", "02:00:00:00:01:11", "gout"),
        ] {
            ns.ip(&format!("neigh replace {ip} lladdr {lladdr} dev {dev} nud permanent"));
        }
        let (gin, gout) = (ns.ifindex("gin"), ns.ifindex("gout"));
        let inside = ns.enter();
        let cfg = config::parse(config, "golden.toml".as_ref()).expect("golden config");
        let plan = datapath::plan(&cfg).expect("plan");
        let obj =
            object::resolve(None).expect("embedded eBPF object: run `cargo xtask build-ebpf`");
        let mut dp = datapath::Datapath::load(
            &obj,
            &plan,
            datapath::LoadOptions { flow_capacity, pins: None },
        )
        .expect("load");
        dp.apply(&plan).expect("apply");
        Self { dp, plan, gin, gout, prog, gso_size: 0, _inside: inside, _ns: ns }
    }

    /// Runs the program on `input` arriving on `ifindex`: (action, output).
    /// The tc program's action is given as the XDP action of the same
    /// meaning (TC_ACT_REDIRECT as XDP_REDIRECT, also where XDP would use
    /// XDP_TX: tc sends back out of the same interface by redirect), so one
    /// case states one expectation for both hooks.
    pub fn run(&mut self, input: &[u8], ifindex: u32) -> (u32, Vec<u8>) {
        match self.prog {
            Prog::Xdp => {
                let prog = self.dp.program_mut().expect("program");
                let (action, out, _) = test_run(prog, input, ifindex, 1);
                (action, out)
            }
            Prog::Tc => {
                let gso = self.gso_size;
                let prog = self.dp.tc_program_mut().expect("tc program");
                let (action, out, _) = test_run_tc(prog, input, ifindex, 1, gso);
                let action = match action {
                    TC_ACT_REDIRECT => XDP_REDIRECT,
                    TC_ACT_SHOT => XDP_DROP,
                    TC_ACT_UNSPEC => XDP_PASS,
                    other => panic!("the tc program returned {other}, which it never should"),
                };
                (action, out)
            }
        }
    }

    /// XDP_TX, as [`Golden::run`] reports a frame sent back out of the
    /// interface it came in on by the current program.
    pub fn back_out(&self) -> u32 {
        match self.prog {
            Prog::Xdp => XDP_TX,
            Prog::Tc => XDP_REDIRECT,
        }
    }

    /// The exception counter of `reason`.
    pub fn exceptions(&self, reason: DropReason) -> u64 {
        let t = datapath::stats::read(&self.dp, &[], 0).expect("counters");
        t.exceptions[reason as usize]
    }

    /// Applies config `text` to the datapath, as a reload would (every
    /// backend as configured), and keeps its plan.
    pub fn reload(&mut self, text: &str) {
        let cfg = config::parse(text, "golden.toml".as_ref()).expect("golden case config");
        let new = datapath::plan::replan(&self.plan, &cfg, &|_, b| {
            datapath::plan::Effective::configured(b)
        })
        .expect("replan");
        self.dp.apply_change(&self.plan, &new).expect("apply_change");
        self.plan = new;
    }

    /// Fills every slot of service `svc`'s live table with `id`.
    pub fn fill_table(&mut self, svc: usize, id: u32) {
        let rec = self.plan.services[svc].record;
        let mut maglev: aya::maps::Array<&mut aya::maps::MapData, u32> =
            self.dp.map_mut(MAP_MAGLEV).expect("maglev map");
        for slot in 0..rec.table_size {
            maglev.set(rec.table_base + slot, id, 0).expect("set slot");
        }
    }
}

/// Runs the tc program `prog` on an skb of `input` arriving on `ifindex`,
/// `repeat` times; `gso_size` > 0 makes it a GSO skb of segments that size.
/// (action, output, mean ns per run as the kernel measured it).
pub fn test_run_tc(
    prog: &SchedClassifier,
    input: &[u8],
    ifindex: u32,
    repeat: u32,
    gso_size: u32,
) -> (u32, Vec<u8>, u64) {
    // struct __sk_buff, as 48 words; the kernel takes only some fields.
    let mut skb = [0u32; 48];
    skb[9] = ifindex; // ingress_ifindex
    skb[10] = ifindex; // ifindex
    if gso_size > 0 {
        skb[41] = input.len().div_ceil(gso_size as usize) as u32; // gso_segs
        skb[44] = gso_size; // gso_size
    }
    let ctx: Vec<u8> = skb.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let mut out = vec![0u8; input.len() + 256];
    let mut ctx_out = vec![0u8; ctx.len()];
    let res = prog
        .test_run(TestRunOptions {
            data_in: Some(input),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            ctx_out: Some(&mut ctx_out),
            repeat,
            ..Default::default()
        })
        .expect("BPF_PROG_TEST_RUN of the tc program");
    out.truncate(res.data_size_out as usize);
    (res.return_value, out, res.duration.as_nanos() as u64)
}

/// Runs `prog` on `input` arriving on `ifindex`, `repeat` times: (action,
/// output, mean ns per run as the kernel measured it).
pub fn test_run(prog: &Xdp, input: &[u8], ifindex: u32, repeat: u32) -> (u32, Vec<u8>, u64) {
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex,
    // rx_queue_index, egress_ifindex.
    let md: [u32; 6] = [0, input.len() as u32, 0, ifindex, 0, 0];
    let ctx: Vec<u8> = md.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let mut out = vec![0u8; input.len() + 256];
    let res = prog
        .test_run(TestRunOptions {
            data_in: Some(input),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            repeat,
            ..Default::default()
        })
        .expect("BPF_PROG_TEST_RUN");
    out.truncate(res.data_size_out as usize);
    (res.return_value, out, res.duration.as_nanos() as u64)
}

/// Generates, for each named case `fn case(prog: Prog)`, the tests
/// `case::xdp` and `case::tc`: every golden case holds at both hooks.
#[macro_export]
macro_rules! in_both_hooks {
    ($($case:ident),* $(,)?) => {
        $(
            mod $case {
                #[test]
                fn xdp() {
                    super::$case($crate::fixture::Prog::Xdp);
                }
                #[test]
                fn tc() {
                    super::$case($crate::fixture::Prog::Tc);
                }
            }
        )*
    };
}

/// Asserts a golden case's action and that its output is exactly
/// `expected` (shown as hex rows on a mismatch).
#[track_caller]
pub fn check(name: &str, got: (u32, Vec<u8>), action: u32, expected: &[u8]) {
    assert_eq!(got.0, action, "{name}: action");
    assert_eq!(hex(&got.1), hex(expected), "{name}: output bytes");
}

fn hex(b: &[u8]) -> String {
    b.chunks(16)
        .map(|c| c.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// TCP flags of the golden cases' segments.
pub const SYN: u8 = lb_common::parse::headers::TcpHdr::SYN;
/// See [`SYN`].
pub const ACK: u8 = lb_common::parse::headers::TcpHdr::ACK;
/// See [`SYN`].
pub const SYN_ACK: u8 = SYN | ACK;
/// See [`SYN`].
pub const RST: u8 = lb_common::parse::headers::TcpHdr::RST;

/// The backend ("10.1.0.x:port") an IPv4 frame the program forwarded went
/// to: its destination address and port.
pub fn sent_to(out: &[u8]) -> String {
    let at = |i: usize| out.get(i).copied().unwrap_or_default();
    format!("{}.{}.{}.{}:{}", at(30), at(31), at(32), at(33), u16::from_be_bytes([at(36), at(37)]))
}
