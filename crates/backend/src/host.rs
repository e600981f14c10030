//! Host reference implementations of the permutation and decomposition operations, used by the
//! [`Backend`](crate::Backend) defaults and as the oracle of the conformance suite.

use fastquery_math::bit_reverse;

use crate::{RingContext, Shape};

/// Bit 31 of a gather index: negate the gathered word.
pub const NEGATE: u32 = 1 << 31;

/// The gather table of the Galois automorphism `X -> X^g` (odd `g` mod `2N`), for
/// [`Backend::gather_signed`](crate::Backend::gather_signed):
///
/// * coefficient form (`ntt = false`): `X^j -> X^(j g mod 2N)`, with `X^N = -1`;
/// * NTT form (`ntt = true`): the canonical order evaluates at `psi^(2 brv(i) + 1)`, and
///   `tau(a)(x) = a(x^g)`, so slot `i` takes slot `i'` with
///   `2 brv(i') + 1 = (2 brv(i) + 1) g mod 2N`. No signs.
///
/// Returns `None` for an even `g` or a degree that is not a power of two.
pub fn automorphism_index(n: usize, g: usize, ntt: bool) -> Option<Vec<u32>> {
    if !n.is_power_of_two() || n < 2 || g.is_multiple_of(2) || n >= 1 << 30 {
        return None;
    }
    let two_n = 2 * n;
    let g = g % two_n;
    let bits = n.trailing_zeros();
    let mut idx = vec![0u32; n];
    if ntt {
        for (i, slot) in idx.iter_mut().enumerate() {
            let e = (2 * bit_reverse(i, bits) + 1) * g % two_n;
            *slot = bit_reverse((e - 1) / 2, bits) as u32;
        }
    } else {
        for j in 0..n {
            let e = j * g % two_n;
            if e < n {
                idx[e] = j as u32;
            } else {
                idx[e - n] = j as u32 | NEGATE;
            }
        }
    }
    Some(idx)
}

/// `dst[row][k] = +-src[row][idx[k]]` (see [`NEGATE`]).
pub fn gather_signed(ctx: &RingContext, src: &[u32], dst: &mut [u32], idx: &[u32], shape: Shape) {
    let n = ctx.n();
    for (r, (d, s)) in dst.chunks_exact_mut(n).zip(src.chunks_exact(n)).enumerate().take(shape.rows()) {
        let m = ctx.moduli()[r % shape.limbs];
        for (x, &i) in d.iter_mut().zip(idx) {
            let v = s[(i & !NEGATE) as usize];
            *x = if i & NEGATE != 0 { m.neg(v) } else { v };
        }
    }
}

/// See [`Backend::decompose`](crate::Backend::decompose).
pub fn decompose(
    ctx: &RingContext,
    src: &[u32],
    polys: usize,
    limbs: usize,
    digit_bits: u32,
    digits: usize,
    dst: &mut [u32],
) {
    let n = ctx.n();
    let mask = (1u64 << digit_bits) - 1;
    let moduli = &ctx.moduli()[..limbs];
    for p in 0..polys {
        for i in 0..limbs {
            let row = &src[(p * limbs + i) * n..(p * limbs + i + 1) * n];
            for j in 0..digits {
                let out = ((p * limbs + i) * digits + j) * limbs * n;
                for (l, m) in moduli.iter().enumerate() {
                    let d = &mut dst[out + l * n..out + (l + 1) * n];
                    for (x, &v) in d.iter_mut().zip(row) {
                        *x = m.reduce_u64((u64::from(v) >> (j as u32 * digit_bits)) & mask);
                    }
                }
            }
        }
    }
}
