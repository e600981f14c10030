//! Query compression: a one-hot of `m1` entries and RGSW ciphertexts of the remaining index
//! bits, all packed into the slots of one seeded ciphertext, expanded by the server and folded
//! with external products (the design of Spiral, Menon and Wu 2022, in this engine).
//!
//! ## What the client sends
//! One ciphertext whose coefficient `i` holds `v_i * 2^-k mod q` (q is odd, so `2^-k` exists;
//! [`expand`](crate::galois::expand) multiplies every slot by `2^k`). A slot holds either
//! `round(q/t)` (a one-hot entry, BFV-scaled) or a gadget element `b g_ij` (`g_ij = 2^(j w)` in
//! limb `i`, 0 in the others: the CRT gadget of key switching), so that the server gets
//! `RLWE(b g_ij)` for every gadget element of each index bit `b`.
//!
//! ## RLWE to RGSW (the conversion key)
//! `RGSW(b)` is the pair of gadget vectors `RLWE(b g_ij)` and `RLWE(b s g_ij)`. The second is
//! made from the first: for `(c0, c1)` with `c0 + c1 s = b g + e`, key switching `c1` with a
//! key for `s^2` gives `(u0, u1)` with `u0 + u1 s = c1 s^2 + e'`, and `(u0, u1 + c0)` has phase
//! `s (c0 + c1 s) + e' = b s g + s e + e'`. The key for `s^2` travels in the setup as a
//! [`GaloisKey`](crate::galois::GaloisKey) with exponent [`SQUARE_KEY`] (0, which is no Galois
//! exponent).
//!
//! ## External product and folding
//! `RGSW(b) x (c0, c1) = sum_ij D0_ij RLWE(b g_ij) + D1_ij RLWE(b s g_ij)` for the digits `D`
//! of `c0` and `c1`: phase `b (c0 + c1 s)` plus `sum D e`. A CMux `A + RGSW(b) x (B - A)`
//! selects `B` when `b = 1`; `log2 n` levels of CMuxes fold `n` ciphertexts into the one the
//! bits name.
//!
//! ## Noise (see [`fold_noise`])
//! Bounds are subgaussian tail bounds with the multiplier of [`crate::noise`], treating the
//! digits and errors of different coefficients as independent (the heuristic of the RLWE PIR
//! literature; the tests measure the noise and check it against the bound).

use fastquery_backend::{Backend, Ntt, Polys, Ring};
use fastquery_math::Modulus;

use crate::{
    HeError, Params,
    galois::{Ciphertexts, ServerGaloisKey, gadget, key_products_ntt, keyswitch_bound},
    noise::{error_param, tail_z},
};

/// The exponent under which the key for `s^2` (RLWE to RGSW conversion) travels.
pub const SQUARE_KEY: usize = 0;

/// `2^-k` in every limb of the chain.
pub fn inv_pow2(params: &Params, k: u32) -> Result<Vec<u32>, HeError> {
    params
        .moduli()
        .iter()
        .map(|m| m.inv(m.reduce_u64(1u64 << k)).ok_or_else(|| HeError::BadParams("even modulus".into())))
        .collect()
}

/// The residues of a one-hot slot (`round(q/t) 2^-k`) in every limb.
pub fn one_hot_slot(params: &Params, k: u32) -> Result<Vec<u32>, HeError> {
    let inv = inv_pow2(params, k)?;
    Ok(params.moduli().iter().zip(params.q_over_t()).zip(&inv).map(|((m, &d), &i)| m.mul(d, i)).collect())
}

/// The residues of a gadget slot `b g_ij 2^-k` (`g_ij = 2^(j w)` in limb `i`, 0 elsewhere),
/// for gadget element `e = i * digits + j`.
pub fn gadget_slot(params: &Params, k: u32, digit_bits: u32, e: usize, b: bool) -> Result<Vec<u32>, HeError> {
    let (w, digits) = gadget(params, digit_bits);
    let (i, j) = (e / digits, e % digits);
    let inv = inv_pow2(params, k)?;
    let moduli: &[Modulus] = params.moduli();
    Ok(moduli
        .iter()
        .enumerate()
        .map(|(l, m)| if l == i && b { m.mul(m.reduce_u64(1u64 << (j as u32 * w)), inv[l]) } else { 0 })
        .collect())
}

