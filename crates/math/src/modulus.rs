use crate::MathError;

/// The largest supported modulus size in bits. Primes are strictly below `2^31` so that
/// `a + b < 2^32` for reduced `a, b` and `(p-1)^2 < 2^62`, which lets accumulators hold four
/// unreduced products in a `u64` (sixteen for 30-bit primes).
pub const MAX_MODULUS_BITS: u32 = 31;

/// An odd modulus `p` with `3 <= p < 2^31`, and its precomputed reduction constants.
///
/// All operations take and return fully reduced residues (`< p`) unless their name says
/// otherwise; inputs outside that range are a caller bug (checked in debug builds).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Modulus {
    p: u32,
    /// `floor(2^64 / p)`, for Barrett reduction of 64-bit values.
    barrett: u64,
}

impl Modulus {
    /// Validates `p` (odd, `3 <= p < 2^31`) and precomputes its constants. Primality is not
    /// required here; the NTT layers check it.
    pub fn new(p: u64) -> Result<Self, MathError> {
        if p < 3 || p.is_multiple_of(2) || p >= (1u64 << MAX_MODULUS_BITS) {
            return Err(MathError::BadModulus(p));
        }
        let barrett = (u128::from(u64::MAX) + 1).div_euclid(u128::from(p)) as u64;
        Ok(Self { p: p as u32, barrett })
    }

    /// The modulus value.
    #[inline]
    pub fn value(self) -> u32 {
        self.p
    }

    /// Number of bits of `p`.
    #[inline]
    pub fn bits(self) -> u32 {
        32 - self.p.leading_zeros()
    }

    /// `floor(2^64 / p)`, the Barrett constant (backends upload it).
    #[inline]
    pub fn barrett_constant(self) -> u64 {
        self.barrett
    }

    /// `a + b mod p`.
    #[inline]
    pub fn add(self, a: u32, b: u32) -> u32 {
        debug_assert!(a < self.p && b < self.p);
        let s = a + b;
        if s >= self.p { s - self.p } else { s }
    }

    /// `a - b mod p`.
    #[inline]
    pub fn sub(self, a: u32, b: u32) -> u32 {
        debug_assert!(a < self.p && b < self.p);
        if a >= b { a - b } else { a + self.p - b }
    }

    /// `-a mod p`.
    #[inline]
    pub fn neg(self, a: u32) -> u32 {
        debug_assert!(a < self.p);
        if a == 0 { 0 } else { self.p - a }
    }

    /// `a * b mod p`.
    #[inline]
    pub fn mul(self, a: u32, b: u32) -> u32 {
        self.reduce_u64(u64::from(a) * u64::from(b))
    }

    /// Any 64-bit value mod `p` (Barrett: the estimated quotient is at most one too small).
    #[inline]
    pub fn reduce_u64(self, x: u64) -> u32 {
        let q = ((u128::from(x) * u128::from(self.barrett)) >> 64) as u64;
        let r = x - q * u64::from(self.p);
        (if r >= u64::from(self.p) { r - u64::from(self.p) } else { r }) as u32
    }

    /// Any 128-bit value mod `p`: `hi 2^64 + lo` as three Barrett reductions and a product,
    /// where `%` on a `u128` is a library division (tens of nanoseconds).
    #[inline]
    pub fn reduce_u128(self, x: u128) -> u32 {
        let (hi, lo) = ((x >> 64) as u64, x as u64);
        if hi == 0 {
            return self.reduce_u64(lo);
        }
        // 2^64 mod p = (2^64 - 1 mod p) + 1.
        let two64 = self.add(self.reduce_u64(u64::MAX), 1);
        self.add(self.mul(self.reduce_u64(hi), two64), self.reduce_u64(lo))
    }

    /// Any signed 128-bit value mod `p` (`rem_euclid`, without its division).
    #[inline]
    pub fn reduce_i128(self, x: i128) -> u32 {
        let r = self.reduce_u128(x.unsigned_abs());
        if x < 0 { self.neg(r) } else { r }
    }

    /// Any 32-bit value mod `p`.
    #[inline]
    pub fn reduce(self, x: u32) -> u32 {
        self.reduce_u64(u64::from(x))
    }

    /// A signed value mod `p`.
    #[inline]
    pub fn reduce_i64(self, x: i64) -> u32 {
        let r = self.reduce_u64(x.unsigned_abs());
        if x < 0 { self.neg(r) } else { r }
    }

    /// A small signed value (`|v| < p`: errors, ternary values) mod `p`, branch-free, so that
    /// loops of it vectorise.
    #[inline(always)]
    pub fn small(self, v: i32) -> u32 {
        debug_assert!(v.unsigned_abs() < self.p);
        (v as u32).wrapping_add(self.p & (v >> 31) as u32)
    }

    /// `a^e mod p` by square-and-multiply.
    pub fn pow(self, mut a: u32, mut e: u64) -> u32 {
        a = self.reduce(a);
        let mut r = 1u32;
        while e > 0 {
            if e & 1 == 1 {
                r = self.mul(r, a);
            }
            a = self.mul(a, a);
            e >>= 1;
        }
        r
    }

    /// The inverse of `a` mod `p`, or `None` if `gcd(a, p) != 1` (extended Euclid, so `p` need
    /// not be prime).
    pub fn inv(self, a: u32) -> Option<u32> {
        let (mut r0, mut r1) = (i64::from(self.p), i64::from(self.reduce(a)));
        let (mut t0, mut t1) = (0i64, 1i64);
        while r1 != 0 {
            let q = r0 / r1;
            (r0, r1) = (r1, r0 - q * r1);
            (t0, t1) = (t1, t0 - q * t1);
        }
        (r0 == 1).then(|| self.reduce_i64(t0))
    }

