//! Golden packets at the edges of IP (issue 16): the ICMP errors the
//! datapath answers with itself (time exceeded, fragmentation needed /
//! packet too big, quoting the VIP), the ICMP errors about balanced flows
//! it translates in both directions (outer and quoted headers, every
//! checksum), direct traffic that must never be rewritten, hairpin flows,
//! and IPv6 UDP without a checksum. Expected frames come from the test
//! packet builder, which computes every checksum from scratch. Needs root.

use lb_common::abi::DropReason;
use lb_tests::{
    fixture::{
        CLIENT_MAC, GIN_MAC, GOUT_MAC, Golden, Prog, XDP_DROP, XDP_PASS, XDP_REDIRECT, check,
    },
    packet::{Frame, TCP_ACK, TCP_SYN, mac},
};

lb_tests::in_both_hooks!(
    a_packet_whose_ttl_runs_out_is_answered_with_time_exceeded_from_the_vip,
    time_exceeded_answers_are_limited_as_a_routers_and_too_big_ones_never,
    a_packet_too_big_for_the_backend_link_is_answered_quoting_the_vip,
    an_error_about_a_forwarded_packet_goes_back_to_the_client_naming_the_vip,
    an_error_about_a_reply_goes_to_the_backend_naming_it,
    direct_traffic_on_a_tuple_a_balanced_flow_held_is_never_rewritten,
    a_backend_calling_a_vip_that_picks_itself_is_source_natted,
    ipv6_udp_without_a_checksum_is_dropped,
    fragments_follow_their_first_fragment_both_ways,
    more_fragmented_datagrams_than_the_table_holds_keep_the_newest_and_count_the_rest,
);

const BACKEND_MAC: &str = "02:00:00:00:01:10";
const UDP_BACKEND_MAC: &str = "02:00:00:00:01:11";
const NEAR_MAC: &str = "02:00:00:00:00:50";

/// Runs `cmd` (an `ip` command line) in the fixture's namespace.
fn ip(cmd: &str) {
    let args: Vec<&str> = cmd.split_whitespace().collect();
    lb_tests::netns::run(std::process::Command::new("ip").args(&args));
}

/// The answer the datapath sends in place of `input`: from `from` to the
/// sender, quoting its IP header and 8 bytes (UDP) or its TCP header, back
/// to the sender's MAC.
fn answer(input: &Frame, from: &str, kind: u8, code: u8, rest: [u8; 4]) -> Vec<u8> {
    let to = input.src.ip().to_string();
    let l4 = if input.proto == lb_tests::packet::PROTO_TCP { 20 } else { 8 };
    Frame::icmp_error(from, &to, kind, code, rest, &input.quote(l4))
        .macs(input.dst_mac, input.src_mac)
        .bytes()
}

fn a_packet_whose_ttl_runs_out_is_answered_with_time_exceeded_from_the_vip(prog: Prog) {
    let mut g = Golden::with_prog(4096, prog);
    for (input, vip, kind) in [
        (Frame::tcp("10.0.0.2:44002", "10.100.0.1:80").ttl(1), "10.100.0.1", 11),
        (Frame::udp("[fd00::2]:44003", "[fd64::1]:53").ttl(1).payload(b"q"), "fd64::1", 3),
    ] {
        let before = g.exceptions(DropReason::TtlExpired);
        let got = g.run(&input.bytes(), g.gin);
        // Answers leave by redirect at both hooks (see `XdpFrame::back_out`).
        check("TTL 1", got, XDP_REDIRECT, &answer(&input, vip, kind, 0, [0; 4]));
        assert_eq!(g.exceptions(DropReason::TtlExpired), before + 1);
    }
}

