//! # fastquery-table
//!
//! The tables a private query reads, independent of any cryptography. Sits beside the math
//! crates at the bottom of the graph; the schemes (`fastquery-protocol`), the quantizer, the CLI,
//! the benches and the tests all take their workloads from here, so a name means one table.
//!
//! * [`Workload`]: `tiny` (tests and the demo), `llama-7b` (32000 x 4096) and `llama-30b`
//!   (32000 x 6656). The LLaMA tables are **synthetic** (no weights are reachable here): entries
//!   are Gaussian with per-channel standard deviations drawn log-normally around 0.02, and a few
//!   outlier channels ten times wider, generated deterministically from a seed. Traffic and
//!   speed do not depend on the values; accuracy is measured on a real model elsewhere.
//! * [`Table`]: real-valued `m x d`, row `k` is token `k`'s embedding.
//! * [`IntTable`]: the integers `Q[k][c]` whose shares a query returns, with the public
//!   per-channel scale and zero point that turn them back into reals, and the signed bit width
//!   that bounds them (public: it sizes the noise analysis).
#![forbid(unsafe_code)]

pub mod load;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rayon::prelude::*;
use thiserror::Error;

/// Errors of this crate.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TableError {
    /// An unknown workload name.
    #[error("unknown workload '{0}' (known: tiny, llama-7b, llama-30b)")]
    UnknownWorkload(String),
    /// Inconsistent dimensions or values.
    #[error("invalid table: {0}")]
    Invalid(String),
    /// A file that cannot be read.
    #[error("cannot read {path}: {reason}")]
    Io { path: String, reason: String },
    /// A file in an unknown or malformed format.
    #[error("{path}: {reason}")]
    Format { path: String, reason: String },
    /// No tensor of that name in the file.
    #[error("{path} has no tensor '{name}' (it has: {available})")]
    NoTensor { path: String, name: String, available: String },
}

/// A named table shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Workload {
    /// 512 x 64, for tests and the demo.
    Tiny,
    /// LLaMA-7B's token embedding shape, 32000 x 4096.
    Llama7b,
    /// LLaMA-30B's token embedding shape, 32000 x 6656.
    Llama30b,
}

impl Workload {
    /// Every workload.
    pub const ALL: [Workload; 3] = [Workload::Tiny, Workload::Llama7b, Workload::Llama30b];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tiny => "tiny",
            Self::Llama7b => "llama-7b",
            Self::Llama30b => "llama-30b",
        }
    }

    /// Looks a workload up by name.
    pub fn parse(name: &str) -> Result<Self, TableError> {
        Self::ALL
            .into_iter()
            .find(|w| w.name() == name)
            .ok_or_else(|| TableError::UnknownWorkload(name.into()))
    }

    /// `(m, d)`: vocabulary and channels.
    pub fn shape(self) -> (usize, usize) {
        match self {
            Self::Tiny => (512, 64),
            Self::Llama7b => (32000, 4096),
            Self::Llama30b => (32000, 6656),
        }
    }

    /// The workload's synthetic table from `seed` (the same seed gives the same table).
    pub fn synthetic(self, seed: u64) -> Table {
        let (m, d) = self.shape();
        Table::synthetic(m, d, seed)
    }
}

/// A real-valued `m x d` table, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    m: usize,
    d: usize,
    data: Vec<f32>,
}

impl Table {
    /// Wraps row-major data.
    pub fn new(m: usize, d: usize, data: Vec<f32>) -> Result<Self, TableError> {
        if m == 0 || d == 0 || data.len() != m * d {
            return Err(TableError::Invalid(format!("{} values for {m} x {d}", data.len())));
        }
        if let Some(i) = data.iter().position(|x| !x.is_finite()) {
            return Err(TableError::Invalid(format!("entry {i} is not finite")));
        }
        Ok(Self { m, d, data })
    }