    /// Shoup's precomputation for a fixed multiplicand `w < p`: `floor(w * 2^32 / p)`.
    #[inline]
    pub fn shoup(self, w: u32) -> u32 {
        debug_assert!(w < self.p);
        ((u64::from(w) << 32) / u64::from(self.p)) as u32
    }

    /// `a * w mod p` for a fixed `w` with `w_shoup = self.shoup(w)`; any `a < 2^32`. The
    /// remainder before the last step is below `2p`, so that step is a branch-free minimum
    /// (SIMD loops vectorise it).
    #[inline(always)]
    pub fn mul_shoup(self, a: u32, w: u32, w_shoup: u32) -> u32 {
        let q = ((u64::from(a) * u64::from(w_shoup)) >> 32) as u32;
        let r = a.wrapping_mul(w).wrapping_sub(q.wrapping_mul(self.p));
        r.min(r.wrapping_sub(self.p))
    }

    /// How many products of two reduced residues can be summed in a `u64` on top of a value
    /// below `p` without overflow: the lazy-accumulation depth of the multiply-accumulate.
    #[inline]
    pub fn lazy_products(self) -> usize {
        let pm1 = u64::from(self.p - 1);
        ((u64::MAX - pm1) / (pm1 * pm1)) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    fn moduli() -> Vec<Modulus> {
        [3u64, 17, 65537, 0x7fff_ffff, 0x3fff_ffdd, 1_073_479_681, 2_147_352_577]
            .into_iter()
            .map(|p| Modulus::new(p).unwrap())
            .collect()
    }

    #[test]
    fn rejects_bad_moduli() {
        for p in [0u64, 1, 2, 4, 1 << 31, (1 << 31) + 1, u64::MAX] {
            assert_eq!(Modulus::new(p), Err(MathError::BadModulus(p)));
        }
    }

    #[test]
    fn operations_match_u128_arithmetic() {
        let mut rng = StdRng::seed_from_u64(1);
        for m in moduli() {
            let p = u128::from(m.value());
            for _ in 0..20_000 {
                // Bias towards the top of the range, where overflow bugs live.
                let a = m.value() - 1 - rng.random_range(0..m.value().min(1000));
                let b = rng.random_range(0..m.value());
                let (a128, b128) = (u128::from(a), u128::from(b));
                assert_eq!(u128::from(m.add(a, b)), (a128 + b128) % p);
                assert_eq!(u128::from(m.sub(a, b)), (a128 + p - b128) % p);
                assert_eq!(u128::from(m.neg(b)), (p - b128) % p);
                assert_eq!(u128::from(m.mul(a, b)), a128 * b128 % p);
                let x: u64 = rng.random();
                assert_eq!(u128::from(m.reduce_u64(x)), u128::from(x) % p);
                let s: i64 = rng.random();
                let expect = (i128::from(s)).rem_euclid(p as i128);
                assert_eq!(i128::from(m.reduce_i64(s)), expect);
                // 128-bit values of every width (the flooding noise is about 100 bits).
                let wide = rng.random::<u128>() >> rng.random_range(0..128);
                assert_eq!(u128::from(m.reduce_u128(wide)), wide % p);
                let signed = (wide as i128) >> 1;
                let signed = if rng.random() { -signed } else { signed };
                assert_eq!(i128::from(m.reduce_i128(signed)), signed.rem_euclid(p as i128));
                let any: u32 = rng.random();
                assert_eq!(u128::from(m.mul_shoup(any, b, m.shoup(b))), u128::from(any) * b128 % p);
            }
            assert_eq!(m.reduce_u64(u64::MAX) as u128, u128::from(u64::MAX) % p);
            assert_eq!(u128::from(m.reduce_u128(u128::MAX)), u128::MAX % p);
            assert_eq!(i128::from(m.reduce_i128(i128::MIN)), i128::MIN.rem_euclid(p as i128));
            // Small signed values (|v| < p): every one up to 64, past the samplers' largest.
            let top = (m.value() - 1).min(64) as i32;
            for v in -top..=top {
                assert_eq!(i128::from(m.small(v)), i128::from(v).rem_euclid(p as i128), "{v}");
            }
        }
    }

    #[test]
    fn pow_and_inverse() {
        let mut rng = StdRng::seed_from_u64(2);
        for m in moduli() {
            for _ in 0..200 {
                let a = rng.random_range(1..m.value());
                let e: u64 = rng.random_range(0..1_000_000);
                let mut naive = 1u32;
                let base = a;
                let mut k = e % 97; // Check small exponents naively.
                while k > 0 {
                    naive = m.mul(naive, base);
                    k -= 1;
                }
                assert_eq!(m.pow(a, e % 97), naive);
                assert_eq!(m.mul(m.pow(a, e), m.pow(a, 1000)), m.pow(a, e + 1000));
                if let Some(i) = m.inv(a) {
                    assert_eq!(m.mul(a, i), 1);
                }
            }
        }
        let m = Modulus::new(15).unwrap();
        assert_eq!(m.inv(5), None);
        assert_eq!(m.inv(7), Some(13));
    }

    #[test]
    fn lazy_product_depth_is_tight() {
        for m in moduli() {
            let k = m.lazy_products() as u128;
            let pm1 = u128::from(m.value() - 1);
            assert!(pm1 + k * pm1 * pm1 <= u128::from(u64::MAX));
            assert!(pm1 + (k + 1) * pm1 * pm1 > u128::from(u64::MAX));
        }
        assert!(Modulus::new(0x7fff_ffff).unwrap().lazy_products() >= 4);
        assert!(Modulus::new(0x3fff_ffdd).unwrap().lazy_products() >= 16);
    }
}