/// A flood of packets at their last hop (sources spoofed, say) gets a
/// router's share of answers, not one each; path MTU discovery is never
/// held back.
fn time_exceeded_answers_are_limited_as_a_routers_and_too_big_ones_never(prog: Prog) {
    use lb_common::icmp::{TIME_EXCEEDED_BURST, TIME_EXCEEDED_PER_SEC};
    let mut g = Golden::with_prog(4096, prog);
    let last_hop = |i: u32| {
        let src = format!("10.3.{}.{}:{}", i / 250, 1 + i % 250, 1024 + i % 60000);
        Frame::tcp(&src, "10.100.0.1:80").tcp_flags(TCP_ACK).ttl(1).bytes()
    };
    let start = std::time::Instant::now();
    let answered = (0..2000).filter(|&i| g.run(&last_hop(i), g.gin).0 == XDP_REDIRECT).count();
    let elapsed_ms = start.elapsed().as_millis() as usize;
    eprintln!("{prog:?}: {answered} of 2000 packets at their last hop answered in {elapsed_ms} ms");
    let refilled = elapsed_ms * TIME_EXCEEDED_PER_SEC as usize / 1000;
    let burst = TIME_EXCEEDED_BURST as usize;
    // The test runs on one CPU (BPF_PROG_TEST_RUN runs where it is called,
    // and this thread may move: then each CPU has its own allowance).
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    assert!(answered >= burst, "{answered} of 2000 answered: fewer than the burst");
    assert!(
        answered <= cpus * burst + refilled + 1,
        "{answered} of 2000 answered in {elapsed_ms} ms: the limit is {TIME_EXCEEDED_PER_SEC}/s \
         after a burst of {burst} per CPU"
    );
    assert_eq!(g.exceptions(DropReason::TtlExpired) as usize, answered);
    assert_eq!(g.exceptions(DropReason::TtlExpiredUnanswered) as usize, 2000 - answered);
    // Spent, "packet too big" is still answered, each time.
    ip("link set gout mtu 1280");
    for i in 0..200u16 {
        let big = Frame::tcp(&format!("10.0.0.2:{}", 47000 + i), "10.100.0.1:80")
            .tcp_flags(TCP_ACK)
            .payload(&[0x5a; 1400])
            .dont_fragment(true);
        assert_eq!(g.run(&big.bytes(), g.gin).0, XDP_REDIRECT, "too big {i}");
    }
    // A moment later, time-exceeded answers resume.
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert_eq!(g.run(&last_hop(5000), g.gin).0, XDP_REDIRECT, "answered again after 50 ms");
}

fn a_packet_too_big_for_the_backend_link_is_answered_quoting_the_vip(prog: Prog) {
    let mut g = Golden::with_prog(4096, prog);
    ip("link set gout mtu 1280");
    let big = |f: Frame| f.tcp_flags(TCP_ACK).payload(&[0x5a; 1400]);
    let v4 = big(Frame::tcp("10.0.0.2:47000", "10.100.0.1:80")).dont_fragment(true);
    let before = g.exceptions(DropReason::TooBig);
    let got = g.run(&v4.bytes(), g.gin);
    check("IPv4, DF", got, XDP_REDIRECT, &answer(&v4, "10.100.0.1", 3, 4, [0, 0, 0x05, 0x00]));
    let v6 = big(Frame::tcp("[fd00::2]:47001", "[fd64::1]:443"));
    let got = g.run(&v6.bytes(), g.gin);
    check("IPv6", got, XDP_REDIRECT, &answer(&v6, "fd64::1", 2, 0, [0, 0, 0x05, 0x00]));
    assert_eq!(g.exceptions(DropReason::TooBig), before + 2);

    // A GSO super-packet at tc whose segments would not fit: answered
    // from its first segment's headers, the quote as for one packet.
    if prog == Prog::Tc {
        g.gso_size = 1300;
        let gso = big(Frame::tcp("10.0.0.2:47003", "10.100.0.1:80")).dont_fragment(true);
        let got = g.run(&gso.bytes(), g.gin);
        check(
            "GSO, segments too big",
            got,
            XDP_REDIRECT,
            &answer(&gso, "10.100.0.1", 3, 4, [0, 0, 0x05, 0x00]),
        );
        g.gso_size = 1200;
        let fits = big(Frame::tcp("10.0.0.2:47004", "10.100.0.1:80")).dont_fragment(true);
        assert_eq!(g.run(&fits.bytes(), g.gin).0, XDP_REDIRECT, "GSO, segments that fit");
        g.gso_size = 0;
    }
    // Without DF the kernel may fragment it: rewritten and passed on.
    let loose = big(Frame::tcp("10.0.0.2:47002", "10.100.0.1:80"));
    let before = g.exceptions(DropReason::FragmentedByKernel);
    let got = g.run(&loose.bytes(), g.gin);
    let rewritten = loose.clone().dst("10.1.0.10:8080").ttl(63).bytes();
    check("IPv4 without DF", got, XDP_PASS, &rewritten);
    assert_eq!(g.exceptions(DropReason::FragmentedByKernel), before + 1);
}

