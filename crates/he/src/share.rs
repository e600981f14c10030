//! Responses that share one `c1`: `n` response ciphertexts under `s` become one ciphertext
//! `(c, b_0, ..., b_{n-1})` under `n` fresh secrets `s_0, ..., s_{n-1}` of the client, with
//! `b_j + c s_j = c0_j + c1_j s + e` (the matrix-Regev shape of Spiral's responses, reached here
//! by key switching). `c` is sent once for the `n`, so a response pays for `c1` once per group
//! instead of once per ciphertext: `c1` is about half of every folded response (`N` rounded
//! coefficients against the `d` kept ones of `c0`).
//!
//! ## Keys
//! In one stage, for each source `a` and target `b` (`a, b < n`) the client sends a hybrid
//! key-switching key over the first `lr + 1` primes of the ring (`lr`: the response limbs; the
//! next prime `p_lr` plays the special prime `P`): one digit per response limb,
//! `kb_{ab,i} = -ka_{a,i} s_b + e + [a = b] P g_i s`, where the `ka_{a,i}` are expanded from
//! one seed per source, the same for every target. Keys with `a != b` encrypt zero: they cancel what source `a` puts into `c`
//! from every other member's phase. Each key is an RLWE sample under a fresh ternary `s_b`
//! at a modulus below the chain's (checked against the 128-bit limit with the chain), and
//! samples under different secrets that share `a` reveal no more than the samples apart.
//!
//! ## The switch
//! After the finish's modulus switch (the ciphertexts are over the response limbs), for each
//! member `a` of a group with `c1 = x_a`: `u_a = (1/P) <D(x_a), ka_a>` and `v_ab = (1/P)
//! <D(x_a), kb_ab>` (the backend's hybrid key switch, [`Ring::keyswitch_hybrid`]). Then `c =
//! sum_a u_a` and `b_j = c0_j + sum_a v_aj`, so `b_j + c s_j = c0_j + x_j s + sum_a (D e / P + r0
//! + r1 s_j)`: at most `n` key switches' noise ([`shared_bound`]), with `P ~ 2^31` about
//! `2^11` each against a budget of `q' / 2t` (`2^24` at llama-7b).
//!
//! ## Server privacy
//! The switch runs after re-randomisation, flooding and masking, on `c1` that the encryption
//! of zero already made independent of the table; `c` and the noise the switch adds are
//! functions of those `c1` alone and of the client's own keys. The finish then keeps only the
//! requested coefficients of each `b_j`, as for every response.
//!
//! ## Two stages
//! The keys of one stage grow as `n^2`: every member's `c1` needs a key to every target. For a
//! group of `n = k m` the switch runs in two stages ([`Sharing::stages`]). The first shares `c`
//! within groups of `m` consecutive members as above, under `m` secrets `s_0, ..., s_{m-1}`
//! (`m^2` keys, the same for every group). The second takes each first-stage group's `c_g` as a
//! source: `k` of them per group of `n`, and target `(g, j)` (member `g m + j`) gets a key
//! from every source, `kb_{g',(g,j),i} = -ka_{g',i} s'_{gj} + e + [g' = g] P g_i s_j`, under a
//! fresh `s'_{gj}`: `b'_{gj} + c' s'_{gj} = b_{gj} + c_g s_j` plus `k` switches' noise. That is
//! `m^2 + k n` keys instead of `n^2` (80 instead of 256 at `n = 16`, 12 instead of 16 at 4),
//! at most `m + k` switches' noise per phase, and the client decrypts member `g m + j` under
//! `s'_{gj}`. The second stage's keys carry the first stage's secrets, which are fresh and
//! independent of `s'`, as the first stage's carry `s`: a chain of keys, with no cycle.
//!
//! ## `c` in the half ring
//! Where every kept coefficient of a response is even (one token per response of a layout that
//! interleaves two or more rows per record), the targets can be secrets of the subring
//! `Z[X^2]`: `s_j = t_j(X^2)` with `t_j` ternary of `N/2` coefficients. The even coefficients of
//! `c s_j` are then `c_e t_j` in `Z[Y]/(Y^(N/2) + 1)` (`Y = X^2`, `c_e` the even coefficients
//! of `c`): the odd coefficients of `c` meet only odd phases, which no one decrypts, so `c`
//! travels at its `N/2` even coefficients. This holds for a group of one as well: the single
//! key switch then moves a response to the subring secret, and `c1` costs half. A key under a
//! subring secret is two samples of ring-LWE in dimension `N/2` under `t_j` (its even and odd
//! coefficients), so [`can_halve`] checks the keys' modulus (the response limbs and the special
//! prime) against the 128-bit limit of `N/2`.

