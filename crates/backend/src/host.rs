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
    // The stream a chunk of words at a time (the generator hands out its blocks' words in
    // order however they are asked for), words left in the chunk at the end of a row going to
    // the next row. Within a chunk, a pass over `min(words left, slots left)` words writes
    // every word and advances past the kept ones only: no branch on the random words, and no
    // pass can run past the row.
    const CHUNK: usize = 256;
    let mut bytes = [0u8; CHUNK * 4];
    let mut words = [0u32; CHUNK];
    let mut next = CHUNK;
    for (r, row) in out.chunks_exact_mut(n).enumerate() {
        let p = moduli[r % limbs].value();
        let mask = u32::MAX >> p.leading_zeros();
        let mut k = 0;
        while k < n {
            if next == CHUNK {
                rng.fill_bytes(&mut bytes);
                for (w, b) in words.iter_mut().zip(bytes.chunks_exact(4)) {
                    *w = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
                next = 0;
            }
            let take = (CHUNK - next).min(n - k);
            let (dst, src) = (&mut row[k..k + take], &words[next..next + take]);
            let mut kept = 0;
            for &x in src {
                let x = x & mask;
                dst[kept.min(take - 1)] = x; // kept <= this word's index < take
                kept += usize::from(x < p);
            }
            // The last slot may hold a rejected word when the pass kept fewer than it holds;
            // the next pass (or nothing, when the row is full) overwrites it.
            k += kept;
            next += take;
        }
    }
}

/// The noise of one public-key encryption of zero, from a 32-byte seed: a uniform ternary `u`
/// and two centred-binomial errors `e0`, `e1` (each the difference of the bit counts of two
/// `eta`-bit words, so in `[-eta, eta]`), as residues of `limbs` limbs in coefficient form
/// (`u`, `e0`, `e1` each `limbs * N` words, limb after limb).
///
/// Counter-based, so that a device computes any coefficient on its own: coefficient `j` takes
/// words `8 j .. 8 j + 8` of the ChaCha20 stream of the seed (counter from 0, stream 0, as
/// `rand_chacha::ChaCha20Rng::from_seed`), that is half `j % 2` of block `j / 2`. Words 0-3 as
/// a 128-bit integer `x` give `u = x mod 3 - 1` (off uniform by less than `2^-126`), words 4-5
/// and 6-7 as 64-bit integers `y` give `e = popcount(y & m) - popcount((y >> eta) & m)` with
/// `m = 2^eta - 1`. Every backend's [`Backend::zero_noise`](crate::Backend::zero_noise)
/// reproduces it word for word. `eta` is at most 32.
///
/// Without `e0` (`None`) the same stream is read and `u`, `e1` are the same words: a caller
/// that needs `c0` at a few coefficients only draws their errors itself
/// ([`Backend::zero_noise_c1`](crate::Backend::zero_noise_c1)).
///
/// Inlined, so that a caller compiled for wider vectors (the CPU backend's run-time dispatch)
/// gets its loops vectorised and its bit counts as instructions.
#[inline(always)]
pub fn zero_noise_into(
    ctx: &RingContext,
    limbs: usize,
    seed: &[u8; 32],
    eta: u32,
    u: &mut [u32],
    mut e0: Option<&mut [u32]>,
    e1: &mut [u32],
) {
    use rand_chacha::rand_core::{RngCore, SeedableRng};
    let mut rng = rand_chacha::ChaCha20Rng::from_seed(*seed);
    let n = ctx.n();
    let low = (1u64 << eta.min(32)) - 1;
    let moduli = &ctx.moduli()[..limbs];
    // The stream a chunk of coefficients at a time (the same words as one `next_u32` per word:
    // the generator hands out its blocks' words in order either way); the chunk's three small
    // values per coefficient first, then each limb's rows of them.
    const CHUNK: usize = 64;
    let mut bytes = [0u8; CHUNK * 32];
    let mut small = [[0i32; CHUNK]; 3];
    for j0 in (0..n).step_by(CHUNK) {
        let count = CHUNK.min(n - j0);
        rng.fill_bytes(&mut bytes[..count * 32]);
        let [t, a, b] = &mut small;
        for (k, w) in bytes[..count * 32].chunks_exact(32).enumerate() {
            let word = |i: usize| {
                u64::from(u32::from_le_bytes([w[4 * i], w[4 * i + 1], w[4 * i + 2], w[4 * i + 3]]))
            };
            let cbd = |y: u64| (y & low).count_ones() as i32 - ((y >> eta) & low).count_ones() as i32;
            // x = sum of w_i 2^(32 i), and 2^32 = 1 mod 3: x mod 3 is the words' sum mod 3.
            t[k] = ((word(0) + word(1) + word(2) + word(3)) % 3) as i32 - 1;
            a[k] = cbd(word(4) | word(5) << 32);
            b[k] = cbd(word(6) | word(7) << 32);
        }
        // |t|, |a|, |b| <= 32 < p: a negative value is p minus its magnitude (branch-free).
        for (l, m) in moduli.iter().enumerate() {
            let rows = [Some(&mut *u), e0.as_deref_mut(), Some(&mut *e1)];
            for (dst, src) in rows.into_iter().zip(&small) {
                let Some(dst) = dst else { continue };
                let dst = &mut dst[l * n + j0..l * n + j0 + count];
                for (x, &v) in dst.iter_mut().zip(&src[..count]) {
                    *x = m.small(v);
                }
            }
        }
    }
}