/// `RGSW(b)` on the device: `RLWE(b g)` (for the digits of `c0`) and `RLWE(b s g)` (for those
/// of `c1`), each as two `G x 1` operands (its `c0`s and its `c1`s), NTT form,
/// `G = limbs * digits`. It may hold the same bit of `sets` tokens side by side (`sets * G`
/// polynomials per operand, token after token): an external product then gives ciphertext `r`
/// of its batch token `r % sets`'s bit ([`Ring::decompose_mac`]'s key sets), so one call
/// serves a batch whose ciphertexts belong to the tokens in turn.
pub struct Rgsw<B: Backend> {
    digit_bits: u32,
    sets: usize,
    /// `[c0s, c1s]` of `RLWE(b g)`.
    plain: [Polys<B, Ntt>; 2],
    /// `[c0s, c1s]` of `RLWE(b s g)`.
    times_s: [Polys<B, Ntt>; 2],
}

impl<B: Backend> std::fmt::Debug for Rgsw<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rgsw")
            .field("digit_bits", &self.digit_bits)
            .field("sets", &self.sets)
            .finish_non_exhaustive()
    }
}

impl<B: Backend> Rgsw<B> {
    /// Tokens whose bit it holds side by side.
    pub fn sets(&self) -> usize {
        self.sets
    }
}

/// Builds `RGSW(b)` for several bits from their `RLWE(b g_e)` (`rows` holds `bits * G`
/// ciphertexts, bit-major, gadget elements in the order of [`gadget_slot`]), with the key for
/// `s^2`. [`rgsw_from_rows_ntt`] for coefficient-form rows.
pub fn rgsw_from_rows<B: Backend>(
    ring: &Ring<B>,
    params: &Params,
    rows: Ciphertexts<B>,
    square: &ServerGaloisKey<B>,
    digit_bits: u32,
) -> Result<Vec<Rgsw<B>>, HeError> {
    rgsw_from_rows_ntt(ring, params, rows.forward(ring)?, square, digit_bits)
}

/// [`rgsw_from_rows`] for rows in the NTT domain (as the expansion leaves them): they are the
/// `RLWE(b g)` operands as they are, and the key switch of their `c1`s (transformed back for
/// the digits) leaves its products in the NTT domain, where `RLWE(b s g)` is formed.
pub fn rgsw_from_rows_ntt<B: Backend>(
    ring: &Ring<B>,
    params: &Params,
    rows: Ciphertexts<B, Ntt>,
    square: &ServerGaloisKey<B>,
    digit_bits: u32,
) -> Result<Vec<Rgsw<B>>, HeError> {
    let bits = rows.len() / gadget_rows(params, &rows, square, digit_bits)?;
    rgsw_bits_from_rows_ntt(ring, params, rows, bits, square, digit_bits)
}

/// One bit of `sets` tokens as one [`Rgsw`] of that many sets, from their `RLWE(b_t g_e)` in the
/// NTT domain (`rows` holds `sets * G` ciphertexts, token after token, each token's gadget
/// elements in the order of [`gadget_slot`]): every token's conversion in one key switch of
/// the batch (the key for `s^2` is the client's, one for all its tokens), and no slices.
pub fn rgsw_sets_from_rows_ntt<B: Backend>(
    ring: &Ring<B>,
    params: &Params,
    rows: Ciphertexts<B, Ntt>,
    square: &ServerGaloisKey<B>,
    digit_bits: u32,
) -> Result<Rgsw<B>, HeError> {
    Ok(rgsw_bits_from_rows_ntt(ring, params, rows, 1, square, digit_bits)?.remove(0))
}

