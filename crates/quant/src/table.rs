use fastquery_table::{IntTable, Table};
use rayon::prelude::*;

use crate::{
    Allocation, BITS, ChannelQuant, CostModel, QuantError, allocate,
    channel::{Histogram, quantize_weighted},
};

/// How much an error in a channel matters (the loss proxy that the allocation minimises).
#[derive(Clone, Debug, PartialEq)]
pub enum Sensitivity {
    /// Every channel alike: plain squared error.
    Uniform,
    /// The paper's rule: squared error weighted by the channel's mean absolute value.
    MeanAbs,
    /// Squared error as the first RMSNorm sees it: row `k`'s error divided by `rms(E[k])`,
    /// channel `c`'s by its norm gain `g_c` (all 1 when the gains are unknown). The embedding
    /// feeds nothing else in a LLaMA-style model, so this is the error the next layer receives.
    RmsNorm {
        /// The first RMSNorm's gains, if known.
        gains: Option<Vec<f32>>,
    },
    /// The paper's rule with rows weighted by a Zipf prior on token frequency, `1 / (k + k0)`
    /// for token id `k`: byte-level BPE vocabularies list tokens in merge order, and a merge
    /// that came earlier was more frequent in the tokenizer's training corpus, so a low id is
    /// a frequent token whose error is paid more often.
    MeanAbsZipf {
        /// The offset `k0` (flattens the head of the prior).
        k0: f64,
    },
}

impl Sensitivity {
    /// The default: the one that measured best on a real model's perplexity (SmolLM2,
    /// docs/BENCHMARKS.md), the paper's rule with the Zipf prior at `k0 = 100`.
    pub fn recommended() -> Self {
        Self::MeanAbsZipf { k0: 100.0 }
    }
}

/// A quantized table: `Q[k][c]` in `[0, 2^bits_c)`, real value `scale_c * (Q - zero_c)`.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantTable {
    m: usize,
    d: usize,
    channels: Vec<ChannelQuant>,
    q: Vec<u8>,
}

const MAGIC: &[u8; 4] = b"FQQT";
const VERSION: u8 = 1;

impl QuantTable {
    /// Vocabulary size.
    pub fn m(&self) -> usize {
        self.m
    }

    /// Channels.
    pub fn d(&self) -> usize {
        self.d
    }

    /// Per-channel quantizers.
    pub fn channels(&self) -> &[ChannelQuant] {
        &self.channels
    }

    /// `Q[k][c]`.
    pub fn get(&self, k: usize, c: usize) -> u32 {
        u32::from(self.q[k * self.d + c])
    }

    /// The dequantized entry.
    pub fn dequantize(&self, k: usize, c: usize) -> f32 {
        self.channels[c].dequantize(self.get(k, c))
    }

    /// The whole table dequantized: what a model's input lookup sees in place of the original.
    pub fn dequantized(&self) -> Table {
        let data: Vec<f32> = (0..self.m * self.d).map(|i| self.dequantize(i / self.d, i % self.d)).collect();
        Table::new(self.m, self.d, data).unwrap_or_else(|_| unreachable!("the shape is the table's own"))
    }

    /// Average bit width.
    pub fn avg_bits(&self) -> f64 {
        self.channels.iter().map(|c| f64::from(c.bits)).sum::<f64>() / self.d as f64
    }

    /// How many channels use each width of [`BITS`].
    pub fn histogram(&self) -> Vec<(u32, usize)> {
        BITS.map(|b| (b, self.channels.iter().filter(|c| c.bits == b).count())).collect()
    }

