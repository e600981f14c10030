use std::{cmp::Ordering, collections::BinaryHeap};

use crate::{BITS, QuantError};

/// Maps a channel's bit width to its cost (for example bits or bytes on the wire). Schemes
/// supply their own; costs must grow with the bit width.
pub trait CostModel: Sync {
    /// Cost of channel `channel` at `bits`.
    fn cost(&self, channel: usize, bits: u32) -> u64;
}

/// The plain model: every entry of a channel costs its bit width (`m` entries per channel).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PerEntryBits {
    /// Entries per channel (the vocabulary size).
    pub m: usize,
}

impl CostModel for PerEntryBits {
    fn cost(&self, _channel: usize, bits: u32) -> u64 {
        self.m as u64 * u64::from(bits)
    }
}

/// How an allocation was found.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Method {
    /// Dynamic programming: optimal.
    Exact,
    /// Greedy on marginal gains; the optimum is at most `gap` lower in loss.
    Greedy { gap: f64 },
}

/// Chosen bit widths.
#[derive(Clone, Debug, PartialEq)]
pub struct Allocation {
    /// Bit width per channel.
    pub bits: Vec<u32>,
    /// Total loss (the sum of the chosen entries of `loss`).
    pub loss: f64,
    /// Total cost.
    pub cost: u64,
    /// Exact or greedy.
    pub method: Method,
}

/// Largest DP table (channels x budget units) solved exactly.
const DP_LIMIT: u64 = 1 << 27;

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Chooses one bit width per channel from [`BITS`] minimising `sum loss[c][bits - 2]` subject to
/// `sum cost(c, bits) <= budget`. `loss[c]` lists the loss of channel `c` at 2..=8 bits.
pub fn allocate(loss: &[Vec<f64>], cost: &dyn CostModel, budget: u64) -> Result<Allocation, QuantError> {
    let nb = BITS.count();
    if loss.iter().any(|l| l.len() != nb || l.iter().any(|x| !x.is_finite())) {
        return Err(QuantError::Invalid(format!("every channel needs {nb} finite losses")));
    }
    let d = loss.len();
    let costs: Vec<Vec<u64>> = (0..d).map(|c| BITS.map(|b| cost.cost(c, b)).collect()).collect();
    let min: u64 = costs.iter().map(|c| c[0]).sum();
    if budget < min {
        return Err(QuantError::BudgetTooSmall { budget, min });
    }
    let g = costs.iter().flatten().fold(0, |a, &x| gcd(a, x)).max(1);
    let units = budget / g;
    if (d as u64).saturating_mul(units + 1) <= DP_LIMIT {
        Ok(exact(loss, &costs, g, units))
    } else {
        Ok(greedy(loss, &costs, budget))
    }
}

fn exact(loss: &[Vec<f64>], costs: &[Vec<u64>], g: u64, units: u64) -> Allocation {
    let (d, nb, u) = (loss.len(), BITS.count(), units as usize);
    let mut best = vec![f64::INFINITY; u + 1];
    best[0] = 0.0;
    // best[x] = least loss of the channels so far at total cost exactly x units.
    let mut choice = vec![0u8; d * (u + 1)];
    for c in 0..d {
        let mut next = vec![f64::INFINITY; u + 1];
        for (x, &bx) in best.iter().enumerate() {
            if !bx.is_finite() {
                continue;
            }
            for k in 0..nb {
                let y = x + (costs[c][k] / g) as usize;
                if y <= u && bx + loss[c][k] < next[y] {
                    next[y] = bx + loss[c][k];
                    choice[c * (u + 1) + y] = k as u8;
                }
            }
        }
        best = next;
    }
    // The best end point, then walk back.
    let (mut x, &total) = best
        .iter()
        .enumerate()
        .filter(|(_, v)| v.is_finite())
        .min_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
        .expect("the cheapest allocation fits: checked by the caller");
    let mut bits = vec![0u32; d];
    for c in (0..d).rev() {
        let k = choice[c * (u + 1) + x] as usize;
        bits[c] = *BITS.start() + k as u32;
        x -= (costs[c][k] / g) as usize;
    }
    let cost = bits.iter().enumerate().map(|(c, &b)| costs[c][(b - BITS.start()) as usize]).sum();
    Allocation { bits, loss: total, cost, method: Method::Exact }
}

#[derive(PartialEq)]
struct Step {
    ratio: f64,
    channel: usize,
}