/// `bits` bits of the same tokens, each an [`Rgsw`] of as many sets as `rows` holds tokens, from
/// one key switch of all their rows (`rows` holds `bits * sets * G` ciphertexts, bit after bit,
/// each bit's tokens in turn as for [`rgsw_sets_from_rows_ntt`]), then each bit's rows and
/// products sliced out (copies, where `bits > 1`): one launch chain instead of `bits` where each
/// bit alone is a small batch (a one-token request's eight bits of five rows on a GPU).
pub fn rgsw_bits_from_rows_ntt<B: Backend>(
    ring: &Ring<B>,
    params: &Params,
    rows: Ciphertexts<B, Ntt>,
    bits: usize,
    square: &ServerGaloisKey<B>,
    digit_bits: u32,
) -> Result<Vec<Rgsw<B>>, HeError> {
    let g = gadget_rows(params, &rows, square, digit_bits)?;
    if bits == 0 || !(rows.len() / g).is_multiple_of(bits) {
        return Err(HeError::BadInput(format!("{} rows of {g} gadget elements for {bits} bits", rows.len())));
    }
    let per_bit = rows.len() / bits;
    let sets = per_bit / g;
    let (rows, times_s) = times_s(ring, rows, square)?;
    if bits == 1 {
        // One bit: its rows are the RGSW as they are, no slices.
        return Ok(vec![Rgsw {
            digit_bits,
            sets,
            plain: [rows.c0, rows.c1],
            times_s: [times_s.c0, times_s.c1],
        }]);
    }
    (0..bits)
        .map(|bit| {
            let (plain, times_s) =
                (rows.slice(ring, bit * per_bit, per_bit)?, times_s.slice(ring, bit * per_bit, per_bit)?);
            Ok(Rgsw { digit_bits, sets, plain: [plain.c0, plain.c1], times_s: [times_s.c0, times_s.c1] })
        })
        .collect()
}

/// `G`, the gadget elements of one RGSW, after checking that `rows` is a non-empty multiple of
/// it and that `square` is the key for `s^2`.
fn gadget_rows<B: Backend>(
    params: &Params,
    rows: &Ciphertexts<B, Ntt>,
    square: &ServerGaloisKey<B>,
    digit_bits: u32,
) -> Result<usize, HeError> {
    let (_, digits) = gadget(params, digit_bits);
    let g = rows.limbs() * digits;
    if square.g() != SQUARE_KEY || rows.is_empty() || !rows.len().is_multiple_of(g) {
        return Err(HeError::BadInput(format!("{} rows for RGSW with {g} gadget elements", rows.len())));
    }
    Ok(g)
}

/// `RLWE(b s g)` of every row: its `c1` key-switched with the key for `s^2` (every row at once:
/// the CPU's fused product keeps no digit rows; the composed default holds `limbs * digits`
/// digit polynomials per row, 130 MB for 80 rows at N = 8192 and five limbs), `(u0, u1) =
/// (sum D b, sum D a)`, then `(u0, u1 + c0)`. Returns the rows with it.
#[allow(clippy::type_complexity)]
fn times_s<B: Backend>(
    ring: &Ring<B>,
    rows: Ciphertexts<B, Ntt>,
    square: &ServerGaloisKey<B>,
) -> Result<(Ciphertexts<B, Ntt>, Ciphertexts<B, Ntt>), HeError> {
    let c1 = ring.inverse_of(&rows.c1)?;
    let mut times_s = key_products_ntt(ring, &c1, &rows.c1, square)?;
    drop(c1);
    ring.add_assign(&mut times_s.c1, &rows.c0)?;
    Ok((rows, times_s))
}

/// `out += RGSW(b) x ct` for every ciphertext `ct` of `cts` (coefficient form; `out` in the NTT
/// domain, one per ciphertext): phase `b * phase(ct)` plus the digits times the RGSW's errors.
/// `twin`, the NTT form of `cts` where the caller has it, spares one digit transform per row
/// when the gadget takes one digit per limb ([`Ring::decompose_mac_twin`]).
pub fn external_product_into<B: Backend>(
    ring: &Ring<B>,
    cts: &Ciphertexts<B>,
    twin: Option<&Ciphertexts<B, Ntt>>,
    rgsw: &Rgsw<B>,
    out: &mut Ciphertexts<B, Ntt>,
) -> Result<(), HeError> {
    products_in_chunks(ring, cts, twin, rgsw, out, ring.key_product_chunk())
}

