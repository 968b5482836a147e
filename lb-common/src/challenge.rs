//! The SYN challenge of flood mode: a SYN from a source that has not shown
//! it receives what is sent to its address is answered, in its place, by a
//! SYN-ACK whose acknowledgement number the client's TCP must refuse.
//!
//! A client in SYN-SENT refuses a SYN-ACK that does not acknowledge its
//! SYN exactly, answers it with a reset whose sequence number is that
//! acknowledgement number (RFC 9293 §3.10.7.3), and sends its SYN again
//! (Linux at once, two jiffies later, when its SYN had not been sent twice
//! yet). The reset carries the challenge back: a source that returns it
//! receives packets sent to its address, which a spoofed source does not,
//! and its next SYN goes to a backend. No per-SYN state is kept.
//!
//! The acknowledgement number lies just below the client's: at most
//! [`WINDOW`] before its initial sequence number. Stateful firewalls and
//! NAT gateways between the client and the balancer (Linux conntrack among
//! them) let an acknowledgement within the window through and translate
//! it; a random one they would drop as invalid, and the client behind them
//! could never answer. So the challenge is its low [`BITS`] bits: a keyed
//! hash of the connection's addresses and ports (the kernel's SYN-cookie
//! hash, `bpf_tcp_raw_gen_syncookie_*`, its secret the kernel's own and
//! its time part changing every 64 s). A blind guess passes one time in
//! 16 384, and all a passed guess buys a spoofer is what every source had
//! before flood mode: its SYNs reach a backend.

/// Bits of the challenge carried in the acknowledgement number.
pub const BITS: u32 = 14;
/// How far below the client's sequence number the acknowledgement lies at
/// most (less than any window a firewall allows an acknowledgement).
pub const WINDOW: u32 = 1 << BITS;
const MASK: u32 = WINDOW - 1;
/// The window the challenge advertises: stateful firewalls judge an
/// acknowledgement against the window of its sender, which must cover
/// [`WINDOW`].
pub const ADVERTISED_WINDOW: u16 = 0xffff;

/// The acknowledgement number of the challenge to a SYN with sequence
/// number `isn`, for the keyed hash `token`: the highest number not above
/// `isn` whose low [`BITS`] bits are the token's. Never `isn + 1`, the one
/// number the client would accept.
#[inline(always)]
pub const fn ack_for(isn: u32, token: u32) -> u32 {
    isn.wrapping_sub(isn.wrapping_sub(token) & MASK)
}

/// Whether a reset with sequence number `seq` answers the challenge whose
/// keyed hash is `token`.
#[inline(always)]
pub const fn answered(seq: u32, token: u32) -> bool {
    (seq ^ token) & MASK == 0
}

/// Bytes of the TCP header the challenge rewrites: ports, sequence and
/// acknowledgement numbers, offset and flags, window.
pub const REWRITTEN: usize = 16;

const SYN_ACK: u8 = 0x12;

/// The first [`REWRITTEN`] bytes of the challenge answering the TCP header
/// whose first bytes are `syn`, for the keyed hash `token`, and the
/// checksum difference (`csum::diff16` form) from the old bytes to the new.
/// The ports are swapped, the sequence number is the token (any number
/// would do: the client never acknowledges it), the flags are SYN-ACK and
/// the window [`ADVERTISED_WINDOW`]; the header length and options stay,
/// so the packet keeps its length and its pseudo-header sum.
pub fn syn_ack(syn: &[u8; REWRITTEN], token: u32) -> ([u8; REWRITTEN], u32) {
    let isn = u32::from_be_bytes([syn[4], syn[5], syn[6], syn[7]]);
    let ack = ack_for(isn, token).to_be_bytes();
    let seq = token.to_be_bytes();
    let win = ADVERTISED_WINDOW.to_be_bytes();
    let out = [
        syn[2], syn[3], syn[0], syn[1], // ports, swapped
        seq[0], seq[1], seq[2], seq[3], //
        ack[0], ack[1], ack[2], ack[3], //
        syn[12], SYN_ACK, win[0], win[1],
    ];
    let mut diff = 0;
    let mut i = 0;
    while i < REWRITTEN {
        diff += crate::csum::diff16(
            u16::from_ne_bytes([syn[i], syn[i + 1]]),
            u16::from_ne_bytes([out[i], out[i + 1]]),
        );
        i += 2;
    }
    (out, diff)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csum;

    #[test]
    fn the_ack_carries_the_token_and_lies_just_below_the_isn() {
        for isn in [0u32, 1, 5, 0x3fff, 0x4000, 0x8000_0000, u32::MAX - 3, u32::MAX] {
            for token in [0u32, 1, 0x1234, 0x3fff, 0xdead_beef, u32::MAX] {
                let ack = ack_for(isn, token);
                assert!(answered(ack, token), "isn {isn:#x} token {token:#x}");
                let below = isn.wrapping_sub(ack);
                assert!(below < WINDOW, "isn {isn:#x} ack {ack:#x}");
                assert_ne!(ack, isn.wrapping_add(1), "the client would accept it");
            }
        }
    }

    #[test]
    fn another_token_is_refused() {
        let token = 0x0bad_cafe;
        let ack = ack_for(1000, token);
        let refused = (1..WINDOW).filter(|d| answered(ack ^ d, token)).count();
        assert_eq!(refused, 0);
        assert!(!answered(ack.wrapping_add(1), token));
    }

    /// A SYN with options and its challenge: the checksum updated by the
    /// difference equals one computed from scratch (the pseudo-header is
    /// unchanged: the addresses are swapped, the length kept).
    #[test]
    fn the_difference_keeps_the_checksum_right() {
        let mut syn = [0u8; 24];
        syn[..4].copy_from_slice(&[0xc3, 0x50, 0x1f, 0x90]);
        syn[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        syn[12] = 0x60; // 24 bytes: one option word
        syn[13] = 0x02;
        syn[14..16].copy_from_slice(&64240u16.to_be_bytes());
        syn[20..24].copy_from_slice(&[2, 4, 0x05, 0xb4]);
        let pseudo = [10u8, 0, 0, 1, 10, 0, 0, 2, 0, 6, 0, 24];
        let sum = |tcp: &[u8]| {
            let mut all = pseudo.to_vec();
            all.extend_from_slice(tcp);
            csum::full(&all)
        };
        let check = sum(&syn);
        syn[16..18].copy_from_slice(&check.to_ne_bytes());
        let head: [u8; REWRITTEN] = syn[..REWRITTEN].try_into().unwrap();
        let (new, diff) = syn_ack(&head, 0x55aa_1234);
        let mut answer = syn;
        answer[..REWRITTEN].copy_from_slice(&new);
        answer[16..18].copy_from_slice(&csum::apply(check, diff).to_ne_bytes());
        let mut zeroed = answer;
        zeroed[16..18].copy_from_slice(&[0, 0]);
        assert_eq!(u16::from_ne_bytes([answer[16], answer[17]]), sum(&zeroed));
        assert_eq!(&answer[0..4], &[0x1f, 0x90, 0xc3, 0x50]);
        assert_eq!(answer[13], 0x12);
        assert_eq!(answer[12], 0x60);
        let ack = u32::from_be_bytes([answer[8], answer[9], answer[10], answer[11]]);
        assert!(answered(ack, 0x55aa_1234));
        assert_eq!(&answer[20..24], &[2, 4, 0x05, 0xb4]);
    }
}
