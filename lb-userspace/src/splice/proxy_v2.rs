//! PROXY protocol version 2 headers (haproxy.org/download/2.6/doc/proxy-protocol.txt),
//! which tell a backend the client address a splice-mode connection came
//! from. Binary rather than v1 text: fixed layout, nothing to escape, and
//! every current receiver (HAProxy, nginx, Envoy, Traefik) accepts it.

use std::net::SocketAddr;

/// The 12-byte signature every v2 header starts with.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// Version 2, command PROXY: the addresses are those of the relayed client.
const PROXY: u8 = 0x21;
/// Version 2, command LOCAL: a connection of the balancer's own (a health
/// probe); the receiver uses the real endpoints.
const LOCAL: u8 = 0x20;
/// Address family and transport: TCP over IPv4, TCP over IPv6, unspecified.
const TCP4: u8 = 0x11;
const TCP6: u8 = 0x21;
const UNSPEC: u8 = 0x00;

/// The header for a connection from `client` to `vip`. Mixed families (an
/// IPv6 client of an IPv4 VIP cannot happen: sockets are bound per family)
/// map v4 to v4-mapped v6 so the header stays truthful.
pub fn header(client: SocketAddr, vip: SocketAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + 36);
    out.extend_from_slice(&SIGNATURE);
    out.push(PROXY);
    match (client, vip) {
        (SocketAddr::V4(c), SocketAddr::V4(v)) => {
            out.push(TCP4);
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&c.ip().octets());
            out.extend_from_slice(&v.ip().octets());
        }
        _ => {
            let v6 = |a: SocketAddr| match a {
                SocketAddr::V4(a) => a.ip().to_ipv6_mapped(),
                SocketAddr::V6(a) => *a.ip(),
            };
            out.push(TCP6);
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&v6(client).octets());
            out.extend_from_slice(&v6(vip).octets());
        }
    }
    out.extend_from_slice(&client.port().to_be_bytes());
    out.extend_from_slice(&vip.port().to_be_bytes());
    out
}

/// The header a health probe sends to a backend that expects one: LOCAL,
/// no addresses.
pub const LOCAL_HEADER: [u8; 16] = {
    let mut out = [0u8; 16];
    let mut i = 0;
    while i < 12 {
        out[i] = SIGNATURE[i];
        i += 1;
    }
    out[12] = LOCAL;
    out[13] = UNSPEC;
    out
};

/// Decodes a header at the start of `buf`: (client, vip, header length);
/// `None` for anything but a complete PROXY TCP header. For tests and the
/// test servers, which play the backend.
pub fn parse(buf: &[u8]) -> Option<(SocketAddr, SocketAddr, usize)> {
    if buf.get(..12)? != SIGNATURE || *buf.get(12)? != PROXY {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([*buf.get(14)?, *buf.get(15)?]));
    let body = buf.get(16..16 + len)?;
    let port = |at: usize| Some(u16::from_be_bytes([*body.get(at)?, *body.get(at + 1)?]));
    let (client, vip) = match *buf.get(13)? {
        TCP4 if len >= 12 => {
            let ip = |at: usize| -> Option<[u8; 4]> { body.get(at..at + 4)?.try_into().ok() };
            (SocketAddr::from((ip(0)?, port(8)?)), SocketAddr::from((ip(4)?, port(10)?)))
        }
        TCP6 if len >= 36 => {
            let ip = |at: usize| -> Option<[u8; 16]> { body.get(at..at + 16)?.try_into().ok() };
            (SocketAddr::from((ip(0)?, port(32)?)), SocketAddr::from((ip(16)?, port(34)?)))
        }
        _ => return None,
    };
    Some((client, vip, 16 + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_header_matches_the_spec_layout() {
        let h = header("192.0.2.7:51000".parse().unwrap(), "10.0.0.100:80".parse().unwrap());
        let mut want = SIGNATURE.to_vec();
        want.extend_from_slice(&[0x21, 0x11, 0, 12]);
        want.extend_from_slice(&[192, 0, 2, 7, 10, 0, 0, 100]);
        want.extend_from_slice(&51000u16.to_be_bytes());
        want.extend_from_slice(&80u16.to_be_bytes());
        assert_eq!(h, want);
        assert_eq!(h.len(), 28);
    }

    #[test]
    fn ipv6_header_round_trips() {
        let (c, v) = ("[2001:db8::7]:40000".parse().unwrap(), "[fd00::100]:443".parse().unwrap());
        let h = header(c, v);
        assert_eq!(&h[12..16], &[0x21, 0x21, 0, 36]);
        assert_eq!(parse(&h), Some((c, v, 52)));
        let (c4, v4) = ("192.0.2.7:1".parse().unwrap(), "10.0.0.100:2".parse().unwrap());
        assert_eq!(parse(&header(c4, v4)), Some((c4, v4, 28)));
    }

    #[test]
    fn parse_refuses_truncated_or_foreign_input() {
        let h = header("192.0.2.7:1".parse().unwrap(), "10.0.0.100:2".parse().unwrap());
        for cut in 0..h.len() {
            assert_eq!(parse(&h[..cut]), None, "cut at {cut}");
        }
        assert_eq!(parse(b"GET / HTTP/1.1\r\n\r\n"), None);
        assert_eq!(parse(&LOCAL_HEADER), None, "LOCAL carries no client");
    }

    #[test]
    fn local_header_is_the_16_byte_form() {
        let h = LOCAL_HEADER;
        assert_eq!(&h[..12], &SIGNATURE);
        assert_eq!(&h[12..], &[0x20, 0x00, 0, 0]);
    }
}