/// [`external_product_into`] in chunks of `chunk` ciphertexts.
fn products_in_chunks<B: Backend>(
    ring: &Ring<B>,
    cts: &Ciphertexts<B>,
    twin: Option<&Ciphertexts<B, Ntt>>,
    rgsw: &Rgsw<B>,
    out: &mut Ciphertexts<B, Ntt>,
    chunk: usize,
) -> Result<(), HeError> {
    if out.len() != cts.len() || twin.is_some_and(|t| t.len() != cts.len()) {
        return Err(HeError::BadInput(format!(
            "an external product of {} ciphertexts into {}",
            cts.len(),
            out.len()
        )));
    }
    if !cts.len().is_multiple_of(rgsw.sets) {
        return Err(HeError::BadInput(format!(
            "an external product of {} ciphertexts with the bits of {} tokens",
            cts.len(),
            rgsw.sets
        )));
    }
    // Chunks of the backend's size (Ring::key_product_chunk) bound the digit buffers; up to a
    // chunk (every level on the CPU): no slice of the input, no copy of the output. A chunk
    // is whole rounds of the tokens, so ciphertext r of a chunk is still token r % sets's.
    let (count, chunk) = (cts.len(), (chunk / rgsw.sets).max(1) * rgsw.sets);
    if count <= chunk {
        return product_chunk(ring, cts, twin, rgsw, out);
    }
    for start in (0..count).step_by(chunk) {
        let len = chunk.min(count - start);
        let part_twin = twin.map(|t| t.slice(ring, start, len)).transpose()?;
        let mut part = out.slice(ring, start, len)?;
        product_chunk(ring, &cts.slice(ring, start, len)?, part_twin.as_ref(), rgsw, &mut part)?;
        out.copy_from(ring, &part, 0, start, len)?;
    }
    Ok(())
}

/// [`external_product_into`] of one chunk: the digits of `c0` times `RLWE(b g)`, those of `c1`
/// times `RLWE(b s g)`, both accumulated into `out`.
fn product_chunk<B: Backend>(
    ring: &Ring<B>,
    part: &Ciphertexts<B>,
    twin: Option<&Ciphertexts<B, Ntt>>,
    rgsw: &Rgsw<B>,
    out: &mut Ciphertexts<B, Ntt>,
) -> Result<(), HeError> {
    let bits = rgsw.digit_bits;
    let halves =
        [(&part.c0, twin.map(|t| &t.c0), &rgsw.plain), (&part.c1, twin.map(|t| &t.c1), &rgsw.times_s)];
    for (a, a_twin, [k0, k1]) in halves {
        let outs = [&mut out.c0, &mut out.c1];
        match a_twin {
            Some(t) if twin_helps(ring, a.limbs(), rgsw) => {
                ring.decompose_mac_twin(a, t, bits, [k0, k1], outs, true)?
            }
            _ => ring.decompose_mac(a, bits, [k0, k1], outs, true)?,
        }
    }
    Ok(())
}

/// Whether the fold keeps a twin for `rgsw`'s external products (one digit per limb).
fn twin_helps<B: Backend>(ring: &Ring<B>, limbs: usize, rgsw: &Rgsw<B>) -> bool {
    ring.digits(limbs, rgsw.digit_bits) == 1
}

