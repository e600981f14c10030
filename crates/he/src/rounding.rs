//! Rounding a response's `c1` to `w` bits per coefficient.
//!
//! A coefficient `v` of `c1` mod `q'` is sent as `h = round(v 2^w / q') mod 2^w` and read back as
//! `v' = round(h q' / 2^w) mod q'`, so `|v' - v| <= q' / 2^(w+1) + 1/2` (centred mod `q'`). The
//! client's phase `c0 + c1 s` then moves by `sum_j (v'_j - v_j) s_(i-j)`: with a ternary `s`
//! and `c1` uniform after re-randomisation, a sum of at most `N` independent terms bounded by
//! that error, which [`crate::noise`] bounds like the modulus switching's rounding.
//!
//! `h -> v'` is injective while `2^w < q'`, and `round(v' 2^w / q') = h`: the server rounds once,
//! in [`crate::server::finish`], and the wire codec re-derives `h` from the rounded residues.

use fastquery_math::{Modulus, RnsBasis};
use num_bigint::BigUint;
use num_traits::ToPrimitive;
use rayon::prelude::*;

use crate::{HeError, Params};

/// Bits of a kept `c0` coefficient mod `q` with its low `drop` bits dropped: the server sends
/// `round(v / 2^drop)` for `v < q`, at most `round((q - 1) / 2^drop)`, and this is its width.
/// That is `q`'s width less `drop`, and one bit more only where `q - 1 + 2^(drop-1)` reaches
/// the next power of two (never for a product of primes below `2^31` and `drop <= 32`).
pub fn c0_width(q: u128, drop: u32) -> u32 {
    (128 - c0_largest(q, drop).leading_zeros()).max(1)
}

/// The largest kept `c0` value mod `q` with `drop` low bits dropped, `round((q - 1) / 2^drop)`
/// (a decoder refuses anything above it).
pub fn c0_largest(q: u128, drop: u32) -> u128 {
    drop_low_bits(q.saturating_sub(1), drop)
}

/// `round(v / 2^drop)`, what the server sends of a kept `c0` coefficient `v < 2^126`.
pub fn drop_low_bits(v: u128, drop: u32) -> u128 {
    match drop {
        0 => v,
        d if d >= 127 => 0,
        d => (v + (1u128 << (d - 1))) >> d,
    }
}

/// The rounding of `c1` to `bits` bits mod the response modulus of `params`, and the response
/// limbs' basis its residues are over.
pub fn response_rounding(params: &Params, bits: u32) -> Result<(RnsBasis, C1Rounding), HeError> {
    let basis =
        params.basis().prefix(params.response_limbs()).map_err(|e| HeError::BadParams(e.to_string()))?;
    Ok((basis, C1Rounding::new(params.response_modulus()?, bits)?))
}

/// The rounding of `c1` coefficients mod `q'` to `bits` bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct C1Rounding {
    q: u128,
    bits: u32,
}

impl C1Rounding {
    /// The rounding mod `q` (below `2^126`) to `bits` bits, `1 <= bits <= 64`, `2^bits < q`.
    pub fn new(q: u128, bits: u32) -> Result<Self, HeError> {
        if q >= 1 << 126 || bits == 0 || bits > 64 || (1u128 << bits) >= q {
            return Err(HeError::BadParams(format!(
                "c1 of {bits} bits mod a {}-bit q'",
                128 - q.leading_zeros()
            )));
        }
        Ok(Self { q, bits })
    }

    /// Bits per coefficient.
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// Largest `|v' - v|` (centred mod `q'`).
    pub fn error_bound(&self) -> f64 {
        self.q as f64 / 2f64.powi(self.bits as i32 + 1) + 0.5
    }

    /// `round(v 2^w / q) mod 2^w` for `v < q`.
    pub fn round(&self, v: u128) -> u64 {
        let h = mul_div_round(v, 1u128 << self.bits, self.q);
        (h & ((1u128 << self.bits) - 1)) as u64
    }

    /// `round(h q / 2^w) mod q`.
    pub fn lift(&self, h: u64) -> u128 {
        mul_div_round(u128::from(h), self.q, 1u128 << self.bits) % self.q
    }