use fastquery_backend::{Backend, Coeff, Ntt, Polys, Ring, Shape};
use fastquery_ntt::NttPlan;
use rand::{CryptoRng, RngCore};

use crate::{
    HeError, Params, SecretKey,
    galois::{HYBRID_DIGIT_BITS, KeyForm, hybrid_bound},
    params::security_limit,
    sample::{Seed, expand_uniform, fresh_seed},
};

/// The most response ciphertexts one `c` serves. In one stage the keys grow as `n^2` (at
/// llama-7b each key is 0.19 MB: 3.05 MB at `n = 4`, 12.2 MB at 8, 48.8 MB at 16); in two
/// stages ([`Sharing::stages`]) as `m^2 + n^2 / m` (12 keys at 4, 32 at 8, 80 at 16), while the
/// bytes of `c` per response fall as `1/n`.
pub const MAX_SHARED: usize = 16;

/// Whether `params` can share `c1`: the ring has a prime past the response limbs to act as the
/// special prime of the switch.
pub fn can_share(params: &Params) -> bool {
    params.key_limbs() > params.response_limbs()
}

/// Whether `params` can send `c` in the half ring: they can share, and the keys' modulus (the
/// response limbs and the special prime) is within the 128-bit limit of ring-LWE in dimension
/// `N/2`, where a key under a subring secret lives.
pub fn can_halve(params: &Params) -> bool {
    if !can_share(params) {
        return false;
    }
    let key_limbs = &params.ring().moduli()[..=params.response_limbs()];
    let bits: f64 = key_limbs.iter().map(|m| f64::from(m.value()).log2()).sum();
    security_limit(params.n() / 2).is_some_and(|limit| bits <= f64::from(limit))
}

/// How many response ciphertexts share one `c` for a response of `cts` ciphertexts: up to
/// `max` (at most [`MAX_SHARED`]), 1 (no sharing) where `params` cannot.
pub fn group_size(params: &Params, cts: usize, max: usize) -> usize {
    if can_share(params) { cts.clamp(1, max.clamp(1, MAX_SHARED)) } else { 1 }
}

/// How a scheme's responses are keyed: sent under the query's secret (`NONE`), or switched in
/// groups of `n` to `n` fresh secrets that share one `c`, in the half ring or not; the switch
/// runs in one stage or two ([`Sharing::stages`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Sharing {
    n: usize,
    half: bool,
    /// Members per group of the first stage (`n`: one stage).
    inner: usize,
}

impl Sharing {
    /// Responses under the query's secret, each with its own `c1`.
    pub const NONE: Self = Self { n: 0, half: false, inner: 0 };

    /// Groups of `n` sharing one `c`, in the half ring where `half`. A group of one switches
    /// only to send `c` in the half ring: `(1, false)` and `n = 0` are [`Sharing::NONE`]. The
    /// first stage's width is the divisor of `n` (two or more) with the fewest keys, `n` on a tie.
    pub fn new(n: usize, half: bool) -> Self {
        if n == 0 || (n == 1 && !half) {
            return Self::NONE;
        }
        let keys = |inner: usize| Self { n, half, inner }.key_count();
        let inner = (2..n)
            .filter(|&m| n.is_multiple_of(m))
            .fold(n, |best, m| if keys(m) < keys(best) { m } else { best });
        Self { n, half, inner }
    }

    /// Whether the responses are switched to fresh secrets (the setup carries keys).
    pub fn keyed(self) -> bool {
        self.n > 0
    }

    /// The fresh secrets the responses end under (one per member of a group): 0 where not
    /// keyed.
    pub fn targets(self) -> usize {
        self.n
    }

    /// Responses per `c` on the wire (1 where not keyed).
    pub fn group(self) -> usize {
        self.n.max(1)
    }

    /// Whether `c` travels in the half ring.
    pub fn half(self) -> bool {
        self.half
    }

    /// Coefficients of each `c` on the wire for ring degree `n`.
    pub fn c1_coeffs(self, n: usize) -> usize {
        if self.half { n / 2 } else { n }
    }