/// Modulus switching of single coefficients held as their residues (one per limb): the
/// dropped primes `moduli[keep..]`, last first, divided out with the centred remainder,
/// `x <- (x - r_c) / p_last` (`r_c` in `(-p_last/2, p_last/2]`), so that `x[..keep]` is the
/// coefficient of [`Backend::mod_switch_down`](crate::Backend::mod_switch_down) word for
/// word. For a finish that switches a few kept coefficients on the host.
#[derive(Clone, Debug)]
pub struct ResidueSwitch {
    moduli: Vec<Modulus>,
    keep: usize,
    /// For each dropped limb `last` (from `keep`) and each `i < last`: `p_last mod p_i` and
    /// `p_last^-1 mod p_i`.
    lift_inv: Vec<Vec<(u32, u32)>>,
}

impl ResidueSwitch {
    /// From all of `moduli` down to the first `keep` (`1 <= keep <= moduli.len()`; distinct
    /// primes).
    pub fn new(moduli: &[Modulus], keep: usize) -> Self {
        assert!(keep >= 1 && keep <= moduli.len(), "keep {keep} of {} limbs", moduli.len());
        let lift_inv = (keep..moduli.len())
            .map(|last| {
                let pl = moduli[last].value();
                moduli[..last]
                    .iter()
                    .map(|m| (m.reduce(pl), m.inv(m.reduce(pl)).unwrap_or(0))) // distinct: invertible
                    .collect()
            })
            .collect();
        Self { moduli: moduli.to_vec(), keep, lift_inv }
    }