/// `A + RGSW(b) x (B - A)` for the two halves `A`, `B` of `cts` (pairs `i` and
/// `i + len/2`), all in the NTT domain: `B` where `b = 1`, `A` where `b = 0`. The difference
/// goes back to coefficient form for its digits (its NTT form is their twin); the product is
/// accumulated straight into `A`, so a level pays no other transform. With an RGSW of `sets`
/// tokens, ciphertext `i sets + t` is token `t`'s `i`-th (tokens in turn), so each half of the
/// batch holds every token's half and one level folds all of them.
pub fn cmux_halves<B: Backend>(
    ring: &Ring<B>,
    cts: Ciphertexts<B, Ntt>,
    rgsw: &Rgsw<B>,
) -> Result<Ciphertexts<B, Ntt>, HeError> {
    let half = halve(cts.len())?;
    // B - A in one pass, then A kept where it is: no copy of either half (they were 14% of a
    // fold's time on the CPU as copies, 2026-12-03).
    let diff = cts.difference(ring, half, 0, half)?;
    select_into(ring, cts.truncate(ring, half)?, diff, rgsw)
}

/// [`cmux_halves`] with its halves in two batches: `A + RGSW(b) x (B - A)` for each pair of
/// `A = a[i]`, `B = b[i]` (NTT domain; the difference is formed in `b`'s buffer). A caller that
/// moves a product's rows into place moves each half straight into its own batch, so neither
/// the whole level nor its difference is another copy.
pub fn cmux_pair<B: Backend>(
    ring: &Ring<B>,
    a: Ciphertexts<B, Ntt>,
    mut b: Ciphertexts<B, Ntt>,
    rgsw: &Rgsw<B>,
) -> Result<Ciphertexts<B, Ntt>, HeError> {
    if a.len() != b.len() {
        return Err(HeError::BadInput(format!("a CMux of {} against {} ciphertexts", a.len(), b.len())));
    }
    b.sub_assign(ring, &a)?;
    select_into(ring, a, b, rgsw)
}

/// Half of a CMux level's `len` ciphertexts, or an error for an odd or empty level.
fn halve(len: usize) -> Result<usize, HeError> {
    if len == 0 || !len.is_multiple_of(2) {
        return Err(HeError::BadInput(format!("a CMux level over {len} ciphertexts")));
    }
    Ok(len / 2)
}

/// `a + RGSW(b) x diff`, accumulated into `a` (both in the NTT domain).
fn select_into<B: Backend>(
    ring: &Ring<B>,
    mut a: Ciphertexts<B, Ntt>,
    diff: Ciphertexts<B, Ntt>,
    rgsw: &Rgsw<B>,
) -> Result<Ciphertexts<B, Ntt>, HeError> {
    if twin_helps(ring, a.limbs(), rgsw) {
        let coeff = diff.inverse_of(ring)?;
        external_product_into(ring, &coeff, Some(&diff), rgsw, &mut a)?;
    } else {
        external_product_into(ring, &diff.inverse(ring)?, None, rgsw, &mut a)?;
    }
    Ok(a)
}

/// `ct` times `X^-(shift)` where `b = 1`: `ct + RGSW(b) x (X^-shift ct - ct)`, in the NTT
/// domain (the difference is formed in coefficient form, so it has no twin).
pub fn cmux_rotate<B: Backend>(
    ring: &Ring<B>,
    params: &Params,
    cts: Ciphertexts<B, Ntt>,
    shift: usize,
    rgsw: &Rgsw<B>,
) -> Result<Ciphertexts<B, Ntt>, HeError> {
    let n = params.n();
    let coeff = cts.inverse_of(ring)?;
    let mut diff = coeff.duplicate(ring)?;
    diff.monomial_mul_assign(ring, (2 * n - shift % (2 * n)) % (2 * n))?;
    diff.sub_assign(ring, &coeff)?;
    drop(coeff);
    let mut out = cts;
    external_product_into(ring, &diff, None, rgsw, &mut out)?;
    Ok(out)
}

/// The shape of a folded query, for [`fold_noise`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FoldShape {
    /// Expansion levels (`2^k` slots).
    pub k: u32,
    /// Entries of the first-dimension one-hot.
    pub m1: usize,
    /// Bound on `|table entry|`.
    pub w_max: u64,
    /// Digit width of the Galois keys and the key for `s^2`.
    pub ks_bits: u32,
    /// Digit width of the RGSW gadget.
    pub rgsw_bits: u32,
    /// CMux levels (index bits folded).
    pub levels: usize,
}

