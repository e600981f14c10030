use std::sync::Arc;

use fastquery_backend::RingContext;
use fastquery_math::{RnsBasis, primes::ntt_prime_iter};
use num_bigint::BigUint;
use num_traits::ToPrimitive;

use crate::HeError;

/// The largest `log2 q` at 128-bit classical security for a ternary or Gaussian secret
/// (HomomorphicEncryption.org standard, Table 1), or `None` for an unsupported degree.
pub fn security_limit(n: usize) -> Option<u32> {
    match n {
        1024 => Some(27),
        2048 => Some(54),
        4096 => Some(109),
        8192 => Some(218),
        16384 => Some(438),
        32768 => Some(881),
        _ => None,
    }
}

/// What a parameter set is made of, before validation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ParamSpec {
    /// Ring degree `N`.
    pub n: usize,
    /// Bit size of each prime of the ciphertext modulus chain, limb order. The first
    /// `response_limbs` survive modulus switching.
    pub prime_bits: Vec<u32>,
    /// Limbs kept after modulus switching (the response modulus).
    pub response_limbs: usize,
    /// `l` in `t = 2^l`, the share ring.
    pub plain_bits: u32,
    /// Flooding margin `sigma` in bits (at least 40).
    pub flood_bits: u32,
    /// Bit size of the key-switching special prime `P` (hybrid key switching), or 0 for none.
    /// `P` is the ring's last prime, after the chain: keys live mod `q P`, ciphertexts mod
    /// `q`, and the security check covers `q P`.
    pub special_bits: u32,
}

/// A validated parameter set. Once constructed, the rest of the engine relies on it: the
/// modulus is inside the security limit, the primes exist and are distinct, and `t` fits.
#[derive(Clone, Debug)]
pub struct Params {
    spec: ParamSpec,
    ring: Arc<RingContext>,
    id: u32,
    /// `round(q / t)` per limb, and the same for the response modulus.
    q_over_t: Vec<u32>,
    q_resp_over_t: Vec<u32>,
    /// The ciphertext modulus `q` (the chain without the special prime).
    basis: RnsBasis,
}

/// Smallest accepted flooding margin (protocol.md, section 2).
pub const MIN_FLOOD_BITS: u32 = 40;

impl Params {
    /// Validates `spec` and picks its primes: for each bit size in order, the largest unused
    /// prime of that size that is `1 mod 2N`.
    pub fn new(spec: ParamSpec) -> Result<Self, HeError> {
        let limit = security_limit(spec.n)
            .ok_or_else(|| HeError::BadParams(format!("ring degree {} is not one of 2^10..2^15", spec.n)))?;
        if spec.prime_bits.is_empty()
            || spec.response_limbs == 0
            || spec.response_limbs > spec.prime_bits.len()
        {
            return Err(HeError::BadParams(format!(
                "{} primes with {} response limbs",
                spec.prime_bits.len(),
                spec.response_limbs
            )));
        }
        let claimed: u32 = spec.prime_bits.iter().sum::<u32>() + spec.special_bits;
        if claimed > limit {
            return Err(HeError::Insecure { n: spec.n, log2_q: f64::from(claimed), limit });
        }
        if !(1..=64).contains(&spec.plain_bits) {
            return Err(HeError::BadParams(format!(
                "plaintext modulus 2^{} outside 2^1..2^64",
                spec.plain_bits
            )));
        }
        if spec.flood_bits < MIN_FLOOD_BITS {
            return Err(HeError::BadParams(format!(
                "flooding margin of {} bits is below the required {MIN_FLOOD_BITS}",
                spec.flood_bits
            )));
        }
        let mut primes: Vec<u32> = Vec::with_capacity(spec.prime_bits.len() + 1);
        let special = (spec.special_bits > 0).then_some(spec.special_bits);
        for &bits in spec.prime_bits.iter().chain(&special) {
            let p = ntt_prime_iter(bits, spec.n)
                .map_err(|e| HeError::BadParams(e.to_string()))?
                .find(|p| !primes.contains(p))
                .ok_or_else(|| {
                    HeError::BadParams(format!("no unused {bits}-bit prime for N = {}", spec.n))
                })?;
            primes.push(p);
        }
        let ring = RingContext::new(spec.n, &primes)?;
        let log2_q = ring.basis().log2_modulus();
        if log2_q > f64::from(limit) {
            return Err(HeError::Insecure { n: spec.n, log2_q, limit });
        }
        let prefix = |limbs| ring.basis().prefix(limbs).map_err(|e| HeError::BadParams(e.to_string()));
        let (basis, resp) = (prefix(spec.prime_bits.len())?, prefix(spec.response_limbs)?);
        if resp.log2_modulus() < f64::from(spec.plain_bits) + 2.0 {
            return Err(HeError::BadParams(format!(
                "response modulus of {:.1} bits cannot hold t = 2^{} with any noise",
                resp.log2_modulus(),
                spec.plain_bits
            )));
        }
        let q_over_t = scaled_residues(&basis, spec.plain_bits);
        let q_resp_over_t = scaled_residues(&resp, spec.plain_bits);
        let id = fingerprint(&spec, &primes);
        Ok(Self { spec, ring: Arc::new(ring), id, q_over_t, q_resp_over_t, basis })
    }