    /// A synthetic table (see the crate docs), generated in parallel with one ChaCha20 stream per
    /// row so the result does not depend on the thread count.
    pub fn synthetic(m: usize, d: usize, seed: u64) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let std: Vec<f32> = (0..d)
            .map(|_| {
                let outlier = rng.random_range(0..100) == 0;
                let s = 0.02 * (0.5 * gaussian(&mut rng)).exp();
                (if outlier { 10.0 * s } else { s }) as f32
            })
            .collect();
        let mut data = vec![0f32; m * d];
        data.par_chunks_mut(d).enumerate().for_each(|(k, row)| {
            let mut r = ChaCha20Rng::seed_from_u64(seed ^ (k as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            row.iter_mut().zip(&std).for_each(|(x, &s)| *x = s * gaussian(&mut r) as f32);
        });
        Self { m, d, data }
    }

    /// Vocabulary size.
    pub fn m(&self) -> usize {
        self.m
    }

    /// Channels.
    pub fn d(&self) -> usize {
        self.d
    }

    /// Row `k`.
    pub fn row(&self, k: usize) -> &[f32] {
        &self.data[k * self.d..(k + 1) * self.d]
    }

    /// All entries, row-major.
    pub fn data(&self) -> &[f32] {
        &self.data
    }
}

fn gaussian<R: Rng>(rng: &mut R) -> f64 {
    // Box-Muller; u1 in (0, 1] so the logarithm is finite.
    let u1 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// The integer table a query returns shares of: `Q[k][c]`, with `real ~ scale[c] * (Q - zero[c])`.
#[derive(Clone, Debug, PartialEq)]
pub struct IntTable {
    m: usize,
    d: usize,
    values: Vec<i32>,
    /// Signed bit width bounding every entry: `|Q| < 2^(bits - 1)`.
    bits: u32,
    scale: Vec<f32>,
    zero: Vec<i32>,
}

impl IntTable {
    /// Wraps integers; checks the bound.
    pub fn new(
        m: usize,
        d: usize,
        values: Vec<i32>,
        bits: u32,
        scale: Vec<f32>,
        zero: Vec<i32>,
    ) -> Result<Self, TableError> {
        if m == 0
            || d == 0
            || values.len() != m * d
            || scale.len() != d
            || zero.len() != d
            || !(2..=31).contains(&bits)
        {
            return Err(TableError::Invalid(format!(
                "{m} x {d} table with {} values, {bits} bits",
                values.len()
            )));
        }
        let bound = 1i64 << (bits - 1);
        if let Some(i) = values.iter().position(|&v| i64::from(v).abs() >= bound) {
            return Err(TableError::Invalid(format!("entry {i} = {} exceeds {bits} signed bits", values[i])));
        }
        Ok(Self { m, d, values, bits, scale, zero })
    }

    /// Fixed point with `frac_bits` fractional bits, clamped to `bits` signed bits (Cheetah's
    /// encoding of a real table: 12 fractional bits).
    pub fn fixed_point(table: &Table, frac_bits: u32, bits: u32) -> Result<Self, TableError> {
        let lim = (1i64 << (bits - 1)) - 1;
        let f = 2f64.powi(frac_bits as i32);
        let values = table
            .data()
            .par_iter()
            .map(|&x| (f64::from(x) * f).round().clamp(-lim as f64, lim as f64) as i32)
            .collect();
        Self::new(table.m(), table.d(), values, bits, vec![(1.0 / f) as f32; table.d()], vec![0; table.d()])
    }

    /// Vocabulary size.
    pub fn m(&self) -> usize {
        self.m
    }

    /// Channels.
    pub fn d(&self) -> usize {
        self.d
    }

    /// `Q[k][c]`.
    pub fn get(&self, k: usize, c: usize) -> i32 {
        self.values[k * self.d + c]
    }

    /// Row `k`.
    pub fn row(&self, k: usize) -> &[i32] {
        &self.values[k * self.d..(k + 1) * self.d]
    }

    /// The signed bit width.
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// Public per-channel scales.
    pub fn scale(&self) -> &[f32] {
        &self.scale
    }

    /// Public per-channel zero points.
    pub fn zero(&self) -> &[i32] {
        &self.zero
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workloads_parse_and_have_the_paper_shapes() {
        assert_eq!(Workload::parse("llama-7b").unwrap().shape(), (32000, 4096));
        assert_eq!(Workload::parse("llama-30b").unwrap().shape(), (32000, 6656));
        assert!(matches!(Workload::parse("gpt-5"), Err(TableError::UnknownWorkload(_))));
    }

    #[test]
    fn synthetic_tables_are_deterministic_with_channel_spread() {
        let a = Table::synthetic(300, 200, 5);
        assert_eq!(a, Table::synthetic(300, 200, 5));
        assert_ne!(a, Table::synthetic(300, 200, 6));
        let std: Vec<f64> = (0..200)
            .map(|c| ((0..300).map(|k| f64::from(a.row(k)[c]).powi(2)).sum::<f64>() / 300.0).sqrt())
            .collect();
        let (lo, hi) = std.iter().fold((f64::MAX, 0f64), |(l, h), &s| (l.min(s), h.max(s)));
        assert!(lo > 0.001 && hi / lo > 3.0, "channel spreads {lo}..{hi}");
        let mean = std.iter().sum::<f64>() / 200.0;
        assert!((0.01..0.06).contains(&mean), "mean std {mean}");
    }

    #[test]
    fn fixed_point_rounds_and_clamps() {
        let t = Table::new(1, 4, vec![0.5, -0.25, 100.0, 0.000_1]).unwrap();
        let q = IntTable::fixed_point(&t, 12, 16).unwrap();
        assert_eq!(q.row(0), &[2048, -1024, 32767, 0]);
        assert!(IntTable::new(1, 1, vec![1 << 15], 16, vec![1.0], vec![0]).is_err());
        assert!(Table::new(1, 2, vec![f32::NAN, 0.0]).is_err());
        assert!(Table::new(2, 2, vec![0.0; 3]).is_err());
    }
}