    /// Switches `x` (all the limbs' residues of one coefficient, each reduced) in place; the
    /// result is `x[..keep]`.
    pub fn apply(&self, x: &mut [u32]) {
        assert_eq!(x.len(), self.moduli.len(), "one residue per limb");
        for last in (self.keep..x.len()).rev() {
            let r = x[last];
            let big = r > self.moduli[last].value() / 2;
            let consts = &self.lift_inv[last - self.keep];
            for ((xi, &m), &(lift, inv)) in x[..last].iter_mut().zip(&self.moduli).zip(consts) {
                let rm = m.reduce(r);
                let rc = if big { m.sub(rm, lift) } else { rm };
                *xi = m.mul(m.sub(*xi, rc), inv);
            }
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

/// The seed's stream of a response's masks (the server's shares; the encryption noise of
/// [`zero_noise_into`] is stream 0, the kept coefficients' encryption errors stream 2).
pub const MASK_STREAM: u64 = 1;
/// The seed's stream of a response's flooding: block `k` holds the candidates of kept
/// coefficient `k` (see [`Flooding`]).
pub const FLOOD_STREAM: u64 = 3;
/// The seed's stream of a kept coefficient's further candidates where all four of its block in
/// [`FLOOD_STREAM`] were rejected: blocks `k 2^32 + i`, `i = 0, 1, ...`.
pub const FLOOD_RETRY_STREAM: u64 = 4;

/// A response's flooding and masks, counter-based so that the device can draw them where the
/// ciphertexts are and the host can draw any of them alone (every backend's
/// [`Backend::flood_mask_add`](crate::Backend::flood_mask_add) reproduces [`Flooding::word`]).
///
/// For kept coefficient `k` (its index among the ciphertext's kept coefficients) of the
/// ciphertext of `seed`:
/// - its **flooding** is uniform in `[-bound, bound]`, by rejection on the smallest power of two
///   covering the width `2 bound + 1`: candidate `c < 4` of block `k` of stream
///   [`FLOOD_STREAM`] is `(x_{4c} << 64 | x_{4c+2}) & mask` where `x_i` is the `u64` of words `i`
///   and `i + 1` (as two `next_u64`), the first below the width taken; where none is (at most
///   one coefficient in 16), blocks `k 2^32 + i` of stream [`FLOOD_RETRY_STREAM`] give four
///   candidates each in turn. Every candidate is accepted with probability at least one half, so
///   a retry block is rare and a second one rarer.
/// - its **mask** `r` is the `k`-th `next_u64` of stream [`MASK_STREAM`] masked to `plain_bits`
///   (as `uniform_mod_pow2` drew them), and the ciphertext gets the encoding of `-r`,
///   `round(q (-r mod t) / t)` with `t = 2^plain_bits`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flooding {
    bound: u128,
    plain_bits: u32,
    floor_res: Vec<u32>,
    q_mod_t: u64,
}

/// Blocks of flooding candidates the host reads from [`FLOOD_STREAM`] at a time.
const FLOOD_READ_BLOCKS: usize = 32;

impl Flooding {
    /// The flooding's half-width `bound` (below `2^127`), `t = 2^plain_bits` (`plain_bits` 1 to
    /// 64), `floor(q / t) mod p_l` for every limb of `q` and `q mod t`; `None` where any is out
    /// of range.
    pub fn new(bound: u128, plain_bits: u32, floor_res: Vec<u32>, q_mod_t: u64) -> Option<Self> {
        let fits = (1..=64).contains(&plain_bits) && (plain_bits == 64 || q_mod_t >> plain_bits == 0);
        (bound < 1 << 127 && fits).then_some(Self { bound, plain_bits, floor_res, q_mod_t })
    }

    /// The flooding's half-width.
    pub fn bound(&self) -> u128 {
        self.bound
    }

    /// `log2 t`.
    pub fn plain_bits(&self) -> u32 {
        self.plain_bits
    }

    /// `floor(q / t) mod p_l`, one per limb.
    pub fn floor_res(&self) -> &[u32] {
        &self.floor_res
    }

    /// `q mod t`.
    pub fn q_mod_t(&self) -> u64 {
        self.q_mod_t
    }

    fn t_mask(&self) -> u64 {
        if self.plain_bits == 64 { u64::MAX } else { (1u64 << self.plain_bits) - 1 }
    }

    /// The width `2 bound + 1` and the mask of its bit length.
    fn width_mask(&self) -> (u128, u128) {
        let width = 2 * self.bound + 1;
        let bits = 128 - width.leading_zeros();
        (width, if bits == 128 { u128::MAX } else { (1u128 << bits) - 1 })
    }

    /// The masks of the first `count` kept coefficients (the server's shares, before negation).
    pub fn masks(&self, seed: &[u8; 32], count: usize) -> Vec<u64> {
        use rand_chacha::rand_core::{RngCore, SeedableRng};
        let mut rng = rand_chacha::ChaCha20Rng::from_seed(*seed);
        rng.set_stream(MASK_STREAM);
        let m = self.t_mask();
        (0..count).map(|_| rng.next_u64() & m).collect()
    }

    /// The flooding of kept coefficients `first .. first + out.len()` of the ciphertext of
    /// `seed`.
    pub fn floods(&self, seed: &[u8; 32], first: usize, out: &mut [i128]) {
        use rand_chacha::rand_core::{RngCore, SeedableRng};
        let (width, mask) = self.width_mask();
        let mut rng = rand_chacha::ChaCha20Rng::from_seed(*seed);
        rng.set_stream(FLOOD_STREAM);
        rng.set_word_pos(16 * first as u128);
        let mut bytes = zeroize::Zeroizing::new([0u8; 64 * FLOOD_READ_BLOCKS]);
        for (c, chunk) in out.chunks_mut(FLOOD_READ_BLOCKS).enumerate() {
            let bytes = &mut bytes[..64 * chunk.len()];
            rng.fill_bytes(bytes);
            for (o, (x, block)) in chunk.iter_mut().zip(bytes.chunks_exact(64)).enumerate() {
                let k = first + c * FLOOD_READ_BLOCKS + o;
                let x0 = candidates(block, width, mask).unwrap_or_else(|| retry(seed, k, width, mask));
                *x = x0 as i128 - self.bound as i128;
            }
        }
    }

    /// Limb `l`'s word of a kept coefficient with flooding (plus any error) `flood` and mask
    /// `r`: `flood + round(q (-r mod t) / t)` mod `p_l`.
    pub fn word(&self, m: Modulus, l: usize, flood: i128, r: u64) -> u32 {
        let v = r.wrapping_neg() & self.t_mask();
        // q_mod_t, v < 2^b: the product and the half fit a u128 (at most 2^2b - 2^(b-1)).
        let carry =
            (u128::from(self.q_mod_t) * u128::from(v) + (1u128 << (self.plain_bits - 1))) >> self.plain_bits;
        let enc = m.add(m.mul(self.floor_res[l], m.reduce_u64(v)), m.reduce_u128(carry));
        m.add(m.reduce_i128(flood), enc)
    }
}

/// The first of a 64-byte block's four 128-bit candidates below `width`.
fn candidates(block: &[u8], width: u128, mask: u128) -> Option<u128> {
    let u64_at = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&block[8 * i..8 * i + 8]);
        u64::from_le_bytes(b)
    };
    (0..4)
        .map(|c| ((u128::from(u64_at(2 * c)) << 64) | u128::from(u64_at(2 * c + 1))) & mask)
        .find(|&x| x < width)
}

