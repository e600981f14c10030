//! Primality and NTT-friendly prime generation.
//!
//! A negacyclic NTT of size `N` modulo `p` needs a primitive `2N`-th root of unity, i.e.
//! `p = 1 mod 2N`. [`ntt_primes`] lists the largest such primes of a given size, deterministically,
//! so that a parameter set names its primes by `(bits, N, index)` and every machine agrees.

use crate::{MAX_MODULUS_BITS, MathError};

fn mul_mod(a: u64, b: u64, m: u64) -> u64 {
    ((u128::from(a) * u128::from(b)) % u128::from(m)) as u64
}

fn pow_mod(mut a: u64, mut e: u64, m: u64) -> u64 {
    let mut r = 1 % m;
    a %= m;
    while e > 0 {
        if e & 1 == 1 {
            r = mul_mod(r, a, m);
        }
        a = mul_mod(a, a, m);
        e >>= 1;
    }
    r
}

/// Deterministic Miller-Rabin for every `u64`: the first twelve primes as witnesses are proven
/// sufficient below `3.3 * 10^24`.
pub fn is_prime(n: u64) -> bool {
    const WITNESSES: [u64; 12] = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37];
    if n < 2 {
        return false;
    }
    for &w in &WITNESSES {
        if n.is_multiple_of(w) {
            return n == w;
        }
    }
    let s = (n - 1).trailing_zeros();
    let d = (n - 1) >> s;
    'witness: for &a in &WITNESSES {
        let mut x = pow_mod(a, d, n);
        if x == 1 || x == n - 1 {
            continue;
        }
        for _ in 1..s {
            x = mul_mod(x, x, n);
            if x == n - 1 {
                continue 'witness;
            }
        }
        return false;
    }
    true
}

/// Checks that `n` is a supported ring degree: a power of two in `2..=2^17`.
pub fn check_degree(n: usize) -> Result<(), MathError> {
    if n.is_power_of_two() && (2..=1 << 17).contains(&n) { Ok(()) } else { Err(MathError::BadDegree(n)) }
}

/// The primes `p` with `2^(bits-1) < p < 2^bits` and `p = 1 mod 2N`, largest first.
pub fn ntt_prime_iter(bits: u32, n: usize) -> Result<impl Iterator<Item = u32>, MathError> {
    if !(10..=MAX_MODULUS_BITS).contains(&bits) {
        return Err(MathError::BadPrimeBits(bits));
    }
    check_degree(n)?;
    let two_n = 2 * n as u64;
    let hi = 1u64 << bits;
    let lo = 1u64 << (bits - 1);
    // Largest candidate = 1 mod 2N below 2^bits.
    let start = (hi - 1) / two_n * two_n + 1;
    let start = if start >= hi { start - two_n } else { start };
    Ok((0u64..)
        .map(move |k| start.checked_sub(k * two_n))
        .take_while(move |c| matches!(c, Some(c) if *c > lo))
        .flatten()
        .filter(|&c| is_prime(c))
        .map(|c| c as u32))
}

/// The `count` largest primes of exactly `bits` bits that are `1 mod 2N`, largest first.
pub fn ntt_primes(bits: u32, n: usize, count: usize) -> Result<Vec<u32>, MathError> {
    let primes: Vec<u32> = ntt_prime_iter(bits, n)?.take(count).collect();
    if primes.len() < count {
        return Err(MathError::NotEnoughPrimes { bits, two_n: 2 * n, wanted: count, found: primes.len() });
    }
    Ok(primes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trial_division(n: u64) -> bool {
        n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| !n.is_multiple_of(d))
    }

    #[test]
    fn miller_rabin_agrees_with_trial_division() {
        for n in 0..20_000u64 {
            assert_eq!(is_prime(n), trial_division(n), "n = {n}");
        }
        // Around 2^31 and with strong pseudoprimes to small bases.
        for n in (1u64 << 31) - 2000..(1u64 << 31) + 2000 {
            assert_eq!(is_prime(n), trial_division(n), "n = {n}");
        }
        for psp in [2047u64, 1_373_653, 25_326_001, 3_215_031_751, 2_152_302_898_747] {
            assert!(!is_prime(psp), "{psp} is composite");
        }
        assert!(is_prime(0xffff_ffff_ffff_ffc5)); // largest 64-bit prime
    }

    #[test]
    fn ntt_primes_are_prime_friendly_sized_and_maximal() {
        for &(bits, n) in &[(31u32, 1usize << 12), (30, 1 << 13), (27, 1 << 15), (20, 1 << 10)] {
            let primes = ntt_primes(bits, n, 4).unwrap();
            let mut prev = u64::MAX;
            for &p in &primes {
                let p = u64::from(p);
                assert!(is_prime(p));
                assert_eq!(p % (2 * n as u64), 1);
                assert_eq!(64 - p.leading_zeros(), bits);
                assert!(p < prev);
                prev = p;
            }
            // Nothing was skipped between 2^bits and the largest one.
            let two_n = 2 * n as u64;
            let mut c = u64::from(primes[0]) + two_n;
            while c < 1u64 << bits {
                assert!(!is_prime(c));
                c += two_n;
            }
        }
    }

    #[test]
    fn bad_requests_are_errors() {
        assert_eq!(ntt_primes(32, 4096, 1).err(), Some(MathError::BadPrimeBits(32)));
        assert_eq!(ntt_primes(30, 3000, 1).err(), Some(MathError::BadDegree(3000)));
        assert!(matches!(ntt_primes(12, 1 << 10, 50), Err(MathError::NotEnoughPrimes { .. })));
    }
}