/// Bounds of one folded query, each a tail bound at the engine's failure probability.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FoldNoise {
    /// Error of an expanded slot: `2^k` fresh errors plus `2^k - 1` key switches.
    pub expanded: f64,
    /// After the first dimension: `m1 N` slot errors times table entries, plus encoding
    /// rounding.
    pub first: f64,
    /// Error of the `RLWE(b s g)` half of an RGSW: `s` times a slot error, plus a key switch.
    pub rgsw: f64,
    /// Error one external product adds: `2 G N` digits below `2^w` times RGSW errors.
    pub external: f64,
    /// Table-dependent noise before flooding: `first + levels * external`.
    pub total: f64,
}

/// Computes the bounds of [`FoldNoise`] for `shape` under `params`.
pub fn fold_noise(params: &Params, shape: FoldShape) -> FoldNoise {
    let (z, s_e) = (tail_z(), error_param());
    let n = params.n() as f64;
    let ks = keyswitch_bound(params, shape.ks_bits);
    let slots = 2f64.powi(shape.k as i32);
    let expanded = slots * z * s_e + (slots - 1.0) * ks;
    let w = shape.w_max as f64;
    let first = expanded * (shape.m1 as f64 * n).sqrt() * w + 0.5 * w;
    let rgsw = expanded * n.sqrt() + ks;
    let (bits, digits) = gadget(params, shape.rgsw_bits);
    let g = (params.limbs() * digits) as f64;
    let external = rgsw * (2.0 * g * n).sqrt() * 2f64.powi(bits as i32);
    FoldNoise { expanded, first, rgsw, external, total: first + shape.levels as f64 * external }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use fastquery_backend::{Coeff, Ntt, Polys, Repr, Ring, Shape};
    use fastquery_cpu::CpuBackend;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    use super::{SQUARE_KEY, cmux_halves, cmux_pair, products_in_chunks, rgsw_from_rows};
    use crate::{
        ParamSpec, Params,
        client::Client,
        galois::{Ciphertexts, ServerGaloisKey, load_galois_key},
    };

    fn random<R: Repr>(ring: &Ring<CpuBackend>, rng: &mut StdRng, shape: Shape) -> Polys<CpuBackend, R> {
        let (n, moduli) = (ring.n(), ring.context().moduli());
        let words: Vec<u32> = (0..shape.rows())
            .flat_map(|row| {
                let p = moduli[row % shape.limbs].value();
                (0..n).map(|_| rng.random_range(0..p)).collect::<Vec<_>>()
            })
            .collect();
        ring.upload(&words, shape).expect("upload")
    }

    /// A two-limb hybrid ring at N = 4096 (its parameters, the ring) and a fresh client's key for
    /// `s^2` (31-bit digits) on it.
    fn ring_and_square() -> (Arc<Params>, Ring<CpuBackend>, ServerGaloisKey<CpuBackend>) {
        let spec = ParamSpec {
            n: 4096,
            prime_bits: vec![31, 31],
            response_limbs: 1,
            plain_bits: 16,
            flood_bits: 40,
            special_bits: 31,
        };
        let params = Arc::new(Params::new(spec).expect("parameters"));
        let ring = Ring::new(Arc::new(CpuBackend::new()), params.ring().clone()).expect("ring");
        let client = Client::new(params.clone()).expect("client");
        let square = load_galois_key(&ring, &params, &client.square_key(31), 31).expect("key");
        assert_eq!(square.g(), SQUARE_KEY);
        (params, ring, square)
    }

    /// A two-limb hybrid ring at N = 4096, the RGSW of a random bit's rows made with a fresh
    /// client's key for `s^2`, the random stream `seed` continues, and the chain's limbs (the
    /// ring also holds the special prime).
    fn ring_and_rgsw(seed: u64) -> (Ring<CpuBackend>, super::Rgsw<CpuBackend>, StdRng, usize) {
        let (params, ring, square) = ring_and_square();
        let mut rng = StdRng::seed_from_u64(seed);
        let limbs = params.limbs();
        let rows = Shape::new(limbs, limbs);
        let rows = Ciphertexts { c0: random(&ring, &mut rng, rows), c1: random(&ring, &mut rng, rows) };
        let rgsw = rgsw_from_rows(&ring, &params, rows, &square, 31).expect("RGSW").remove(0);
        (ring, rgsw, rng, limbs)
    }

    /// External products in chunks (of 3 over 7 ciphertexts: the path of a backend with a
    /// small product chunk, which the CPU backend no longer takes) give the same words as one
    /// call, with and without the twin.
    #[test]
    fn chunked_external_products_match_one_call() {
        let (ring, rgsw, mut rng, limbs) = ring_and_rgsw(3);
        let shape = Shape::new(7, limbs);
        let cts: Ciphertexts<CpuBackend, Coeff> =
            Ciphertexts { c0: random(&ring, &mut rng, shape), c1: random(&ring, &mut rng, shape) };
        let twin = cts.duplicate(&ring).expect("copy").forward(&ring).expect("transform");
        let start: Ciphertexts<CpuBackend, Ntt> =
            Ciphertexts { c0: random(&ring, &mut rng, shape), c1: random(&ring, &mut rng, shape) };
        let mut results = Vec::new();
        for (chunk, with_twin) in [(usize::MAX, false), (3, false), (usize::MAX, true), (3, true)] {
            let mut out = start.duplicate(&ring).expect("copy");
            products_in_chunks(&ring, &cts, with_twin.then_some(&twin), &rgsw, &mut out, chunk)
                .expect("products");
            results.push([ring.download(&out.c0).expect("c0"), ring.download(&out.c1).expect("c1")]);
        }
        assert!(results.iter().all(|r| *r == results[0]), "chunked or twinned products differ");
        assert_ne!(results[0][0], ring.download(&start.c0).expect("c0"), "the products added nothing");
    }

    /// Three tokens' levels in one batch (ciphertext `i 3 + t` token `t`'s `i`-th), with an RGSW
    /// of three sets built in one key switch (`rgsw_sets_from_rows_ntt`), give each token the
    /// words of its own level with its own RGSW (`rgsw_from_rows`), in chunks of one round of
    /// the tokens as in one call; the level from two batches (`cmux_pair`) equals the level over
    /// their concatenation; a batch that is no whole number of rounds is refused.
    #[test]
    fn tokens_in_turns_fold_as_each_alone() {
        let (params, ring, square) = ring_and_square();
        let mut rng = StdRng::seed_from_u64(21);
        let (limbs, tokens, len) = (params.limbs(), 3usize, 4usize);
        let cts = |rng: &mut StdRng, count: usize| -> Ciphertexts<CpuBackend, Ntt> {
            let shape = Shape::new(count, limbs);
            Ciphertexts { c0: random(&ring, rng, shape), c1: random(&ring, rng, shape) }
        };
        // Each token's gadget rows (limbs of them: one digit per limb), alone and stacked.
        let rows: Vec<Ciphertexts<CpuBackend, Ntt>> = (0..tokens).map(|_| cts(&mut rng, limbs)).collect();
        let mut stacked = Ciphertexts::zeros(&ring, tokens * limbs, limbs).expect("rows");
        for (t, r) in rows.iter().enumerate() {
            stacked.copy_from(&ring, r, 0, t * limbs, limbs).expect("copy");
        }
        let alone: Vec<super::Rgsw<CpuBackend>> = rows
            .iter()
            .map(|r| {
                let r = r.duplicate(&ring).unwrap();
                super::rgsw_from_rows_ntt(&ring, &params, r, &square, 31).expect("RGSW").remove(0)
            })
            .collect();
        let together =
            super::rgsw_sets_from_rows_ntt(&ring, &params, stacked, &square, 31).expect("RGSW sets");
        assert_eq!(together.sets(), tokens);
        let batch = cts(&mut rng, tokens * len);
        let words =
            |c: &Ciphertexts<CpuBackend, Ntt>| [ring.download(&c.c0).unwrap(), ring.download(&c.c1).unwrap()];
        let level = cmux_halves(&ring, batch.duplicate(&ring).unwrap(), &together).expect("level in turns");
        let got = words(&level);
        let poly = limbs * ring.n();
        for (t, rgsw) in alone.iter().enumerate() {
            let mut mine = Ciphertexts::zeros(&ring, len, limbs).expect("token");
            for i in 0..len {
                mine.copy_from(&ring, &batch, i * tokens + t, i, 1).expect("copy");
            }
            let want = words(&cmux_halves(&ring, mine, rgsw).expect("level alone"));
            for i in 0..len / 2 {
                for k in 0..2 {
                    assert_eq!(
                        got[k][(i * tokens + t) * poly..][..poly],
                        want[k][i * poly..][..poly],
                        "token {t} ciphertext {i} half {k}"
                    );
                }
            }
        }
        // One round of the tokens per chunk: the same words.
        let half = tokens * len / 2;
        let diff = batch.difference(&ring, half, 0, half).unwrap().inverse(&ring).unwrap();
        let mut chunked = batch.slice(&ring, 0, half).unwrap();
        products_in_chunks(&ring, &diff, None, &together, &mut chunked, 1).expect("chunks of one round");
        assert_eq!(words(&chunked), got, "chunks of a round of the tokens");
        // Two batches (halves moved apart) against the level over their concatenation.
        let (a, b) = (batch.slice(&ring, 0, half).unwrap(), batch.slice(&ring, half, half).unwrap());
        assert_eq!(words(&cmux_pair(&ring, a, b, &together).expect("pair")), got);
        let (a, b) = (batch.slice(&ring, 0, half).unwrap(), batch.slice(&ring, 0, half - 1).unwrap());
        assert!(cmux_pair(&ring, a, b, &together).is_err(), "batches of two sizes");
        assert!(cmux_halves(&ring, cts(&mut rng, 2 * tokens + 2), &together).is_err(), "no whole rounds");
    }

    /// Several bits of several tokens from one key switch (`rgsw_bits_from_rows_ntt`, rows bit
    /// after bit) are word for word each bit's own (`rgsw_sets_from_rows_ntt` on its rows); a
    /// batch that is no whole number of bits is refused.
    #[test]
    fn bits_from_one_key_switch_are_each_bits_own() {
        let (params, ring, square) = ring_and_square();
        let mut rng = StdRng::seed_from_u64(22);
        let (limbs, tokens, bits) = (params.limbs(), 2usize, 3usize);
        let per_bit = tokens * limbs;
        let shape = Shape::new(bits * per_bit, limbs);
        let rows: Ciphertexts<CpuBackend, Ntt> =
            Ciphertexts { c0: random(&ring, &mut rng, shape), c1: random(&ring, &mut rng, shape) };
        let together =
            super::rgsw_bits_from_rows_ntt(&ring, &params, rows.duplicate(&ring).unwrap(), bits, &square, 31)
                .expect("RGSW bits");
        assert_eq!(together.len(), bits);
        let words = |p: &Polys<CpuBackend, Ntt>| ring.download(p).unwrap();
        for (b, got) in together.iter().enumerate() {
            let own = rows.slice(&ring, b * per_bit, per_bit).unwrap();
            let want = super::rgsw_sets_from_rows_ntt(&ring, &params, own, &square, 31).expect("RGSW");
            assert_eq!(got.sets(), tokens);
            for k in 0..2 {
                assert_eq!(words(&got.plain[k]), words(&want.plain[k]), "bit {b} plain {k}");
                assert_eq!(words(&got.times_s[k]), words(&want.times_s[k]), "bit {b} times s {k}");
            }
        }
        let rows = rows.slice(&ring, 0, bits * per_bit - limbs).unwrap();
        assert!(
            super::rgsw_bits_from_rows_ntt(&ring, &params, rows, bits, &square, 31).is_err(),
            "no whole bits"
        );
    }
}