fn an_error_about_a_forwarded_packet_goes_back_to_the_client_naming_the_vip(prog: Prog) {
    let mut g = Golden::with_prog(4096, prog);
    // (what the client sent, where lb sent it, who reports, ICMP kind/code/rest)
    let cases = [
        (
            "fragmentation needed from a router beyond",
            Frame::tcp("10.0.0.2:45000", "10.100.0.1:80").seq(7),
            "10.1.0.10:8080",
            "10.1.0.99",
            (3, 4, [0, 0, 0x05, 0x00]),
            20,
        ),
        (
            "port unreachable from the backend itself",
            Frame::udp("10.0.0.2:45001", "10.100.0.1:53").payload(b"query"),
            "10.1.0.11:5300",
            "10.1.0.11",
            (3, 3, [0; 4]),
            8,
        ),
        (
            "packet too big from a router beyond",
            Frame::tcp("[fd00::2]:45002", "[fd64::1]:443").seq(9),
            "[fd01::10]:8443",
            "fd01::99",
            (2, 0, [0, 0, 0x05, 0x00]),
            20,
        ),
        (
            "port unreachable from the backend itself",
            Frame::udp("[fd00::2]:45003", "[fd64::1]:53").payload(b"query"),
            "[fd01::11]:5300",
            "fd01::11",
            (1, 4, [0; 4]),
            8,
        ),
    ];
    for (name, sent, backend, reporter, (kind, code, rest), quoted_l4) in cases {
        // The flow: forwarded to its backend.
        let (action, _) = g.run(&sent.bytes(), g.gin);
        assert_eq!(action, XDP_REDIRECT, "{name}: the flow's first packet");
        let forwarded = sent.clone().dst(backend).ttl(63);
        let client = sent.src.ip().to_string();
        let error =
            Frame::icmp_error(reporter, &client, kind, code, rest, &forwarded.quote(quoted_l4));
        // Passed on to the client: the quote names the VIP again, and so
        // does the error's source if the backend sent it.
        let vip = sent.dst.ip().to_string();
        let from = if backend.contains(reporter) { vip.as_str() } else { reporter };
        let expected = Frame::icmp_error(
            from,
            &client,
            kind,
            code,
            rest,
            &sent.clone().ttl(63).quote(quoted_l4),
        )
        .ttl(63)
        .macs(mac(GIN_MAC), mac(CLIENT_MAC));
        let got = g.run(&error.bytes(), g.gout);
        check(name, got, XDP_REDIRECT, &expected.bytes());
    }
}

fn an_error_about_a_reply_goes_to_the_backend_naming_it(prog: Prog) {
    let mut g = Golden::with_prog(4096, prog);
    for (sent, backend, backend_mac, reporter, (kind, code, rest)) in [
        (
            Frame::tcp("10.0.0.2:46000", "10.100.0.1:80"),
            "10.1.0.10:8080",
            BACKEND_MAC,
            "10.0.0.99",
            (3, 4, [0, 0, 0x05, 0x00]),
        ),
        (
            Frame::udp("[fd00::2]:46001", "[fd64::1]:53"),
            "[fd01::11]:5300",
            UDP_BACKEND_MAC,
            "fd00::99",
            (2, 0, [0, 0, 0x05, 0x00]),
        ),
    ] {
        let (action, _) = g.run(&sent.bytes(), g.gin);
        assert_eq!(action, XDP_REDIRECT);
        let vip = sent.dst;
        let client = sent.src;
        // The reply as lb sent it (from the VIP), quoted by a router on the
        // way to the client, in an error addressed to the VIP.
        let reply = Frame::new(sent.proto, vip, client).tcp_flags(TCP_SYN | TCP_ACK).ttl(63);
        let error =
            Frame::icmp_error(reporter, &vip.ip().to_string(), kind, code, rest, &reply.quote(8));
        let backend_ep = lb_tests::packet::endpoint(backend);
        let as_sent =
            Frame::new(sent.proto, backend_ep, client).tcp_flags(TCP_SYN | TCP_ACK).ttl(63);
        let expected = Frame::icmp_error(
            reporter,
            &backend_ep.ip().to_string(),
            kind,
            code,
            rest,
            &as_sent.quote(8),
        )
        .ttl(63)
        .macs(mac(GOUT_MAC), mac(backend_mac));
        let got = g.run(&error.bytes(), g.gin);
        check("error about a reply", got, XDP_REDIRECT, &expected.bytes());
    }
}

