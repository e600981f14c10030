//! The client's side: keys, seeded encryption of sparse messages, decryption of responses.
//! Runs on the host CPU (the secret never leaves host memory, and is zeroized there).

use std::sync::Arc;

use fastquery_math::RnsBasis;
use fastquery_ntt::NttPlan;
use num_bigint::{BigInt, BigUint};
use rayon::prelude::*;

use crate::{
    HeError, Params, PublicKey, SecretKey,
    sample::{Seed, cbd, expand_uniform, fresh_seed, stream},
};

/// A symmetric ciphertext whose `c1` is the expansion of `seed`: `c0` in coefficient form,
/// `[limb][coefficient]`, all limbs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeededCiphertext {
    /// `c0 = -a s + e + round(q m / t)`.
    pub c0: Vec<u32>,
    /// Seed of `a = c1`.
    pub seed: Seed,
}

/// A response ciphertext after modulus switching: `c1` in full and only the kept coefficients
/// of `c0`, each with its low `drop_bits` bits removed (`c0 ~ value << drop_bits`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseCiphertext {
    /// Full `c1` (empty for the members of a shared group but the first).
    pub c1: ResponseC1,
    /// Kept `c0` coefficients, high parts, in the order of the layout's positions.
    pub c0: Vec<u128>,
}

/// A response's `c1` in one of the two forms it travels in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseC1 {
    /// Residues, coefficient form, `[limb][coefficient]` over the response limbs.
    Residues(Vec<u32>),
    /// Every coefficient rounded to `bits` bits ([`crate::rounding::C1Rounding::round`]), as the
    /// wire carries it: the server's finish rounds once and the encoder writes these values.
    Rounded {
        /// Bits per coefficient.
        bits: u32,
        /// The rounded coefficients.
        values: Vec<u64>,
    },
}

impl ResponseC1 {
    /// Whether it holds no coefficient (a shared group's members after the first).
    pub fn is_empty(&self) -> bool {
        match self {
            Self::Residues(r) => r.is_empty(),
            Self::Rounded { values, .. } => values.is_empty(),
        }
    }

    /// The residues `[limb][coefficient]` over the response limbs of `params`: a rounded `c1`
    /// is lifted back (`round(h q' / 2^bits)`, what the client reads off the wire).
    pub fn residues(&self, params: &Params) -> Result<std::borrow::Cow<'_, [u32]>, HeError> {
        match self {
            Self::Residues(r) => Ok(std::borrow::Cow::Borrowed(r)),
            Self::Rounded { bits, values } => {
                let (basis, rounding) = crate::rounding::response_rounding(params, *bits)?;
                Ok(std::borrow::Cow::Owned(rounding.lift_residues(&basis, values)))
            }
        }
    }
}

/// The client: parameters, NTT plans, secret key.
#[derive(Debug)]
pub struct Client {
    params: Arc<Params>,
    plans: Vec<NttPlan>,
    sk: SecretKey,
    /// The secrets of responses that share `c1` ([`crate::share`]), once their keys are made.
    response_secrets: Vec<SecretKey>,
    response_basis: RnsBasis,
}

