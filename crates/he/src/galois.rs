//! Galois automorphisms of ciphertexts, key switching, response packing and oblivious
//! expansion.
//!
//! ## Key switching: the RNS (CRT) gadget, with or without a special prime
//! `c1` is decomposed limb by limb, and each limb's residue into `digits` digits of `w` bits:
//! `c1 = sum_ij D_ij g_ij (mod q)` with `g_ij = 2^(j w) (q/p_i) [(q/p_i)^-1]_{p_i}`, which is
//! `2^(j w)` in limb `i` and 0 in the others. A key for `s'` is `k_ij = (-a_ij s + e_ij +
//! g_ij s', a_ij)`, and `(c0 + sum D_ij k_ij.0, sum D_ij k_ij.1)` decrypts under `s` to
//! `c0 + c1 s' + sum D_ij e_ij`. The noise added is `sum_ij D_ij e_ij`, bounded in
//! [`keyswitch_bound`]: about `2^(w + 13)` at N = 8192, and the oblivious expansion adds
//! `2^k - 1` of them to every slot.
//!
//! **Hybrid key switching** (a parameter set with a special prime `P`, `ParamSpec::special_bits`):
//! one digit per limb, the whole residue `D_i = [c1]_{p_i}`, and keys mod `q P` for
//! `P g_i s'`: `k_i = (-a_i s + e_i + P g_i s', a_i)` over the chain's limbs and `P`'s. The
//! digits, lifted to every limb of `q P`, times the keys sum to `P c1 s' + sum D_i e_i (mod q P)`,
//! and dividing by `P` with rounding (the modulus switch from `q P` to `q`) leaves
//! `c1 s' + sum D_i e_i / P + rounding`: the key's error is divided by `P`, so the noise is
//! about that of a modulus switch, `2^13` instead of `2^29` for 16-bit digits at N = 8192, with
//! half the digits. The price is the special prime in every key (one more limb, and `q P`
//! inside the 128-bit limit, checked by `Params`).
//!
//! Galois keys are seeded: the client sends the `k_ij.0` and one 32-byte seed per element,
//! from which the server expands every `a_ij`.
//!
//! ## Packing (PackLWEs, Chen-Dai-Kim-Song 2020, on strided ciphertexts)
//! `n = 2^k` ciphertexts whose useful coefficients sit at multiples of `n` (garbage elsewhere)
//! become one whose coefficient `r n + i` is ciphertext `i`'s coefficient `r n`, every other
//! coefficient of the inputs cancelled exactly. Level by level with shift `h = n/2, ..., 1`:
//! `ct = (A + X^h B) + tau_{N/h+1}(A - X^h B)`. The automorphism fixes multiples of `2h` and
//! negates odd multiples of `h`, so `A`'s useful part and `X^h B`'s double while the
//! coefficients of valuation exactly `log2 h` cancel; after the last level nothing else is
//! left. Values are doubled per level, so inputs are first multiplied by `n^-1 mod q` (q is
//! odd); the key-switching noise of level `l` is doubled by the levels after it: at most
//! `(n - 1) B_ks` in all.
//!
//! ## Oblivious expansion (SealPIR, Angel et al. 2018)
//! One ciphertext of `sum_i m_i X^i` (`i < 2^k`) becomes `2^k` ciphertexts of `2^k m_i`, using
//! `tau_{N/2^j + 1}` for `j = 0..k`: the same machinery, the other way round.

use fastquery_backend::{Backend, Coeff, Ntt, Polys, Repr, Ring, Shape};
use fastquery_math::Modulus;
use fastquery_ntt::NttPlan;
use rand::{CryptoRng, RngCore};

pub use crate::client::SeededCiphertext;
use crate::{
    HeError, Params, SecretKey,
    noise::{error_param, tail_z},
    sample::{Seed, cbd, expand_uniform, fresh_seed},
};

/// A batch of ciphertexts on a device, `c0[i] + c1[i] s = Delta m_i + e_i`: in coefficient form
/// (the default), or in the NTT domain (`Ciphertexts<B, Ntt>`, the fold's working form).
#[derive(Debug)]
pub struct Ciphertexts<B: Backend, R: Repr = Coeff> {
    /// First components.
    pub c0: Polys<B, R>,
    /// Second components.
    pub c1: Polys<B, R>,
}

/// A Galois key for `X -> X^g` as the client sends it: the `b` halves (NTT form, all limbs,
/// `[digit][limb][coefficient]` with digits ordered `[limb i][digit j]`) and the seed of the
/// `a` halves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GaloisKey {
    /// The automorphism's exponent (odd, below 2N).
    pub g: usize,
    /// `b_ij = -a_ij s + e_ij + g_ij tau_g(s)`, NTT form.
    pub b: Vec<u32>,
    /// Seed of the `a_ij`.
    pub seed: Seed,
}

/// Digits of the gadget: `(digit_bits, digits per limb)`.
pub fn gadget(params: &Params, digit_bits: u32) -> (u32, usize) {
    let bits = params.moduli().iter().map(|m| m.bits()).max().unwrap_or(1);
    (digit_bits, bits.div_ceil(digit_bits.max(1)) as usize)
}

/// The digit width key switching really uses under `params`: one whole residue per limb (31
/// bits) where the set has a special prime, `digit_bits` otherwise.
pub fn key_digit_bits(params: &Params, digit_bits: u32) -> u32 {
    if params.special_prime().is_some() { HYBRID_DIGIT_BITS } else { digit_bits }
}

pub use fastquery_backend::HYBRID_DIGIT_BITS;

/// The layout of a key-switching key: `(polynomials, limbs)` of each half. Without a special
/// prime, `limbs * digits` polynomials over the chain; with one, a polynomial per limb of the
/// chain over the chain and `P`.
pub fn key_shape(params: &Params, digit_bits: u32) -> (usize, usize) {
    let (_, digits) = gadget(params, key_digit_bits(params, digit_bits));
    (params.limbs() * digits, params.key_limbs())
}

