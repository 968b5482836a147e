//! The peers bench's UDP generator (`lb_tests::udpgen`) on a veth pair
//! between two namespaces: its frames must arrive, and at a rate no path of
//! the bench reaches through a balancer. Guards against the generator
//! failing or silently sending nothing, as the live-frames generator did
//! once this kernel build refused BPF_F_TEST_XDP_LIVE_FRAMES (EPERM).
//! Needs root.

use std::time::Instant;

use lb_tests::{netns::NetNs, packet::Frame, udpgen};

/// The least the generator must offer, Mpps: above the best UDP rate a path
/// reached in the bench (about 1.7), with room for a busy 2-CPU machine.
const MIN_MPPS: f64 = 0.5;

fn stat(ns: &NetNs, iface: &str, what: &str) -> u64 {
    let out = ns.exec(&["cat", &format!("/sys/class/net/{iface}/statistics/{what}")]);
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("a counter")
}

#[test]
fn the_generator_delivers_its_frames_to_the_far_side_of_a_veth() {
    if let Ok(Some(e)) = udpgen::live_frames_refused() {
        eprintln!(
            "note: this kernel refuses live-frames test runs ({e}); the generator does not use them"
        );
    }
    let (a, b) = (NetNs::new(), NetNs::new());
    a.ip(&format!("link add g0 type veth peer name g1 netns {}", b.name()));
    a.ip("link set g0 up");
    b.ip("link set g1 up");
    let frame = Frame::udp("10.0.0.1:10000", "10.0.0.2:9")
        .macs([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .pad_to(60)
        .bytes();
    let sink = {
        let _in = b.enter();
        udpgen::attach_drop(b.ifindex("g1")).expect("the sink attaches")
    };
    let before = stat(&b, "g1", "rx_packets");
    let (ifindex, name) = (a.ifindex("g0"), a.name().to_owned());
    let t = Instant::now();
    let sent = std::thread::spawn(move || {
        let _in = lb_tests::netns::enter(&name);
        udpgen::blast(ifindex, &frame, 0.5, &|| false)
    })
    .join()
    .expect("the generator thread")
    .expect("the generator runs");
    let secs = t.elapsed().as_secs_f64();
    let got = stat(&b, "g1", "rx_packets") - before;
    drop(sink);
    eprintln!(
        "offered {sent} frames ({:.2} Mpps), {got} arrived ({:.2} Mpps)",
        sent as f64 / secs / 1e6,
        got as f64 / secs / 1e6
    );
    assert!(got > 0, "none of the {sent} frames arrived");
    assert!(got * 10 >= sent * 9, "only {got} of {sent} frames arrived");
    assert!(
        got as f64 / secs / 1e6 >= MIN_MPPS,
        "{:.2} Mpps arrived, below {MIN_MPPS}: the generator would be the bottleneck",
        got as f64 / secs / 1e6
    );
}