    /// [`Self::round`] of every coefficient of `c1`, given as `[limb][coefficient]` residues over
    /// `basis` (whose modulus is this rounding's `q`).
    pub fn round_residues(&self, basis: &RnsBasis, c1: &[u32]) -> Vec<u64> {
        let n = c1.len() / basis.len().max(1);
        // Coefficients are independent: a response's thousands run in tasks of
        // [`coefficient_chunk`] (a decode step has one response for all the host's threads).
        let coefficients = (0..n).into_par_iter().with_min_len(chunk_or_default());
        if let Some(fast) = Word::new(self, basis) {
            return coefficients.map(|j| fast.round(fast.compose(c1, n, j))).collect();
        }
        let wide = Wide::new(self, basis);
        coefficients
            .map_init(
                || vec![0u32; basis.len()],
                |residues, j| {
                    residues.iter_mut().enumerate().for_each(|(l, x)| *x = c1[l * n + j]);
                    let v = basis.compose_u128(residues).unwrap_or(0);
                    wide.as_ref().map_or_else(|| self.round(v), |w| w.round(v))
                },
            )
            .collect()
    }

    /// [`Self::lift`] of every `h`, as `[limb][coefficient]` residues over `basis`.
    pub fn lift_residues(&self, basis: &RnsBasis, hs: &[u64]) -> Vec<u32> {
        let n = hs.len();
        let (fast, wide) = (Word::new(self, basis), Wide::new(self, basis));
        let lifted: Vec<u128> = hs
            .par_iter()
            .with_min_len(chunk_or_default())
            .map(|&h| match (&fast, &wide) {
                (Some(f), _) => u128::from(f.lift(h)),
                (None, Some(w)) => w.lift(h),
                (None, None) => self.lift(h),
            })
            .collect();
        let mut c1 = vec![0u32; basis.len() * n];
        for (limb, m) in c1.chunks_mut(n.max(1)).zip(basis.moduli()) {
            // Barrett reductions (one where `v` fits a word: always on the 64-bit path).
            limb.iter_mut().zip(&lifted).for_each(|(w, &v)| *w = m.reduce_u128(v));
        }
        c1
    }
}

/// Coefficients per task where one response's coefficients are split among the host's
/// threads (its `c0`'s kept words in the finish, its `c1`'s rounding and lifting):
/// `FASTQUERY_FINISH_CHUNK`, default 512; `0` keeps each response on one thread (for A/B
/// runs). Anything else is an error naming the variable.
pub fn coefficient_chunk() -> Result<usize, HeError> {
    static CHUNK: std::sync::OnceLock<Result<usize, String>> = std::sync::OnceLock::new();
    CHUNK
        .get_or_init(|| parse_chunk(std::env::var("FASTQUERY_FINISH_CHUNK").ok().as_deref()))
        .clone()
        .map_err(HeError::BadParams)
}

fn parse_chunk(v: Option<&str>) -> Result<usize, String> {
    match v {
        None => Ok(512),
        Some("0") => Ok(usize::MAX),
        Some(v) => match v.parse::<usize>() {
            Ok(c) if c > 0 => Ok(c),
            _ => Err(format!("FASTQUERY_FINISH_CHUNK must be a count of coefficients (0: off), not '{v}'")),
        },
    }
}

/// [`coefficient_chunk`], its default where the variable is wrong (the finish reports that).
fn chunk_or_default() -> usize {
    coefficient_chunk().unwrap_or(512)
}

/// [`C1Rounding`] where `q' < 2^64` and `2^w q' < 2^126` (every response modulus of one or two
/// 31-bit primes): the same values word for word in 64-bit arithmetic, for the thousands of
/// responses of a blocked request (the `u128` division and the CRT's big-integer constants
/// cost about 130 ns a coefficient, inferred from a request's traces). Residues are composed
/// by Garner's mixed radix with Barrett reductions, `round(v 2^w / q')` is Barrett's estimate
/// corrected exactly, and the lift's division is by a power of two.
struct Word {
    q: u64,
    bits: u32,
    /// `floor(2^(w + k) / q')` with `k` the width of `q'`: `v mu >> k` is at most 2 below
    /// `round(v 2^w / q')` (Barrett's estimate).
    mu: u128,
    k: u32,
    /// Per limb `l`: `p_l`, `p_0 ... p_(l-1)`, and the inverse of the latter mod `p_l`.
    garner: Vec<(Modulus, u64, u32)>,
}

