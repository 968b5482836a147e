//! A test backend: answers every TCP line and every UDP datagram with
//! `<name> <peer address>`, so a test learns which backend served it and
//! what client address the backend saw.
//!
//! A line starting with `GET ` is answered `HTTP/1.0 200 OK` (health
//! probes). A PROXY protocol v2 header, if a connection starts with one, is
//! read and the client it names reported as the peer.
//!
//! Usage: lbt-server [--require-proxy-v2] NAME PORT...  (each port served
//! over TCP and UDP, IPv4 and IPv6). With `--require-proxy-v2` a TCP
//! connection must start with a PROXY or LOCAL v2 header, as a real
//! backend expecting one would insist; any other is closed unanswered.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    thread,
};

use socket2::{Domain, Socket, Type};

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    let strict = args.next_if_eq("--require-proxy-v2").is_some();
    let name = args.next().expect("usage: lbt-server [--require-proxy-v2] NAME PORT...");
    let ports: Vec<u16> = args.map(|p| p.parse().expect("port")).collect();
    let mut threads = Vec::new();
    for port in ports {
        for host in ["0.0.0.0", "::"] {
            let addr = if host == "::" { format!("[::]:{port}") } else { format!("{host}:{port}") };
            let tcp = bind_tcp(&addr);
            let udp: UdpSocket = socket(&addr, Type::DGRAM).into();
            let (n1, n2) = (name.clone(), name.clone());
            threads.push(thread::spawn(move || serve_tcp(tcp, n1, strict)));
            threads.push(thread::spawn(move || serve_udp(udp, n2)));
        }
    }
    for t in threads {
        let _ = t.join();
    }
}

fn bind_tcp(addr: &str) -> TcpListener {
    let sock = socket(addr, Type::STREAM);
    sock.listen(1024).unwrap_or_else(|e| panic!("listen {addr}: {e}"));
    sock.into()
}

/// A bound socket; IPv6 ones are IPv6-only so both families can share a port
/// and peers show up with their own family.
fn socket(addr: &str, ty: Type) -> Socket {
    let sa: SocketAddr = addr.parse().expect("addr");
    let sock = Socket::new(Domain::for_address(sa), ty, None).expect("socket");
    if sa.is_ipv6() {
        sock.set_only_v6(true).expect("IPV6_V6ONLY");
    }
    sock.set_reuse_address(true).expect("SO_REUSEADDR");
    sock.bind(&sa.into()).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    sock
}

fn serve_tcp(listener: TcpListener, name: String, strict: bool) {
    for stream in listener.incoming().flatten() {
        let name = name.clone();
        thread::spawn(move || answer(stream, &name, strict));
    }
}

fn answer(stream: TcpStream, name: &str, strict: bool) {
    let Ok(mut peer) = stream.peer_addr() else { return };
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    // Behind a splice-mode lb with proxy_protocol = "v2", the client is the
    // one the header names (LOCAL headers, from probes, name none).
    match proxy_header(&mut reader) {
        Header::Proxy(client) => peer = client,
        Header::Local => {}
        Header::Missing if !strict => {}
        Header::Missing | Header::Invalid => return,
    }
    for line in reader.lines() {
        // An HTTP health probe: answer 200 and close.
        if line.as_deref().is_ok_and(|l| l.starts_with("GET ")) {
            let _ = out.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n");
            return;
        }
        // One write, so the answer travels in one segment.
        if line.is_err() || out.write_all(format!("{name} {peer}\n").as_bytes()).is_err() {
            return;
        }
    }
}

/// What a TCP connection starts with.
enum Header {
    /// A PROXY v2 header naming the relayed client.
    Proxy(SocketAddr),
    /// A LOCAL v2 header: the balancer's own connection (a probe).
    Local,
    /// No v2 signature at all.
    Missing,
    /// A signature followed by something neither PROXY nor LOCAL, or a
    /// stream that failed before the header was complete.
    Invalid,
}

/// Consumes a PROXY protocol v2 header if the stream starts with one.
fn proxy_header(reader: &mut BufReader<TcpStream>) -> Header {
    use lb_userspace::splice::proxy_v2::{LOCAL_HEADER, SIGNATURE, parse};
    let Ok(head) = reader.fill_buf() else { return Header::Invalid };
    if head.is_empty() || !head.starts_with(&SIGNATURE[..head.len().min(SIGNATURE.len())]) {
        return Header::Missing;
    }
    let mut fixed = [0u8; 16];
    if reader.read_exact(&mut fixed).is_err() {
        return Header::Invalid;
    }
    let mut body = vec![0u8; usize::from(u16::from_be_bytes([fixed[14], fixed[15]]))];
    if reader.read_exact(&mut body).is_err() {
        return Header::Invalid;
    }
    if fixed == LOCAL_HEADER {
        return Header::Local;
    }
    let whole = [fixed.as_slice(), &body].concat();
    parse(&whole).map_or(Header::Invalid, |(client, _, _)| Header::Proxy(client))
}

/// Answers each datagram with the server's name and the peer; a datagram
/// that starts with [`ECHO`] gets itself back after them, so a reply is as
/// large as its request (fragmented tests send datagrams over the MTU).
fn serve_udp(sock: UdpSocket, name: String) {
    const ECHO: &[u8] = b"echo:";
    let mut buf = vec![0u8; 65_536];
    while let Ok((n, peer)) = sock.recv_from(&mut buf) {
        let mut reply = format!("{name} {peer} ").into_bytes();
        if let Some(request) = buf.get(..n).filter(|r| r.starts_with(ECHO)) {
            reply.extend_from_slice(request);
        }
        let _ = sock.send_to(&reply, peer);
    }
}
