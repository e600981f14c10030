//! Portable transforms that define the canonical order, and the slow references they are tested
//! against. GPU kernels are written to match [`forward`] and [`inverse`] step for step.

use fastquery_math::Modulus;

use crate::{NttTables, canonical_exponent};

/// In-place forward transform (Cooley-Tukey, natural order in, canonical order out).
/// Inputs must be reduced (`< p`); `a.len()` must be `N`.
pub fn forward(t: &NttTables, a: &mut [u32]) {
    assert_eq!(a.len(), t.n(), "polynomial length must equal the table degree");
    let m = t.modulus();
    let (w, ws) = (t.forward(), t.forward_shoup());
    let n = a.len();
    let mut half = n;
    let mut groups = 1;
    while groups < n {
        half /= 2;
        for g in 0..groups {
            let (s, ss) = (w[groups + g], ws[groups + g]);
            let base = 2 * g * half;
            for j in base..base + half {
                let u = a[j];
                let v = m.mul_shoup(a[j + half], s, ss);
                a[j] = m.add(u, v);
                a[j + half] = m.sub(u, v);
            }
        }
        groups *= 2;
    }
}

/// In-place inverse transform (Gentleman-Sande, canonical order in, natural order out,
/// multiplied by `N^{-1}`).
pub fn inverse(t: &NttTables, a: &mut [u32]) {
    assert_eq!(a.len(), t.n(), "polynomial length must equal the table degree");
    let m = t.modulus();
    let (w, ws) = (t.inverse(), t.inverse_shoup());
    let n = a.len();
    let mut half = 1;
    let mut groups = n / 2;
    while groups >= 1 {
        for g in 0..groups {
            let (s, ss) = (w[groups + g], ws[groups + g]);
            let base = 2 * g * half;
            for j in base..base + half {
                let (u, v) = (a[j], a[j + half]);
                a[j] = m.add(u, v);
                a[j + half] = m.mul_shoup(m.sub(u, v), s, ss);
            }
        }
        half *= 2;
        groups /= 2;
    }
    let (ni, nis) = (t.n_inv(), m.shoup(t.n_inv()));
    for x in a.iter_mut() {
        *x = m.mul_shoup(*x, ni, nis);
    }
}

/// The definition, evaluated directly in O(N^2): `A[i] = a(psi^(2*brv(i)+1))`.
pub fn naive_forward(t: &NttTables, a: &[u32]) -> Vec<u32> {
    let n = t.n();
    let m = t.modulus();
    let psi_pows = powers(m, t.psi(), 2 * n);
    (0..n)
        .map(|i| {
            let e = canonical_exponent(i, n.trailing_zeros());
            a.iter()
                .enumerate()
                .fold(0u32, |acc, (j, &aj)| m.add(acc, m.mul(aj, psi_pows[(e * j) % (2 * n)])))
        })
        .collect()
}

/// The definition of the inverse in O(N^2): `a_j = N^{-1} sum_i A[i] psi^{-(2*brv(i)+1) j}`.
pub fn naive_inverse(t: &NttTables, a: &[u32]) -> Vec<u32> {
    let n = t.n();
    let m = t.modulus();
    let psi_inv = m.pow(t.psi(), 2 * n as u64 - 1);
    let pows = powers(m, psi_inv, 2 * n);
    (0..n)
        .map(|j| {
            let s = a.iter().enumerate().fold(0u32, |acc, (i, &ai)| {
                let e = canonical_exponent(i, n.trailing_zeros());
                m.add(acc, m.mul(ai, pows[(e * j) % (2 * n)]))
            });
            m.mul(s, t.n_inv())
        })
        .collect()
}

fn powers(m: Modulus, x: u32, count: usize) -> Vec<u32> {
    let mut v = Vec::with_capacity(count);
    let mut w = 1u32;
    for _ in 0..count {
        v.push(w);
        w = m.mul(w, x);
    }
    v
}

/// Schoolbook product in `Z_p[X]/(X^N + 1)`: `c_k = sum_{i+j=k} a_i b_j - sum_{i+j=k+N} a_i b_j`.
pub fn negacyclic_mul(m: Modulus, a: &[u32], b: &[u32]) -> Vec<u32> {
    assert_eq!(a.len(), b.len(), "operands must have the same degree");
    let n = a.len();
    // Accumulate the positive and the wrapped (negative) halves separately in u64, reducing
    // every `lazy_products()` terms.
    let lazy = m.lazy_products().max(1);
    (0..n)
        .map(|k| {
            let (mut pos, mut neg) = (0u64, 0u64);
            for (cnt, i) in (0..n).enumerate() {
                let prod = u64::from(a[i]) * u64::from(if i <= k { b[k - i] } else { b[n + k - i] });
                if i <= k {
                    pos += prod
                } else {
                    neg += prod
                }
                if cnt % lazy == lazy - 1 {
                    pos = u64::from(m.reduce_u64(pos));
                    neg = u64::from(m.reduce_u64(neg));
                }
            }
            m.sub(m.reduce_u64(pos), m.reduce_u64(neg))
        })
        .collect()
}

/// Multiplication by the monomial `X^k` (`0 <= k < 2N`) in `Z_p[X]/(X^N + 1)`: a negacyclic
/// rotation, the reference for the backends' `monomial_mul`.
pub fn monomial_mul(m: Modulus, a: &[u32], k: usize) -> Vec<u32> {
    let n = a.len();
    let mut out = vec![0u32; n];
    for (j, &x) in a.iter().enumerate() {
        let e = (j + k) % (2 * n);
        if e < n { out[e] = x } else { out[e - n] = m.neg(x) }
    }
    out
}