    /// The stages of the switch, `(sources, targets)` per group of each: `[(n, n)]` in one
    /// stage; `[(m, m), (n / m, n)]` in two, where the first shares `c` within groups of `m`
    /// consecutive members (under `m` secrets) and the second treats each such group's `c` as
    /// a source and switches every member to its own secret (see the module notes). Empty
    /// where not keyed.
    pub fn stages(self) -> Vec<(usize, usize)> {
        match (self.n, self.inner) {
            (0, _) => Vec::new(),
            (n, m) if m == n => vec![(n, n)],
            (n, m) => vec![(m, m), (n / m, n)],
        }
    }

    /// Keys the client sends: one per source and target of every stage.
    pub fn key_count(self) -> usize {
        self.stages().iter().map(|(s, t)| s * t).sum()
    }

    /// Backend key-switch calls of the switch for `cts` response ciphertexts: per source
    /// instance of each stage, its `a` half and every target's `b` half, two products per call.
    pub fn switch_calls(self, cts: usize) -> usize {
        let mut instances = cts;
        let mut calls = 0;
        for (sources, targets) in self.stages() {
            calls += instances * (targets + 1).div_ceil(2);
            // The next stage's sources are this stage's groups.
            instances = instances.div_ceil(sources);
        }
        calls
    }
}

/// The shape of one key: `(polynomials, limbs)`, one polynomial per response limb over the
/// response limbs and the special prime.
pub fn share_key_shape(params: &Params) -> (usize, usize) {
    let lr = params.response_limbs();
    (lr, lr + 1)
}

fn form(params: &Params) -> KeyForm {
    let lr = params.response_limbs();
    KeyForm {
        chain: lr,
        limbs: lr + 1,
        digit_bits: HYBRID_DIGIT_BITS,
        digits: 1,
        special: u64::from(params.ring().moduli()[lr].value()),
    }
}

/// Tail bound on the noise that the key switches of `sharing` add to each phase (after the
/// modulus switch): one hybrid key switch of the response limbs with `P = p_lr` per source of
/// each stage.
pub fn shared_bound(params: &Params, sharing: Sharing) -> f64 {
    if !sharing.keyed() || !can_share(params) {
        return 0.0;
    }
    let form = form(params);
    let switches: usize = sharing.stages().iter().map(|(sources, _)| sources).sum();
    switches as f64 * hybrid_bound(params, form.chain, form.special)
}

/// One stage's keys: the seed of each source's `a` rows and the `b` rows of every `(source,
/// target)` key, `[source][target][digit][limb][coefficient]`, NTT form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageKeys {
    /// Seed of the `a` rows of each source.
    pub seeds: Vec<Seed>,
    /// The `b` rows.
    pub b: Vec<u32>,
}

impl StageKeys {
    /// Targets per source: the keys of a source over its `b` rows (0 without sources).
    pub fn targets(&self, params: &Params) -> usize {
        self.b.len() / (self.seeds.len() * ShareKeys::key_words(params)).max(1)
    }
}

/// The keys a client sends for its responses' [`Sharing`]: one [`StageKeys`] per stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShareKeys {
    /// The stages, first to last.
    pub stages: Vec<StageKeys>,
}

impl ShareKeys {
    /// Words of the `b` rows of one key.
    pub fn key_words(params: &Params) -> usize {
        let (polys, limbs) = share_key_shape(params);
        polys * limbs * params.n()
    }

    /// Whether these are keys for `sharing` under `params`: as many stages, sources and keys.
    pub fn fits(&self, params: &Params, sharing: Sharing) -> bool {
        let words = Self::key_words(params);
        let stages = sharing.stages();
        self.stages.len() == stages.len()
            && self.stages.iter().zip(&stages).all(|(k, &(sources, targets))| {
                k.seeds.len() == sources && k.b.len() == sources * targets * words
            })
    }
}