impl Word {
    fn new(r: &C1Rounding, basis: &RnsBasis) -> Option<Self> {
        let q = u64::try_from(r.q).ok()?;
        if 128 - r.q.leading_zeros() + r.bits > 126 || basis.is_empty() {
            return None;
        }
        let mut radix = 1u64;
        let mut garner = Vec::with_capacity(basis.len());
        for &m in basis.moduli() {
            let inv = m.inv(m.reduce_u64(radix))?;
            garner.push((m, radix, inv));
            radix = radix.checked_mul(u64::from(m.value()))?;
        }
        let k = 64 - q.leading_zeros();
        let mu = (1u128 << (r.bits + k)) / u128::from(q);
        (radix == q).then_some(Self { q, bits: r.bits, mu, k, garner })
    }

    /// The coefficient `j` of `[limb][coefficient]` residues (`n` a limb), below `q'`.
    fn compose(&self, c1: &[u32], n: usize, j: usize) -> u64 {
        let mut v = 0u64;
        for (l, &(m, radix, inv)) in self.garner.iter().enumerate() {
            // v < radix, and v + radix t < radix p: nothing overflows. Barrett, no division.
            let t = m.mul(m.sub(m.reduce(c1[l * n + j]), m.reduce_u64(v)), inv);
            v += radix * u64::from(t);
        }
        v
    }

    /// [`C1Rounding::round`]: `h` with `h q' <= v 2^w + q'/2 < (h + 1) q'`, then mod `2^w`.
    fn round(&self, v: u64) -> u64 {
        let x = (u128::from(v) << self.bits) + u128::from(self.q / 2);
        // v < 2^k and mu < 2^(w + 1): v mu < 2^(k + w + 1) <= 2^127.
        let mut h = ((u128::from(v) * self.mu) >> self.k) as u64;
        // h <= x / q, and x / q - h < 3 (Barrett, plus the half added to x): a few steps up.
        let q = u128::from(self.q);
        let mut rem = x - u128::from(h) * q;
        while rem >= q {
            rem -= q;
            h += 1;
        }
        h & ((1u64 << self.bits) - 1)
    }

    /// [`C1Rounding::lift`]: `round(h q' / 2^w) mod q'`.
    fn lift(&self, h: u64) -> u64 {
        let v = ((u128::from(h) * u128::from(self.q) + (1u128 << (self.bits - 1))) >> self.bits) as u64;
        if v >= self.q { v - self.q } else { v }
    }
}

/// [`C1Rounding`] where `q'` is wider than a word (three or four 31-bit primes) and `w <= 62`:
/// the same values word for word without big integers, which cost about half a microsecond a
/// coefficient in [`mul_div_round`] (a whole `c1` of N = 8192 took milliseconds to round and as
/// long to lift). `v 2^w` and `h q'` are 256-bit products held as two words; `round(v 2^w /
/// q')` is Barrett's estimate, at most three below, corrected by a remainder that fits a
/// `u128` (it is below `4 q' < 2^128`, so wrapping arithmetic gives it exactly); the lift's
/// division is by a power of two.
struct Wide {
    q: u128,
    bits: u32,
    /// `floor(2^(s + w + 2) / q')` with `s = k - 1` and `k` the width of `q'`.
    mu: u128,
    s: u32,
}

impl Wide {
    fn new(r: &C1Rounding, basis: &RnsBasis) -> Option<Self> {
        let k = 128 - r.q.leading_zeros();
        // x1 mu < 2^(2w + 4) must fit a u128; the lift's shift needs w >= 1. (q' < 2^126, so a
        // basis whose modulus is q' composes in a u128, checked below.)
        if r.bits > 62 || k < 2 || basis.is_empty() {
            return None;
        }
        let s = k - 1;
        let mu = ((BigUint::from(1u8) << (s + r.bits + 2)) / r.q).to_u128()?;
        // The basis must be the rounding's modulus (its residues compose to values below q').
        (BigUint::from(r.q) == *basis.modulus()).then_some(Self { q: r.q, bits: r.bits, mu, s })
    }

