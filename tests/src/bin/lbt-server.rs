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
    io::{BufRead, BufReader, IoSlice, IoSliceMut, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd,
    thread,
};

use nix::{
    libc,
    sys::socket::{
        ControlMessage, ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, sendmsg,
        setsockopt, sockopt,
    },
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
/// The answer leaves from the address the datagram was sent to, as a UDP
/// server behind direct server return must answer (from the VIP it holds
/// on `lo`): a wildcard socket's own choice would be its interface's
/// address, which a client that sent to the VIP does not expect.
fn serve_udp(sock: UdpSocket, name: String) {
    const ECHO: &[u8] = b"echo:";
    let v6 = sock.local_addr().is_ok_and(|a| a.is_ipv6());
    let on = if v6 {
        setsockopt(&sock, sockopt::Ipv6RecvPacketInfo, &true)
    } else {
        setsockopt(&sock, sockopt::Ipv4PacketInfo, &true)
    };
    on.expect("IP_PKTINFO / IPV6_RECVPKTINFO");
    let mut buf = vec![0u8; 65_536];
    loop {
        let mut space = nix::cmsg_space!(libc::in6_pktinfo);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let Ok(msg) = recvmsg::<SockaddrStorage>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::empty(),
        ) else {
            return;
        };
        let (n, Some(peer)) = (msg.bytes, msg.address) else { continue };
        let to = msg.cmsgs().ok().and_then(|mut c| {
            c.find_map(|m| match m {
                ControlMessageOwned::Ipv4PacketInfo(i) => Some(To::V4(i)),
                ControlMessageOwned::Ipv6PacketInfo(i) => Some(To::V6(i)),
                _ => None,
            })
        });
        let peer_text = peer
            .as_sockaddr_in()
            .map(|a| SocketAddr::from(std::net::SocketAddrV4::from(*a)))
            .or_else(|| {
                peer.as_sockaddr_in6().map(|a| SocketAddr::from(std::net::SocketAddrV6::from(*a)))
            });
        let Some(peer_addr) = peer_text else { continue };
        let mut reply = format!("{name} {peer_addr} ").into_bytes();
        if let Some(request) = buf.get(..n).filter(|r| r.starts_with(ECHO)) {
            reply.extend_from_slice(request);
        }
        let iov = [IoSlice::new(&reply)];
        // From the datagram's destination, on whatever interface the route
        // to the peer takes.
        let _ = match to {
            Some(To::V4(mut i)) => {
                i.ipi_spec_dst = i.ipi_addr;
                i.ipi_ifindex = 0;
                let c = [ControlMessage::Ipv4PacketInfo(&i)];
                sendmsg(sock.as_raw_fd(), &iov, &c, MsgFlags::empty(), Some(&peer))
            }
            Some(To::V6(mut i)) => {
                i.ipi6_ifindex = 0;
                let c = [ControlMessage::Ipv6PacketInfo(&i)];
                sendmsg(sock.as_raw_fd(), &iov, &c, MsgFlags::empty(), Some(&peer))
            }
            None => sendmsg(sock.as_raw_fd(), &iov, &[], MsgFlags::empty(), Some(&peer)),
        };
    }
}

/// Where a datagram was sent to (its packet info).
enum To {
    V4(libc::in_pktinfo),
    V6(libc::in6_pktinfo),
}