/// Subgaussian tail bound on the noise one key switch adds. Without a special prime:
/// `sum_ij D_ij e_ij` over `limbs * digits` digit polynomials of `N` coefficients below `2^w`
/// times fresh errors. With one: the same sum over `limbs` digits below `max p_i`, divided by
/// `P`, plus the rounding of that division (`r_0 + r_1 s'`, `|r| <= 1/2`, bounded as a modulus
/// switch's).
pub fn keyswitch_bound(params: &Params, digit_bits: u32) -> f64 {
    let (z, s_e, n) = (tail_z(), error_param(), params.n() as f64);
    match params.special_prime() {
        Some(p) => hybrid_bound(params, params.limbs(), u64::from(p)),
        None => {
            let (w, digits) = gadget(params, digit_bits);
            let terms = params.limbs() as f64 * digits as f64 * n;
            z * s_e * terms.sqrt() * 2f64.powi(w as i32)
        }
    }
}

/// [`keyswitch_bound`] of a hybrid key switch of the chain's first `chain` limbs (one digit per
/// limb) with the special prime `special`.
pub(crate) fn hybrid_bound(params: &Params, chain: usize, special: u64) -> f64 {
    let (z, s_e, n) = (tail_z(), error_param(), params.n() as f64);
    let top = params.moduli()[..chain].iter().map(|m| m.value()).max().unwrap_or(1);
    let terms = (chain * params.n()) as f64;
    z * s_e * terms.sqrt() * f64::from(top) / special as f64 + z * (n + 1.0).sqrt()
}

/// The exponents packing `n` strided ciphertexts needs: `N/h + 1` for `h = n/2, ..., 1`.
pub fn packing_elements(big_n: usize, n: usize) -> Vec<usize> {
    let mut h = n / 2;
    let mut out = Vec::new();
    while h >= 1 {
        out.push(big_n / h + 1);
        h /= 2;
    }
    out
}

impl SecretKey {
    /// A Galois key for `X -> X^g` with `digit_bits`-bit digits.
    pub fn galois_key<R: RngCore + CryptoRng>(
        &self,
        params: &Params,
        plans: &[NttPlan],
        g: usize,
        digit_bits: u32,
        rng: &mut R,
    ) -> Result<GaloisKey, HeError> {
        let idx = fastquery_backend::automorphism_index(params.n(), g, true)
            .ok_or_else(|| HeError::BadInput(format!("Galois exponent {g} is not odd")))?;
        // In the NTT domain the automorphism is a permutation of the evaluations.
        let (b, seed) =
            self.switching_key(params, plans, digit_bits, rng, |l, k| self.ntt_limb(l)[idx[k] as usize]);
        Ok(GaloisKey { g, b, seed })
    }

    /// The key for `s^2` (RLWE to RGSW conversion), as a [`GaloisKey`] with exponent
    /// [`SQUARE_KEY`](crate::fold::SQUARE_KEY).
    pub fn square_key<R: RngCore + CryptoRng>(
        &self,
        params: &Params,
        plans: &[NttPlan],
        digit_bits: u32,
        rng: &mut R,
    ) -> GaloisKey {
        let moduli: &[Modulus] = params.moduli();
        let (b, seed) = self.switching_key(params, plans, digit_bits, rng, |l, k| {
            let s = self.ntt_limb(l)[k];
            moduli[l].mul(s, s)
        });
        GaloisKey { g: crate::fold::SQUARE_KEY, b, seed }
    }

    /// `b_ij = -a_ij s + e_ij + g_ij s'` (NTT form) for the target `s'` given by its NTT
    /// evaluations `target(limb, k)`, and the seed of the `a_ij`; with a special prime `P`,
    /// `b_i = -a_i s + e_i + P g_i s'` over every limb of `q P` (see the module notes).
    fn switching_key<R: RngCore + CryptoRng>(
        &self,
        params: &Params,
        plans: &[NttPlan],
        digit_bits: u32,
        rng: &mut R,
        target: impl Fn(usize, usize) -> u32,
    ) -> (Vec<u32>, Seed) {
        let (w, digits) = gadget(params, key_digit_bits(params, digit_bits));
        let (_, limbs) = key_shape(params, digit_bits);
        let form = KeyForm {
            chain: params.limbs(),
            limbs,
            digit_bits: w,
            digits,
            special: params.special_prime().map_or(1, u64::from),
        };
        let seed = fresh_seed();
        let a = expand_uniform(params.ring(), limbs, form.chain * digits, &seed);
        (self.switching_rows(params, plans, form, &a, rng, Some(&target)), seed)
    }

    /// The `b` rows of a key-switching key of `form` under `self` with the `a` rows `a`: `b_ij
    /// = -a_ij s + e_ij + special g_ij s'` for the target `s'` (NTT evaluations `target(limb,
    /// k)`), or `b_ij = -a_ij s + e_ij` (a key to the zero polynomial) without one. NTT form,
    /// `[chain limb i][digit j][limb][coefficient]`.
    pub(crate) fn switching_rows<R: RngCore + CryptoRng>(
        &self,
        params: &Params,
        plans: &[NttPlan],
        form: KeyForm,
        a: &[u32],
        rng: &mut R,
        target: Option<&dyn Fn(usize, usize) -> u32>,
    ) -> Vec<u32> {
        let n = params.n();
        let KeyForm { chain, limbs, digit_bits: w, digits, special } = form;
        let keys = chain * digits;
        let mut b = vec![0u32; keys * limbs * n];
        let moduli: &[Modulus] = &params.ring().moduli()[..limbs];
        for key in 0..keys {
            let (i, j) = (key / digits, key % digits);
            let e = cbd(rng, n);
            for (l, m) in moduli.iter().enumerate() {
                let row = &mut b[(key * limbs + l) * n..(key * limbs + l + 1) * n];
                for (x, &v) in row.iter_mut().zip(e.iter()) {
                    *x = m.small(v);
                }
                plans[l].forward(row);
                self.sub_mul_ntt(*m, l, &a[(key * limbs + l) * n..(key * limbs + l + 1) * n], row);
                if let (true, Some(target)) = (l == i, target) {
                    let gadget = m.mul(m.reduce_u64(1u64 << (j as u32 * w)), m.reduce_u64(special));
                    for (k, x) in row.iter_mut().enumerate() {
                        *x = m.add(*x, m.mul(gadget, target(l, k)));
                    }
                }
            }
        }
        b
    }
}

