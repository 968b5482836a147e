//! Byte streams through the splice proxy (`lb run --mode splice`), with the
//! backends served by the test itself so it sees what arrived and when:
//! half-closes in both directions, a gigabyte checked at both ends, and a
//! client that stops reading. Needs root.

use std::{
    io::{Read, Write},
    net::{Shutdown, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use lb_tests::{
    client::{Setup, vip},
    inproc::Server,
    stream::{BLOCK, Blocks, Digest},
    topology::{VIP4, backend4, sock},
};

/// lb in splice mode in front of one backend the test serves with `handle`.
fn proxied(handle: impl Fn(TcpStream) + Send + Sync + 'static) -> (Setup, Server) {
    let s = Setup::splice(None, 1, &[], "splice");
    let backend = sock(backend4(1), 80).parse().expect("backend address");
    let server = Server::start(&s.topo.backends[0], backend, handle);
    (s, server)
}

/// A client connection to the TCP VIP; every read and write fails after
/// `timeout` instead of hanging.
fn connect(timeout: Duration) -> TcpStream {
    let c = TcpStream::connect_timeout(&vip(VIP4, 80), Duration::from_secs(2))
        .expect("connect to the VIP");
    c.set_read_timeout(Some(timeout)).expect("read timeout");
    c.set_write_timeout(Some(timeout)).expect("write timeout");
    c
}

#[test]
fn a_client_half_close_reaches_the_backend_which_still_answers() {
    let (s, _server) = proxied(|mut c| {
        let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
        let mut got = Vec::new();
        // Returns only at EOF: the client's FIN came through the proxy.
        if c.read_to_end(&mut got).is_ok() {
            let answer = format!("got {} bytes: {}", got.len(), String::from_utf8_lossy(&got));
            let _ = c.write_all(answer.as_bytes());
        }
    });
    let _in = s.topo.client.enter();
    let mut c = connect(Duration::from_secs(5));
    c.write_all(b"request body").expect("send");
    c.shutdown(Shutdown::Write).expect("half-close");
    let mut back = String::new();
    c.read_to_string(&mut back).expect("the answer after our half-close, then EOF");
    assert_eq!(back, "got 12 bytes: request body");
}

#[test]
fn a_backend_half_close_reaches_the_client_which_can_still_send() {
    let (tx, rx) = mpsc::channel();
    let (s, _server) = proxied(move |mut c| {
        let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
        let _ = c.write_all(b"greeting\n");
        let _ = c.shutdown(Shutdown::Write);
        let mut got = Vec::new();
        let _ = tx.send(c.read_to_end(&mut got).map(|_| got).map_err(|e| e.to_string()));
    });
    let _in = s.topo.client.enter();
    let mut c = connect(Duration::from_secs(5));
    let mut first = String::new();
    c.read_to_string(&mut first).expect("the greeting, then EOF: the backend's FIN came through");
    assert_eq!(first, "greeting\n");
    c.write_all(b"sent after the backend's half-close").expect("the client can still send");
    c.shutdown(Shutdown::Write).expect("half-close");
    let got = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the backend reads to EOF")
        .expect("the backend's read");
    assert_eq!(String::from_utf8_lossy(&got), "sent after the backend's half-close");
}

#[test]
fn a_gigabyte_arrives_intact_and_is_counted() {
    const GIB: usize = 1 << 30;
    let (s, _server) = proxied(|mut c| {
        // Generous per-operation timeouts bound the test without timing it.
        let _ = c.set_read_timeout(Some(Duration::from_secs(20)));
        let (mut d, mut buf) = (Digest::default(), vec![0u8; BLOCK]);
        loop {
            match c.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => d.update(&buf[..n]),
                Err(_) => return,
            }
        }
        let _ = c.write_all(format!("{} {:016x}", d.len, d.value()).as_bytes());
    });
    let inside = s.topo.client.enter();
    let mut c = connect(Duration::from_secs(20));
    let (mut blocks, mut sent) = (Blocks::default(), Digest::default());
    let start = Instant::now();
    for i in 0..GIB / BLOCK {
        let b = blocks.next_block();
        sent.update(b);
        c.write_all(b).unwrap_or_else(|e| panic!("block {i} of {}: {e}", GIB / BLOCK));
    }
    c.shutdown(Shutdown::Write).expect("half-close");
    let mut answer = String::new();
    c.read_to_string(&mut answer).expect("the backend's digest");
    eprintln!("1 GiB through the proxy in {:.1} s", start.elapsed().as_secs_f64());
    assert_eq!(
        answer,
        format!("{} {:016x}", sent.len, sent.value()),
        "the backend got what was sent (length, digest)"
    );
    drop(inside);
    // The proxy counts a connection's bytes when it ends, just after it
    // passed the backend's FIN on.
    let want = (GIB + answer.len()) as u64;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let t = s.lb.report().services.iter().find(|x| x.name == "tcp-v4").expect("tcp-v4").traffic;
        if t.bytes == want && t.new_flows == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "counters {t:?}: want {want} bytes in 1 connection");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Bytes `written` settles at, once it has not grown for 300 ms (at most 10 s).
fn settled(written: &AtomicU64) -> u64 {
    let start = Instant::now();
    let (mut last, mut since) = (written.load(Ordering::Relaxed), Instant::now());
    while since.elapsed() < Duration::from_millis(300) {
        assert!(start.elapsed() < Duration::from_secs(10), "the backend never stopped writing");
        std::thread::sleep(Duration::from_millis(20));
        let now = written.load(Ordering::Relaxed);
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    last
}

#[test]
fn a_client_that_stops_reading_holds_its_backend_back_and_no_one_else() {
    // What the path can hold while the client reads nothing: the socket
    // buffers backend -> lb -> client (at most 4 + 6 + 4 + 6 MiB with the
    // default tcp_rmem/tcp_wmem) and one 64 KiB pipe, with room to spare.
    // A proxy that kept reading would take all the backend offers.
    const HELD: u64 = 64 << 20;
    let written = Arc::new(AtomicU64::new(0));
    let counter = written.clone();
    let (s, _server) = proxied(move |mut c| {
        let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
        let _ = c.set_write_timeout(Some(Duration::from_secs(20)));
        let mut ask = [0u8; 5];
        if c.read_exact(&mut ask).is_err() {
            return;
        }
        if &ask == b"PING\n" {
            let _ = c.write_all(b"pong\n");
            return;
        }
        // FLOOD: the block stream until the client goes away.
        let mut blocks = Blocks::default();
        loop {
            for chunk in blocks.next_block().chunks(1 << 16) {
                if c.write_all(chunk).is_err() {
                    return;
                }
                counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
        }
    });
    let _in = s.topo.client.enter();
    let mut slow = connect(Duration::from_secs(10));
    slow.write_all(b"FLOOD").expect("ask for the flood");
    let mut got = vec![0u8; BLOCK];
    slow.read_exact(&mut got).expect("the flood flows");
    let mut received = Digest::default();
    received.update(&got);

    let stalled = settled(&written);
    eprintln!("the backend could write {stalled} bytes before the stalled client held it back");
    assert!(
        stalled < HELD,
        "{stalled} bytes written into a connection whose client reads nothing: the proxy buffers"
    );
    for i in 0..100 {
        let mut c = connect(Duration::from_secs(2));
        c.write_all(b"PING\n").unwrap_or_else(|e| panic!("connection {i}: {e}"));
        let mut pong = [0u8; 5];
        c.read_exact(&mut pong).unwrap_or_else(|e| panic!("connection {i} was not served: {e}"));
        assert_eq!(&pong, b"pong\n");
    }
    assert!(written.load(Ordering::Relaxed) < HELD, "still held back");

    // Reading again, the client gets the stream intact and the backend
    // writes again.
    let mut buf = vec![0u8; BLOCK];
    for _ in 0..(2 * HELD) / BLOCK as u64 {
        slow.read_exact(&mut buf).expect("the stream resumes");
        received.update(&buf);
    }
    let mut expected = (Blocks::default(), Digest::default());
    while expected.1.len < received.len {
        let b = expected.0.next_block();
        expected.1.update(b);
    }
    assert_eq!(received.value(), expected.1.value(), "the stream arrived intact and in order");
    assert!(written.load(Ordering::Relaxed) > stalled, "the backend writes again");
}
