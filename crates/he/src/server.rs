//! The server's evaluation, on any backend: plaintext preprocessing, query expansion, and the
//! finishing steps that make a response safe to send (re-randomise, flood, mask, switch, drop).

use fastquery_backend::{Backend, Coeff, MacOperand, Ntt, Polys, Ring, Shape};
use num_bigint::BigUint;
use num_traits::ToPrimitive;
use rand::RngCore;
use rayon::prelude::*;

use crate::{
    HeError, Params, PublicKey,
    client::{ResponseC1, ResponseCiphertext, SeededCiphertext},
    galois::Ciphertexts,
    noise::NoiseReport,
    rounding::response_rounding,
    sample::{CBD_ETA, stream},
    share::{ServerShareKeys, share_c1},
};

/// The client's public key on the server's device.
pub struct ServerKey<B: Backend> {
    p0: Polys<B, Ntt>,
    a: Polys<B, Ntt>,
}

impl<B: Backend> std::fmt::Debug for ServerKey<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerKey").finish_non_exhaustive()
    }
}

/// Loads a public key (expanding `a` from its seed).
pub fn load_public_key<B: Backend>(
    ring: &Ring<B>,
    params: &Params,
    pk: &PublicKey,
) -> Result<ServerKey<B>, HeError> {
    let shape = Shape::new(1, params.limbs());
    let p0 = ring.upload(&pk.p0, shape)?;
    let a = ring.expand_seeds(&[pk.seed], 1, params.limbs())?;
    Ok(ServerKey { p0, a })
}

/// Encodes signed integer polynomials (`polys x N` values, row-major) as plaintexts in the NTT
/// domain over all limbs: the once-per-table preprocessing.
pub fn encode_plaintexts<B: Backend>(
    ring: &Ring<B>,
    params: &Params,
    values: &[i64],
    polys: usize,
) -> Result<Polys<B, Ntt>, HeError> {
    let n = params.n();
    if values.len() != polys * n {
        return Err(HeError::BadInput(format!(
            "{} values for {polys} polynomials of degree {n}",
            values.len()
        )));
    }
    encode_plaintexts_with(ring, params, polys, |p, poly| poly.copy_from_slice(&values[p * n..(p + 1) * n]))
}

/// Like [`encode_plaintexts`], with polynomial `p` written by `fill(p, coefficients)` (in
/// parallel), with no copy of the values. A table's preprocessed operand is built in parts
/// instead ([`encode_mac_operand`]).
pub fn encode_plaintexts_with<B: Backend>(
    ring: &Ring<B>,
    params: &Params,
    polys: usize,
    fill: impl Fn(usize, &mut [i64]) + Sync,
) -> Result<Polys<B, Ntt>, HeError> {
    let mut words = vec![0u32; polys * params.limbs() * params.n()];
    encode_into(params, &mut words, 0, &fill);
    Ok(ring.forward(ring.upload_vec(words, Shape::new(polys, params.limbs()))?)?)
}

/// Words of encoded plaintexts [`encode_mac_operand`] holds at once besides the operand.
pub const OPERAND_PART_WORDS: usize = 1 << 22;

/// The right operand of the multiply-accumulate over a table (`inner x cols` plaintexts,
/// row-major, polynomial `p` written by `fill(p, coefficients)`): encoded, transformed and laid
/// out a part of about [`OPERAND_PART_WORDS`] at a time ([`Ring::mac_operand_from_parts`]), so
/// the table's records are never held twice (at llama-7b 2.6 GB each), and one host buffer
/// serves every part.
pub fn encode_mac_operand<B: Backend>(
    ring: &Ring<B>,
    params: &Params,
    (inner, cols): (usize, usize),
    fill: impl Fn(usize, &mut [i64]) + Sync,
) -> Result<MacOperand<B>, HeError> {
    let (n, limbs) = (params.n(), params.limbs());
    let part = (OPERAND_PART_WORDS / (limbs * n)).max(1);
    let mut words = vec![0u32; part.min(inner * cols) * limbs * n];
    ring.mac_operand_from_parts((inner, cols, limbs), part, |first, count| {
        let words = &mut words[..count * limbs * n];
        encode_into(params, words, first, &fill);
        Ok::<_, HeError>(ring.forward(ring.upload(words, Shape::new(count, limbs))?)?)
    })
}