/// The shape of a key-switching key: digits of the first `chain` limbs (`digits` of
/// `digit_bits` bits per limb), rows over the ring's first `limbs` limbs (`chain + 1` with a
/// special prime, the ring's next one, of value `special`; else `chain` and `special = 1`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct KeyForm {
    pub(crate) chain: usize,
    pub(crate) limbs: usize,
    pub(crate) digit_bits: u32,
    pub(crate) digits: usize,
    pub(crate) special: u64,
}

/// A Galois key on the server's device: the `(b, a)` pairs as the `inner x 2` operand of a
/// multiply-accumulate.
pub struct ServerGaloisKey<B: Backend> {
    g: usize,
    /// The digit width the key was made for ([`HYBRID_DIGIT_BITS`] when hybrid).
    digit_bits: u32,
    /// Hybrid: the halves are over the chain and the special prime, with a zero polynomial
    /// appended for the special prime's (always zero) digit.
    hybrid: bool,
    /// The `b` halves, an `inner x 1` operand (they add to `c0`).
    b: Polys<B, Ntt>,
    /// The `a` halves, an `inner x 1` operand (they form the new `c1`).
    a: Polys<B, Ntt>,
}

impl<B: Backend> std::fmt::Debug for ServerGaloisKey<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerGaloisKey").field("g", &self.g).finish_non_exhaustive()
    }
}

impl<B: Backend> ServerGaloisKey<B> {
    /// The exponent.
    pub fn g(&self) -> usize {
        self.g
    }
}

/// Loads a Galois key (expanding its `a` halves), checking its size.
pub fn load_galois_key<B: Backend>(
    ring: &Ring<B>,
    params: &Params,
    key: &GaloisKey,
    digit_bits: u32,
) -> Result<ServerGaloisKey<B>, HeError> {
    let n = params.n();
    let (keys, limbs) = key_shape(params, digit_bits);
    let exponent_ok = key.g == crate::fold::SQUARE_KEY || (!key.g.is_multiple_of(2) && key.g < 2 * n);
    if key.b.len() != keys * limbs * n || !exponent_ok {
        return Err(HeError::BadInput(format!("Galois key for {} of {} words", key.g, key.b.len())));
    }
    let shape = Shape::new(keys, limbs);
    let b = ring.upload(&key.b, shape)?;
    let a = ring.expand_seeds(&[key.seed], keys, limbs)?;
    let hybrid = params.special_prime().is_some();
    if !hybrid {
        return Ok(ServerGaloisKey { g: key.g, digit_bits, hybrid, b, a });
    }
    // The digits of a `q P` polynomial whose `P` limb is zero: one more (zero) digit, so the
    // decomposition of the backend sees a key for every limb.
    let pad = |p: Polys<B, Ntt>| -> Result<Polys<B, Ntt>, HeError> {
        let mut out = ring.zeros(Shape::new(keys + 1, limbs))?;
        ring.copy_polys(&p, 0, &mut out, 0, keys)?;
        Ok(out)
    };
    Ok(ServerGaloisKey { g: key.g, digit_bits: HYBRID_DIGIT_BITS, hybrid, b: pad(b)?, a: pad(a)? })
}

impl<B: Backend, R: Repr> Ciphertexts<B, R> {
    /// Number of ciphertexts.
    pub fn len(&self) -> usize {
        self.c0.polys()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Limbs of the ciphertexts.
    pub fn limbs(&self) -> usize {
        self.c0.shape().limbs
    }

    /// `count` zero ciphertexts (encryptions of 0 with no noise).
    pub fn zeros(ring: &Ring<B>, count: usize, limbs: usize) -> Result<Self, HeError> {
        let shape = Shape::new(count, limbs);
        Ok(Self { c0: ring.zeros(shape)?, c1: ring.zeros(shape)? })
    }

    /// A device-side copy.
    pub fn duplicate(&self, ring: &Ring<B>) -> Result<Self, HeError> {
        Ok(Self { c0: ring.duplicate(&self.c0)?, c1: ring.duplicate(&self.c1)? })
    }

    /// Copies ciphertexts `src[src_at..src_at + count]` to `self[dst_at..]`.
    pub fn copy_from(
        &mut self,
        ring: &Ring<B>,
        src: &Self,
        src_at: usize,
        dst_at: usize,
        count: usize,
    ) -> Result<(), HeError> {
        ring.copy_polys(&src.c0, src_at, &mut self.c0, dst_at, count)?;
        ring.copy_polys(&src.c1, src_at, &mut self.c1, dst_at, count)?;
        Ok(())
    }

    /// Ciphertexts `[at, at + count)` as a new batch.
    pub fn slice(&self, ring: &Ring<B>, at: usize, count: usize) -> Result<Self, HeError> {
        let mut out = Self::zeros(ring, count, self.limbs())?;
        out.copy_from(ring, self, at, 0, count)?;
        Ok(out)
    }

    /// The first `count` ciphertexts, in the same allocation where the backend can keep it
    /// ([`Ring::truncate`]).
    pub fn truncate(self, ring: &Ring<B>, count: usize) -> Result<Self, HeError> {
        Ok(Self { c0: ring.truncate(self.c0, count)?, c1: ring.truncate(self.c1, count)? })
    }

    /// Ciphertexts `self[minuend + i] - self[subtrahend + i]` for `i < count`, as a new batch
    /// ([`Ring::difference`]: one pass, no copies of the two ranges).
    pub fn difference(
        &self,
        ring: &Ring<B>,
        minuend: usize,
        subtrahend: usize,
        count: usize,
    ) -> Result<Self, HeError> {
        Ok(Self {
            c0: ring.difference(&self.c0, minuend, subtrahend, count)?,
            c1: ring.difference(&self.c1, minuend, subtrahend, count)?,
        })
    }

    /// `self += other` (both components).
    pub fn add_assign(&mut self, ring: &Ring<B>, other: &Self) -> Result<(), HeError> {
        ring.add_assign(&mut self.c0, &other.c0)?;
        Ok(ring.add_assign(&mut self.c1, &other.c1)?)
    }

    /// `self -= other` (both components).
    pub fn sub_assign(&mut self, ring: &Ring<B>, other: &Self) -> Result<(), HeError> {
        ring.sub_assign(&mut self.c0, &other.c0)?;
        Ok(ring.sub_assign(&mut self.c1, &other.c1)?)
    }
}

impl<B: Backend> Ciphertexts<B> {
    /// `self *= X^k` (both components).
    pub fn monomial_mul_assign(&mut self, ring: &Ring<B>, k: usize) -> Result<(), HeError> {
        ring.monomial_mul_assign(&mut self.c0, k)?;
        Ok(ring.monomial_mul_assign(&mut self.c1, k)?)
    }