    /// `||E - dequant(Q)||_F / ||E||_F`.
    pub fn rel_error(&self, table: &Table) -> f64 {
        let (num, den) = table
            .data()
            .par_chunks(self.d)
            .enumerate()
            .map(|(k, row)| {
                row.iter().enumerate().fold((0f64, 0f64), |(n, d), (c, &x)| {
                    (n + f64::from(x - self.dequantize(k, c)).powi(2), d + f64::from(x).powi(2))
                })
            })
            .reduce(|| (0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
        (num / den.max(f64::MIN_POSITIVE)).sqrt()
    }

    /// The integer table the schemes query (its shares are `Q`; scale and zero are public).
    pub fn to_int_table(&self) -> Result<IntTable, QuantError> {
        let max_bits = self.channels.iter().map(|c| c.bits).max().unwrap_or(2);
        IntTable::new(
            self.m,
            self.d,
            self.q.iter().map(|&v| i32::from(v)).collect(),
            max_bits + 1,
            self.channels.iter().map(|c| c.scale).collect(),
            self.channels.iter().map(|c| c.zero).collect(),
        )
        .map_err(|e| QuantError::Invalid(e.to_string()))
    }

    /// Serialises: magic, version, `m`, `d`, per channel (bits, scale, zero), then `Q` row-major.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(13 + 9 * self.d + self.q.len());
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&(self.m as u32).to_le_bytes());
        out.extend_from_slice(&(self.d as u32).to_le_bytes());
        for c in &self.channels {
            out.push(c.bits as u8);
            out.extend_from_slice(&c.scale.to_le_bytes());
            out.extend_from_slice(&c.zero.to_le_bytes());
        }
        out.extend_from_slice(&self.q);
        out
    }

    /// Loads what [`Self::to_bytes`] wrote, checking every field.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, QuantError> {
        let bad = |s: &str| QuantError::Format(s.into());
        if bytes.len() < 13 || &bytes[..4] != MAGIC {
            return Err(bad("not a FastQuery quantized table"));
        }
        if bytes[4] != VERSION {
            return Err(QuantError::Format(format!("version {} (this build reads {VERSION})", bytes[4])));
        }
        let word =
            |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]) as usize;
        let (m, d) = (word(5), word(9));
        let need = d
            .checked_mul(9)
            .and_then(|h| m.checked_mul(d).and_then(|q| q.checked_add(h)))
            .and_then(|x| x.checked_add(13));
        if need != Some(bytes.len()) || m == 0 || d == 0 {
            return Err(QuantError::Format(format!("{} bytes do not hold a {m} x {d} table", bytes.len())));
        }
        let mut channels = Vec::with_capacity(d);
        for c in 0..d {
            let at = 13 + 9 * c;
            let bits = u32::from(bytes[at]);
            let scale = f32::from_le_bytes([bytes[at + 1], bytes[at + 2], bytes[at + 3], bytes[at + 4]]);
            let zero = i32::from_le_bytes([bytes[at + 5], bytes[at + 6], bytes[at + 7], bytes[at + 8]]);
            if !(BITS.contains(&bits) && scale.is_finite() && scale > 0.0) || zero < 0 || zero >= 1 << bits {
                return Err(QuantError::Format(format!(
                    "channel {c}: bits {bits}, scale {scale}, zero {zero}"
                )));
            }
            channels.push(ChannelQuant { bits, scale, zero });
        }
        let q = bytes[13 + 9 * d..].to_vec();
        if let Some(i) = q.iter().enumerate().position(|(i, &v)| u32::from(v) >> channels[i % d].bits != 0) {
            return Err(QuantError::Format(format!("entry {i} exceeds its channel's width")));
        }
        Ok(Self { m, d, channels, q })
    }
}