impl Eq for Step {}
impl PartialOrd for Step {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Step {
    fn cmp(&self, o: &Self) -> Ordering {
        self.ratio.total_cmp(&o.ratio).then(o.channel.cmp(&self.channel))
    }
}

fn greedy(loss: &[Vec<f64>], costs: &[Vec<u64>], budget: u64) -> Allocation {
    let d = loss.len();
    let nb = BITS.count();
    let mut k = vec![0usize; d];
    let mut spent: u64 = costs.iter().map(|c| c[0]).sum();
    let ratio = |c: usize, k: usize| {
        let dc = costs[c][k + 1].saturating_sub(costs[c][k]).max(1) as f64;
        (loss[c][k] - loss[c][k + 1]) / dc
    };
    let mut heap: BinaryHeap<Step> = (0..d).map(|c| Step { ratio: ratio(c, 0), channel: c }).collect();
    let mut gap = 0f64;
    while let Some(Step { channel: c, .. }) = heap.pop() {
        let extra = costs[c][k[c] + 1] - costs[c][k[c]];
        if spent + extra > budget {
            // This upgrade does not fit: the optimum can be better by at most its gain.
            gap = gap.max(loss[c][k[c]] - loss[c][k[c] + 1]);
            continue;
        }
        spent += extra;
        k[c] += 1;
        if k[c] + 1 < nb {
            heap.push(Step { ratio: ratio(c, k[c]), channel: c });
        }
    }
    let bits: Vec<u32> = k.iter().map(|&k| *BITS.start() + k as u32).collect();
    let total = k.iter().enumerate().map(|(c, &k)| loss[c][k]).sum();
    Allocation { bits, loss: total, cost: spent, method: Method::Greedy { gap } }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn curves(seeds: &[(f64, f64)]) -> Vec<Vec<f64>> {
        // Error falls by about 4x per bit; weights and offsets differ per channel.
        seeds.iter().map(|&(w, o)| BITS.map(|b| w * 4f64.powi(-(b as i32)) * (1.0 + o)).collect()).collect()
    }

    fn brute(loss: &[Vec<f64>], cost: &dyn CostModel, budget: u64) -> f64 {
        let d = loss.len();
        let nb = BITS.count();
        let mut best = f64::INFINITY;
        for code in 0..nb.pow(d as u32) {
            let (mut l, mut c, mut x) = (0.0, 0u64, code);
            for (ch, lc) in loss.iter().enumerate() {
                let k = x % nb;
                x /= nb;
                l += lc[k];
                c += cost.cost(ch, *BITS.start() + k as u32);
            }
            if c <= budget && l < best {
                best = l;
            }
        }
        best
    }

    struct Uneven;
    impl CostModel for Uneven {
        fn cost(&self, channel: usize, bits: u32) -> u64 {
            (channel as u64 % 3 + 1) * u64::from(bits) + u64::from(bits / 4)
        }
    }

    proptest! {
        #[test]
        fn exact_is_optimal_and_greedy_within_its_gap(seeds in proptest::collection::vec((0.1f64..10.0, 0.0f64..1.0), 1..5), extra in 0u64..40) {
            let loss = curves(&seeds);
            for cost in [&PerEntryBits { m: 3 } as &dyn CostModel, &Uneven] {
                let min: u64 = (0..loss.len()).map(|c| cost.cost(c, 2)).sum();
                let budget = min + extra;
                let a = allocate(&loss, cost, budget).unwrap();
                prop_assert!(a.cost <= budget);
                prop_assert!((a.loss - brute(&loss, cost, budget)).abs() < 1e-9);
                let costs: Vec<Vec<u64>> = (0..loss.len()).map(|c| BITS.map(|b| cost.cost(c, b)).collect()).collect();
                let gr = greedy(&loss, &costs, budget);
                prop_assert!(gr.cost <= budget);
                let Method::Greedy { gap } = gr.method else { unreachable!() };
                prop_assert!(gr.loss <= a.loss + gap + 1e-9, "greedy {} exact {} gap {}", gr.loss, a.loss, gap);
            }
        }
    }

    #[test]
    fn uniform_costs_meet_an_average_budget_exactly() {
        let loss = curves(&(0..64).map(|i| (1.0 + i as f64, (i % 7) as f64 / 7.0)).collect::<Vec<_>>());
        let cost = PerEntryBits { m: 1000 };
        for avg in [2u64, 3, 4, 5, 8] {
            let budget = 64 * 1000 * avg;
            let a = allocate(&loss, &cost, budget).unwrap();
            assert_eq!(a.cost, budget, "avg {avg}");
            let mean = a.bits.iter().map(|&b| f64::from(b)).sum::<f64>() / 64.0;
            assert!((mean - avg as f64).abs() < 1e-12);
        }
        assert!(matches!(allocate(&loss, &cost, 64 * 1000 * 2 - 1), Err(QuantError::BudgetTooSmall { .. })));
        assert!(allocate(&[vec![1.0; 3]], &cost, 10_000).is_err());
    }
}
