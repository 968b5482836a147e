//! Byte streams a test can check end to end: a digest both ends compute over
//! what they sent or received, and a stream of blocks to send.
//!
//! The digest mixes 8-byte words, not bytes: tests build without
//! optimisation, and word-wise it still hashes about 1 GB/s there, so a
//! gigabyte transfer is not limited by its own checksum.

/// FNV-1a over 64-bit words (the last partial word zero-padded), plus the
/// length. Not cryptographic: it catches lost, duplicated, reordered or
/// altered data, which is what a relay can get wrong.
#[derive(Debug, Clone, Copy)]
pub struct Digest {
    state: u64,
    /// Bytes seen.
    pub len: u64,
    carry: [u8; 8],
    carried: usize,
}

const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME: u64 = 0x100_0000_01b3;

impl Default for Digest {
    fn default() -> Self {
        Self { state: OFFSET, len: 0, carry: [0; 8], carried: 0 }
    }
}

impl Digest {
    /// Adds `data`, wherever the previous call left off (reads and writes
    /// split a stream anywhere).
    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if self.carried > 0 {
            let take = (8 - self.carried).min(data.len());
            self.carry[self.carried..self.carried + take].copy_from_slice(&data[..take]);
            self.carried += take;
            data = &data[take..];
            if self.carried < 8 {
                return;
            }
            self.mix(self.carry);
            self.carried = 0;
        }
        let (words, rest) = data.as_chunks::<8>();
        for w in words {
            self.mix(*w);
        }
        self.carry[..rest.len()].copy_from_slice(rest);
        self.carried = rest.len();
    }

    fn mix(&mut self, word: [u8; 8]) {
        self.state = (self.state ^ u64::from_le_bytes(word)).wrapping_mul(PRIME);
    }

    /// The digest of everything added.
    pub fn value(&self) -> u64 {
        let mut tail = [0u8; 8];
        tail[..self.carried].copy_from_slice(&self.carry[..self.carried]);
        let h = (self.state ^ u64::from_le_bytes(tail)).wrapping_mul(PRIME);
        (h ^ self.len).wrapping_mul(PRIME)
    }
}

/// Size of one [`Blocks`] block.
pub const BLOCK: usize = 1 << 20;

/// A stream of distinct blocks, cheap enough to send by the gigabyte: one
/// pseudo-random block, each copy stamped with its index in its first eight
/// bytes, so a lost or repeated block changes the digest.
#[derive(Debug)]
pub struct Blocks {
    block: Vec<u8>,
    next: u64,
}

impl Default for Blocks {
    fn default() -> Self {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let block = (0..BLOCK)
            .map(|_| {
                // xorshift64
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        Self { block, next: 0 }
    }
}

impl Blocks {
    /// The next block.
    pub fn next_block(&mut self) -> &[u8] {
        self.block[..8].copy_from_slice(&self.next.to_le_bytes());
        self.next += 1;
        &self.block
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_does_not_depend_on_how_the_stream_is_split() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
        let mut whole = Digest::default();
        whole.update(&data);
        for split in [1, 3, 7, 8, 9, 500, 999] {
            let mut parts = Digest::default();
            for chunk in data.chunks(split) {
                parts.update(chunk);
            }
            assert_eq!(parts.value(), whole.value(), "split every {split} bytes");
        }
        let mut other = Digest::default();
        other.update(&data[1..]);
        assert_ne!(other.value(), whole.value());
        let mut padded = Digest::default();
        padded.update(&[&data[..], &[0]].concat());
        assert_ne!(padded.value(), whole.value(), "a trailing zero byte counts");
    }

    #[test]
    fn blocks_differ_by_their_index() {
        let mut b = Blocks::default();
        let first = b.next_block().to_vec();
        assert_ne!(b.next_block(), &first[..]);
    }
}