fn direct_traffic_on_a_tuple_a_balanced_flow_held_is_never_rewritten(prog: Prog) {
    let mut g = Golden::with_prog(4096, prog);
    for (via_vip, direct, reply) in [
        (
            Frame::tcp("10.0.0.2:48000", "10.100.0.1:80"),
            Frame::tcp("10.0.0.2:48000", "10.1.0.10:8080"),
            Frame::tcp("10.1.0.10:8080", "10.0.0.2:48000").tcp_flags(TCP_SYN | TCP_ACK),
        ),
        (
            Frame::udp("10.0.0.2:48001", "10.100.0.1:53"),
            Frame::udp("10.0.0.2:48001", "10.1.0.11:5300"),
            Frame::udp("10.1.0.11:5300", "10.0.0.2:48001"),
        ),
        (
            Frame::udp("[fd00::2]:48002", "[fd64::1]:53"),
            Frame::udp("[fd00::2]:48002", "[fd01::11]:5300"),
            Frame::udp("[fd01::11]:5300", "[fd00::2]:48002"),
        ),
    ] {
        assert_eq!(g.run(&via_vip.bytes(), g.gin).0, XDP_REDIRECT);
        check("direct request", g.run(&direct.bytes(), g.gin), XDP_PASS, &direct.bytes());
        check("direct answer", g.run(&reply.bytes(), g.gout), XDP_PASS, &reply.bytes());
    }
    // A backend opening a connection from its service port to a client
    // port a balanced flow used: its own connection, never given the VIP.
    let via_vip = Frame::tcp("10.0.0.2:48003", "10.100.0.1:80");
    assert_eq!(g.run(&via_vip.bytes(), g.gin).0, XDP_REDIRECT);
    let opens = Frame::tcp("10.1.0.10:8080", "10.0.0.2:48003");
    check("backend's own SYN", g.run(&opens.bytes(), g.gout), XDP_PASS, &opens.bytes());
    let answer = opens.clone().tcp_flags(TCP_SYN | TCP_ACK).seq(5);
    check("and what follows", g.run(&answer.bytes(), g.gout), XDP_PASS, &answer.bytes());
}

fn a_backend_calling_a_vip_that_picks_itself_is_source_natted(prog: Prog) {
    let mut g = Golden::with_prog(4096, prog);
    // "near" has one backend, 10.0.0.50:80, on the client link.
    let call = Frame::tcp("10.0.0.50:49000", "10.100.0.2:80").macs(mac(NEAR_MAC), mac(GIN_MAC));
    let expected = call
        .clone()
        .src("10.0.0.1:49000")
        .dst("10.0.0.50:80")
        .ttl(63)
        .macs(mac(GIN_MAC), mac(NEAR_MAC));
    check("hairpin call", g.run(&call.bytes(), g.gin), g.back_out(), &expected.bytes());
    let reply = Frame::tcp("10.0.0.50:80", "10.0.0.1:49000")
        .tcp_flags(TCP_SYN | TCP_ACK)
        .macs(mac(NEAR_MAC), mac(GIN_MAC));
    let expected = reply
        .clone()
        .src("10.100.0.2:80")
        .dst("10.0.0.50:49000")
        .ttl(63)
        .macs(mac(GIN_MAC), mac(NEAR_MAC));
    check("hairpin reply", g.run(&reply.bytes(), g.gin), g.back_out(), &expected.bytes());
}

fn ipv6_udp_without_a_checksum_is_dropped(prog: Prog) {
    let mut g = Golden::with_prog(4096, prog);
    let input = Frame::udp("[fd00::2]:49500", "[fd64::1]:53").udp_checksum_zero().payload(b"x");
    let before = g.exceptions(DropReason::Udp6ZeroChecksum);
    assert_eq!(g.run(&input.bytes(), g.gin).0, XDP_DROP);
    assert_eq!(g.exceptions(DropReason::Udp6ZeroChecksum), before + 1);
}

