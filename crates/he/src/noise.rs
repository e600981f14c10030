//! Noise bounds, computed rather than hoped.
//!
//! Every bound holds except with probability `2^-40` over *all* coefficients a client decrypts
//! with one key (a union over `2^30` coefficients and the independent tail events below). Errors
//! are sums of independent zero-mean terms, bounded via subgaussian tails:
//! `P(|X| > z s) <= 2 exp(-z^2 / 2)` for a sum with subgaussian parameter `s`.
//!
//! * fresh error: centred binomial, `|e| <= 21`, subgaussian parameter `sqrt(42)/2 = 3.24`;
//! * plaintext times ciphertext: `sum_k e_k w_k` over `terms` products with `|w| <= w_max`, so
//!   `s <= 3.24 sqrt(terms) w_max`; plus the encoding rounding `eps * w`, `|eps| <= 1/2`, for
//!   each nonzero input message coefficient (one for a one-hot query);
//! * re-randomisation `e_pk u + e_0 + e_1 s` with ternary `u, s`: `s <= 3.24 sqrt(2N + 1)`;
//! * flooding: uniform in `[-F, F]`, `F = 2^sigma * B_table`, so the client's view of the
//!   table-dependent noise is within statistical distance `2^-sigma` per coefficient of one
//!   that does not depend on the table;
//! * modulus switching: one rounding per dropped prime, `|delta| < 1` per coefficient, so
//!   `delta_0 + delta_1 s` has `s <= sqrt(N + 1)`; the noise above scales by `q'/q`;
//! * dropping `b` low bits of `c0`: at most `2^(b-1)`;
//! * rounding `c1` to `w` bits ([`crate::rounding`], where a scheme asks for it): per
//!   coefficient at most `E = q' / 2^(w+1) + 1/2`, and `c1` is uniform after re-randomisation, so
//!   the phase moves by a sum of `N` independent terms `delta_j s_(i-j)` with `s <= E sqrt(N)`
//!   (the fourth tail event of [`EVENTS_LOG2`]).
//!
//! Decryption of `v = round(q' m / t) + e` is correct while `|e| < q' / (2t) - 1/2`.

use crate::{HeError, Params, sample::CBD_ETA};

/// Failure probability exponent of every bound, for all coefficients under one key.
pub const FAILURE_LOG2: f64 = -40.0;
/// Union bound: coefficients decrypted under one key.
pub const COEFFS_LOG2: f64 = 30.0;
/// Union bound: independent tail events per coefficient (table, re-randomisation, switching,
/// rounding of `c1`).
pub const EVENTS_LOG2: f64 = 2.0;

/// The tail multiplier `z` with `2 exp(-z^2/2) = 2^(FAILURE - COEFFS - EVENTS)`.
pub fn tail_z() -> f64 {
    (2.0 * std::f64::consts::LN_2 * (1.0 - FAILURE_LOG2 + COEFFS_LOG2 + EVENTS_LOG2)).sqrt()
}

/// Subgaussian parameter of one fresh error coefficient.
pub fn error_param() -> f64 {
    (f64::from(2 * CBD_ETA)).sqrt() / 2.0
}

/// What the server's computation looks like, for the noise analysis.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Workload {
    /// Number of `(query error coefficient) x (table entry)` products summed into one output
    /// coefficient (all input ciphertexts times the nonzero entries of a plaintext).
    pub terms: usize,
    /// Bound on the absolute value of a table entry (public: from the declared bit width).
    pub w_max: u64,
    /// Nonzero message coefficients among the inputs of one output coefficient (1: one-hot).
    pub input_weight: usize,
    /// Further table-dependent noise computed by the scheme (key switching of packing), added
    /// to the bound before flooding.
    pub extra: f64,
}

/// The bounds of one query under one parameter set.
#[derive(Clone, Debug, PartialEq)]
pub struct NoiseReport {
    /// The tail multiplier used.
    pub z: f64,
    /// Table-dependent noise: query errors times table entries, plus encoding rounding.
    pub table: f64,
    /// Noise of the public-key encryption of zero added for re-randomisation.
    pub rerand: f64,
    /// Half-width `F` of the uniform flooding noise.
    pub flood: u128,
    /// Bound before modulus switching.
    pub before_switch: f64,
    /// Rounding noise of modulus switching.
    pub switch_round: f64,
    /// Bound after modulus switching (with the key switches of a shared `c1`, `shared`).
    pub after_switch: f64,
    /// Noise of sharing one `c1` among a group of responses ([`crate::share`]; 0 without).
    pub shared: f64,
    /// Low bits of `c0` dropped before sending.
    pub drop_bits: u32,
    /// Bits per coefficient of `c1` on the wire when it is rounded ([`crate::rounding`]); 0 when
    /// it is sent whole, as residues.
    pub c1_bits: u32,
    /// Bound on the phase error of rounding `c1` (0 when it is sent whole).
    pub c1_round: f64,
    /// Bound on the noise the client decrypts.
    pub total: f64,
    /// What decryption tolerates: `q' / (2t) - 1/2`.
    pub budget: f64,
}

