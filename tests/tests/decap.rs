//! `lb decap` end to end (issue 13, the backend side of direct server
//! return): a "sender" namespace, standing in for the balancer, sends
//! IP-in-IP packets (built by the tests' packet builder and sent from a raw
//! socket: this kernel has no ipip module) to a backend namespace running
//! `lb decap` on its interface, at XDP and at tc. The inner packets go to a
//! VIP on the backend's `lo` from a client address routed back through the
//! sender: the backend's UDP server must get the datagrams, and its SYN-ACK
//! must leave from the VIP straight to the client, not encapsulated.
//! Needs root.

use std::{
    net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket},
    process::Command,
    time::{Duration, Instant},
};

use lb_tests::{
    agent::{TempDir, lb_binary, pin_dir, test_bpffs},
    decap::ipip,
    netns::{NetNs, Proc},
    packet::Frame,
};
use lb_userspace::datapath::tc_netlink::DECAP;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 100, 0, 1);
const CLIENT: &str = "10.0.0.2";
const BACKEND: &str = "10.1.0.2";
const SENDER: &str = "10.1.0.1";
const UDP_PORT: u16 = 5300;
const TCP_PORT: u16 = 8080;
/// The longest any step may take (the machine may be loaded).
const LIMIT: Duration = Duration::from_secs(20);

#[test]
fn decap_at_xdp_delivers_to_the_vip_and_the_reply_goes_straight_to_the_client() {
    delivers_and_replies_directly("native", false);
}

#[test]
fn decap_at_tc_delivers_to_the_vip_and_the_reply_goes_straight_to_the_client() {
    delivers_and_replies_directly("tc", false);
}

/// At tc as kernels without tcx links have it (forced with
/// `LB_TC_LINK=netlink`): one netlink filter in decap's slot while it
/// runs, none after `--stop`.
#[test]
fn decap_at_tc_with_a_netlink_filter_delivers_and_stop_removes_the_filter() {
    delivers_and_replies_directly("tc", true);
}

/// lb decap's slot at tc ingress (`lb_userspace::datapath::tc_netlink::DECAP`).
const DECAP_PREF: u16 = DECAP.priority;

/// The sender and the backend, a veth between them; the backend holds the
/// VIP on `lo`, routes the client's network back via the sender, and has
/// rp_filter loose, as the README sets a DSR backend up.
fn topology() -> (NetNs, NetNs) {
    let (sender, backend) = (NetNs::new(), NetNs::new());
    sender.ip(&format!("link add s0 type veth peer name b0 netns {}", backend.name()));
    sender.ip(&format!("addr add {SENDER}/24 dev s0"));
    sender.ip(&format!("addr add {CLIENT}/32 dev lo"));
    sender.ip("link set lo up");
    sender.ip("link set s0 up");
    backend.ip(&format!("addr add {BACKEND}/24 dev b0"));
    lb_tests::decap::hold_vip(&backend, &VIP.to_string(), "b0");
    backend.ip("link set b0 up");
    backend.ip(&format!("route add 10.0.0.0/24 via {SENDER}"));
    (sender, backend)
}