    /// The same ciphertexts in the NTT domain (transformed in place).
    pub fn forward(self, ring: &Ring<B>) -> Result<Ciphertexts<B, Ntt>, HeError> {
        Ok(Ciphertexts { c0: ring.forward(self.c0)?, c1: ring.forward(self.c1)? })
    }
}

impl<B: Backend> Ciphertexts<B, Ntt> {
    /// The same ciphertexts in coefficient form (transformed in place).
    pub fn inverse(self, ring: &Ring<B>) -> Result<Ciphertexts<B>, HeError> {
        Ok(Ciphertexts { c0: ring.inverse(self.c0)?, c1: ring.inverse(self.c1)? })
    }

    /// The coefficient form of a copy ([`Ring::inverse_of`]); `self` stays in the NTT domain.
    pub fn inverse_of(&self, ring: &Ring<B>) -> Result<Ciphertexts<B>, HeError> {
        Ok(Ciphertexts { c0: ring.inverse_of(&self.c0)?, c1: ring.inverse_of(&self.c1)? })
    }
}

/// The key of `X -> X^g` among `keys`, or an error saying what needed it.
fn find_key<'k, B: Backend>(
    keys: &'k [ServerGaloisKey<B>],
    g: usize,
    what: &str,
) -> Result<&'k ServerGaloisKey<B>, HeError> {
    keys.iter()
        .find(|k| k.g == g)
        .ok_or_else(|| HeError::BadInput(format!("no Galois key for X -> X^{g} ({what})")))
}

/// Seeded ciphertexts onto the device, in coefficient form (`c1` expanded from its seed).
pub fn load_ciphertexts<B: Backend>(
    ring: &Ring<B>,
    params: &Params,
    cts: &[crate::client::SeededCiphertext],
) -> Result<Ciphertexts<B>, HeError> {
    let (n, limbs) = (params.n(), params.limbs());
    if cts.is_empty() || cts.iter().any(|ct| ct.c0.len() != n * limbs) {
        return Err(HeError::BadInput("empty batch or ciphertexts of the wrong size".into()));
    }
    let c0: Vec<u32> = cts.iter().flat_map(|ct| ct.c0.iter().copied()).collect();
    let seeds: Vec<Seed> = cts.iter().map(|ct| ct.seed).collect();
    let shape = Shape::new(cts.len(), limbs);
    Ok(Ciphertexts { c0: ring.upload(&c0, shape)?, c1: ring.inverse(ring.expand_seeds(&seeds, 1, limbs)?)? })
}

/// `tau_g` of every ciphertext, key-switched back to `s`.
pub fn automorphism<B: Backend>(
    ring: &Ring<B>,
    cts: &Ciphertexts<B>,
    key: &ServerGaloisKey<B>,
) -> Result<Ciphertexts<B>, HeError> {
    let c0 = ring.automorphism(&cts.c0, key.g)?;
    let c1 = ring.automorphism(&cts.c1, key.g)?;
    keyswitch(ring, Ciphertexts { c0, c1 }, key)
}

/// Ciphertexts under `tau_g(s)` (or `s^2` for the [`SQUARE_KEY`](crate::fold::SQUARE_KEY)) to
/// ciphertexts under `s`, in chunks.
pub(crate) fn keyswitch<B: Backend>(
    ring: &Ring<B>,
    cts: Ciphertexts<B>,
    key: &ServerGaloisKey<B>,
) -> Result<Ciphertexts<B>, HeError> {
    // Chunks of the backend's size (Ring::key_product_chunk) bound the digit buffers whatever
    // the batch.
    let (count, chunk) = (cts.len(), ring.key_product_chunk());
    if count <= chunk {
        return keyswitch_one_chunk(ring, cts, key);
    }
    let mut out = Ciphertexts::zeros(ring, count, cts.limbs())?;
    for start in (0..count).step_by(chunk) {
        let part = cts.slice(ring, start, chunk.min(count - start))?;
        let done = keyswitch_one_chunk(ring, part, key)?;
        out.copy_from(ring, &done, 0, start, done.len())?;
    }
    Ok(out)
}

fn keyswitch_one_chunk<B: Backend>(
    ring: &Ring<B>,
    cts: Ciphertexts<B>,
    key: &ServerGaloisKey<B>,
) -> Result<Ciphertexts<B>, HeError> {
    // (c0 + sum D b, sum D a).
    let switched = key_products(ring, &cts.c1, key)?;
    let mut c0 = cts.c0;
    ring.add_assign(&mut c0, &switched.c0)?;
    Ok(Ciphertexts { c0, c1: switched.c1 })
}

/// `(sum D b, sum D a)` in coefficient form: the digits `D` of `c1` times both halves of `key`,
/// the key-switched ciphertext of `(0, c1)`. A hybrid key takes `c1` over the whole chain:
/// the products are formed mod `q P` and divided by `P` ([`Ring::keyswitch_hybrid`]).
pub(crate) fn key_products<B: Backend>(
    ring: &Ring<B>,
    c1: &Polys<B, Coeff>,
    key: &ServerGaloisKey<B>,
) -> Result<Ciphertexts<B>, HeError> {
    if !key.hybrid {
        return gadget_products(ring, c1, None, key)?.inverse(ring);
    }
    let [b, a] = ring.keyswitch_hybrid(c1, [&key.b, &key.a])?;
    Ok(Ciphertexts { c0: b, c1: a })
}

/// [`key_products`] left in the NTT domain, given also `twin`, the NTT form of `c1`: the
/// gadget's products are formed there anyway (one digit per limb takes its own rows from the
/// twin), and a hybrid key divides by `P` there ([`Ring::keyswitch_hybrid_ntt`]).
pub(crate) fn key_products_ntt<B: Backend>(
    ring: &Ring<B>,
    c1: &Polys<B, Coeff>,
    twin: &Polys<B, Ntt>,
    key: &ServerGaloisKey<B>,
) -> Result<Ciphertexts<B, Ntt>, HeError> {
    if key.hybrid {
        let [b, a] = ring.keyswitch_hybrid_ntt(c1, twin, [&key.b, &key.a])?;
        return Ok(Ciphertexts { c0: b, c1: a });
    }
    gadget_products(ring, c1, Some(twin), key)
}