/// The client's half: fresh secrets for every stage of `sharing` (made by `generate`), the
/// keys from `s` to them (see the module notes), and the last stage's secrets, under which the
/// responses end.
pub(crate) fn share_keys<R: RngCore + CryptoRng>(
    params: &Params,
    plans: &[NttPlan],
    s: &SecretKey,
    sharing: Sharing,
    generate: impl Fn(&mut R) -> SecretKey,
    rng: &mut R,
) -> Result<(ShareKeys, Vec<SecretKey>), HeError> {
    if !can_share(params) || !sharing.keyed() {
        return Err(HeError::BadParams(format!(
            "no shared c1 for {} ciphertexts under these parameters",
            sharing.targets()
        )));
    }
    let form = form(params);
    let mut previous: Vec<SecretKey> = Vec::new();
    let mut stages = Vec::new();
    for (sources, targets) in sharing.stages() {
        let secrets: Vec<SecretKey> = (0..targets).map(|_| generate(rng)).collect();
        let mut seeds = Vec::with_capacity(sources);
        let mut b = Vec::with_capacity(sources * targets * ShareKeys::key_words(params));
        // Target `t` belongs to source `t / per`; its key from that source carries the secret
        // it is under before this stage (`s` before the first).
        let per = targets / sources;
        for a in 0..sources {
            let seed = fresh_seed();
            let rows = expand_uniform(params.ring(), form.limbs, form.chain, &seed);
            for (t, target) in secrets.iter().enumerate() {
                let before = if previous.is_empty() { s } else { &previous[t % previous.len()] };
                let source = |l: usize, k: usize| before.ntt_limb(l)[k];
                let own: Option<&dyn Fn(usize, usize) -> u32> =
                    if t / per == a { Some(&source) } else { None };
                b.extend(target.switching_rows(params, plans, form, &rows, rng, own));
            }
            seeds.push(seed);
        }
        stages.push(StageKeys { seeds, b });
        previous = secrets;
    }
    Ok((ShareKeys { stages }, previous))
}

/// One stage of [`ServerShareKeys`] on the device: `a` halves per source, `b` halves
/// `[source][target]`, padded for the backend's hybrid key switch.
struct ServerStage<B: Backend> {
    a: Vec<Polys<B, Ntt>>,
    b: Vec<Polys<B, Ntt>>,
    targets: usize,
}

/// [`ShareKeys`] on the server's device, padded for the backend's hybrid key switch (a zero
/// digit for the special prime's limb, as [`crate::galois::load_galois_key`] pads).
pub struct ServerShareKeys<B: Backend> {
    stages: Vec<ServerStage<B>>,
    /// Whether the targets are subring secrets (`c` travels in the half ring).
    half: bool,
}

impl<B: Backend> std::fmt::Debug for ServerShareKeys<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerShareKeys").field("n", &self.n()).finish_non_exhaustive()
    }
}

impl<B: Backend> ServerShareKeys<B> {
    /// The group size.
    pub fn n(&self) -> usize {
        self.stages.last().map_or(0, |s| s.targets)
    }

    /// Whether `c` travels in the half ring.
    pub fn half(&self) -> bool {
        self.half
    }
}

/// Loads [`ShareKeys`] for `sharing` (expanding the `a` rows), checking their size.
pub fn load_share_keys<B: Backend>(
    ring: &Ring<B>,
    params: &Params,
    keys: &ShareKeys,
    sharing: Sharing,
) -> Result<ServerShareKeys<B>, HeError> {
    let fits = can_share(params) && (!sharing.half() || can_halve(params));
    if !sharing.keyed() || !fits || !keys.fits(params, sharing) {
        return Err(HeError::BadInput(format!(
            "keys of {} stage(s) with {:?} sources, expected groups of {} in stages {:?}",
            keys.stages.len(),
            keys.stages.iter().map(|s| s.seeds.len()).collect::<Vec<_>>(),
            sharing.targets(),
            sharing.stages()
        )));
    }
    let words = ShareKeys::key_words(params);
    let (polys, limbs) = share_key_shape(params);
    let pad = |p: Polys<B, Ntt>| -> Result<Polys<B, Ntt>, HeError> {
        let mut out = ring.zeros(Shape::new(polys + 1, limbs))?;
        ring.copy_polys(&p, 0, &mut out, 0, polys)?;
        Ok(out)
    };
    let shape = Shape::new(polys, limbs);
    let stages = keys
        .stages
        .iter()
        .zip(sharing.stages())
        .map(|(k, (_, targets))| {
            let a = k
                .seeds
                .iter()
                .map(|seed| pad(ring.expand_seeds(std::slice::from_ref(seed), polys, limbs)?))
                .collect::<Result<_, HeError>>()?;
            let b =
                k.b.chunks_exact(words)
                    .map(|rows| pad(ring.upload(rows, shape)?))
                    .collect::<Result<_, _>>()?;
            Ok(ServerStage { a, b, targets })
        })
        .collect::<Result<_, HeError>>()?;
    Ok(ServerShareKeys { stages, half: sharing.half() })
}

