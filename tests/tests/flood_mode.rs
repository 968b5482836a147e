//! A bounded spoofed SYN flood (hping3 --flood -S --rand-source from the
//! client namespace at the test VIP, 3 s, stopped by the test) through the
//! real `lb` in every mode, with a flow table small enough for the flood to
//! overflow it many times: 30 long-lived connections asking every 20 ms
//! stay unbroken on their backends, new connections keep succeeding, and
//! flood mode turns on during the flood and off after it (status, log).
//! Needs root and hping3.

use std::{
    net::{SocketAddr, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use lb_tests::{
    agent::{TempDir, config, wait_for, with_flows},
    client::{Conn, Setup, vip},
    flood::SynFlood,
    in_both_modes,
    mode::Mode,
    topology::{Topology, VIP4},
};

const SERVER: &str = env!("CARGO_BIN_EXE_lbt-server");
/// The flow table of the test: 4096 answered flows, 1024 pending ones
/// (the least there is), which the flood overflows hundreds of times.
const FLOWS: &str = "capacity = 4096\nflood_threshold = 2000";
const LONG_LIVED: usize = 30;
const FLOOD_FOR: Duration = Duration::from_secs(3);

in_both_modes!(a_spoofed_syn_flood_breaks_no_connection_and_turns_flood_mode_on_and_off);

/// How the long-lived connections fared.
#[derive(Default)]
struct Held {
    asked: AtomicU64,
    /// Answers that took longer than 1 s (a lost segment retransmitted).
    slow: AtomicU64,
    /// Connections that failed: reset, closed, or no answer within 10 s.
    broken: AtomicU64,
    /// Answers from another backend than the connection's first.
    moved: AtomicU64,
}

/// Asks over `stream` (a connection to the VIP) every 20 ms until `stop`.
fn hold(stream: TcpStream, stop: &AtomicBool, held: &Held) {
    use std::io::{BufRead, BufReader, ErrorKind, Write};
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut writer = stream.try_clone().expect("clone");
    let mut reader = BufReader::new(stream);
    let mut first = None;
    while !stop.load(Ordering::Relaxed) {
        held.asked.fetch_add(1, Ordering::Relaxed);
        let asked = Instant::now();
        let mut line = String::new();
        let answered = writer.write_all(b"hello\n").is_ok()
            && loop {
                match reader.read_line(&mut line) {
                    Ok(n) => break n > 0,
                    Err(e)
                        if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
                            && asked.elapsed() < Duration::from_secs(10) => {}
                    Err(_) => break false,
                }
            };
        if !answered {
            held.broken.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if asked.elapsed() > Duration::from_secs(1) {
            held.slow.fetch_add(1, Ordering::Relaxed);
        }
        let backend = line.split_whitespace().next().map(str::to_owned);
        if first.is_none() {
            first = backend;
        } else if backend != first {
            held.moved.fetch_add(1, Ordering::Relaxed);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One short connection: connect (2 s), one request, its answer.
fn short_request(to: SocketAddr) -> bool {
    let Ok(stream) = TcpStream::connect_timeout(&to, Duration::from_secs(2)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    Conn::from_stream(stream).try_ask().is_some()
}

fn a_spoofed_syn_flood_breaks_no_connection_and_turns_flood_mode_on_and_off(mode: Mode) {
    let topo = Topology::new(2);
    mode.prepare(&topo);
    let s = Setup::with_config(SERVER, topo, TempDir::new(), |t, d| {
        with_flows(&mode.config(&config(t, d, "maglev", 2)), FLOWS)
    });
    assert_eq!(s.mode, mode, "lb serves in the mode asked for:\n{}", s.lb.status());
    let to = vip(VIP4, 80);
    let client = s.topo.client.name().to_owned();

    // The client namespace stands for the internet: replies to spoofed
    // sources go there (and end), as they would leave a real balancer by
    // its default route; without one, splice mode's kernel would drop the
    // flood by reverse-path filtering before its listener saw it.
    s.topo.lb.ip("route replace default via 10.200.0.2");

    let inside = s.topo.client.enter();
    let conns: Vec<TcpStream> = (0..LONG_LIVED).map(|_| s.conn(to).into_stream()).collect();
    drop(inside);
    let stop = Arc::new(AtomicBool::new(false));
    let held = Arc::new(Held::default());
    let holders: Vec<_> = conns
        .into_iter()
        .map(|c| {
            let (stop, held) = (stop.clone(), held.clone());
            std::thread::spawn(move || hold(c, &stop, &held))
        })
        .collect();
    let (tried, ok) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let opener = {
        let (stop, tried, ok, client) = (stop.clone(), tried.clone(), ok.clone(), client.clone());
        std::thread::spawn(move || {
            let _inside = lb_tests::netns::enter(&client);
            while !stop.load(Ordering::Relaxed) {
                tried.fetch_add(1, Ordering::Relaxed);
                if short_request(to) {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };

    std::thread::sleep(Duration::from_millis(500));
    let before = s.lb.report().flood;
    assert!(!before.on, "flood mode before the flood: {before:?}");
    let started = Instant::now();
    let flood = SynFlood::start(&client, VIP4.parse().expect("VIP"), 80);
    let (mut seen_on, mut seen_challenging) = (false, false);
    while started.elapsed() < FLOOD_FOR {
        let flood = s.lb.report().flood;
        seen_on |= flood.on;
        seen_challenging |= flood.challenging;
        std::thread::sleep(Duration::from_millis(100));
    }
    flood.stop();
    seen_on |= s.lb.report().flood.on;
    // Legitimate traffic goes on a second after the flood.
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    for h in holders {
        h.join().expect("holder");
    }
    opener.join().expect("opener");
    let status = s.lb.status();
    let report = s.lb.report();
    let (tried, ok) = (tried.load(Ordering::Relaxed), ok.load(Ordering::Relaxed));
    eprintln!(
        "{mode:?}: new connections {ok}/{tried}; long-lived asked {} times, {} slower than 1 s, \
         {} broken, {} moved; flood {:?}\n{status}",
        held.asked.load(Ordering::Relaxed),
        held.slow.load(Ordering::Relaxed),
        held.broken.load(Ordering::Relaxed),
        held.moved.load(Ordering::Relaxed),
        report.flood,
    );
    assert!(seen_on, "flood mode never turned on during the flood:\n{status}\n{}", s.lb.log());
    // Splice mode has no hook to challenge at: its kernel's SYN cookies
    // answer the flood.
    assert_eq!(seen_challenging, mode.kernel(), "SYN challenges during the flood");
    assert_eq!(held.broken.load(Ordering::Relaxed), 0, "long-lived connections broke");
    assert_eq!(held.moved.load(Ordering::Relaxed), 0, "long-lived connections changed backend");
    assert!(tried >= 20, "only {tried} new connections were tried");
    // Native XDP on a veth: the flood overflows the 256-frame XDP ring of
    // the veth it is redirected into, before the datapath or the stack sees
    // a frame, and a legitimate SYN lost there twice in a row fails a 2 s
    // connect (seen: 64 of 65, 865 frames lost). lb counts those frames and
    // names the fix (attach = "tc", what `auto` picks on veth); what it must
    // never do is lose them silently. The tc hook and splice mode have no
    // such ring and are held to 99 %.
    let lost: u64 = report.interfaces.iter().map(|i| i.lost.total()).sum();
    let floor = if mode == Mode::Xdp && lost > 0 { 95 } else { 99 };
    assert!(
        ok * 100 >= tried * floor,
        "new connections: {ok} of {tried} succeeded ({lost} frames lost at the veths)"
    );
    if mode.kernel() {
        // Once flood mode is on, the flood's SYNs are challenged (none of
        // its sources answers), not new flows.
        let new_flows: u64 = report.services.iter().map(|v| v.traffic.new_flows).sum();
        let challenged = report
            .exceptions
            .iter()
            .find(|e| e.reason == "syn_challenged")
            .map_or(0, |e| e.packets);
        assert!(challenged > 0, "flood mode challenged no SYN:\n{status}");
        assert!(
            new_flows + challenged > 4 * 4096,
            "the flood made only {new_flows} new flows and {challenged} challenges"
        );
    }
    // Off once the rate has stayed below half the threshold for 5 s.
    wait_for(Duration::from_secs(20), "flood mode off after the flood", || {
        (!s.lb.report().flood.on).then_some(())
    });
    let log = s.lb.log();
    assert_eq!(log.matches("flood mode on").count(), 1, "logged once:\n{log}");
    assert_eq!(log.matches("flood mode off").count(), 1, "logged once:\n{log}");
}