/// The gadget key's products of `c1` (no special prime), NTT form; with `twin` (the NTT form
/// of `c1`) and one digit per limb, the own digit rows come from it.
fn gadget_products<B: Backend>(
    ring: &Ring<B>,
    c1: &Polys<B, Coeff>,
    twin: Option<&Polys<B, Ntt>>,
    key: &ServerGaloisKey<B>,
) -> Result<Ciphertexts<B, Ntt>, HeError> {
    let shape = c1.shape();
    let mut b: Polys<B, Ntt> = ring.zeros(shape)?;
    let mut a: Polys<B, Ntt> = ring.zeros(shape)?;
    let (keys, out) = ([&key.b, &key.a], [&mut b, &mut a]);
    match twin {
        Some(t) if ring.digits(shape.limbs, key.digit_bits) == 1 => {
            ring.decompose_mac_twin(c1, t, key.digit_bits, keys, out, false)?
        }
        _ => ring.decompose_mac(c1, key.digit_bits, keys, out, false)?,
    }
    Ok(Ciphertexts { c0: b, c1: a })
}

/// The first (`second = false`) or second halves of every group of `width` ciphertexts.
fn halves<B: Backend>(
    ring: &Ring<B>,
    cts: &Ciphertexts<B>,
    width: usize,
    second: bool,
) -> Result<Ciphertexts<B>, HeError> {
    let (groups, half) = (cts.len() / width, width / 2);
    let mut out = Ciphertexts::zeros(ring, groups * half, cts.limbs())?;
    let off = if second { half } else { 0 };
    for g in 0..groups {
        out.copy_from(ring, cts, g * width + off, g * half, half)?;
    }
    Ok(out)
}

/// Bytes of input ciphertexts one level-ordered packing batch takes at most
/// ([`pack_strided`]): the levels hold about three times their input, so a batch's working set
/// stays near 1 GiB whatever the number of ciphertexts packed.
pub const PACK_BATCH_BYTES: usize = 256 << 20;

/// Packs `n = 2^k` ciphertexts whose useful coefficients sit at multiples of `n` into one (see
/// the module notes); `keys` holds the elements of [`packing_elements`]`(N, n)`, in any order.
/// Several groups are packed at once: `cts` holds `groups * n` ciphertexts, group-major, and
/// the result holds `groups` ciphertexts.
///
/// Past [`PACK_BATCH_BYTES`] of input the tree is evaluated in subtrees (see
/// [`pack_strided_in`]): the same operations on the same values, so the same result word for
/// word, in a bounded working set.
pub fn pack_strided<B: Backend>(
    ring: &Ring<B>,
    params: &Params,
    cts: Ciphertexts<B>,
    n: usize,
    keys: &[ServerGaloisKey<B>],
) -> Result<Ciphertexts<B>, HeError> {
    let batch = pack_batch(params, cts.limbs());
    pack_strided_in(ring, params, cts, n, keys, batch)
}

/// Ciphertexts of `limbs` limbs in [`PACK_BATCH_BYTES`] (at least 2): [`pack_strided`]'s batch.
pub fn pack_batch(params: &Params, limbs: usize) -> usize {
    (PACK_BATCH_BYTES / (2 * limbs * params.n() * 4).max(1)).max(2)
}

/// [`pack_strided`] with level-ordered batches of at most `batch` ciphertexts (at least 2).
///
/// The tree: after the levels of shifts `n/2, ..., m`, item `r < m` of a group combines the
/// group's items `r + j m`, so it is computed from them alone: `P(r, m) = (A + X^m B) +
/// tau(A - X^m B)` with `A = P(r, 2m)` and `B = P(r + m, 2m)`. A group too large for one batch is
/// cut into `m` subtrees of `s = n/m` items (`s` the largest power of two within `batch`):
/// each subtree's items are gathered (stride `m`) and taken through their `log2 s` levels,
/// several subtrees per batch, and the `m` results of each group are then packed as `m`
/// ciphertexts (shifts `m/2, ..., 1`), in turn cut into subtrees if need be.
pub fn pack_strided_in<B: Backend>(
    ring: &Ring<B>,
    params: &Params,
    cts: Ciphertexts<B>,
    n: usize,
    keys: &[ServerGaloisKey<B>],
    batch: usize,
) -> Result<Ciphertexts<B>, HeError> {
    let (total, limbs) = (cts.len(), cts.limbs());
    if total > batch {
        let mut gather = |dst: &mut Ciphertexts<B>, at: usize, first: usize, count: usize| {
            dst.copy_from(ring, &cts, first, at, count)
        };
        return pack_strided_gathered(ring, params, (total, limbs), n, keys, batch, &mut gather);
    }
    // One batch: the input itself, scaled in place.
    let inv = packing_scale(params, total, n, limbs, batch)?;
    let mut cur = cts;
    ring.scalar_mul_assign_rns(&mut cur.c0, &inv)?;
    ring.scalar_mul_assign_rns(&mut cur.c1, &inv)?;
    pack_levels(ring, params.n(), cur, n, n / 2, keys, &format!("packing {n} ciphertexts"))
}

/// [`pack_strided_in`] of `total` ciphertexts that are not in one batch: `gather(dst, at, first,
/// count)` copies ciphertexts `first..first + count` of the input to `dst[at..]` (a run never
/// crosses a group of `n`; `dst` starts as zeros, so a gather may leave padding untouched).
/// The blocked server packs its products straight from the product buffer this way, without
/// splitting them into ciphertexts first.
#[allow(clippy::too_many_arguments)]
pub fn pack_strided_gathered<B: Backend>(
    ring: &Ring<B>,
    params: &Params,
    (total, limbs): (usize, usize),
    n: usize,
    keys: &[ServerGaloisKey<B>],
    batch: usize,
    gather: &mut Gather<'_, B>,
) -> Result<Ciphertexts<B>, HeError> {
    let inv = packing_scale(params, total, n, limbs, batch)?;
    let what = format!("packing {n} ciphertexts");
    pack_subtrees(ring, params.n(), (total, limbs), n, keys, batch, &what, gather, Some(&inv))
}