/// Kept coefficient `k`'s candidates from [`FLOOD_RETRY_STREAM`], block after block.
fn retry(seed: &[u8; 32], k: usize, width: u128, mask: u128) -> u128 {
    use rand_chacha::rand_core::{RngCore, SeedableRng};
    let mut rng = rand_chacha::ChaCha20Rng::from_seed(*seed);
    rng.set_stream(FLOOD_RETRY_STREAM);
    rng.set_word_pos(16 * ((k as u128) << 32));
    let mut block = zeroize::Zeroizing::new([0u8; 64]);
    // Each block is rejected whole with probability below 1/16: the loop ends.
    loop {
        rng.fill_bytes(&mut *block);
        if let Some(x) = candidates(&*block, width, mask) {
            return x;
        }
    }
}

/// [`Flooding`]'s words added into a buffer of `ciphertexts x limbs` polynomials of `n`
/// coefficients (coefficient form): for ciphertext `ct` (seed `seeds[ct]`) and its kept
/// coefficient `k` at position `positions[starts[ct] + k]`, [`Flooding::word`] of its flooding
/// and mask is added to word `(ct limbs + l) n + position` of every limb `l`. `starts` holds
/// `seeds.len() + 1` offsets into `positions`.
pub fn flood_mask_add(
    moduli: &[Modulus],
    n: usize,
    spec: &Flooding,
    seeds: &[[u8; 32]],
    positions: &[u32],
    starts: &[u32],
    a: &mut [u32],
) {
    let limbs = moduli.len();
    for (ct, seed) in seeds.iter().enumerate() {
        let pos = &positions[starts[ct] as usize..starts[ct + 1] as usize];
        flood_mask_ciphertext(moduli, n, spec, seed, pos, &mut a[ct * limbs * n..(ct + 1) * limbs * n]);
    }
}