/// `netlink`: the tc hook with a netlink filter (`LB_TC_LINK=netlink`).
fn delivers_and_replies_directly(attach: &str, netlink: bool) {
    let (sender, backend) = topology();
    let dir = TempDir::new();
    test_bpffs();
    let pins = pin_dir(&dir.0);
    let pins_arg = pins.to_string_lossy().into_owned();
    let lb = lb_binary();
    let lb = lb.to_string_lossy();

    // The servers, bound inside the backend namespace.
    let (udp, _listener) = {
        let _inside = backend.enter();
        let udp = UdpSocket::bind(SocketAddrV4::new(VIP, UDP_PORT)).expect("bind UDP on the VIP");
        udp.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
        let tcp = TcpListener::bind(SocketAddrV4::new(VIP, TCP_PORT)).expect("listen on the VIP");
        (udp, tcp)
    };
    // The sender's sockets: one that sends whole IP datagrams, one that
    // sees every TCP segment delivered to the client address.
    let (raw, tcp_seen) = {
        let _inside = sender.enter();
        let raw = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(255))).expect("raw");
        let seen = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::TCP)).expect("raw tcp");
        seen.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
        (raw, seen)
    };
    let to_backend = SockAddr::from(SocketAddrV4::new(BACKEND.parse().expect("addr"), 0));
    let send = |inner: &Frame| {
        let outer = ipip(SENDER, BACKEND, inner).bytes();
        // The outer IP datagram, without the Ethernet header.
        raw.send_to(&outer[14..], &to_backend).expect("send the IP-in-IP datagram");
    };

    // At tc the role comes from a config file (`[decap]`), as a unit runs
    // it; at XDP from the flags. `--status` and `--stop` take the same.
    let role = dir.0.join("backend.toml");
    std::fs::write(
        &role,
        format!(
            "[decap]\ninterfaces = [\"b0\"]\nattach = \"{attach}\"\npin_dir = \"{pins_arg}\"\n"
        ),
    )
    .expect("write the role");
    let role = role.to_string_lossy().into_owned();
    let target: Vec<&str> =
        if attach == "tc" { vec!["--config", &role] } else { vec!["--pin-dir", &pins_arg] };
    let mut decap: Proc = if attach == "tc" {
        let env: &[&str] = if netlink { &["env", "LB_TC_LINK=netlink"] } else { &[] };
        backend.spawn(&[env, &[&lb, "decap", "--config", &role]].concat())
    } else {
        lb_tests::decap::spawn(&backend, "b0", attach, &pins_arg)
    };

    // UDP: resent until one arrives (the decap is attached by then), then
    // each of a few must arrive with its payload.
    let deadline = Instant::now() + LIMIT;
    let first = Frame::udp(&format!("{CLIENT}:41000"), &format!("{VIP}:{UDP_PORT}")).payload(b"0");
    let mut buf = [0u8; 2048];
    loop {
        assert!(Instant::now() < deadline, "no encapsulated datagram reached the VIP's server");
        send(&first);
        if let Ok((n, from)) = udp.recv_from(&mut buf) {
            assert_eq!(&buf[..n], b"0");
            assert_eq!(from.to_string(), format!("{CLIENT}:41000"));
            break;
        }
    }
    for i in 1..=5u8 {
        let payload = [b'a' + i; 100];
        let dgram =
            Frame::udp(&format!("{CLIENT}:41000"), &format!("{VIP}:{UDP_PORT}")).payload(&payload);
        send(&dgram);
        let (n, _) = udp
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("datagram {i} did not reach the server: {e}"));
        assert_eq!(&buf[..n], &payload[..], "datagram {i}");
    }

    // TCP: the SYN is answered from the VIP, straight to the client.
    let syn = Frame::tcp(&format!("{CLIENT}:41001"), &format!("{VIP}:{TCP_PORT}")).seq(7000);
    send(&syn);
    let deadline = Instant::now() + LIMIT;
    let syn_ack = loop {
        assert!(Instant::now() < deadline, "no SYN-ACK from the VIP reached the client");
        let mut pkt = [std::mem::MaybeUninit::<u8>::uninit(); 2048];
        let Ok(n) = tcp_seen.recv(&mut pkt) else { continue };
        // SAFETY: recv initialised the first n bytes.
        let pkt: Vec<u8> = pkt[..n].iter().map(|b| unsafe { b.assume_init() }).collect();
        let ihl = usize::from(pkt[0] & 0x0f) * 4;
        let (src, dst) = (&pkt[12..16], &pkt[16..20]);
        let ports = (
            u16::from_be_bytes([pkt[ihl], pkt[ihl + 1]]),
            u16::from_be_bytes([pkt[ihl + 2], pkt[ihl + 3]]),
        );
        if src == VIP.octets() && ports == (TCP_PORT, 41001) {
            assert_eq!(dst, CLIENT.parse::<Ipv4Addr>().expect("addr").octets());
            break pkt[ihl..].to_vec();
        }
    };
    assert_eq!(syn_ack[13] & 0x12, 0x12, "SYN and ACK set: {:x}", syn_ack[13]);
    let ack = u32::from_be_bytes([syn_ack[8], syn_ack[9], syn_ack[10], syn_ack[11]]);
    assert_eq!(ack, 7001, "the SYN-ACK acknowledges our SYN");
    let filters = backend.tc_filters("b0", DECAP.program);
    if netlink {
        assert_eq!(filters.len(), 1, "one decap filter: {filters:?}");
        assert!(filters[0].contains(&format!("pref {DECAP_PREF} ")), "{}", filters[0]);
        assert!(!pins.join("links").join("tc-b0").exists(), "no tcx link pinned");
    } else {
        assert!(filters.is_empty(), "a tcx link, no netlink filter: {filters:?}");
    }

    // The counters say the same; then --stop detaches and the process ends.
    let status = backend.exec(&[&[lb.as_ref(), "decap", "--status"], &target[..]].concat());
    let text = String::from_utf8_lossy(&status.stdout).into_owned();
    let count = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {text:?}"))
    };
    assert!(count("decapsulated ") >= 7, "{text}");
    assert_eq!(count("malformed "), 0, "{text}");
    backend.exec(&[&[lb.as_ref(), "decap", "--stop"], &target[..]].concat());
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Some(status) = decap.0.try_wait().expect("wait") {
            assert!(status.success(), "lb decap exited with {status}");
            break;
        }
        assert!(Instant::now() < deadline, "lb decap did not exit after --stop");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!pins.exists(), "{} left behind", pins.display());
    let links = Command::new("ip").args(["-n", backend.name(), "link", "show", "b0"]).output();
    let links = String::from_utf8_lossy(&links.expect("ip link").stdout).into_owned();
    assert!(!links.contains("xdp"), "XDP still attached after --stop: {links}");
    let filters = backend.tc_filters("b0", DECAP.program);
    assert!(filters.is_empty(), "a decap filter left after --stop: {filters:?}");
}