/// Where [`pack_strided_gathered`] fetches its input: `gather(dst, at, first, count)` copies
/// input ciphertexts `first..first + count` to `dst[at..]`.
pub type Gather<'a, B> = dyn FnMut(&mut Ciphertexts<B>, usize, usize, usize) -> Result<(), HeError> + 'a;

/// Checks a packing's shape; `n^-1 mod q` per limb, which undoes the factor `n` of the levels.
fn packing_scale(
    params: &Params,
    total: usize,
    n: usize,
    limbs: usize,
    batch: usize,
) -> Result<Vec<u32>, HeError> {
    if !n.is_power_of_two() || n > params.n() || total == 0 || !total.is_multiple_of(n) || batch < 2 {
        return Err(HeError::BadInput(format!(
            "packing {total} ciphertexts in groups of {n} (batches of {batch})"
        )));
    }
    params.moduli()[..limbs]
        .iter()
        .map(|m| m.inv(m.reduce_u64(n as u64)).ok_or_else(|| HeError::BadParams("even modulus".into())))
        .collect()
}

/// `total` items (`groups * n`, fetched by `gather`, scaled by `scale` if given) to `groups`
/// ciphertexts, in subtrees of at most `batch` items.
#[allow(clippy::too_many_arguments)]
fn pack_subtrees<B: Backend>(
    ring: &Ring<B>,
    big_n: usize,
    (total, limbs): (usize, usize),
    n: usize,
    keys: &[ServerGaloisKey<B>],
    batch: usize,
    what: &str,
    gather: &mut Gather<'_, B>,
    scale: Option<&[u32]>,
) -> Result<Ciphertexts<B>, HeError> {
    let scaled = |mut items: Ciphertexts<B>| -> Result<Ciphertexts<B>, HeError> {
        if let Some(inv) = scale {
            ring.scalar_mul_assign_rns(&mut items.c0, inv)?;
            ring.scalar_mul_assign_rns(&mut items.c1, inv)?;
        }
        Ok(items)
    };
    if total <= batch || n == 1 {
        let mut items = Ciphertexts::zeros(ring, total, limbs)?;
        for g in (0..total).step_by(n) {
            gather(&mut items, g, g, n)?;
        }
        return pack_levels(ring, big_n, scaled(items)?, n, n / 2, keys, what);
    }
    // Subtrees of s items (stride m in their group), `per` of them in a batch.
    let s = 1usize << batch.min(n).ilog2();
    let m = n / s;
    let per = batch / s;
    let units = total / s; // groups * m subtrees; unit u is class u % m of group u / m
    let mut mid = Ciphertexts::zeros(ring, units, limbs)?;
    for first in (0..units).step_by(per) {
        let count = per.min(units - first);
        let mut items = Ciphertexts::zeros(ring, count * s, limbs)?;
        for (i, u) in (first..first + count).enumerate() {
            let base = (u / m) * n + u % m;
            if m == 1 {
                gather(&mut items, i * s, base, s)?;
            } else {
                for j in 0..s {
                    gather(&mut items, i * s + j, base + j * m, 1)?;
                }
            }
        }
        let done = pack_levels(ring, big_n, scaled(items)?, s, n / 2, keys, what)?;
        mid.copy_from(ring, &done, 0, first, count)?;
    }
    if m == 1 {
        return Ok(mid);
    }
    // The subtrees' results, already scaled, packed as groups of m.
    let mut from_mid = |dst: &mut Ciphertexts<B>, at: usize, first: usize, count: usize| {
        dst.copy_from(ring, &mid, first, at, count)
    };
    pack_subtrees(ring, big_n, (units, limbs), m, keys, batch, what, &mut from_mid, None)
}

/// The levels of shifts `top, top/2, ..., 2 top/n` over groups of `n` items: item `i` of a
/// level of width `w` combines with item `i + w/2`.
fn pack_levels<B: Backend>(
    ring: &Ring<B>,
    big_n: usize,
    cts: Ciphertexts<B>,
    n: usize,
    top: usize,
    keys: &[ServerGaloisKey<B>],
    what: &str,
) -> Result<Ciphertexts<B>, HeError> {
    let groups = cts.len() / n;
    let mut cur = cts;
    let (mut width, mut h) = (n, top);
    while width >= 2 {
        let key = find_key(keys, big_n / h + 1, what)?;
        if key.hybrid && (width > 2 || groups == 1) && fused_packing() {
            cur = pack_level_hybrid(ring, &cur, width, h, key)?;
            width /= 2;
            h /= 2;
            continue;
        }
        let a = halves(ring, &cur, width, false)?;
        let mut b = halves(ring, &cur, width, true)?;
        drop(cur);
        b.monomial_mul_assign(ring, h)?;
        let mut sum = a.duplicate(ring)?;
        sum.add_assign(ring, &b)?;
        let mut diff = a;
        diff.sub_assign(ring, &b)?;
        drop(b);
        sum.add_assign(ring, &automorphism(ring, &diff, key)?)?;
        cur = sum;
        width /= 2;
        h /= 2;
    }
    debug_assert_eq!(cur.len(), groups);
    Ok(cur)
}

/// Whether packing with hybrid keys takes the fused levels ([`Ring::pack_step_hybrid`]);
/// `FASTQUERY_PACK_FUSED=0` sends it through the composed operations instead (A/B runs; the
/// same words either way).
fn fused_packing() -> bool {
    std::env::var_os("FASTQUERY_PACK_FUSED").is_none_or(|v| v != "0")
}