/// Quantizes `table` with bit widths chosen under `budget` in `cost`'s units, minimising the
/// sensitivity-weighted squared error; `refine` searches each channel's clipping range.
pub fn quantize_table(
    table: &Table,
    sensitivity: &Sensitivity,
    cost: &dyn CostModel,
    budget: u64,
    refine: bool,
) -> Result<(QuantTable, Allocation), QuantError> {
    let (m, d) = (table.m(), table.d());
    if let Sensitivity::RmsNorm { gains: Some(g) } = sensitivity
        && g.len() != d
    {
        return Err(QuantError::Invalid(format!("{} norm gains for {d} channels", g.len())));
    }
    if let Sensitivity::MeanAbsZipf { k0 } = sensitivity
        && !(k0.is_finite() && *k0 >= 0.0)
    {
        return Err(QuantError::Invalid(format!("Zipf offset k0 = {k0}: must be finite and non-negative")));
    }
    // Row weights for the RMSNorm proxy: 1 / mean square of each row.
    let row_w: Vec<f64> = match sensitivity {
        Sensitivity::RmsNorm { .. } => table
            .data()
            .par_chunks(d)
            .map(|r| {
                let ms = r.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / d as f64;
                1.0 / ms.max(1e-30)
            })
            .collect(),
        Sensitivity::MeanAbsZipf { k0 } => (0..m).map(|k| 1.0 / (k as f64 + k0.max(1.0))).collect(),
        _ => vec![1.0; m],
    };
    let rw = matches!(sensitivity, Sensitivity::RmsNorm { .. } | Sensitivity::MeanAbsZipf { .. })
        .then_some(row_w.as_slice());
    // Columns are gathered a block of channels at a time (one row-major pass per block, a
    // small buffer), not one strided pass per channel.
    const BLOCK: usize = 64;
    let block_columns = |c0: usize| -> Vec<Vec<f32>> {
        let w = BLOCK.min(d - c0);
        let mut cols = vec![Vec::with_capacity(m); w];
        for row in table.data().chunks_exact(d) {
            for (col, &x) in cols.iter_mut().zip(&row[c0..c0 + w]) {
                col.push(x);
            }
        }
        cols
    };
    let blocks: Vec<usize> = (0..d).step_by(BLOCK).collect();
    // Per channel: losses at every width (min/max quantizer) and the channel weight.
    let loss: Vec<Vec<f64>> = blocks
        .par_iter()
        .flat_map_iter(|&c0| block_columns(c0).into_iter().enumerate().map(move |(i, col)| (c0 + i, col)))
        .map(|(c, col)| {
            let weight = match sensitivity {
                Sensitivity::Uniform => 1.0,
                Sensitivity::MeanAbs | Sensitivity::MeanAbsZipf { .. } => {
                    col.iter().map(|x| f64::from(x.abs())).sum::<f64>() / m as f64
                }
                Sensitivity::RmsNorm { gains } => gains.as_ref().map_or(1.0, |g| f64::from(g[c]).powi(2)),
            };
            let hist = Histogram::new(&col, rw);
            let (lo, hi) = hist.range();
            // Losses at min/max: the refined losses were measured too (the allocation then
            // favours heavy-tailed channels less) and gave SmolLM2 a worse perplexity at 4 bits
            // (+0.71% against +0.44% with the Zipf prior).
            BITS.map(|b| weight * hist.sq_error(&ChannelQuant::over(lo, hi, b))).collect()
        })
        .collect();
    let alloc = allocate(&loss, cost, budget)?;
    let channels: Vec<(ChannelQuant, Vec<u8>)> = blocks
        .par_iter()
        .flat_map_iter(|&c0| block_columns(c0).into_iter().enumerate().map(move |(i, col)| (c0 + i, col)))
        .map(|(c, col)| {
            let (cq, _) = quantize_weighted(&col, rw, alloc.bits[c], refine);
            let q = col.iter().map(|&x| cq.quantize(x) as u8).collect();
            (cq, q)
        })
        .collect();
    let mut q = vec![0u8; m * d];
    q.par_chunks_mut(d).enumerate().for_each(|(k, row)| {
        row.iter_mut().zip(&channels).for_each(|(v, (_, col))| *v = col[k]);
    });
    Ok((QuantTable { m, d, channels: channels.into_iter().map(|c| c.0).collect(), q }, alloc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PerEntryBits;

    fn table() -> Table {
        Table::synthetic(600, 48, 3)
    }

    #[test]
    fn budget_met_exactly_and_mixed_beats_uniform() {
        let t = table();
        let cost = PerEntryBits { m: t.m() };
        for avg in [2u64, 3, 4, 6] {
            let budget = cost.m as u64 * t.d() as u64 * avg;
            let (mixed, a) = quantize_table(&t, &Sensitivity::Uniform, &cost, budget, false).unwrap();
            assert_eq!(a.cost, budget, "avg {avg}");
            assert!((mixed.avg_bits() - avg as f64).abs() < 1e-12);
            // Uniform precision is one feasible allocation, so the optimum is at least as good
            // (in the allocation's own loss: the histogram's, at min/max).
            let uniform_loss: f64 = (0..t.d())
                .map(|c| {
                    let col: Vec<f32> = (0..t.m()).map(|k| t.row(k)[c]).collect();
                    let h = Histogram::new(&col, None);
                    let (lo, hi) = h.range();
                    h.sq_error(&ChannelQuant::over(lo, hi, avg as u32))
                })
                .sum();
            assert!(a.loss <= uniform_loss * (1.0 + 1e-9), "avg {avg}: {} vs {uniform_loss}", a.loss);
            if avg < 6 {
                assert!(mixed.rel_error(&t) < 1.0);
            }
        }
    }

    #[test]
    fn zipf_prior_meets_the_budget_and_favours_low_ids() {
        let t = table();
        let cost = PerEntryBits { m: t.m() };
        let budget = cost.m as u64 * t.d() as u64 * 3;
        let zipf = Sensitivity::MeanAbsZipf { k0: 10.0 };
        let (qz, a) = quantize_table(&t, &zipf, &cost, budget, true).unwrap();
        assert_eq!(a.cost, budget);
        let (qm, _) = quantize_table(&t, &Sensitivity::MeanAbs, &cost, budget, true).unwrap();
        // The first rows (the frequent tokens under the prior) are reproduced at least as well
        // as without the prior, summed over the head of the vocabulary.
        let head_err = |q: &QuantTable| -> f64 {
            (0..30)
                .flat_map(|k| (0..t.d()).map(move |c| (k, c)))
                .map(|(k, c)| f64::from(t.row(k)[c] - q.dequantize(k, c)).powi(2))
                .sum()
        };
        assert!(head_err(&qz) <= head_err(&qm) * 1.0001, "{} vs {}", head_err(&qz), head_err(&qm));
        for k0 in [f64::NAN, -1.0, f64::INFINITY] {
            let bad = Sensitivity::MeanAbsZipf { k0 };
            assert!(matches!(quantize_table(&t, &bad, &cost, budget, true), Err(QuantError::Invalid(_))));
        }
    }

    #[test]
    fn refinement_lowers_the_error() {
        let t = table();
        let cost = PerEntryBits { m: t.m() };
        let budget = cost.m as u64 * t.d() as u64 * 3;
        let (plain, _) = quantize_table(&t, &Sensitivity::MeanAbs, &cost, budget, false).unwrap();
        let (refined, _) = quantize_table(&t, &Sensitivity::MeanAbs, &cost, budget, true).unwrap();
        assert!(refined.rel_error(&t) < plain.rel_error(&t));
    }

    #[test]
    fn serialises_and_loads_back_identically() {
        let t = table();
        let cost = PerEntryBits { m: t.m() };
        let (qt, _) =
            quantize_table(&t, &Sensitivity::RmsNorm { gains: None }, &cost, cost.m as u64 * 48 * 4, true)
                .unwrap();
        let bytes = qt.to_bytes();
        assert_eq!(QuantTable::from_bytes(&bytes).unwrap(), qt);
        // Truncated, wrong magic, wrong version, a channel out of range, an entry too wide.
        assert!(QuantTable::from_bytes(&bytes[..bytes.len() - 1]).is_err());
        let mut b = bytes.clone();
        b[0] = b'X';
        assert!(QuantTable::from_bytes(&b).is_err());
        let mut b = bytes.clone();
        b[4] = 9;
        assert!(QuantTable::from_bytes(&b).is_err());
        let mut b = bytes.clone();
        b[13] = 9;
        assert!(QuantTable::from_bytes(&b).is_err());
        let narrow = qt.channels().iter().position(|c| c.bits < 8).unwrap();
        let mut b = bytes.clone();
        b[13 + 9 * 48 + narrow] = 255;
        assert!(QuantTable::from_bytes(&b).is_err());
        // The integer table keeps Q, scale and zero.
        let it = qt.to_int_table().unwrap();
        assert_eq!(it.get(5, 7) as u32, qt.get(5, 7));
        assert_eq!(it.zero()[7], qt.channels()[7].zero);
    }

    #[test]
    fn dequantization_error_within_one_step_per_channel() {
        let t = table();
        let cost = PerEntryBits { m: t.m() };
        let (qt, _) =
            quantize_table(&t, &Sensitivity::MeanAbs, &cost, cost.m as u64 * 48 * 5, false).unwrap();
        for k in 0..t.m() {
            for c in 0..t.d() {
                let e = (t.row(k)[c] - qt.dequantize(k, c)).abs();
                assert!(e <= qt.channels()[c].scale * 1.0001 + 1e-7);
            }
        }
    }
}