    /// [`C1Rounding::round`] for `v < q'`: `floor((v 2^w + floor(q'/2)) / q') mod 2^w`.
    fn round(&self, v: u128) -> u64 {
        let w = self.bits;
        // N = v 2^w + floor(q/2) < 2^(k + w + 1), as (hi, lo).
        let (lo, hi) = (v << w, v >> (128 - w));
        let (lo, carry) = lo.overflowing_add(self.q / 2);
        let hi = hi + u128::from(carry);
        // x1 = floor(N / 2^s) < 2^(w + 2); est = floor(x1 mu / 2^(w + 2)) <= N / q, and at
        // most 3 below it (each floor loses less than one, N / 2^(s + w + 2) < 1, 2^s / q' < 1).
        let x1 = (lo >> self.s) | (hi << (128 - self.s));
        let mut est = (x1 * self.mu) >> (w + 2);
        // N - est q' < 4 q' < 2^128: its low 128 bits are all of it.
        let mut rem = lo.wrapping_sub(est.wrapping_mul(self.q));
        while rem >= self.q {
            rem -= self.q;
            est += 1;
        }
        (est & ((1u128 << w) - 1)) as u64
    }

    /// [`C1Rounding::lift`]: `floor((h q' + 2^(w-1)) / 2^w) mod q'` for `h < 2^w`.
    fn lift(&self, h: u64) -> u128 {
        let w = self.bits;
        let (ql, qh) = (self.q as u64, (self.q >> 64) as u64);
        let (a, b) = (u128::from(h) * u128::from(ql), u128::from(h) * u128::from(qh));
        // h q' = b 2^64 + a, as (hi, lo).
        let (lo, carry) = a.overflowing_add(b << 64);
        let hi = (b >> 64) + u128::from(carry);
        // floor((x + 2^(w-1)) / 2^w) = floor(x / 2^w) + bit w-1 of x; below q' + 1.
        let v = ((lo >> w) | (hi << (128 - w))) + ((lo >> (w - 1)) & 1);
        if v >= self.q { v - self.q } else { v }
    }
}