/// Encodes polynomials `first, first + 1, ...` (`fill(p, coefficients)`) into `words`, one
/// `limbs x N` chunk each, on all threads.
fn encode_into(params: &Params, words: &mut [u32], first: usize, fill: &(impl Fn(usize, &mut [i64]) + Sync)) {
    let n = params.n();
    words.par_chunks_mut(params.limbs() * n).enumerate().for_each_init(
        || vec![0i64; n],
        |vals, (p, chunk)| {
            fill(first + p, vals);
            for (l, m) in params.moduli().iter().enumerate() {
                chunk[l * n..(l + 1) * n]
                    .iter_mut()
                    .zip(vals.iter())
                    .for_each(|(w, &v)| *w = m.reduce_i64(v));
            }
        },
    );
}

/// Expands seeded query ciphertexts into the NTT domain, as the `a` operand of a
/// multiply-accumulate: `rows = 2 * tokens` (row `2t` holds the `c0`s of token `t`, row `2t+1`
/// its `c1`s), `inner = cts_per_token`, row-major.
pub fn expand_queries<B: Backend>(
    ring: &Ring<B>,
    params: &Params,
    cts: &[SeededCiphertext],
    cts_per_token: usize,
) -> Result<Polys<B, Ntt>, HeError> {
    let (n, limbs) = (params.n(), params.limbs());
    let poly = n * limbs;
    if cts_per_token == 0 || !cts.len().is_multiple_of(cts_per_token) {
        return Err(HeError::BadInput(format!("{} ciphertexts for {cts_per_token} per token", cts.len())));
    }
    let tokens = cts.len() / cts_per_token;
    if let Some(ct) = cts.iter().find(|ct| ct.c0.len() != poly) {
        return Err(HeError::BadInput(format!("c0 of {} words, expected {poly}", ct.c0.len())));
    }
    let mut c0 = Vec::with_capacity(cts.len() * poly);
    for ct in cts {
        c0.extend_from_slice(&ct.c0);
    }
    let seeds: Vec<[u8; 32]> = cts.iter().map(|ct| ct.seed).collect();
    let shape = Shape::new(cts.len(), limbs);
    // c0 arrives in coefficient form (validated against the moduli by upload, which copies it
    // into a pooled buffer on a host backend: see docs/BENCHMARKS.md on handing the vector
    // over instead), a in NTT form, expanded from its seed on the device into its rows.
    let c0 = ring.forward(ring.upload::<Coeff>(&c0, shape)?)?;
    let mut a: Polys<B, Ntt> = ring.zeros(Shape::new(2 * cts.len(), limbs))?;
    // Each token's `a` halves straight into their rows (after its `c0` halves).
    ring.expand_seeds_into(&seeds, &mut a, (cts_per_token, cts_per_token, 2 * cts_per_token))?;
    for t in 0..tokens {
        ring.copy_polys(&c0, t * cts_per_token, &mut a, 2 * t * cts_per_token, cts_per_token)?;
    }
    Ok(a)
}

/// One server answer: the response ciphertexts and the server's shares (the masks) of the
/// kept coefficients, in the same order.
#[derive(Debug)]
pub struct Finished {
    /// What goes on the wire.
    pub responses: Vec<ResponseCiphertext>,
    /// `shares[ct][k]` for kept coefficient `k` of ciphertext `ct`.
    pub shares: Vec<Vec<u64>>,
    /// The host's milliseconds in each step of the finish, in order (`FASTQUERY_TRACE` prints
    /// them): what the host did, or waited for, before the responses were ready. A device's
    /// queued work is waited for where a step first needs its results (an upload or a
    /// download), and counts there.
    pub steps: HostSteps,
}

