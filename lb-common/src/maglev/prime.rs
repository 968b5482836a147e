//! Primality for table sizes.
//!
//! Maglev needs a prime table size: only then does every skip in `1..M` walk
//! all `M` slots, so a backend always finds a free slot. Config validation
//! calls these too, and a size near `u32::MAX` must not take seconds, so this
//! is a deterministic Miller-Rabin rather than trial division.

/// Whether `n` is prime.
///
/// Exact for every `u32`: Miller-Rabin with bases 2, 7 and 61 has no
/// strong pseudoprime below 4 759 123 141 (Jaeschke, 1993).
pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    for p in [2, 3, 5, 7, 11, 13, 61] {
        if n == p {
            return true;
        }
        if n.is_multiple_of(p) {
            return false;
        }
    }
    let n = u64::from(n);
    let (mut d, mut s) = (n - 1, 0);
    while d.is_multiple_of(2) {
        d /= 2;
        s += 1;
    }
    [2, 7, 61].iter().all(|&a| {
        let mut x = pow_mod(a, d, n);
        if x == 1 || x == n - 1 {
            return true;
        }
        for _ in 1..s {
            x = x * x % n;
            if x == n - 1 {
                return true;
            }
        }
        false
    })
}

/// The smallest prime `>= n`, or `None` when it would not fit a `u32` (`n`
/// above 4 294 967 291, the largest 32-bit prime).
pub fn next_prime(n: u32) -> Option<u32> {
    (n..=u32::MAX).find(|&c| is_prime(c))
}

/// The largest prime `<= n`, or `None` when `n < 2`.
pub(super) fn prev_prime(n: u32) -> Option<u32> {
    (2..=n).rev().find(|&c| is_prime(c))
}

/// `base^exp mod m` for `m < 2^32`, so products fit in a `u64`.
fn pow_mod(base: u64, mut exp: u64, m: u64) -> u64 {
    let (mut result, mut base) = (1, base % m);
    while exp > 0 {
        if exp & 1 == 1 {
            result = result * base % m;
        }
        base = base * base % m;
        exp >>= 1;
    }
    result
}