impl Client {
    /// A client with a fresh secret key.
    pub fn new(params: Arc<Params>) -> Result<Self, HeError> {
        // Plans for every limb of the ring: keys use the special prime's too.
        let plans = params
            .ring()
            .moduli()
            .iter()
            .map(|m| NttPlan::new(m.value(), params.n()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| HeError::BadParams(e.to_string()))?;
        let sk = SecretKey::generate(&params, &plans, &mut rand::rng());
        let response_basis =
            params.basis().prefix(params.response_limbs()).map_err(|e| HeError::BadParams(e.to_string()))?;
        Ok(Self { params, plans, sk, response_secrets: Vec::new(), response_basis })
    }

    /// The parameters.
    pub fn params(&self) -> &Arc<Params> {
        &self.params
    }

    /// A fresh public key for the server's re-randomisation.
    pub fn public_key(&self) -> PublicKey {
        self.sk.public_key(&self.params, &self.plans, &mut rand::rng())
    }

    /// Galois keys for the exponents `elements`, with `digit_bits`-bit gadget digits.
    pub fn galois_keys(
        &self,
        elements: &[usize],
        digit_bits: u32,
    ) -> Result<Vec<crate::galois::GaloisKey>, HeError> {
        elements
            .par_iter()
            .map(|&g| self.sk.galois_key(&self.params, &self.plans, g, digit_bits, &mut rand::rng()))
            .collect()
    }

    /// The key for `s^2` that turns expanded `RLWE(b g)` into RGSW (see [`crate::fold`]).
    pub fn square_key(&self, digit_bits: u32) -> crate::galois::GaloisKey {
        self.sk.square_key(&self.params, &self.plans, digit_bits, &mut rand::rng())
    }

    /// Fresh secrets for responses keyed as `sharing` says (groups of `n` ciphertexts sharing
    /// one `c1`, secrets of the subring `Z[X^2]` where `c` travels in the half ring), and the
    /// keys that switch to them ([`crate::share`]). The secrets replace any made before.
    pub fn share_keys(&mut self, sharing: crate::share::Sharing) -> Result<crate::share::ShareKeys, HeError> {
        if sharing.half() && !crate::share::can_halve(&self.params) {
            return Err(HeError::BadParams("these parameters cannot send c1 in the half ring".into()));
        }
        let mut rng = rand::rng();
        let generate = |rng: &mut _| {
            if sharing.half() {
                SecretKey::generate_half(&self.params, &self.plans, rng)
            } else {
                SecretKey::generate(&self.params, &self.plans, rng)
            }
        };
        let (keys, secrets) =
            crate::share::share_keys(&self.params, &self.plans, &self.sk, sharing, generate, &mut rng)?;
        self.response_secrets = secrets;
        Ok(keys)
    }

    /// Encrypts sparse messages: each message lists `(coefficient, value)` pairs with small
    /// `|value|` (the encoding is `value * round(q/t)`, exact for `value = +-1`; larger values
    /// add `|value|/2` of rounding error). Parallel over messages.
    pub fn encrypt_sparse(&self, messages: &[Vec<(usize, i64)>]) -> Result<Vec<SeededCiphertext>, HeError> {
        let moduli = self.params.moduli();
        let raw: Vec<Vec<(usize, Vec<u32>)>> = messages
            .iter()
            .map(|msg| {
                msg.iter()
                    .map(|&(j, v)| {
                        let res = moduli
                            .iter()
                            .zip(self.params.q_over_t())
                            .map(|(m, &delta)| m.mul(delta, m.reduce_i64(v)))
                            .collect();
                        (j, res)
                    })
                    .collect()
            })
            .collect();
        self.encrypt_raw(&raw)
    }

    /// Encrypts sparse messages given as raw ring elements: `(coefficient, residue in every
    /// limb)` pairs, added to `c0` as they are (no scaling). Parallel over messages.
    pub fn encrypt_raw(&self, messages: &[Vec<(usize, Vec<u32>)>]) -> Result<Vec<SeededCiphertext>, HeError> {
        let (n, limbs) = (self.params.n(), self.params.limbs());
        let moduli = self.params.moduli();
        for m in messages {
            if let Some((j, _)) = m.iter().find(|(j, _)| *j >= n) {
                return Err(HeError::BadInput(format!("message coefficient {j} is not below N = {n}")));
            }
            if let Some((j, r)) = m
                .iter()
                .find(|(_, r)| r.len() != limbs || r.iter().zip(moduli).any(|(&v, md)| v >= md.value()))
            {
                return Err(HeError::BadInput(format!("coefficient {j}: {} residues, not reduced", r.len())));
            }
        }
        let seeds: Vec<(Seed, Seed)> = messages.iter().map(|_| (fresh_seed(), fresh_seed())).collect();
        Ok(messages
            .par_iter()
            .zip(seeds)
            .map(|(msg, (seed, noise_seed))| {
                // c0 starts as a (NTT form, limb after limb) and becomes -a s + e + m in place.
                let mut c0 = expand_uniform(self.params.ring(), limbs, 1, &seed);
                let e = cbd(&mut stream(&noise_seed), n);
                for (l, &m) in moduli.iter().enumerate() {
                    let row = &mut c0[l * n..(l + 1) * n];
                    self.sk.mul_ntt_assign(m, l, row);
                    self.plans[l].inverse(row);
                    for (x, &ei) in row.iter_mut().zip(e.iter()) {
                        *x = m.sub(m.small(ei), *x);
                    }
                    for (j, r) in msg {
                        row[*j] = m.add(row[*j], r[l]);
                    }
                }
                SeededCiphertext { c0, seed }
            })
            .collect())
    }

    /// `c1 * s` in coefficient form over the first `limbs` limbs.
    fn c1_times_s(&self, c1: &[u32], limbs: usize) -> Vec<u32> {
        self.c1_times(&self.sk, c1, limbs)
    }

    /// `c1 * sk` in coefficient form over the first `limbs` limbs.
    fn c1_times(&self, sk: &SecretKey, c1: &[u32], limbs: usize) -> Vec<u32> {
        let n = self.params.n();
        let mut w = c1.to_vec();
        for (l, m) in self.params.moduli()[..limbs].iter().enumerate() {
            let row = &mut w[l * n..(l + 1) * n];
            self.plans[l].forward(row);
            sk.mul_ntt_assign(*m, l, row);
            self.plans[l].inverse(row);
        }
        w
    }

    /// Decrypts the kept coefficients (`positions`, in the order of `ct.c0`) of a response
    /// whose `c0` dropped `drop_bits` low bits. Returns values mod `t`.
    pub fn decrypt_response(
        &self,
        ct: &ResponseCiphertext,
        positions: &[usize],
        drop_bits: u32,
    ) -> Result<Vec<u64>, HeError> {
        self.decode_phases(self.response_phases(ct, positions, drop_bits)?)
    }

    /// Values mod `t` of phases mod `q'`.
    fn decode_phases(&self, phases: Vec<u128>) -> Result<Vec<u64>, HeError> {
        let q = self.response_modulus()?;
        Ok(phases.into_iter().map(|v| decode(v, q, self.params.plain_bits())).collect())
    }

    /// `q'` as an integer.
    pub fn response_modulus(&self) -> Result<u128, HeError> {
        self.params.response_modulus()
    }

    /// The phases `c0 + c1 s mod q'` of the kept coefficients of a response (what decryption
    /// rounds; tests measure the noise on them).
    pub fn response_phases(
        &self,
        ct: &ResponseCiphertext,
        positions: &[usize],
        drop_bits: u32,
    ) -> Result<Vec<u128>, HeError> {
        self.phases_under(&self.sk, &ct.c1.residues(&self.params)?, &ct.c0, positions, drop_bits)
    }

    /// Decrypts member `j` of a group of responses sharing `c1` ([`crate::share`]): its kept
    /// `c0` coefficients (`positions`, in the order of `c0`) against the group's `c1`, under
    /// the group's secret `j`. Returns values mod `t`.
    pub fn decrypt_shared(
        &self,
        c0: &[u128],
        c1: &[u32],
        j: usize,
        positions: &[usize],
        drop_bits: u32,
    ) -> Result<Vec<u64>, HeError> {
        self.decode_phases(self.shared_phases(c0, c1, j, positions, drop_bits)?)
    }

    /// The phases [`Client::decrypt_shared`] rounds.
    pub fn shared_phases(
        &self,
        c0: &[u128],
        c1: &[u32],
        j: usize,
        positions: &[usize],
        drop_bits: u32,
    ) -> Result<Vec<u128>, HeError> {
        let sk = self.response_secrets.get(j).ok_or_else(|| {
            HeError::BadInput(format!(
                "member {j} of a shared response, {} secrets",
                self.response_secrets.len()
            ))
        })?;
        self.phases_under(sk, c1, c0, positions, drop_bits)
    }

    fn phases_under(
        &self,
        sk: &SecretKey,
        c1: &[u32],
        c0: &[u128],
        positions: &[usize],
        drop_bits: u32,
    ) -> Result<Vec<u128>, HeError> {
        let (n, lr) = (self.params.n(), self.params.response_limbs());
        // A `c` in the half ring (its even coefficients) decrypts under a subring secret at
        // even positions only.
        let half = c1.len() * 2 == n * lr && sk.is_half();
        let bad = |j: usize| j >= n || (half && j % 2 == 1);
        if (c1.len() != n * lr && !half) || c0.len() != positions.len() || positions.iter().any(|&j| bad(j)) {
            return Err(HeError::BadInput("response ciphertext does not match its layout".into()));
        }
        let q = self.response_modulus()?;
        let full;
        let c1 = if half {
            full = crate::share::from_even_coefficients(c1, n);
            &full
        } else {
            c1
        };
        let w = self.c1_times(sk, c1, lr);
        positions
            .iter()
            .zip(c0)
            .map(|(&j, &h)| {
                let residues: Vec<u32> = (0..lr).map(|l| w[l * n + j]).collect();
                let wj = self
                    .response_basis
                    .compose_u128(&residues)
                    .ok_or_else(|| HeError::BadInput("unreduced c1".into()))?;
                let c0 = h.checked_shl(drop_bits).unwrap_or(0) % q;
                Ok((c0 + wj) % q)
            })
            .collect()
    }

    /// The phase `c0 + c1 s` of a full ciphertext in coefficient form over the first `limbs`
    /// limbs, as centred big integers (diagnostics and noise measurement).
    pub fn phase(&self, c0: &[u32], c1: &[u32], limbs: usize) -> Result<Vec<BigInt>, HeError> {
        let n = self.params.n();
        let basis = self.params.basis().prefix(limbs).map_err(|e| HeError::BadParams(e.to_string()))?;
        let mut v = self.c1_times_s(c1, limbs);
        for (l, m) in basis.moduli().iter().enumerate() {
            for (x, &c) in v[l * n..(l + 1) * n].iter_mut().zip(&c0[l * n..(l + 1) * n]) {
                *x = m.add(*x, c);
            }
        }
        (0..n)
            .map(|j| {
                let r: Vec<u32> = (0..limbs).map(|l| v[l * n + j]).collect();
                basis.compose_centered(&r).map_err(|e| HeError::BadInput(e.to_string()))
            })
            .collect()
    }
}

/// `round(t v / q) mod t` for `t = 2^l`, `v < q < 2^126`.
pub fn decode(v: u128, q: u128, plain_bits: u32) -> u64 {
    let mask = if plain_bits == 64 { u64::MAX } else { (1u64 << plain_bits) - 1 };
    let bits_q = 128 - q.leading_zeros();
    let m = if bits_q + plain_bits <= 127 {
        ((v << plain_bits) + q / 2) / q
    } else {
        let num = (BigUint::from(v) << plain_bits) + BigUint::from(q / 2);
        let r = num / BigUint::from(q);
        r.iter_u64_digits().next().unwrap_or(0) as u128
    };
    (m as u64) & mask
}

/// `|v - round(q m / t)|` centred mod `q`: the noise of a phase `v` holding `m`.
pub fn noise_of(v: &BigInt, m: u64, q: &BigUint, plain_bits: u32) -> BigUint {
    let qi = BigInt::from(q.clone());
    let scaled =
        (BigInt::from(q.clone()) * BigInt::from(m) + (BigInt::from(1u8) << (plain_bits - 1))) >> plain_bits;
    let mut e = ((v - scaled) % &qi + &qi) % &qi;
    if e > &qi / 2 {
        e -= &qi;
    }
    e.magnitude().clone()
}