impl NoiseReport {
    /// Bits of slack after switching, before dropping `c0` bits: `log2(budget / after_switch)`.
    /// Dropping spends up to 99% of it; `total < budget` always holds.
    pub fn slack_bits(&self) -> f64 {
        (self.budget / self.after_switch).log2()
    }
}

/// Computes every bound for `work` under `params`, and the number of low bits of `c0` that can
/// be dropped; an error if decryption could fail.
pub fn analyse(params: &Params, work: Workload) -> Result<NoiseReport, HeError> {
    let z = tail_z();
    let s_e = error_param();
    let n = params.n() as f64;
    let w_max = work.w_max as f64;
    let table =
        z * s_e * (work.terms as f64).sqrt() * w_max + 0.5 * w_max * work.input_weight as f64 + work.extra;
    let rerand = z * s_e * (2.0 * n + 1.0).sqrt();
    let flood_f = table * 2f64.powi(params.flood_bits() as i32);
    if flood_f >= 2f64.powi(120) {
        return Err(HeError::NoiseBudget(format!("flooding width 2^{:.1} is too large", flood_f.log2())));
    }
    let flood = flood_f.ceil() as u128;
    // + 1/2: rounding of the mask's encoding.
    let before_switch = table + rerand + flood as f64 + 0.5;
    let scale = 2f64.powf(params.log2_q_response() - params.log2_q());
    let switch_round = z * (n + 1.0).sqrt();
    let after_switch = if params.response_limbs() < params.limbs() {
        before_switch * scale + switch_round
    } else {
        before_switch
    };
    let budget = 2f64.powf(params.log2_q_response() - f64::from(params.plain_bits()) - 1.0) - 0.5;
    if after_switch >= budget {
        return Err(HeError::NoiseBudget(format!(
            "noise bound 2^{:.1} after switching exceeds the budget 2^{:.1} (q' = 2^{:.1}, t = 2^{})",
            after_switch.log2(),
            budget.log2(),
            params.log2_q_response(),
            params.plain_bits()
        )));
    }
    let (drop_bits, dropped) = drop_for(budget, after_switch);
    Ok(NoiseReport {
        z,
        table,
        rerand,
        flood,
        before_switch,
        switch_round,
        after_switch,
        shared: 0.0,
        drop_bits,
        c1_bits: 0,
        c1_round: 0.0,
        total: after_switch + dropped,
        budget,
    })
}

/// The low bits of `c0` the slack lets go, and their rounding bound: the largest `b` with
/// `2^(b-1) <= 0.99 (budget - after_switch)`, never more than the modulus holds.
fn drop_for(budget: f64, after_switch: f64) -> (u32, f64) {
    let slack = 0.99 * (budget - after_switch);
    let drop_bits = if slack < 1.0 { 0 } else { (slack.log2().floor() as u32 + 1).min(60) };
    (drop_bits, if drop_bits == 0 { 0.0 } else { 2f64.powi(drop_bits as i32 - 1) })
}

impl NoiseReport {
    /// Adds the noise of the key switches of `sharing` (groups of responses sharing one `c1`,
    /// [`crate::share::shared_bound`]) after the switch, and drops as many bits of `c0` as the
    /// rest allows; an error if it no longer fits. Unchanged where the responses are not keyed.
    /// Apply before [`NoiseReport::with_rounded_c1`].
    pub fn with_shared_c1(self, params: &Params, sharing: crate::share::Sharing) -> Result<Self, HeError> {
        let shared = crate::share::shared_bound(params, sharing);
        if shared == 0.0 {
            return Ok(self);
        }
        let after_switch = self.after_switch - self.shared + shared;
        if after_switch >= self.budget {
            return Err(HeError::NoiseBudget(format!(
                "a c1 shared by {} responses leaves noise 2^{:.1} against the budget 2^{:.1}",
                sharing.targets(),
                after_switch.log2(),
                self.budget.log2()
            )));
        }
        let (drop_bits, dropped) = drop_for(self.budget, after_switch);
        Ok(Self {
            after_switch,
            shared,
            drop_bits,
            c1_bits: 0,
            c1_round: 0.0,
            total: after_switch + dropped,
            ..self
        })
    }