/// [`flood_mask_add`] for one ciphertext (`a` its `limbs x n` words).
pub fn flood_mask_ciphertext(
    moduli: &[Modulus],
    n: usize,
    spec: &Flooding,
    seed: &[u8; 32],
    positions: &[u32],
    a: &mut [u32],
) {
    let r = spec.masks(seed, positions.len());
    let mut flood = zeroize::Zeroizing::new(vec![0i128; positions.len()]);
    spec.floods(seed, 0, &mut flood);
    for (l, &m) in moduli.iter().enumerate() {
        for (k, &j) in positions.iter().enumerate() {
            let w = &mut a[l * n + j as usize];
            *w = m.add(*w, spec.word(m, l, flood[k], r[k]));
        }
    }
}

#[cfg(test)]
mod tests {
    use fastquery_math::primes::ntt_primes;

    use super::*;

    /// The encryption-of-zero noise has the distributions the noise analysis assumes: `u`
    /// uniform on {-1, 0, 1} and the errors centred binomial with variance `eta / 2`, over
    /// 64 K coefficients of distinct seeds (six standard errors).
    #[test]
    fn zero_noise_is_uniform_ternary_and_centred_binomial() {
        let n = 4096;
        let ctx = RingContext::new(n, &ntt_primes(30, n, 1).unwrap()).unwrap();
        let p = i64::from(ctx.moduli()[0].value());
        let signed = |w: u32| if i64::from(w) > p / 2 { i64::from(w) - p } else { i64::from(w) };
        let (mut counts, mut sum, mut sq, mut total) = ([0usize; 3], 0i64, 0i64, 0usize);
        for s in 0..16u8 {
            let (mut u, mut e0, mut e1) = (vec![0u32; n], vec![0u32; n], vec![0u32; n]);
            zero_noise_into(&ctx, 1, &[s; 32], 21, &mut u, Some(&mut e0), &mut e1);
            for &w in &u {
                counts[(signed(w) + 1) as usize] += 1;
            }
            for &w in e0.iter().chain(&e1) {
                let e = signed(w);
                assert!(e.abs() <= 21);
                sum += e;
                sq += e * e;
                total += 1;
            }
        }
        let draws = 16 * n;
        let expect = draws as f64 / 3.0;
        let se = (draws as f64 * (1.0 / 3.0) * (2.0 / 3.0)).sqrt();
        for c in counts {
            assert!((c as f64 - expect).abs() < 6.0 * se, "ternary counts {counts:?}");
        }
        let mean = sum as f64 / total as f64;
        let var = sq as f64 / total as f64 - mean * mean;
        assert!(mean.abs() < 6.0 * (10.5 / total as f64).sqrt(), "mean {mean}");
        assert!((var - 10.5).abs() < 0.3, "variance {var}");
    }

    fn flooding(bound: u128, bits: u32) -> Flooding {
        let primes = ntt_primes(30, 64, 2).unwrap();
        let q = u128::from(primes[0]) * u128::from(primes[1]);
        let t_shift = |x: u128| if bits == 128 { 0 } else { x >> bits };
        let floor = t_shift(q);
        let q_mod_t = (q - (floor << bits)) as u64;
        let floor_res = primes.iter().map(|&p| (floor % u128::from(p)) as u32).collect();
        Flooding::new(bound, bits, floor_res, q_mod_t).unwrap()
    }

