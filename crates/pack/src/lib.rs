//! # fastquery-pack
//!
//! Layouts: how a lookup `y = E^T onehot(k)` (`E` is `m x d`) becomes products of polynomials
//! in `Z[X]/(X^N + 1)`. Pure index arithmetic, no cryptography: the protocol crate encrypts what
//! a layout places. Sits beside the HE engine, below the protocol.
#![forbid(unsafe_code)]

mod block;
mod cheetah;

pub use block::{BlockLayout, IronLayout, StridedLayout};
pub use cheetah::CheetahLayout;

use thiserror::Error;

/// Errors of this crate.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PackError {
    /// Dimensions that admit no layout.
    #[error("no layout for m = {m}, d = {d}, N = {n}")]
    NoLayout { m: usize, d: usize, n: usize },
    /// A group of tokens the layout does not take at once.
    #[error("{tokens} tokens in a group of at most {group}")]
    Group { tokens: usize, group: usize },
    /// A token id outside the vocabulary.
    #[error("token id {id} is outside the vocabulary of {m}")]
    TokenOutOfRange { id: usize, m: usize },
}
