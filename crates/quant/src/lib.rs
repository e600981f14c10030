//! # fastquery-quant
//!
//! FastQuery's first idea: an embedding table tolerates low-bit quantization, so fewer bits need
//! to travel. This crate chooses a bit width per channel (column) and quantizes each channel
//! asymmetrically with its own scale and zero point. It sits on `fastquery-table`; the schemes
//! supply the cost model that turns bit widths into bytes on the wire.
//!
//! * [`quantize_channel`]: asymmetric uniform quantization of one column, with a data-free
//!   refinement (the clipping range that minimises the column's squared error), searched on a
//!   [`Histogram`] of the column.
//! * [`Sensitivity`]: how much an error in a channel matters. Three proxies:
//!   - `MeanAbs`: the paper's rule, a channel's mean absolute value;
//!   - `MeanAbsZipf`: the paper's rule with rows weighted by a Zipf prior on token frequency
//!     (BPE vocabularies are in merge order): the default, [`Sensitivity::recommended`], best
//!     on SmolLM2's perplexity;
//!   - `RmsNorm`: the squared error as the model's first RMSNorm sees it. Each row's error is
//!     divided by the row's RMS and weighted by the norm gain when known. LLaMA-style models
//!     normalise the embedding before anything reads it, which makes this the better-founded
//!     choice.
//! * [`allocate`]: bit widths minimising the sensitivity-weighted error under a budget in the
//!   scheme's own cost ([`CostModel`]). It is exact (multiple-choice knapsack by dynamic
//!   programming) when the budget grid is small enough; otherwise a convex-hull greedy, whose
//!   gap is at most one channel's largest step (reported).
//! * [`QuantTable`]: the result, which serialises and loads back bit for bit.
#![forbid(unsafe_code)]

mod alloc;
mod channel;
mod table;

pub use alloc::{Allocation, CostModel, Method, PerEntryBits, allocate};
pub use channel::{ChannelQuant, Histogram, quantize_channel};
pub use table::{QuantTable, Sensitivity, quantize_table};

use thiserror::Error;

/// The candidate bit widths.
pub const BITS: std::ops::RangeInclusive<u32> = 2..=8;

/// Errors of this crate.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum QuantError {
    /// A budget below the cheapest allocation.
    #[error("budget {budget} is below the cheapest allocation ({min})")]
    BudgetTooSmall { budget: u64, min: u64 },
    /// Bad arguments.
    #[error("invalid: {0}")]
    Invalid(String),
    /// A malformed serialised table.
    #[error("malformed quantized table: {0}")]
    Format(String),
}
