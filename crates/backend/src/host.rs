//! Host reference implementations of the permutation and decomposition operations, used by the
//! [`Backend`](crate::Backend) defaults and as the oracle of the conformance suite.

use fastquery_math::bit_reverse;

use fastquery_math::Modulus;

use crate::{RingContext, Shape};

/// The uniform polynomials of a 32-byte seed: `out.len() / (limbs N)` polynomials of `limbs`
/// limbs, layout `[poly][limb][coefficient]`. The stream is ChaCha20 keyed by the seed (block
/// counter from 0, stream 0, as `rand_chacha::ChaCha20Rng::from_seed`); each word is the next
/// `u32` masked to the prime's bit length, kept if below the prime, limb after limb. This is
/// the expansion of every seeded ciphertext and key: client and server must agree on it word
/// for word, and every backend's [`Backend::expand_seeds`](crate::Backend::expand_seeds)
/// reproduces it.
pub fn expand_uniform_into(ctx: &RingContext, limbs: usize, seed: &[u8; 32], out: &mut [u32]) {
    use rand_chacha::rand_core::{RngCore, SeedableRng};
    let mut rng = rand_chacha::ChaCha20Rng::from_seed(*seed);
    let n = ctx.n();
    let moduli = &ctx.moduli()[..limbs];
    for (r, row) in out.chunks_exact_mut(n).enumerate() {
        let p = moduli[r % limbs].value();
        let mask = u32::MAX >> p.leading_zeros();
        for w in row {
            *w = loop {
                let x = rng.next_u32() & mask;
                if x < p {
                    break x;
                }
            };
        }
    }
}

/// [`expand_uniform_into`] into a new vector of `polys` polynomials.
pub fn expand_uniform(ctx: &RingContext, limbs: usize, polys: usize, seed: &[u8; 32]) -> Vec<u32> {
    let mut out = vec![0u32; polys * limbs * ctx.n()];
    expand_uniform_into(ctx, limbs, seed, &mut out);
    out
}

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

/// One row of [`gather_signed`]: `dst[k] = +-src[idx[k]]` mod `m` (see [`NEGATE`]).
#[inline]
pub fn gather_row(m: Modulus, dst: &mut [u32], src: &[u32], idx: &[u32]) {
    for (x, &i) in dst.iter_mut().zip(idx) {
        let v = src[(i & !NEGATE) as usize];
        *x = if i & NEGATE != 0 { m.neg(v) } else { v };
    }
}

/// `dst[row][k] = +-src[row][idx[k]]` (see [`NEGATE`]).
pub fn gather_signed(ctx: &RingContext, src: &[u32], dst: &mut [u32], idx: &[u32], shape: Shape) {
    let n = ctx.n();
    for (r, (d, s)) in dst.chunks_exact_mut(n).zip(src.chunks_exact(n)).enumerate().take(shape.rows()) {
        gather_row(ctx.moduli()[r % shape.limbs], d, s, idx);
    }
}

/// The digits of one source row (a residue row of any limb) over every limb of `moduli`:
/// `dst` holds `digits * moduli.len()` rows of `src.len()` words, `[digit][limb]`.
#[inline]
pub fn decompose_row(moduli: &[Modulus], src: &[u32], digit_bits: u32, dst: &mut [u32]) {
    let n = src.len();
    let mask = (1u32 << digit_bits) - 1;
    for (j, digit) in dst.chunks_exact_mut(moduli.len() * n).enumerate() {
        let shift = j as u32 * digit_bits;
        for (m, row) in moduli.iter().zip(digit.chunks_exact_mut(n)) {
            // Digits of a larger prime's residue may exceed this prime: reduce those.
            let p = m.value();
            for (x, &v) in row.iter_mut().zip(src) {
                let d = v.checked_shr(shift).unwrap_or(0) & mask;
                *x = if d >= p { d % p } else { d };
            }
        }
    }
}

/// See [`Backend::decompose`](crate::Backend::decompose).
pub fn decompose(
    ctx: &RingContext,
    src: &[u32],
    _polys: usize,
    limbs: usize,
    digit_bits: u32,
    digits: usize,
    dst: &mut [u32],
) {
    let n = ctx.n();
    let moduli = &ctx.moduli()[..limbs];
    for (row, out) in src.chunks_exact(n).zip(dst.chunks_exact_mut(digits * limbs * n)) {
        decompose_row(moduli, row, digit_bits, out);
    }
}
