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
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretKey").field("n", &self.n).finish_non_exhaustive()
    }
}

impl SecretKey {
    /// A fresh key from `rng` (a CSPRNG).
    pub fn generate<R: RngCore + CryptoRng>(params: &Params, plans: &[NttPlan], rng: &mut R) -> Self {
        let n = params.n();
        let coeffs = Zeroizing::new(ternary(rng, n));
        // Every limb of the ring, the special prime's included (keys are formed mod q P).
        let mut ntt = Zeroizing::new(vec![0u32; params.key_limbs() * n]);
        for (l, (m, plan)) in params.ring().moduli().iter().zip(plans).enumerate() {
            let row = &mut ntt[l * n..(l + 1) * n];
            for (x, &c) in row.iter_mut().zip(coeffs.iter()) {
                *x = m.reduce_i64(i64::from(c));
            }
            plan.forward(row);
        }
        Self { n, coeffs, ntt }
    }

    /// NTT form of limb `l`.
    pub(crate) fn ntt_limb(&self, l: usize) -> &[u32] {
        &self.ntt[l * self.n..(l + 1) * self.n]
    }

    /// Hamming weight (number of nonzero coefficients), for tests of the distribution.
    pub fn weight(&self) -> usize {
        self.coeffs.iter().filter(|&&c| c != 0).count()
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
            for (x, &v) in row.iter_mut().zip(&e) {
                *x = m.reduce_i64(i64::from(v));
            }
            plan.forward(row);
            let (al, sl) = (&a[l * n..(l + 1) * n], self.ntt_limb(l));
            for ((x, &ai), &si) in row.iter_mut().zip(al).zip(sl) {
                *x = m.sub(*x, m.mul(ai, si));
            }
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