    /// A response's flooding and masks are the draws `Flooding` lays out, read here from the
    /// generator's `u64`s: coefficient `k`'s block of stream 3, then its blocks of stream 4; the
    /// masks the `u64`s of stream 1. Any run of coefficients gives the same draws as the whole.
    #[test]
    fn flooding_follows_its_streams() {
        use rand_chacha::rand_core::{RngCore, SeedableRng};
        let seed: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(5));
        let count = 4096;
        // 2^40: the width is one above a power of two and half the candidates are rejected.
        for bound in [0u128, 1, 1000, 1 << 40, (1 << 70) + 12_345, (1 << 126) + 3] {
            let spec = flooding(bound, 37);
            let width = 2 * bound + 1;
            let bits = 128 - width.leading_zeros();
            let mask = if bits == 128 { u128::MAX } else { (1u128 << bits) - 1 };
            let draw = |rng: &mut rand_chacha::ChaCha20Rng| {
                let hi = u128::from(rng.next_u64());
                ((hi << 64) | u128::from(rng.next_u64())) & mask
            };
            let mut retried = 0;
            let want: Vec<i128> = (0..count)
                .map(|k| {
                    let mut rng = rand_chacha::ChaCha20Rng::from_seed(seed);
                    rng.set_stream(3);
                    rng.set_word_pos(16 * k as u128);
                    if let Some(x) =
                        (0..4).map(|_| draw(&mut rng)).collect::<Vec<_>>().into_iter().find(|&x| x < width)
                    {
                        return x as i128 - bound as i128;
                    }
                    retried += 1;
                    rng.set_stream(4);
                    rng.set_word_pos(16 * ((k as u128) << 32));
                    loop {
                        let x = draw(&mut rng);
                        if x < width {
                            return x as i128 - bound as i128;
                        }
                    }
                })
                .collect();
            let mut got = vec![0i128; count];
            spec.floods(&seed, 0, &mut got);
            assert_eq!(got, want, "bound {bound}");
            let mut part = vec![0i128; 77];
            spec.floods(&seed, 1000, &mut part);
            assert_eq!(part, want[1000..1077], "a run from coefficient 1000");
            assert!(got.iter().all(|x| x.unsigned_abs() <= bound));
            if bound == 1 << 40 {
                // About one coefficient in 16 needs a retry block.
                assert!((150..400).contains(&retried), "{retried} retries");
            }
            if bound >= 1000 {
                // Uniform on [-B, B]: mean 0 and variance B^2 / 3 (six standard errors).
                let b = bound as f64;
                let mean = got.iter().map(|&x| x as f64).sum::<f64>() / count as f64;
                let var = got.iter().map(|&x| (x as f64 / b).powi(2)).sum::<f64>() / count as f64;
                assert!(mean.abs() < 6.0 * b / (3.0 * count as f64).sqrt(), "bound {bound}: mean {mean}");
                assert!(
                    (var - 1.0 / 3.0).abs() < 6.0 * 0.3 / (count as f64).sqrt(),
                    "bound {bound}: variance {var}"
                );
            }
        }
        for bits in [1, 37, 64] {
            let spec = flooding(5, bits);
            let mut rng = rand_chacha::ChaCha20Rng::from_seed(seed);
            rng.set_stream(1);
            let m = if bits == 64 { u64::MAX } else { (1 << bits) - 1 };
            let want: Vec<u64> = (0..1000).map(|_| rng.next_u64() & m).collect();
            assert_eq!(spec.masks(&seed, 1000), want);
        }
    }

    /// A kept coefficient's word is its flooding plus `round(q (-r mod t) / t)`, against `u128`
    /// arithmetic on a two-prime `q`; out-of-range parameters are refused.
    #[test]
    fn flooding_words_encode_the_negated_mask() {
        let primes = ntt_primes(30, 64, 2).unwrap();
        let q = u128::from(primes[0]) * u128::from(primes[1]);
        let moduli: Vec<Modulus> = primes.iter().map(|&p| Modulus::new(p.into()).unwrap()).collect();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for bits in [1, 20, 37, 63, 64] {
            let spec = flooding(1 << 50, bits);
            let t_mask = if bits == 64 { u64::MAX } else { (1 << bits) - 1 };
            let drawn: Vec<u64> = (0..200).map(|_| next() & t_mask).collect();
            for r in [0, 1, t_mask, t_mask / 2, t_mask / 2 + 1].into_iter().chain(drawn) {
                let flood = (next() >> 13) as i128 - (1 << 50);
                let v = u128::from(r.wrapping_neg() & t_mask);
                let enc = (q * v + (1u128 << (bits - 1))) >> bits;
                for (l, &m) in moduli.iter().enumerate() {
                    let p = i128::from(m.value());
                    let want = ((flood + (enc % p as u128) as i128) % p + p) % p;
                    assert_eq!(i128::from(spec.word(m, l, flood, r)), want, "bits {bits}, r {r}");
                }
            }
        }
        assert!(Flooding::new(1, 0, vec![1], 0).is_none(), "t = 1");
        assert!(Flooding::new(1, 65, vec![1], 0).is_none(), "t = 2^65");
        assert!(Flooding::new(1 << 127, 20, vec![1], 0).is_none(), "bound 2^127");
        assert!(Flooding::new(1, 20, vec![1], 1 << 20).is_none(), "q mod t not below t");
    }
}