    /// The specification this set was built from.
    pub fn spec(&self) -> &ParamSpec {
        &self.spec
    }

    /// A 32-bit fingerprint of every parameter (degree, primes, limbs, `l`, `sigma`), carried by
    /// every wire message so that mismatched peers fail loudly.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The ring: every limb of the chain, then the special prime if there is one (keys use
    /// all of them, ciphertexts the first [`limbs`](Self::limbs)).
    pub fn ring(&self) -> &Arc<RingContext> {
        &self.ring
    }

    /// The moduli of ciphertexts (the chain, without the special prime).
    pub fn moduli(&self) -> &[fastquery_math::Modulus] {
        &self.ring.moduli()[..self.spec.prime_bits.len()]
    }

    /// The ciphertext modulus `q` as an RNS basis (without the special prime).
    pub fn basis(&self) -> &RnsBasis {
        &self.basis
    }

    /// The key-switching special prime `P`, if the set has one (hybrid key switching).
    pub fn special_prime(&self) -> Option<u32> {
        (self.spec.special_bits > 0).then(|| self.ring.moduli()[self.spec.prime_bits.len()].value())
    }

    /// Limbs of key-switching keys: the chain's, plus one for the special prime.
    pub fn key_limbs(&self) -> usize {
        self.ring.limbs()
    }

    /// `N`.
    pub fn n(&self) -> usize {
        self.spec.n
    }

    /// Number of limbs of fresh ciphertexts.
    pub fn limbs(&self) -> usize {
        self.spec.prime_bits.len()
    }

    /// Number of limbs after modulus switching.
    pub fn response_limbs(&self) -> usize {
        self.spec.response_limbs
    }

    /// `l`.
    pub fn plain_bits(&self) -> u32 {
        self.spec.plain_bits
    }

    /// `t - 1`, the mask that reduces mod `t = 2^l`.
    pub fn plain_mask(&self) -> u64 {
        if self.spec.plain_bits == 64 { u64::MAX } else { (1u64 << self.spec.plain_bits) - 1 }
    }

    /// `sigma`.
    pub fn flood_bits(&self) -> u32 {
        self.spec.flood_bits
    }

    /// `log2 q` of the ciphertext modulus (the chain without the special prime).
    pub fn log2_q(&self) -> f64 {
        self.basis.log2_modulus()
    }

    /// `log2 (q P)`: the largest modulus any ciphertext or key uses, what the security limit
    /// bounds.
    pub fn log2_key_modulus(&self) -> f64 {
        self.ring.basis().log2_modulus()
    }

    /// `log2 q'` of the response modulus.
    pub fn log2_q_response(&self) -> f64 {
        self.ring.moduli()[..self.spec.response_limbs].iter().map(|m| f64::from(m.value()).log2()).sum()
    }

    /// `q'` as an integer, while it is below `2^126` (what the response arithmetic handles).
    pub fn response_modulus(&self) -> Result<u128, HeError> {
        self.ring.moduli()[..self.spec.response_limbs]
            .iter()
            .try_fold(1u128, |q, m| q.checked_mul(u128::from(m.value())))
            .filter(|q| *q < 1 << 126)
            .ok_or_else(|| HeError::BadParams("response modulus above 2^126".into()))
    }

    /// `round(q / t)` per limb (full chain).
    pub fn q_over_t(&self) -> &[u32] {
        &self.q_over_t
    }

    /// `round(q' / t)` per limb of the response modulus.
    pub fn q_resp_over_t(&self) -> &[u32] {
        &self.q_resp_over_t
    }
}

fn scaled_residues(basis: &RnsBasis, plain_bits: u32) -> Vec<u32> {
    let q = basis.modulus();
    let half_t = BigUint::from(1u32) << (plain_bits - 1);
    let v: BigUint = (q + half_t) >> plain_bits;
    basis.moduli().iter().map(|m| (&v % m.value()).to_u32().unwrap_or(0)).collect()
}