/// Shares `c1` in groups of `keys.n()` consecutive ciphertexts (the last group may be smaller):
/// adds the switch's products to each `c0` (over the response limbs, coefficient form) and
/// returns the `c` of every group. `c1` is consumed.
pub fn share_c1<B: Backend>(
    ring: &Ring<B>,
    keys: &ServerShareKeys<B>,
    c0: &mut Polys<B, Coeff>,
    c1: Polys<B, Coeff>,
) -> Result<Polys<B, Coeff>, HeError> {
    let limbs = c1.shape().limbs;
    let key_limbs = keys.stages.first().and_then(|s| s.a.first()).map_or(0, |a| a.shape().limbs);
    if c0.shape() != c1.shape() || limbs + 1 != key_limbs {
        return Err(HeError::BadInput(format!(
            "sharing c1 of {:?} with c0 of {:?} under keys for other limbs",
            c1.shape(),
            c0.shape()
        )));
    }
    keys.stages.iter().try_fold(c1, |x, stage| switch_stage(ring, stage, c0, x))
}

/// One stage: the `x` of consecutive groups of `sources` instances (responses' `c1`, or the
/// previous stage's groups' `c`) become one `c` per group; source `a` of group `g` adds its
/// `u` to that `c` and its `v` to the `c0` of every member `g targets + t` (`t < targets`).
fn switch_stage<B: Backend>(
    ring: &Ring<B>,
    stage: &ServerStage<B>,
    c0: &mut Polys<B, Coeff>,
    x: Polys<B, Coeff>,
) -> Result<Polys<B, Coeff>, HeError> {
    let (sources, targets) = (stage.a.len(), stage.targets);
    let (instances, limbs, cts) = (x.polys(), x.shape().limbs, c0.polys());
    let groups = instances.div_ceil(sources);
    let mut c = ring.zeros(Shape::new(groups, limbs))?;
    for a in 0..sources.min(instances) {
        // The groups that have a source `a` are the first `ga`.
        let ga = (instances - a).div_ceil(sources);
        let mut xa = ring.zeros(Shape::new(ga, limbs))?;
        for g in 0..ga {
            ring.copy_polys(&x, g * sources + a, &mut xa, g, 1)?;
        }
        // The `a` half, then the `b` half of every target, two products per call.
        let halves: Vec<&Polys<B, Ntt>> =
            std::iter::once(&stage.a[a]).chain(stage.b[a * targets..(a + 1) * targets].iter()).collect();
        let mut products = Vec::with_capacity(halves.len());
        for pair in halves.chunks(2) {
            let [p0, p1] = ring.keyswitch_hybrid(&xa, [pair[0], pair[pair.len() - 1]])?;
            products.push(p0);
            if pair.len() == 2 {
                products.push(p1);
            }
        }
        let mut into_c = ring.zeros(Shape::new(groups, limbs))?;
        ring.copy_polys(&products[0], 0, &mut into_c, 0, ga)?;
        ring.add_assign(&mut c, &into_c)?;
        let mut into_c0 = ring.zeros(c0.shape())?;
        for (t, v) in products[1..].iter().enumerate() {
            for g in (0..ga).filter(|g| g * targets + t < cts) {
                ring.copy_polys(v, g, &mut into_c0, g * targets + t, 1)?;
            }
        }
        ring.add_assign(c0, &into_c0)?;
    }
    Ok(c)
}

/// The even coefficients of each limb of `c` (`[limb][coefficient]`, degree `n`): what travels
/// of a `c` in the half ring.
pub fn even_coefficients(c: &[u32], n: usize) -> Vec<u32> {
    c.chunks_exact(n).flat_map(|limb| limb.iter().step_by(2).copied()).collect()
}

/// A `c` in the half ring back in degree `n`: its coefficients at the even positions, zero at
/// the odd ones (which meet only phases no one decrypts).
pub fn from_even_coefficients(half: &[u32], n: usize) -> Vec<u32> {
    let mut c = vec![0u32; half.len() * 2];
    for (limb, h) in c.chunks_exact_mut(n).zip(half.chunks_exact(n / 2)) {
        for (j, &v) in h.iter().enumerate() {
            limb[2 * j] = v;
        }
    }
    c
}