/// `round(a b / c)`, exactly (`u128` while `a b + c` fits, big integers otherwise).
fn mul_div_round(a: u128, b: u128, c: u128) -> u128 {
    match a.checked_mul(b).and_then(|p| p.checked_add(c / 2)) {
        Some(num) => num / c,
        None => {
            let r = (BigUint::from(a) * b + c / 2) / c;
            r.to_u128().unwrap_or(u128::MAX)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    fn centred(x: u128, q: u128) -> i128 {
        let x = x % q;
        if x > q / 2 { x as i128 - q as i128 } else { x as i128 }
    }

    #[test]
    fn lift_of_round_is_within_the_bound_and_round_recovers_h() {
        let mut rng = StdRng::seed_from_u64(3);
        // A 62-bit q' of two 31-bit primes, a 93-bit one (big-integer path), and a tiny one.
        for (q, bits) in [(2147483647u128 * 2147483629, 48u32), ((1u128 << 93) - 25, 64), (97, 3)] {
            let r = C1Rounding::new(q, bits).unwrap();
            for i in 0..20_000 {
                // The ends of the range (wrap-around of h) and random values.
                let v = match i {
                    0 => 0,
                    1 => q - 1,
                    2 => q / 2,
                    _ => rng.random_range(0..q),
                };
                let h = r.round(v);
                assert!(u128::from(h) < 1 << bits);
                let back = r.lift(h);
                assert!(back < q);
                let err = centred(back + q - v, q).unsigned_abs() as f64;
                assert!(err <= r.error_bound(), "q={q} w={bits} v={v}: error {err}");
                assert_eq!(r.round(back), h, "q={q} w={bits} v={v}");
            }
        }
    }

    /// The 64-bit path of [`C1Rounding::round_residues`] and [`C1Rounding::lift_residues`]
    /// (`q' < 2^64`) gives the reference's values word for word: random residues and the ends
    /// of the range, over one and two primes of 20 to 31 bits, at every width the path takes
    /// and at the widest, where `h` wraps to 0.
    #[test]
    fn word_path_matches_the_reference() {
        use fastquery_math::primes::ntt_primes;
        let mut rng = StdRng::seed_from_u64(11);
        let n = 64;
        for (bits, count) in [(31u32, 2usize), (27, 2), (20, 2), (31, 1), (22, 1)] {
            let primes = ntt_primes(bits, n, count).unwrap();
            let basis = RnsBasis::new(&primes).unwrap();
            let q: u128 = primes.iter().map(|&p| u128::from(p)).product();
            let width_q = 128 - q.leading_zeros();
            let mut widths: Vec<u32> = vec![1, 2, width_q / 2, width_q - 1];
            widths.extend((0..6).map(|_| rng.random_range(1..width_q)));
            for w in widths {
                let r = C1Rounding::new(q, w).unwrap();
                assert!(Word::new(&r, &basis).is_some(), "q={q} w={w}");
                let mut vs: Vec<u128> = vec![0, 1, q - 1, q / 2, q / 2 + 1];
                vs.extend((0..4000 - vs.len()).map(|_| rng.random_range(0..q)));
                // Values next to the rounding's half-way points, where an estimate is off.
                for _ in 0..200 {
                    let h = rng.random_range(0..1u128 << w);
                    let mid = (h * q + q / 2) >> w;
                    vs.extend([mid.saturating_sub(1), mid, (mid + 1).min(q - 1)]);
                }
                let rows = vs.len();
                let mut c1 = vec![0u32; primes.len() * rows];
                for (j, &v) in vs.iter().enumerate() {
                    for (l, &p) in primes.iter().enumerate() {
                        c1[l * rows + j] = (v % u128::from(p)) as u32;
                    }
                }
                let hs = r.round_residues(&basis, &c1);
                let want: Vec<u64> = vs.iter().map(|&v| r.round(v)).collect();
                assert_eq!(hs, want, "q={q} w={w}");
                let back = r.lift_residues(&basis, &hs);
                for (j, &h) in hs.iter().enumerate() {
                    let v = r.lift(h);
                    for (l, &p) in primes.iter().enumerate() {
                        assert_eq!(u128::from(back[l * rows + j]), v % u128::from(p), "q={q} w={w} h={h}");
                    }
                }
            }
        }
        // A q' of 64 bits or more takes the reference path; its lift's residues are those of
        // `lift`, whether the lifted value fits a word or not.
        let primes = ntt_primes(31, n, 3).unwrap();
        let basis = RnsBasis::new(&primes).unwrap();
        let q: u128 = primes.iter().map(|&p| u128::from(p)).product();
        let r = C1Rounding::new(q, 40).unwrap();
        assert!(Word::new(&r, &basis).is_none());
        let mut hs: Vec<u64> = vec![0, 1, (1 << 40) - 1];
        hs.extend((0..200).map(|_| rng.random_range(0..1u64 << 40)));
        let back = r.lift_residues(&basis, &hs);
        assert!(hs.iter().any(|&h| r.lift(h) < 1 << 64) && hs.iter().any(|&h| r.lift(h) >= 1 << 64));
        for (j, &h) in hs.iter().enumerate() {
            for (l, &p) in primes.iter().enumerate() {
                assert_eq!(u128::from(back[l * hs.len() + j]), r.lift(h) % u128::from(p), "h={h}");
            }
        }
    }

    /// The wide path (`q'` of three or four 31-bit primes, `w <= 62`) gives the big-integer
    /// reference's values: `round` and `lift` next to the rounding's half-way points, at the
    /// ends of the range and at random, through `round_residues` and `lift_residues` too.
    #[test]
    fn wide_path_matches_the_reference() {
        use fastquery_math::primes::ntt_primes;
        let mut rng = StdRng::seed_from_u64(12);
        for (bits, count) in [(31u32, 3usize), (31, 4), (27, 3), (20, 4)] {
            let primes = ntt_primes(bits, 64, count).unwrap();
            let basis = RnsBasis::new(&primes).unwrap();
            let q: u128 = primes.iter().map(|&p| u128::from(p)).product();
            let mut widths: Vec<u32> = vec![1, 2, 47, 48, 61, 62];
            widths.extend((0..4).map(|_| rng.random_range(1..63)));
            for w in widths {
                let r = C1Rounding::new(q, w).unwrap();
                assert!(Word::new(&r, &basis).is_none(), "q={q}");
                let wide = Wide::new(&r, &basis).expect("the wide path");
                let mut vs: Vec<u128> = vec![0, 1, q - 1, q / 2, q / 2 + 1];
                vs.extend((0..2000).map(|_| rng.random_range(0..q)));
                for _ in 0..300 {
                    let h = rng.random_range(0..1u128 << w);
                    let mid = r.lift(h as u64);
                    vs.extend([mid.saturating_sub(1), mid, (mid + 1).min(q - 1)]);
                }
                for &v in &vs {
                    assert_eq!(wide.round(v), r.round(v), "q={q} w={w} v={v}");
                }
                let mut hs: Vec<u64> = vec![0, 1, ((1u128 << w) - 1) as u64];
                hs.extend((0..2000).map(|_| rng.random_range(0..1u64 << w)));
                for &h in &hs {
                    assert_eq!(wide.lift(h), r.lift(h), "q={q} w={w} h={h}");
                }
                // Through the residues, as the finish and the wire use it.
                let rows = vs.len();
                let mut c1 = vec![0u32; count * rows];
                for (j, &v) in vs.iter().enumerate() {
                    for (l, &p) in primes.iter().enumerate() {
                        c1[l * rows + j] = (v % u128::from(p)) as u32;
                    }
                }
                let got = r.round_residues(&basis, &c1);
                assert_eq!(got, vs.iter().map(|&v| r.round(v)).collect::<Vec<_>>(), "q={q} w={w}");
                let back = r.lift_residues(&basis, &got);
                for (j, &h) in got.iter().enumerate() {
                    for (l, &p) in primes.iter().enumerate() {
                        assert_eq!(u128::from(back[l * rows + j]), r.lift(h) % u128::from(p), "q={q} w={w}");
                    }
                }
            }
        }
        // Wider than 62 bits, or a basis that is not q', the reference path stays.
        let primes = ntt_primes(31, 64, 3).unwrap();
        let basis = RnsBasis::new(&primes).unwrap();
        let q: u128 = primes.iter().map(|&p| u128::from(p)).product();
        assert!(Wide::new(&C1Rounding::new(q, 63).unwrap(), &basis).is_none());
        assert!(Wide::new(&C1Rounding::new(q - 2, 40).unwrap(), &basis).is_none());
    }

    #[test]
    fn the_finish_chunk_is_a_count_or_an_error() {
        assert_eq!(parse_chunk(None), Ok(512));
        assert_eq!(parse_chunk(Some("0")), Ok(usize::MAX));
        assert_eq!(parse_chunk(Some("64")), Ok(64));
        for bad in ["-1", "x", "", "1.5"] {
            assert!(parse_chunk(Some(bad)).unwrap_err().contains("FASTQUERY_FINISH_CHUNK"), "{bad}");
        }
    }

    #[test]
    fn rejects_widths_the_modulus_cannot_hold() {
        assert!(C1Rounding::new(97, 0).is_err());
        assert!(C1Rounding::new(97, 7).is_err()); // 2^7 >= 97
        assert!(C1Rounding::new(1 << 127, 10).is_err());
        assert!(C1Rounding::new(u128::from(u64::MAX) << 10, 65).is_err());
    }

    /// Every rounded `c0` value fits `c0_width` bits and the largest needs all of them; for
    /// moduli below the next power of two by more than `2^(drop-1)` (every product of primes
    /// below `2^31` with `drop <= 32`) that is the modulus's width less `drop`.
    #[test]
    fn c0_width_is_the_width_of_the_largest_rounded_value() {
        let mut rng = StdRng::seed_from_u64(5);
        let round = |v: u128, b: u32| if b == 0 { v } else { (v + (1u128 << (b - 1))) >> b };
        for _ in 0..2000 {
            let q: u128 = match rng.random_range(0..3) {
                0 => {
                    u128::from(rng.random_range(2u64..1 << 31)) * u128::from(rng.random_range(2u64..1 << 31))
                }
                1 => (1u128 << rng.random_range(2..100)) - rng.random_range(0..4),
                _ => rng.random_range(2u128..1 << 100),
            };
            let width_q = 128 - q.leading_zeros();
            let b = rng.random_range(0..width_q);
            let w = c0_width(q, b);
            let largest = round(q - 1, b);
            assert!(largest < 1u128 << w && (w == 1 || largest >= 1u128 << (w - 1)), "q={q} b={b} w={w}");
            for _ in 0..8 {
                let v = rng.random_range(0..q);
                assert!(round(v, b) < 1u128 << w, "q={q} b={b} v={v}");
            }
            // (A power of two needs one bit less: its largest residue is all ones.)
            assert!(w + 1 >= width_q - b && w <= width_q - b + 1, "q={q} b={b} w={w}");
            if q <= (1u128 << 62) - (1 << 32) && b <= 32 && width_q == 62 {
                assert_eq!(w, 62 - b, "q={q} b={b}");
            }
        }
        // One more bit exactly where rounding up reaches the next power of two.
        assert_eq!(c0_width((1u128 << 62) - 1, 23), 40);
        assert_eq!(c0_width((1u128 << 62) - (1 << 23), 23), 39);
        assert_eq!(c0_width(1 << 20, 0), 20);
    }
}
