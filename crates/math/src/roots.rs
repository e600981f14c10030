//! The primitive `2N`-th root of unity `psi` that fixes the canonical NTT domain.
//!
//! The choice of `psi` is part of the on-device data format: NTT-domain values computed with a
//! different root are a permutation of ours. We define it as the root reached from `-1` by
//! `log2(N)` successive square roots, each taken with the Tonelli-Shanks algorithm exactly as
//! written in its standard description (least quadratic non-residue `z`, `R = n^((Q+1)/2)`).
//! tfhe-ntt derives its twiddles the same way, which lets the CPU backend use it unchanged; the
//! NTT crate verifies that agreement every time it builds a plan.

use crate::{MathError, Modulus, primes};

/// The least quadratic non-residue mod the odd prime `p`.
fn least_non_residue(m: Modulus) -> u32 {
    let half = u64::from(m.value() - 1) / 2;
    // Every prime has a non-residue below p; this loop ends well before.
    (2..m.value()).find(|&z| m.pow(z, half) == m.value() - 1).unwrap_or(m.value() - 1)
}

/// A square root of `a` mod the odd prime `p` by Tonelli-Shanks, or `None` if `a` is a
/// non-residue. Which of the two roots comes back is fixed by the algorithm.
pub fn sqrt_mod(m: Modulus, a: u32) -> Option<u32> {
    let a = m.reduce(a);
    if a == 0 {
        return Some(0);
    }
    let p = m.value();
    if m.pow(a, u64::from(p - 1) / 2) != 1 {
        return None;
    }
    let s = (p - 1).trailing_zeros();
    let q = u64::from((p - 1) >> s);
    let z = least_non_residue(m);
    let mut big_m = s;
    let mut c = m.pow(z, q);
    let mut t = m.pow(a, q);
    let mut r = m.pow(a, q.div_ceil(2));
    loop {
        if t == 1 {
            return Some(r);
        }
        // Least i in 1..M with t^(2^i) = 1; exists because a is a residue.
        let mut i = 0;
        let mut t2 = t;
        while t2 != 1 {
            t2 = m.mul(t2, t2);
            i += 1;
            if i == big_m {
                return None;
            }
        }
        let b = m.pow(c, 1u64 << (big_m - i - 1));
        big_m = i;
        c = m.mul(b, b);
        t = m.mul(t, c);
        r = m.mul(r, b);
    }
}

/// The canonical primitive `2N`-th root of unity mod the prime `p` (`psi^N = -1`).
pub fn primitive_2n_root(m: Modulus, n: usize) -> Result<u32, MathError> {
    primes::check_degree(n)?;
    let p = m.value();
    if !primes::is_prime(u64::from(p)) {
        return Err(MathError::NotPrime(u64::from(p)));
    }
    if u64::from(p - 1) % (2 * n as u64) != 0 {
        return Err(MathError::NotNttFriendly { p, n });
    }
    let mut root = p - 1;
    for _ in 0..n.trailing_zeros() {
        root = sqrt_mod(m, root).ok_or(MathError::NotNttFriendly { p, n })?;
    }
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::primes::ntt_primes;

    #[test]
    fn sqrt_mod_squares_back() {
        for p in [7u64, 17, 97, 65537, 1_073_479_681, 2_147_352_577] {
            let m = Modulus::new(p).unwrap();
            let mut residues = 0;
            for a in (1..m.value()).step_by((p as usize / 300).max(1)) {
                match sqrt_mod(m, a) {
                    Some(r) => {
                        residues += 1;
                        assert_eq!(m.mul(r, r), a, "p = {p}, a = {a}");
                    }
                    None => assert_eq!(m.pow(a, (p - 1) / 2), m.value() - 1),
                }
            }
            assert!(residues > 0);
        }
    }

    #[test]
    fn primitive_root_has_order_exactly_2n() {
        for n in [2usize, 16, 1024, 4096, 32768] {
            for p in ntt_primes(31, n, 3).unwrap() {
                let m = Modulus::new(u64::from(p)).unwrap();
                let psi = primitive_2n_root(m, n).unwrap();
                assert_eq!(m.pow(psi, n as u64), p - 1);
                assert_eq!(m.pow(psi, 2 * n as u64), 1);
            }
        }
    }

    #[test]
    fn rejects_unfriendly_primes() {
        let m = Modulus::new(65537).unwrap();
        assert!(primitive_2n_root(m, 1 << 15).is_ok());
        assert_eq!(primitive_2n_root(m, 1 << 16), Err(MathError::NotNttFriendly { p: 65537, n: 1 << 16 }));
        assert_eq!(primitive_2n_root(Modulus::new(65535).unwrap(), 4), Err(MathError::NotPrime(65535)));
    }
}