/// FNV-1a over a canonical encoding of the parameters.
fn fingerprint(spec: &ParamSpec, primes: &[u32]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    let mut eat = |x: u64| {
        for b in x.to_le_bytes() {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    eat(spec.n as u64);
    eat(primes.len() as u64);
    primes.iter().for_each(|&p| eat(u64::from(p)));
    eat(spec.response_limbs as u64);
    eat(u64::from(spec.plain_bits));
    eat(u64::from(spec.flood_bits));
    eat(u64::from(spec.special_bits));
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheetah() -> ParamSpec {
        ParamSpec {
            n: 4096,
            prime_bits: vec![30, 30, 27, 22],
            response_limbs: 2,
            plain_bits: 37,
            flood_bits: 40,
            special_bits: 0,
        }
    }

    #[test]
    fn accepts_cheetah_and_checks_the_limit_on_real_primes() {
        let p = Params::new(cheetah()).unwrap();
        assert!(p.log2_q() <= 109.0 && p.log2_q() > 108.0);
        assert_eq!(p.limbs(), 4);
        let primes: Vec<u32> = p.moduli().iter().map(|m| m.value()).collect();
        let mut dedup = primes.clone();
        dedup.dedup();
        assert_eq!(primes.len(), dedup.len());
    }

    #[test]
    fn refuses_insecure_and_inconsistent_sets() {
        let mut s = cheetah();
        s.prime_bits.push(20); // 129 bits at N = 4096
        assert!(matches!(Params::new(s), Err(HeError::Insecure { n: 4096, limit: 109, .. })));
        let s = ParamSpec { n: 2048, prime_bits: vec![30, 25], ..cheetah() }; // 55 > 54
        assert!(matches!(Params::new(s), Err(HeError::Insecure { .. })));
        for bad in [
            ParamSpec { n: 3000, ..cheetah() },
            ParamSpec { response_limbs: 0, ..cheetah() },
            ParamSpec { response_limbs: 5, ..cheetah() },
            ParamSpec { plain_bits: 0, ..cheetah() },
            ParamSpec { plain_bits: 65, ..cheetah() },
            ParamSpec { flood_bits: 39, ..cheetah() },
            ParamSpec { prime_bits: vec![32, 30], ..cheetah() },
            ParamSpec { prime_bits: vec![], ..cheetah() },
            ParamSpec { response_limbs: 1, plain_bits: 30, ..cheetah() }, // t does not fit q'
        ] {
            let e = Params::new(bad.clone()).unwrap_err();
            assert!(matches!(e, HeError::BadParams(_)), "{bad:?}: {e}");
        }
    }

    #[test]
    fn ids_differ_between_sets() {
        let a = Params::new(cheetah()).unwrap().id();
        let b = Params::new(ParamSpec { plain_bits: 36, ..cheetah() }).unwrap().id();
        let c = Params::new(ParamSpec { flood_bits: 41, ..cheetah() }).unwrap().id();
        assert!(a != b && a != c && b != c);
        assert_eq!(a, Params::new(cheetah()).unwrap().id());
    }

    #[test]
    fn the_special_prime_counts_in_the_limit_and_never_in_a_ciphertext() {
        // 4 x 27 = 108 bits fits N = 4096 alone (109); a special prime of any size past 1 bit
        // does not.
        let chain = ParamSpec { n: 4096, prime_bits: vec![27; 4], response_limbs: 2, ..cheetah() };
        assert!(Params::new(chain.clone()).is_ok());
        let e = Params::new(ParamSpec { special_bits: 20, ..chain }).unwrap_err();
        assert!(matches!(e, HeError::Insecure { n: 4096, limit: 109, .. }), "{e}");
        let plain = Params::new(ParamSpec { prime_bits: vec![30, 30], ..cheetah() }).unwrap();
        let p = Params::new(ParamSpec { prime_bits: vec![30, 30], special_bits: 30, ..cheetah() }).unwrap();
        let special = p.special_prime().unwrap();
        assert_eq!((p.limbs(), p.key_limbs(), p.moduli().len()), (2, 3, 2));
        assert!(p.moduli().iter().all(|m| m.value() != special));
        assert_eq!(p.ring().moduli()[2].value(), special);
        // q is the chain's, q P what the limit bounds; the fingerprint tells the two sets apart.
        assert!((p.log2_q() - plain.log2_q()).abs() < 1e-9);
        assert!(p.log2_key_modulus() > p.log2_q() + 29.0);
        assert_eq!(p.q_over_t(), plain.q_over_t());
        assert_ne!(p.id(), plain.id());
        assert!(plain.special_prime().is_none() && plain.key_limbs() == 2);
    }
}