fn fragments_follow_their_first_fragment_both_ways(prog: Prog) {
    let mut g = Golden::with_prog(4096, prog);
    for (client, vip, backend, backend_mac) in [
        ("10.0.0.2:49600", "10.100.0.1:53", "10.1.0.11:5300", UDP_BACKEND_MAC),
        ("[fd00::2]:49601", "[fd64::1]:53", "[fd01::11]:5300", UDP_BACKEND_MAC),
    ] {
        let first = Frame::udp(client, vip).fragment(0, true).payload(&[0x11; 24]);
        let later = Frame::udp(client, vip).fragment(4, false).payload(b"the rest");
        for (name, f) in [("first fragment", first), ("later fragment", later)] {
            let expected = f.clone().dst(backend).ttl(63).macs(mac(GOUT_MAC), mac(backend_mac));
            check(name, g.run(&f.bytes(), g.gin), XDP_REDIRECT, &expected.bytes());
        }
        // The backend's fragmented reply reaches the client from the VIP,
        // every fragment of it.
        let first = Frame::udp(backend, client).fragment(0, true).payload(&[0x22; 24]);
        let later = Frame::udp(backend, client).fragment(4, false).payload(b"answered");
        for (name, f) in [("first reply fragment", first), ("later reply fragment", later)] {
            let expected = f.clone().src(vip).ttl(63).macs(mac(GIN_MAC), mac(CLIENT_MAC));
            check(name, g.run(&f.bytes(), g.gout), XDP_REDIRECT, &expected.bytes());
        }
    }
    // A first fragment the gateway merely passes is not remembered: its
    // later fragments pass untouched too.
    let stray = Frame::udp("10.0.0.50:49603", "10.1.0.77:9000").fragment(0, true).payload(&[1; 16]);
    check("stray first fragment", g.run(&stray.bytes(), g.gin), XDP_PASS, &stray.bytes());
    let stray_later =
        Frame::udp("10.0.0.50:49603", "10.1.0.77:9000").fragment(4, false).payload(b"y");
    let before = g.exceptions(DropReason::Fragment);
    check("its later fragment", g.run(&stray_later.bytes(), g.gin), XDP_PASS, &stray_later.bytes());
    assert_eq!(g.exceptions(DropReason::Fragment), before + 1, "not remembered");
    // A later fragment whose first was never seen: passed on, counted.
    // (Another source: every builder datagram has identification 0.)
    let orphan = Frame::udp("10.0.0.50:49602", "10.100.0.1:53").fragment(4, false).payload(b"x");
    let before = g.exceptions(DropReason::Fragment);
    check("orphan fragment", g.run(&orphan.bytes(), g.gin), XDP_PASS, &orphan.bytes());
    assert_eq!(g.exceptions(DropReason::Fragment), before + 1);
}

/// Datagrams past `MAX_FRAGS` in flight at once (a fragment flood, or many
/// slow senders): the table keeps the newest first fragments; a later
/// fragment whose first was evicted passes untouched and is counted, never
/// sent to a wrong backend or lost without a count.
fn more_fragmented_datagrams_than_the_table_holds_keep_the_newest_and_count_the_rest(prog: Prog) {
    const NEWEST: u32 = 1_024;
    let mut g = Golden::with_prog(4096, prog);
    let datagrams = lb_common::abi::MAX_FRAGS + 2_048;
    for (client, vip, backend) in [
        ("10.0.0.2:49600", "10.100.0.1:53", "10.1.0.11:5300"),
        ("[fd00::2]:49601", "[fd64::1]:53", "[fd01::11]:5300"),
    ] {
        let frame = |id: u32, offset: u16, more: bool| {
            Frame::udp(client, vip).ip_id(id).fragment(offset, more).payload(&[0x5a; 16])
        };
        let to_backend =
            |f: Frame| f.dst(backend).ttl(63).macs(mac(GOUT_MAC), mac(UDP_BACKEND_MAC));
        for id in 1..=datagrams {
            let first = frame(id, 0, true);
            let out = g.run(&first.bytes(), g.gin);
            check(&format!("first fragment {id}"), out, XDP_REDIRECT, &to_backend(first).bytes());
        }
        let before = g.exceptions(DropReason::Fragment);
        let mut passed = 0u64;
        // Newest first: the table holds them all.
        for id in (1..=datagrams).rev() {
            let later = frame(id, 2, false);
            let (action, out) = g.run(&later.bytes(), g.gin);
            if action == XDP_REDIRECT && id > datagrams - NEWEST {
                check(
                    &format!("later fragment {id}"),
                    (action, out),
                    XDP_REDIRECT,
                    &to_backend(later).bytes(),
                );
            } else if action == XDP_REDIRECT {
                assert_eq!(out, to_backend(later).bytes(), "later fragment {id} sent elsewhere");
            } else {
                assert!(
                    id <= datagrams - NEWEST,
                    "later fragment {id}, among the newest, forgotten"
                );
                check(
                    &format!("later fragment {id}, its first evicted"),
                    (action, out),
                    XDP_PASS,
                    &later.bytes(),
                );
                passed += 1;
            }
        }
        let evicted = u64::from(datagrams - lb_common::abi::MAX_FRAGS);
        assert!(
            passed >= evicted,
            "{passed} later fragments passed; the table cannot hold {evicted}"
        );
        assert_eq!(g.exceptions(DropReason::Fragment) - before, passed, "each passed one counted");
    }
}