/// Named steps and the host's milliseconds in each, in order.
pub type HostSteps = Vec<(&'static str, f64)>;

/// The host's time in consecutive steps ([`Finished::steps`]).
struct Steps {
    at: std::time::Instant,
    list: HostSteps,
}

impl Steps {
    fn new() -> Self {
        Self { at: std::time::Instant::now(), list: Vec::with_capacity(9) }
    }

    /// Ends step `name`.
    fn mark(&mut self, name: &'static str) {
        let now = std::time::Instant::now();
        self.list.push((name, (now - self.at).as_secs_f64() * 1e3));
        self.at = now;
    }
}

/// A finish's flooding and masks for `params` with flooding half-width `bound`: `round(q m / t)`
/// as `floor(q / t) m + round((q mod t) m / t)` (see [`fastquery_backend::host::Flooding`]).
fn flooding(params: &Params, bound: u128) -> Result<fastquery_backend::host::Flooding, HeError> {
    let (basis, bits) = (params.basis(), params.plain_bits());
    let q = basis.modulus();
    let floor: BigUint = q >> bits;
    let floor_res = basis.moduli().iter().map(|m| (&floor % m.value()).to_u32().unwrap_or(0)).collect();
    let q_mod_t = (q - (&floor << bits)).to_u64().unwrap_or(u64::MAX);
    fastquery_backend::host::Flooding::new(bound, bits, floor_res, q_mod_t)
        .ok_or_else(|| HeError::BadParams(format!("flooding of half-width {bound} with t = 2^{bits}")))
}

/// Makes output ciphertexts safe to send and returns them with the server's shares:
///
/// 1. adds a fresh public-key encryption of zero (`c1` no longer depends on the table);
/// 2. adds uniform flooding noise of half-width `noise.flood` to every kept coefficient of `c0`
///    (the only coefficients the client can decrypt);
/// 3. adds the encoding of `-r` for uniform masks `r` in `Z_t` (the server's shares);
/// 4. switches to the response modulus; with `share`, groups of `share.n()` ciphertexts then
///    share one `c1` ([`crate::share`]): the group's first response carries it (its even
///    coefficients alone where it is in the half ring), the others an empty `c1`;
/// 5. keeps only `positions[ct]` of `c0`, each with its low `noise.drop_bits` bits dropped;
///    `c1` is rounded to `noise.c1_bits` bits per coefficient where the scheme asked for it.
///    Everything else of `c0` is never sent; without `share` it is not even computed past the
///    inverse transform: steps 1-4 for `c0` run at the kept coefficients alone, on the host.
#[allow(clippy::too_many_arguments)]
pub fn finish<B: Backend, R: RngCore>(
    ring: &Ring<B>,
    params: &Params,
    key: &ServerKey<B>,
    noise: &NoiseReport,
    c0: Polys<B, Coeff>,
    c1: Polys<B, Coeff>,
    positions: &[Vec<usize>],
    share: Option<&ServerShareKeys<B>>,
    rng: &mut R,
) -> Result<Finished, HeError> {
    finish_outputs(ring, params, key, noise, Outputs::Coeff(Ciphertexts { c0, c1 }), positions, share, rng)
}

/// Kept coefficients per host task of a response's flooding (where the host draws it).
const FLOOD_TASK: usize = 512;

/// Output ciphertexts for [`finish_outputs`].
#[derive(Debug)]
pub enum Outputs<B: Backend> {
    /// In coefficient form: the encryption of zero is transformed back and added.
    Coeff(Ciphertexts<B>),
    /// In the NTT domain (a table product before its inverse transform): the encryption of
    /// zero is added there, and the sum transformed back once, which saves two inverse
    /// transforms per ciphertext and two passes over the outputs. The result is the same word
    /// for word (the transform is linear).
    Ntt(Ciphertexts<B, Ntt>),
}

impl<B: Backend> Outputs<B> {
    fn polys(&self) -> (usize, usize) {
        match self {
            Self::Coeff(c) => (c.c0.polys(), c.c1.polys()),
            Self::Ntt(c) => (c.c0.polys(), c.c1.polys()),
        }
    }
}

/// [`finish`] on outputs in either form.
#[allow(clippy::too_many_arguments)]
pub fn finish_outputs<B: Backend, R: RngCore>(
    ring: &Ring<B>,
    params: &Params,
    key: &ServerKey<B>,
    noise: &NoiseReport,
    outputs: Outputs<B>,
    positions: &[Vec<usize>],
    share: Option<&ServerShareKeys<B>>,
    rng: &mut R,
) -> Result<Finished, HeError> {
    let mut steps = Steps::new();
    let chunk = crate::rounding::coefficient_chunk()?;
    let (n, limbs, lr) = (params.n(), params.limbs(), params.response_limbs());
    let (cts, cts1) = outputs.polys();
    if cts1 != cts || positions.len() != cts || positions.iter().flatten().any(|&j| j >= n) {
        return Err(HeError::BadInput("output ciphertexts do not match their positions".into()));
    }
    let basis = params.basis();
    let moduli = params.moduli();
    // Every ciphertext's randomness comes from its own ChaCha20 seed, drawn from `rng` (a
    // CSPRNG), so the per-ciphertext work below runs in parallel (and the encryption noise on
    // the device). The seeds are zeroized when done.
    let seeds: zeroize::Zeroizing<Vec<[u8; 32]>> = (0..cts)
        .map(|_| {
            let mut s = [0u8; 32];
            rng.fill_bytes(&mut s);
            s
        })
        .collect::<Vec<_>>()
        .into();
    let flooding = flooding(params, noise.flood)?;
    // Without shared c1s only the kept coefficients of c0 are ever read: c0 is finished there
    // alone, on the host (its encryption error, flooding and mask added, then switched), and
    // the rest of c0 is neither noised, switched nor downloaded. With shared c1s the sharing
    // step works on the whole of c0.
    let kept_only = share.is_none();
    /// `c0` whole (on the backend, then downloaded) or at its kept words only.
    enum C0<W> {
        Whole(W),
        Kept(Vec<u32>),
    }
    // 1. a fresh ternary u for the encryption of zero u * (p0, a), with its errors e0, e1: from
    //    stream 0 of each ciphertext's seed, drawn where the ciphertexts are (the backend);
    //    where c0 is kept only at its positions, their e0 from stream 2 on the host instead.
    let (u, e0, e1) = if kept_only {
        let [u, e1] = ring.zero_noise_c1(&seeds, limbs, CBD_ETA)?;
        (u, None, e1)
    } else {
        let [u, e0, e1] = ring.zero_noise(&seeds, limbs, CBD_ETA)?;
        (u, Some(e0), e1)
    };
    steps.mark("noise");
    // 2-3. flooding of every kept coefficient, and the masks (the server's shares), drawn from
    //    each ciphertext's seed as `host::Flooding` lays out: the masks on the host (they are
    //    the shares); with c0 whole, flooding and masks added where e0 is (a device draws them
    //    there, from the seeds and positions alone); kept only, the words on the host, with the
    //    kept coefficients' encryption errors from stream 2, for word `(ct limbs + l) N + j` of
    //    ciphertext `ct`, limb `l` and kept coefficient `j`, limb after limb per ciphertext.
    let shares: Vec<Vec<u64>> = positions
        .par_iter()
        .zip(seeds.par_iter())
        .map(|(pos, seed)| flooding.masks(seed, pos.len()))
        .collect();
    type Sparse = (Vec<u32>, zeroize::Zeroizing<Vec<u32>>);
    let kept: Option<Vec<Sparse>> = kept_only.then(|| {
        positions
            .par_iter()
            .zip(seeds.par_iter())
            .zip(shares.par_iter())
            .enumerate()
            .map(|(ct, ((pos, seed), r))| {
                let mut flood = zeroize::Zeroizing::new(vec![0i128; pos.len()]);
                flood
                    .par_chunks_mut(FLOOD_TASK)
                    .enumerate()
                    .for_each(|(c, f)| flooding.floods(seed, c * FLOOD_TASK, f));
                let mut rng = stream(seed);
                rng.set_stream(2);
                let e0 = crate::sample::cbd(&mut rng, pos.len());
                // Word `l * kept + k` for limb `l` and kept coefficient `k`, in tasks (a decode
                // step's one response holds 4096 kept coefficients at llama-7b).
                const CHUNK: usize = 2048;
                let kept = pos.len();
                let mut idx = vec![0u32; limbs * kept];
                let mut vals = zeroize::Zeroizing::new(vec![0u32; limbs * kept]);
                idx.par_chunks_mut(CHUNK).zip(vals.par_chunks_mut(CHUNK)).enumerate().for_each(
                    |(c, (ic, vc))| {
                        for (o, (iw, vw)) in ic.iter_mut().zip(vc.iter_mut()).enumerate() {
                            let (l, k) = ((c * CHUNK + o) / kept, (c * CHUNK + o) % kept);
                            *iw = ((ct * limbs + l) * n + pos[k]) as u32;
                            *vw = flooding.word(moduli[l], l, flood[k] + i128::from(e0[k]), r[k]);
                        }
                    },
                );
                (idx, vals)
            })
            .collect()
    });
    steps.mark("floods");
    let e0 = match e0 {
        Some(mut e0) => {
            ring.flood_mask_add(&mut e0, &flooding, &seeds, positions)?;
            Some(e0)
        }
        None => None,
    };
    steps.mark("scatter");
    let u = ring.forward(u)?;
    // (p0 u, a u): one pass over `u` for both halves of the key.
    let pk = [&key.p0, &key.a];
    let (mut c0, mut c1) = match outputs {
        Outputs::Ntt(Ciphertexts { mut c0, mut c1 }) => {
            ring.mul_broadcast_pair(&u, pk, [&mut c0, &mut c1], true)?;
            drop(u);
            (ring.inverse(c0)?, ring.inverse(c1)?)
        }
        Outputs::Coeff(Ciphertexts { mut c0, mut c1 }) => {
            let mut z0: Polys<B, Ntt> = ring.zeros(Shape::new(cts, limbs))?;
            let mut z1: Polys<B, Ntt> = ring.zeros(Shape::new(cts, limbs))?;
            ring.mul_broadcast_pair(&u, pk, [&mut z0, &mut z1], false)?;
            ring.add_assign(&mut c0, &ring.inverse(z0)?)?;
            ring.add_assign(&mut c1, &ring.inverse(z1)?)?;
            (c0, c1)
        }
    };
    ring.add_assign(&mut c1, &e1)?;
    drop(e1);
    steps.mark("rerandomise");
    let switch = |c: Polys<B, Coeff>| if lr < limbs { ring.mod_switch_down(&c, lr) } else { Ok(c) };
    // 4. for c0 kept only: its kept words in every limb, plus their noise and masks, switched
    //    one coefficient at a time below (word for word the backend's switch); otherwise the
    //    whole c0, its noise added, switched on the backend.
    let c0 = match (e0, kept) {
        (Some(e0), _) => {
            ring.add_assign(&mut c0, &e0)?;
            C0::Whole(switch(c0)?)
        }
        (None, kept) => {
            // The kept words of every ciphertext in order, their noise and masks added.
            let kept = kept.unwrap_or_default();
            let idx: Vec<u32> = kept.iter().flat_map(|(i, _)| i.iter().copied()).collect();
            let mut words = ring.gather_words(&c0, &idx)?;
            drop(c0);
            let vals = kept.iter().flat_map(|(_, v)| v.iter());
            for (w, (&i, &v)) in words.iter_mut().zip(idx.iter().zip(vals)) {
                let m = moduli[i as usize / n % limbs];
                *w = m.add(*w, v);
            }
            C0::Kept(words)
        }
    };
    let c1 = switch(c1)?;
    steps.mark("switch");
    // 5. Share c1 in groups (after the re-randomisation: see `crate::share`).
    let (c0, c1, group, half) = match (share, c0) {
        (Some(keys), C0::Whole(mut c0)) => {
            let c = share_c1(ring, keys, &mut c0, c1)?;
            (C0::Whole(c0), c, keys.n(), keys.half())
        }
        (_, c0) => (c0, c1, 1, false),
    };
    if half && positions.iter().flatten().any(|&j| j % 2 == 1) {
        return Err(HeError::BadInput(
            "a c1 in the half ring for a response that keeps odd coefficients".into(),
        ));
    }
    steps.mark("share");
    let c0 = match c0 {
        C0::Whole(c0) => C0::Whole(ring.download(&c0)?),
        C0::Kept(words) => C0::Kept(words),
    };
    let w1 = ring.download(&c1)?;
    steps.mark("download");
    let resp_basis = basis.prefix(lr).map_err(|e| HeError::BadParams(e.to_string()))?;
    let switcher = fastquery_backend::host::ResidueSwitch::new(moduli, lr);
    // Where ciphertext `ct`'s words start in `C0::Kept` (`limbs` words per kept position).
    let starts: Vec<usize> = positions
        .iter()
        .scan(0, |at, pos| {
            let s = *at;
            *at += limbs * pos.len();
            Some(s)
        })
        .collect();
    let b = noise.drop_bits;
    let rounding = match noise.c1_bits {
        0 => None,
        w => Some(response_rounding(params, w)?.1),
    };
    let responses = positions
        .par_iter()
        .enumerate()
        .map(|(ct, pos)| {
            // A response's kept coefficients run in tasks of `chunk` (a decode step's one
            // response would otherwise hold the host's threads to one).
            let c0 = (0..pos.len())
                .into_par_iter()
                .with_min_len(chunk)
                .map_init(
                    || Vec::with_capacity(limbs),
                    |x: &mut Vec<u32>, k| {
                        x.clear();
                        match &c0 {
                            C0::Kept(words) => {
                                let at = starts[ct] + k;
                                x.extend((0..limbs).map(|l| words[at + l * pos.len()]));
                                switcher.apply(x);
                                x.truncate(lr);
                            }
                            C0::Whole(w0) => x.extend((0..lr).map(|l| w0[(ct * lr + l) * n + pos[k]])),
                        }
                        let v = resp_basis.compose_u128(x).unwrap_or(0);
                        crate::rounding::drop_low_bits(v, b)
                    },
                )
                .collect();
            // A group's c1 travels with its first member.
            if ct % group != 0 {
                return ResponseCiphertext { c1: ResponseC1::Residues(Vec::new()), c0 };
            }
            let g = ct / group;
            let c1 = &w1[g * lr * n..(g + 1) * lr * n];
            // In the half ring only the even coefficients travel.
            let even;
            let c1 = if half {
                even = crate::share::even_coefficients(c1, n);
                &even[..]
            } else {
                c1
            };
            // Rounded once, here: the encoder writes these values as they are.
            let c1 = match &rounding {
                Some(r) => ResponseC1::Rounded { bits: r.bits(), values: r.round_residues(&resp_basis, c1) },
                None => ResponseC1::Residues(c1.to_vec()),
            };
            ResponseCiphertext { c1, c0 }
        })
        .collect();
    steps.mark("responses");
    Ok(Finished { responses, shares, steps: steps.list })
}