    /// Spends the slack on both parts of the response instead of `c0` alone: `c1` rounded to `w`
    /// bits ([`crate::rounding`]) and `b` low bits of `c0` dropped, with
    /// `2^(b-1) + z sqrt(N') E(w) <= 0.99 (budget - after_switch)` (`N'` the coefficients of
    /// `c1` that meet a decrypted phase: `N/2` in the half ring), choosing the pair with the
    /// fewest bits of a response ciphertext that keeps `kept` coefficients of `c0` and pays its
    /// part of a `c1` that `sharing` may share with others (`N'/n` coefficients). Returns the
    /// report unchanged when sending `c1` whole (as residues) is no larger.
    pub fn with_rounded_c1(self, params: &Params, kept: usize, sharing: crate::share::Sharing) -> Self {
        let Ok(q) = params.response_modulus() else { return self };
        let coeffs = sharing.c1_coeffs(params.n());
        let n = coeffs as f64;
        let width_q = 128 - q.leading_zeros();
        // In units of 1/group of a bit: c1 is paid once per group of responses.
        let group = sharing.group() as u64;
        let c0_bits = |b: u32| group * kept as u64 * u64::from(crate::rounding::c0_width(q, b));
        let whole: u64 = params.moduli()[..params.response_limbs()]
            .iter()
            .map(|m| u64::from(32 - m.value().leading_zeros()))
            .sum::<u64>()
            * coeffs as u64;
        let mut best = (c0_bits(self.drop_bits) + whole, None);
        let slack = 0.99 * (self.budget - self.after_switch);
        for w in 1..=64u32.min(width_q - 1) {
            let Ok(r) = crate::rounding::C1Rounding::new(q, w) else { continue };
            let round = self.z * n.sqrt() * r.error_bound();
            let rest = slack - round;
            if rest < 0.0 {
                continue;
            }
            let b = if rest < 1.0 { 0 } else { (rest.log2().floor() as u32 + 1).min(60) };
            let bits = c0_bits(b) + u64::from(w) * coeffs as u64;
            if bits < best.0 {
                best = (bits, Some((w, b, round)));
            }
        }
        match best.1 {
            None => self,
            Some((w, b, round)) => {
                let dropped = if b == 0 { 0.0 } else { 2f64.powi(b as i32 - 1) };
                Self {
                    drop_bits: b,
                    c1_bits: w,
                    c1_round: round,
                    total: self.after_switch + dropped + round,
                    ..self
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ParamSpec, share::Sharing};

    #[test]
    fn tail_multiplier_matches_the_failure_probability() {
        let z = tail_z();
        let p = 2.0 * (-z * z / 2.0).exp();
        assert!((p.log2() - (FAILURE_LOG2 - COEFFS_LOG2 - EVENTS_LOG2)).abs() < 1e-9);
    }

    #[test]
    fn a_shared_c1_spends_slack_or_is_refused() {
        let params = |plain_bits| {
            Params::new(ParamSpec {
                n: 4096,
                prime_bits: vec![30, 30, 27, 22],
                response_limbs: 1,
                plain_bits,
                flood_bits: 40,
                special_bits: 0,
            })
            .unwrap()
        };
        let work = Workload { terms: 1, w_max: 1, input_weight: 1, extra: 0.0 };
        // q' = 2^30, t = 2^12: room for the switch, which adds to the bound the client decrypts.
        let p = params(12);
        let r = analyse(&p, work).unwrap();
        let shared = r.clone().with_shared_c1(&p, Sharing::new(4, false)).unwrap();
        let bound = crate::share::shared_bound(&p, Sharing::new(4, false));
        assert!(bound > 0.0 && shared.shared == bound, "{shared:?}");
        assert!(
            shared.after_switch > r.after_switch && shared.drop_bits <= r.drop_bits && shared.total > r.total,
            "{r:?} {shared:?}"
        );
        assert!(shared.total < shared.budget);
        assert_eq!(
            r.clone().with_shared_c1(&p, Sharing::new(1, false)).unwrap(),
            r,
            "a group of one changes nothing"
        );
        // ... except in the half ring, where its one key switch moves c1 to a subring secret.
        let one = r.clone().with_shared_c1(&p, Sharing::new(1, true)).unwrap();
        assert_eq!(one.shared, bound / 4.0, "{one:?}");
        // t = 2^18: the budget (2^11) holds the switch of modulus switching, not four key switches.
        let p = params(18);
        let r = analyse(&p, work).unwrap();
        assert!(matches!(r.with_shared_c1(&p, Sharing::new(4, false)), Err(HeError::NoiseBudget(_))));
    }

    #[test]
    fn cheetah_budget_holds_and_drops_bits() {
        let p = Params::new(ParamSpec {
            n: 4096,
            prime_bits: vec![30, 30, 27, 22],
            response_limbs: 2,
            plain_bits: 37,
            flood_bits: 40,
            special_bits: 0,
        })
        .unwrap();
        let r =
            analyse(&p, Workload { terms: 180 * 4094, w_max: 1 << 12, input_weight: 1, extra: 0.0 }).unwrap();
        assert!(r.total < r.budget);
        assert!(r.drop_bits > 10, "{r:?}");
        assert!((r.flood as f64).log2() > r.table.log2() + 39.9);
        // A heavier table or a wider share ring must eventually fail, with a clear error.
        let big = analyse(&p, Workload { terms: 180 * 4094, w_max: 1 << 40, input_weight: 1, extra: 0.0 });
        assert!(matches!(big, Err(HeError::NoiseBudget(_))));
    }

    /// Rounding `c1` spends the same slack as dropping `c0` bits: the total stays under the
    /// budget, `c1` loses more than it costs `c0`, and a response that keeps few coefficients
    /// of `c0` gives nearly all the slack to `c1`.
    #[test]
    fn rounded_c1_stays_in_the_budget_and_shrinks_the_response() {
        let p = five_primes(0);
        let r =
            analyse(&p, Workload { terms: 2 * 125 * 8192, w_max: 16, input_weight: 1, extra: 1e6 }).unwrap();
        assert_eq!((r.c1_bits, r.c1_round), (0, 0.0));
        let full = r.clone().with_rounded_c1(&p, 8192, Sharing::NONE);
        assert!(full.c1_bits > 0 && full.c1_bits < 62, "{full:?}");
        assert!(full.total < full.budget && full.c1_round > 0.0);
        assert!(full.drop_bits <= r.drop_bits, "{full:?}");
        let lost = i64::from(r.drop_bits - full.drop_bits) * 8192;
        let won = (62 - i64::from(full.c1_bits)) * 8192;
        assert!(won > lost, "{full:?}");
        let few = r.clone().with_rounded_c1(&p, 16, Sharing::NONE);
        assert!(few.c1_bits < full.c1_bits && few.total < few.budget, "{few:?}");
        // No slack at all: nothing to round.
        let tight = NoiseReport { after_switch: r.budget, ..r.clone() };
        assert_eq!(tight.clone().with_rounded_c1(&p, 8192, Sharing::NONE), tight);
    }

    /// N = 8192, five 31-bit primes, two of them for the response.
    fn five_primes(special_bits: u32) -> Params {
        Params::new(ParamSpec {
            n: 8192,
            prime_bits: vec![31; 5],
            response_limbs: 2,
            plain_bits: 37,
            flood_bits: 40,
            special_bits,
        })
        .unwrap()
    }

    /// A `c1` shared by a group costs each response a part of its bits, so the split of the
    /// slack moves toward `c1`: more bits of `c1` and more dropped bits of `c0` than for a
    /// response alone, and fewer bits per member of the group than the split that ignores the
    /// group. In the half ring `c1`'s rounding meets half the secret's coefficients.
    #[test]
    fn a_shared_c1_takes_more_of_the_slack() {
        let p = five_primes(31);
        // The folded noise of the llama-30b design (2026-12-02): 2^21.6 of the budget's 2^24
        // left after the switch.
        let r = analyse(&p, Workload { terms: 0, w_max: 0, input_weight: 0, extra: 2.75e22 }).unwrap();
        let kept = 6656;
        let per_response = |x: &NoiseReport, sharing: Sharing| {
            let q = p.response_modulus().unwrap();
            let c0 = kept as f64 * f64::from(crate::rounding::c0_width(q, x.drop_bits));
            c0 + f64::from(x.c1_bits) * sharing.c1_coeffs(8192) as f64 / sharing.group() as f64
        };
        let alone = r.clone().with_rounded_c1(&p, kept, Sharing::NONE);
        let four = Sharing::new(4, false);
        let shared = r.clone().with_rounded_c1(&p, kept, four);
        assert!(shared.c1_bits > alone.c1_bits && shared.drop_bits > alone.drop_bits, "{alone:?} {shared:?}");
        assert!(shared.total < shared.budget);
        assert!(per_response(&shared, four) < per_response(&alone, four), "{alone:?} {shared:?}");
        let half = r.clone().with_rounded_c1(&p, kept, Sharing::new(1, true));
        let q = p.response_modulus().unwrap();
        let same = crate::rounding::C1Rounding::new(q, half.c1_bits).unwrap().error_bound();
        assert!((half.c1_round / (r.z * 4096f64.sqrt() * same) - 1.0).abs() < 1e-12, "{half:?}");
    }
}