/// One level of [`pack_levels`] with a hybrid key, fused ([`Ring::pack_step_hybrid`]): item
/// `i` of each group of `width` with item `i + width/2`, a chunk of the backend's
/// key-switching size at a time, written straight into the next level (no copies of the
/// halves, no temporaries of the whole level). Pairs do not run across groups, so a level of
/// many groups of two goes through the composed path instead.
fn pack_level_hybrid<B: Backend>(
    ring: &Ring<B>,
    cur: &Ciphertexts<B>,
    width: usize,
    h: usize,
    key: &ServerGaloisKey<B>,
) -> Result<Ciphertexts<B>, HeError> {
    let (groups, half) = (cur.len() / width, width / 2);
    let mut next = Ciphertexts::zeros(ring, groups * half, cur.limbs())?;
    let chunk = ring.keyswitch_chunk().max(1);
    for g in 0..groups {
        for start in (0..half).step_by(chunk) {
            let len = chunk.min(half - start);
            let (a, b) = (g * width + start, g * width + half + start);
            ring.pack_step_hybrid(
                [&cur.c0, &cur.c1],
                [&mut next.c0, &mut next.c1],
                (a, b, g * half + start, len),
                key.g,
                [&key.b, &key.a],
                h,
            )?;
        }
    }
    Ok(next)
}

/// Where the `used` slots of a `2^k`-slot query sit, so that the expansion can skip whole
/// subtrees. Level `j` of the expansion splits the ciphertext of each residue class mod `2^j`
/// in two (one key switch gives both children); a class none of whose positions is used needs
/// no key switch, nor does anything below it. A class mod `2^j` holds `2^(k-j)` positions, so
/// at least `U_j = ceil(used / 2^(k-j))` classes hold the used slots, and the layout reaches
/// that at every level at once: level `j` splits exactly `U_j` ciphertexts, `sum_j U_j` key
/// switches, about `used + k - log2(used)` (for the 1,320 slots of eight llama-7b tokens in
/// `2^13`: 1,326; for one token's 165: 174). Up to 2026-12-03 slot `s` sat at
/// `(s / C) 2^a + s mod C`, which split every class below level `a` and every class mod `2^a`
/// below `C` to the last level: 1,450 and 286 key switches for the same slots.
///
/// The expansion keeps only the classes it splits, packed: level `j` reads `U_j` ciphertexts
/// and writes the even child of the one at `i` at `i` and the odd child at `U_j + i`, so the
/// classes used at level `j + 1` must be the first `U_(j+1)` of those `2 U_j`: every even child,
/// and the odd children of the first `U_(j+1) - U_j`. [`SlotLayout::position`] walks that back
/// from slot `s` at index `s` of the last level, so slot `s` ends at index `s` and the buffers
/// hold [`SlotLayout::expanded`] ciphertexts, not `2^k`. Only the query coefficients of used
/// classes mod `2^k` reach a used slot ([`SlotLayout::sent`]): where `2^k = N` those are the
/// used positions alone, and the client need send no other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotLayout {
    k: u32,
    used: usize,
}

impl SlotLayout {
    /// The layout of `used` slots among `2^k` with the fewest key switches.
    pub fn new(k: u32, used: usize) -> Result<Self, HeError> {
        if used == 0 || k >= usize::BITS || used > 1usize << k {
            return Err(HeError::BadInput(format!("{used} slots in an expansion into 2^{k}")));
        }
        Ok(Self { k, used })
    }

    /// Every slot used, in order (no subtree skipped).
    pub fn full(k: u32) -> Self {
        Self { k, used: 1usize << k }
    }

    /// Slots used.
    pub fn used(&self) -> usize {
        self.used
    }

    /// The coefficient of slot `s` (below `2^k`): from index `s` after the last level, back
    /// through each level `j` (an index at or past `U_j` is the odd child of the one `U_j`
    /// before it, and sets bit `j`).
    pub fn position(&self, s: usize) -> usize {
        let mut index = s;
        let mut position = 0;
        for j in (0..self.k).rev() {
            let split = self.split(j);
            if index >= split {
                index -= split;
                position |= 1 << j;
            }
        }
        position
    }

    /// Key switches of the expansion.
    pub fn key_switches(&self) -> usize {
        (0..self.k).map(|j| self.split(j)).sum()
    }

    /// Ciphertexts the expansion's last level writes: slot `s` at `s`, the others select
    /// nothing.
    pub fn expanded(&self) -> usize {
        if self.k == 0 { 1 } else { 2 * self.split(self.k - 1) }
    }

    /// The coefficients of a query polynomial of degree `n` that reach a used slot, ascending:
    /// every coefficient of each used class mod `2^k` (the positions alone where `2^k = n`).
    /// The others may hold anything: the expansion's splits cancel them exactly.
    pub fn sent(&self, n: usize) -> Vec<usize> {
        let step = 1usize << self.k;
        let mut out: Vec<usize> = (0..n / step)
            .flat_map(|l| (0..self.used).map(move |s| (l, s)))
            .map(|(l, s)| l * step + self.position(s))
            .collect();
        out.sort_unstable();
        out
    }

    /// How many coefficients [`SlotLayout::sent`] lists.
    pub fn sent_len(&self, n: usize) -> usize {
        self.used * (n >> self.k).max(1)
    }

    /// Ciphertexts level `j < k` splits, `U_j = ceil(used / 2^(k-j))`: the first `U_j` of its
    /// input, whose odd children it writes `U_j` further on.
    pub fn split(&self, j: u32) -> usize {
        self.used.div_ceil(1usize << (self.k - j))
    }
}

/// Oblivious expansion: from one ciphertext of `sum_{i < 2^k} m_i X^i` (any coefficients at
/// or above `2^k` must be zero), `2^k` ciphertexts of `2^k m_i` in their constant coefficient
/// and zero elsewhere. `keys` holds `N/2^j + 1` for `j = 0..k`.
pub fn expand<B: Backend>(
    ring: &Ring<B>,
    params: &Params,
    ct: Ciphertexts<B>,
    k: u32,
    keys: &[ServerGaloisKey<B>],
) -> Result<Ciphertexts<B>, HeError> {
    expand_slots(ring, params, ct, SlotLayout::full(k), keys)
}

/// Oblivious expansion of a query whose slots sit as `layout` places them: ciphertext `s` of
/// the result selects slot `s`, for `s < layout.used()`. Subtrees without a used slot are
/// skipped ([`SlotLayout`]). [`expand_positioned`] without the unused ciphertexts after the
/// used ones.
pub fn expand_slots<B: Backend>(
    ring: &Ring<B>,
    params: &Params,
    ct: Ciphertexts<B>,
    layout: SlotLayout,
    keys: &[ServerGaloisKey<B>],
) -> Result<Ciphertexts<B>, HeError> {
    let all = expand_positioned(ring, params, ct, layout, keys)?;
    if all.len() == layout.used {
        return Ok(all);
    }
    gather_slots(ring, &all, &layout, 0, layout.used)
}

