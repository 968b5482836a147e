//! Fuzzes `lb_common::parse::parse`, the header parser the XDP program runs
//! on every packet: it must never panic, and what it reports must agree with
//! the bytes it was given.
#![no_main]

use lb_common::abi::{FAMILY_V4, FAMILY_V6, PROTO_TCP, PROTO_UDP};
use lb_common::parse::{Parsed, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let first = parse(data);
    // Deterministic: a second parse of the same bytes agrees.
    assert_eq!(first, parse(data));
    let Ok(outcome) = first else { return };
    if let Parsed::L4(p) = outcome {
        assert!(p.l3_off == 14 || p.l3_off == 18, "l3_off {}", p.l3_off);
        let l4_len = match p.key.proto {
            PROTO_TCP => 20,
            PROTO_UDP => 8,
            other => panic!("L4 with protocol {other}"),
        };
        assert!(
            p.l4_off + l4_len <= data.len(),
            "{p:?} in {} bytes",
            data.len()
        );
        // TCP flags are byte 13 of the TCP header; UDP has none.
        let flags = if p.key.proto == PROTO_TCP {
            data[p.l4_off + 13]
        } else {
            0
        };
        assert_eq!(p.tcp_flags, flags);
        let min_ip = if p.key.family == FAMILY_V4 { 20 } else { 40 };
        assert!(p.key.family == FAMILY_V4 || p.key.family == FAMILY_V6);
        assert!(p.l4_off >= p.l3_off + min_ip);
        // The ports are the first four bytes of the L4 header, wire order.
        let ports = &data[p.l4_off..p.l4_off + 4];
        assert_eq!(p.key.src_port_be.to_ne_bytes(), [ports[0], ports[1]]);
        assert_eq!(p.key.dst_port_be.to_ne_bytes(), [ports[2], ports[3]]);
        assert_eq!(p.key._pad, [0, 0]);
    }
    // Every check is "does this fit": bytes appended after a classified
    // frame (Ethernet padding) never change the outcome.
    let mut padded = data.to_vec();
    padded.extend_from_slice(&[0xa5; 64]);
    assert_eq!(parse(padded.as_slice()), Ok(outcome));
});
