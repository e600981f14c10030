use num_bigint::{BigInt, BigUint};
use num_traits::{One, ToPrimitive, Zero};

use crate::{MathError, Modulus, primes::is_prime};

/// A residue number system over distinct word-sized primes `p_0..p_{L-1}` with `q = prod p_i`.
///
/// Limb `i` of an RNS value is its residue mod `p_i`. Composition uses the CRT formula
/// `x = sum_i [r_i * (q/p_i)^{-1}]_{p_i} * (q/p_i) mod q`, exact in big integers; the hot paths
/// never compose whole polynomials, and responses compose their kept coefficients in `u128`
/// ([`RnsBasis::compose_u128`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RnsBasis {
    moduli: Vec<Modulus>,
    q: BigUint,
    /// `q / p_i`.
    q_hat: Vec<BigUint>,
    /// `(q / p_i)^{-1} mod p_i`.
    q_hat_inv: Vec<u32>,
    /// `q` and the `q / p_i` as `u128` where `log2 q < 126` ([`Self::compose_u128`]), made
    /// once: converting them from big integers on every call cost more than the composition
    /// (clients and servers compose every kept coefficient of every response).
    wide: Option<(u128, Vec<u128>)>,
}

impl RnsBasis {
    /// A basis over the given primes (each prime, `< 2^31`, all distinct).
    pub fn new(primes: &[u32]) -> Result<Self, MathError> {
        if primes.is_empty() {
            return Err(MathError::BadBasis);
        }
        let mut moduli = Vec::with_capacity(primes.len());
        for (i, &p) in primes.iter().enumerate() {
            if primes[..i].contains(&p) {
                return Err(MathError::BadBasis);
            }
            if !is_prime(u64::from(p)) {
                return Err(MathError::NotPrime(u64::from(p)));
            }
            moduli.push(Modulus::new(u64::from(p))?);
        }
        let q = primes.iter().fold(BigUint::one(), |acc, &p| acc * p);
        let q_hat: Vec<BigUint> = primes.iter().map(|&p| &q / p).collect();
        let q_hat_inv = moduli
            .iter()
            .zip(&q_hat)
            .map(|(m, qh)| {
                let r = (qh % m.value()).to_u32().unwrap_or(0);
                // Invariant: q/p_i is a product of primes other than p_i, hence invertible.
                m.inv(r).ok_or(MathError::BadBasis)
            })
            .collect::<Result<_, _>>()?;
        let log2: f64 = moduli.iter().map(|m| f64::from(m.value()).log2()).sum();
        let wide = if log2 < 126.0 {
            q.to_u128().zip(q_hat.iter().map(ToPrimitive::to_u128).collect::<Option<Vec<_>>>())
        } else {
            None
        };
        Ok(Self { moduli, q, q_hat, q_hat_inv, wide })
    }

    /// The moduli, limb order.
    pub fn moduli(&self) -> &[Modulus] {
        &self.moduli
    }

    /// Number of limbs.
    pub fn len(&self) -> usize {
        self.moduli.len()
    }

    /// Always false: a basis has at least one prime.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The product `q` of all primes.
    pub fn modulus(&self) -> &BigUint {
        &self.q
    }

    /// `log2(q)`, the number a security table is indexed by.
    pub fn log2_modulus(&self) -> f64 {
        self.moduli.iter().map(|m| f64::from(m.value()).log2()).sum()
    }

    /// The basis of the first `limbs` primes (modulus switching drops limbs from the end).
    pub fn prefix(&self, limbs: usize) -> Result<Self, MathError> {
        if limbs == 0 || limbs > self.len() {
            return Err(MathError::BadBasis);
        }
        let primes: Vec<u32> = self.moduli[..limbs].iter().map(|m| m.value()).collect();
        Self::new(&primes)
    }

    /// The residues of `x` (any size; reduced mod `q` implicitly).
    pub fn decompose(&self, x: &BigUint) -> Vec<u32> {
        self.moduli.iter().map(|m| (x % m.value()).to_u32().unwrap_or(0)).collect()
    }

    /// The residues of a signed `x`.
    pub fn decompose_signed(&self, x: &BigInt) -> Vec<u32> {
        let q = BigInt::from(self.q.clone());
        let r = ((x % &q) + &q) % &q;
        self.decompose(&r.magnitude().clone())
    }

    /// The unique `x` in `[0, q)` with the given residues.
    pub fn compose(&self, residues: &[u32]) -> Result<BigUint, MathError> {
        self.check_residues(residues)?;
        let mut acc = BigUint::zero();
        for ((&r, m), (qh, &qhi)) in
            residues.iter().zip(&self.moduli).zip(self.q_hat.iter().zip(&self.q_hat_inv))
        {
            acc += qh * m.mul(r, qhi);
        }
        Ok(acc % &self.q)
    }

