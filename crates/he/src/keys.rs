use fastquery_math::Modulus;
use fastquery_ntt::NttPlan;
use rand::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::{
    Params,
    sample::{Seed, cbd, expand_uniform, fresh_seed, ternary},
};

/// The client's RLWE secret: uniform ternary coefficients, kept with their NTT form per limb.
/// Both are zeroized on drop; there is deliberately no `Debug` that prints them and no `Clone`.
pub struct SecretKey {
    n: usize,
    coeffs: Zeroizing<Vec<i8>>,
    /// `[limb][coefficient]`, NTT form, every limb of the ring (the special prime's last).
    ntt: Zeroizing<Vec<u32>>,
    /// The Shoup quotients of `ntt` (`floor(s 2^32 / p)`), for products by the key.
    ntt_shoup: Zeroizing<Vec<u32>>,
    /// A key of the subring `Z[X^2]` ([`SecretKey::generate_half`]).
    half: bool,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretKey").field("n", &self.n).finish_non_exhaustive()
    }
}

impl SecretKey {
    /// A fresh key from `rng` (a CSPRNG).
    pub fn generate<R: RngCore + CryptoRng>(params: &Params, plans: &[NttPlan], rng: &mut R) -> Self {
        Self::from_coeffs(params, plans, Zeroizing::new(ternary(rng, params.n())), false)
    }

    /// A fresh key of the subring `Z[X^2]`: `t(X^2)` for a uniform ternary `t` of `N/2`
    /// coefficients (every odd coefficient zero), for responses whose `c` travels in the half
    /// ring ([`crate::share`]).
    pub fn generate_half<R: RngCore + CryptoRng>(params: &Params, plans: &[NttPlan], rng: &mut R) -> Self {
        let t = Zeroizing::new(ternary(rng, params.n() / 2));
        let mut coeffs = Zeroizing::new(vec![0i8; params.n()]);
        for (j, &c) in t.iter().enumerate() {
            coeffs[2 * j] = c;
        }
        Self::from_coeffs(params, plans, coeffs, true)
    }

    fn from_coeffs(params: &Params, plans: &[NttPlan], coeffs: Zeroizing<Vec<i8>>, half: bool) -> Self {
        let n = params.n();
        // Every limb of the ring, the special prime's included (keys are formed mod q P).
        let mut ntt = Zeroizing::new(vec![0u32; params.key_limbs() * n]);
        for (l, (m, plan)) in params.ring().moduli().iter().zip(plans).enumerate() {
            let row = &mut ntt[l * n..(l + 1) * n];
            for (x, &c) in row.iter_mut().zip(coeffs.iter()) {
                *x = m.reduce_i64(i64::from(c));
            }
            plan.forward(row);
        }
        let mut ntt_shoup = Zeroizing::new(vec![0u32; ntt.len()]);
        for (l, m) in params.ring().moduli().iter().enumerate() {
            for (w, &x) in ntt_shoup[l * n..(l + 1) * n].iter_mut().zip(&ntt[l * n..(l + 1) * n]) {
                *w = m.shoup(x);
            }
        }
        Self { n, coeffs, ntt, ntt_shoup, half }
    }

    /// NTT form of limb `l`.
    pub(crate) fn ntt_limb(&self, l: usize) -> &[u32] {
        &self.ntt[l * self.n..(l + 1) * self.n]
    }

    /// `a = a s` in limb `l` (`m` its modulus), NTT form: one Shoup product per word, which
    /// vectorises.
    pub(crate) fn mul_ntt_assign(&self, m: Modulus, l: usize, a: &mut [u32]) {
        let (s, w) = (self.ntt_limb(l), &self.ntt_shoup[l * self.n..(l + 1) * self.n]);
        for ((x, &si), &wi) in a.iter_mut().zip(s).zip(w) {
            *x = m.mul_shoup(*x, si, wi);
        }
    }

    /// `dst = dst - a s` in limb `l`, NTT form.
    pub(crate) fn sub_mul_ntt(&self, m: Modulus, l: usize, a: &[u32], dst: &mut [u32]) {
        let (s, w) = (self.ntt_limb(l), &self.ntt_shoup[l * self.n..(l + 1) * self.n]);
        for (((x, &ai), &si), &wi) in dst.iter_mut().zip(a).zip(s).zip(w) {
            *x = m.sub(*x, m.mul_shoup(ai, si, wi));
        }
    }

    /// Hamming weight (number of nonzero coefficients), for tests of the distribution.
    pub fn weight(&self) -> usize {
        self.coeffs.iter().filter(|&&c| c != 0).count()
    }

    /// Whether this is a key of the subring `Z[X^2]`.
    pub fn is_half(&self) -> bool {
        self.half
    }

    /// Nonzero coefficients at odd positions (zero for a key of the subring `Z[X^2]`), for
    /// tests.
    pub fn odd_weight(&self) -> usize {
        self.coeffs.iter().skip(1).step_by(2).filter(|&&c| c != 0).count()
    }

    /// Generates a public key `(p0, a) = (-a s + e, a)` with `a` expanded from a fresh seed.
    pub fn public_key<R: RngCore + CryptoRng>(
        &self,
        params: &Params,
        plans: &[NttPlan],
        rng: &mut R,
    ) -> PublicKey {
        let seed = fresh_seed();
        let n = self.n;
        let a = expand_uniform(params.ring(), params.limbs(), 1, &seed);
        let e = cbd(rng, n);
        let mut p0 = vec![0u32; params.limbs() * n];
        for (l, (m, plan)) in params.moduli().iter().zip(plans).enumerate() {
            let row = &mut p0[l * n..(l + 1) * n];
            for (x, &v) in row.iter_mut().zip(e.iter()) {
                *x = m.small(v);
            }
            plan.forward(row);
            self.sub_mul_ntt(*m, l, &a[l * n..(l + 1) * n], row);
        }
        PublicKey { p0, seed }
    }
}

/// A public key: `p0 = -a s + e` in the NTT domain (all limbs) and the seed of `a`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    /// `[limb][coefficient]`, NTT form.
    pub p0: Vec<u32>,
    /// Seed of the uniform `a`.
    pub seed: Seed,
}