/// Slots `from..from + count` of an expansion [`expand_positioned`] returned, in slot order.
pub fn gather_slots<B: Backend, R: Repr>(
    ring: &Ring<B>,
    expanded: &Ciphertexts<B, R>,
    layout: &SlotLayout,
    from: usize,
    count: usize,
) -> Result<Ciphertexts<B, R>, HeError> {
    if from + count > layout.used || expanded.len() < layout.expanded() {
        return Err(HeError::BadInput(format!("slots {from}..{} of {layout:?}", from + count)));
    }
    let mut out = Ciphertexts::zeros(ring, count, expanded.limbs())?;
    out.copy_from(ring, expanded, from, 0, count)?;
    Ok(out)
}

/// The oblivious expansion of [`expand_slots`], left where the last level wrote it: at least
/// [`SlotLayout::expanded`] ciphertexts, slot `s` at `s` (the others select nothing). Query
/// coefficients outside [`SlotLayout::sent`] may hold anything (a query sent in part has zeros
/// there): no slot depends on them.
pub fn expand_positioned<B: Backend>(
    ring: &Ring<B>,
    params: &Params,
    ct: Ciphertexts<B>,
    layout: SlotLayout,
    keys: &[ServerGaloisKey<B>],
) -> Result<Ciphertexts<B>, HeError> {
    expand_levels(ring, params, ct, layout, keys, |key, src, dst, range, shift| {
        if key.hybrid {
            ring.expand_step_hybrid(src, dst, range, key.g, [&key.b, &key.a], shift)?;
        } else {
            ring.expand_step(src, dst, range, key.g, key.digit_bits, [&key.b, &key.a], shift)?;
        }
        Ok(())
    })
}

/// [`expand_positioned`] with its slots in the NTT domain (where the first dimension's product
/// and the RGSW operands take them). With hybrid keys on a backend that fuses the NTT-domain
/// step ([`Ring::expand_step_hybrid_ntt`], [`Backend::fuses_hybrid_ntt`]) every level works
/// there: the query is transformed once, each key switch transforms only `c1` back for its
/// digits, and the slots need no transform at the end (the same words as transforming
/// [`expand_positioned`]'s). Otherwise the coefficient-form expansion, then the transform.
pub fn expand_positioned_ntt<B: Backend>(
    ring: &Ring<B>,
    params: &Params,
    ct: Ciphertexts<B>,
    layout: SlotLayout,
    keys: &[ServerGaloisKey<B>],
) -> Result<Ciphertexts<B, Ntt>, HeError> {
    let big_n = params.n();
    let hybrid = (0..layout.k)
        .all(|j| find_key(keys, big_n / (1usize << j) + 1, "expansion").is_ok_and(|key| key.hybrid));
    if !hybrid || !ring.backend().fuses_hybrid_ntt() {
        return expand_positioned(ring, params, ct, layout, keys)?.forward(ring);
    }
    expand_levels(ring, params, ct.forward(ring)?, layout, keys, |key, src, dst, range, shift| {
        Ok(ring.expand_step_hybrid_ntt(src, dst, range, key.g, [&key.b, &key.a], shift)?)
    })
}

/// The levels of [`expand_positioned`] on ciphertexts in either form, `step(key, src, dst,
/// (start, len, count), shift)` doing one chunk of a level (the children of `src`'s
/// `[start, start + len)` at `start` and `start + count` of `dst`).
fn expand_levels<B: Backend, R: Repr>(
    ring: &Ring<B>,
    params: &Params,
    ct: Ciphertexts<B, R>,
    layout: SlotLayout,
    keys: &[ServerGaloisKey<B>],
    step: impl Fn(
        &ServerGaloisKey<B>,
        [&Polys<B, R>; 2],
        [&mut Polys<B, R>; 2],
        (usize, usize, usize),
        usize,
    ) -> Result<(), HeError>,
) -> Result<Ciphertexts<B, R>, HeError> {
    let (big_n, k) = (params.n(), layout.k);
    if ct.len() != 1 || k >= usize::BITS || (1usize << k) > big_n {
        return Err(HeError::BadInput(format!("expanding {} ciphertexts into 2^{k}", ct.len())));
    }
    // Two buffers, allocated once; each level reads `cur` and writes `next` in chunks of the
    // backend's key-switching size (`Ring::expand_step`: fused on the CPU, with temporaries of
    // one chunk in the composed default). Level `j` splits the first `split(j)` ciphertexts of
    // its input and writes `2 split(j)`; the buffer the last level writes needs `expanded()`,
    // each the most any of its levels writes (and the query, for the one it starts in).
    let limbs = ct.limbs();
    // The buffers alternate; the last level (j = k - 1) writes the one that starts as `next`
    // where k is odd, as `cur` where k is even.
    let size = |writes_last: bool| {
        let parity = if writes_last { (k + 1) % 2 } else { k % 2 };
        (0..k).filter(|j| j % 2 == parity).map(|j| 2 * layout.split(j)).max().unwrap_or(0).max(1)
    };
    let mut cur = Ciphertexts::zeros(ring, size(k.is_multiple_of(2)), limbs)?;
    cur.copy_from(ring, &ct, 0, 0, 1)?;
    drop(ct);
    let mut next = Ciphertexts::zeros(ring, size(!k.is_multiple_of(2)), limbs)?;
    let chunk = ring.keyswitch_chunk();
    for j in 0..k {
        let key = find_key(keys, big_n / (1 << j) + 1, "expansion")?;
        let count = layout.split(j);
        for start in (0..count).step_by(chunk) {
            let len = chunk.min(count - start);
            // Every ciphertext c becomes c + tau(c) (even part) and X^-(2^j) (c - tau(c)) (odd),
            // the odd child `count` further on.
            step(
                key,
                [&cur.c0, &cur.c1],
                [&mut next.c0, &mut next.c1],
                (start, len, count),
                2 * big_n - (1 << j),
            )?;
        }
        std::mem::swap(&mut cur, &mut next);
    }
    // Level j writes the odd children U_j after the even ones, which is the order
    // SlotLayout::position walks back: slot s ends at index s.
    Ok(cur)
}