    /// [`Self::compose`] in `u128` arithmetic, for bases with `q < 2^126` (`None` otherwise, or
    /// for residues that are not reduced). Each CRT term is below `q`, and the sum is reduced
    /// after every term, so nothing overflows.
    pub fn compose_u128(&self, residues: &[u32]) -> Option<u128> {
        let (q, q_hat) = self.wide.as_ref()?;
        if self.check_residues(residues).is_err() {
            return None;
        }
        let mut acc = 0u128;
        for ((&r, m), (&qh, &qhi)) in residues.iter().zip(&self.moduli).zip(q_hat.iter().zip(&self.q_hat_inv))
        {
            // (r * qhi mod p) * (q / p) < p * (q / p) = q < 2^126, so acc + term < 2q: one
            // conditional subtraction, not a division.
            let term = u128::from(m.mul(r, qhi)) * qh;
            acc += term;
            if acc >= *q {
                acc -= *q;
            }
        }
        Some(acc)
    }

    /// The unique `x` in `(-q/2, q/2]` with the given residues.
    pub fn compose_centered(&self, residues: &[u32]) -> Result<BigInt, MathError> {
        let x = self.compose(residues)?;
        let half = &self.q >> 1u32;
        Ok(if x > half { BigInt::from(x) - BigInt::from(self.q.clone()) } else { BigInt::from(x) })
    }

    fn check_residues(&self, residues: &[u32]) -> Result<(), MathError> {
        if residues.len() != self.len() {
            return Err(MathError::BadResidues(format!(
                "{} residues for {} limbs",
                residues.len(),
                self.len()
            )));
        }
        for (i, (&r, m)) in residues.iter().zip(&self.moduli).enumerate() {
            if r >= m.value() {
                return Err(MathError::BadResidues(format!("limb {i}: {r} is not below {}", m.value())));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::primes::ntt_primes;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    /// Close to uniform below `bound` (64 spare bits before the reduction).
    fn random_below(rng: &mut StdRng, bound: &BigUint) -> BigUint {
        let words: Vec<u32> = (0..bound.to_u32_digits().len() + 2).map(|_| rng.random()).collect();
        BigUint::from_slice(&words) % bound
    }

    fn bases() -> Vec<RnsBasis> {
        vec![
            RnsBasis::new(&ntt_primes(31, 4096, 1).unwrap()).unwrap(),
            RnsBasis::new(&ntt_primes(30, 4096, 4).unwrap()).unwrap(),
            RnsBasis::new(&ntt_primes(31, 1 << 15, 28).unwrap()).unwrap(), // ~868 bits
        ]
    }

    #[test]
    fn round_trips_near_the_modulus_and_at_random() {
        let mut rng = StdRng::seed_from_u64(7);
        for b in bases() {
            let q = b.modulus().clone();
            for k in 0..300u32 {
                let x = if k % 3 == 0 {
                    // Near q: q - 1 - small, and small.
                    &q - 1u32 - BigUint::from(rng.random_range(0u32..1000))
                } else if k % 3 == 1 {
                    BigUint::from(rng.random_range(0u32..1000))
                } else {
                    random_below(&mut rng, &q)
                };
                let r = b.decompose(&x);
                for (ri, m) in r.iter().zip(b.moduli()) {
                    assert_eq!(BigUint::from(*ri), &x % m.value());
                }
                assert_eq!(b.compose(&r).unwrap(), x);
            }
        }
    }

    #[test]
    fn compose_u128_matches_big_integers() {
        let mut rng = StdRng::seed_from_u64(9);
        for b in &bases()[..2] {
            for _ in 0..500 {
                let x = random_below(&mut rng, b.modulus());
                let r = b.decompose(&x);
                assert_eq!(BigUint::from(b.compose_u128(&r).unwrap()), x);
            }
        }
        assert_eq!(bases()[2].compose_u128(&[0; 28]), None); // 868 bits: too wide
        assert_eq!(bases()[1].compose_u128(&[0; 3]), None); // wrong length
    }

    #[test]
    fn centered_and_signed() {
        let mut rng = StdRng::seed_from_u64(8);
        for b in bases() {
            let q = BigInt::from(b.modulus().clone());
            for _ in 0..200 {
                let mag = random_below(&mut rng, &(b.modulus() >> 1u32));
                let x = if rng.random() { BigInt::from(mag) } else { -BigInt::from(mag) };
                let r = b.decompose_signed(&x);
                assert_eq!(b.compose_centered(&r).unwrap(), x);
                assert_eq!(BigInt::from(b.compose(&r).unwrap()), ((&x % &q) + &q) % &q);
            }
        }
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(RnsBasis::new(&[]), Err(MathError::BadBasis));
        let p = ntt_primes(30, 1024, 2).unwrap();
        assert_eq!(RnsBasis::new(&[p[0], p[0]]), Err(MathError::BadBasis));
        assert_eq!(RnsBasis::new(&[p[0], 1_000_001]), Err(MathError::NotPrime(1_000_001)));
        let b = RnsBasis::new(&p).unwrap();
        assert!(matches!(b.compose(&[1]), Err(MathError::BadResidues(_))));
        assert!(matches!(b.compose(&[p[0], 0]), Err(MathError::BadResidues(_))));
        assert!(b.prefix(0).is_err() && b.prefix(3).is_err());
        assert_eq!(b.prefix(1).unwrap().len(), 1);
        assert!((b.log2_modulus() - 60.0).abs() < 0.01);
    }
}
