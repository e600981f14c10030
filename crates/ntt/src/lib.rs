//! # fastquery-ntt
//!
//! The negacyclic number-theoretic transform over `Z_p[X]/(X^N + 1)`, defined once for every
//! backend. Sits on `fastquery-math`; the backend trait, the CPU backend and the GPU backends sit
//! on it.
//!
//! ## The canonical NTT domain
//!
//! For a prime `p = 1 mod 2N` let `psi` be the root of [`fastquery_math::roots::primitive_2n_root`].
//! The forward transform of `a(X) = sum_j a_j X^j` is the vector `A` with
//!
//! ```text
//! A[i] = a(psi^(2*brv(i) + 1)) mod p,      0 <= i < N,
//! ```
//!
//! where `brv` reverses `log2(N)` bits, every `A[i]` fully reduced into `[0, p)`. That is the
//! output order of the classic in-place Cooley-Tukey transform with bit-reversed twiddles
//! (Longa-Naehrig 2016; SEAL; tfhe-ntt), so GPU kernels that use the same [`NttTables`] produce
//! the same words. The inverse transform returns coefficients in `[0, p)`, `N^{-1}` included.
//! Pointwise products in this domain are negacyclic products of the polynomials.
//!
//! * [`NttTables`]: twiddles (and their Shoup companions) that every backend uploads.
//! * [`reference`](mod@reference): the portable transform that defines the order, the O(N^2) definition above,
//!   and schoolbook negacyclic products.
//! * [`NttPlan`]: the fast CPU transform (tfhe-ntt, checked against [`reference`](mod@reference) when built).
#![forbid(unsafe_code)]

mod plan;
pub mod reference;
mod tables;

pub use plan::{NttEngine, NttPlan};
pub use tables::NttTables;

use thiserror::Error;

/// Errors of this crate.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum NttError {
    /// The prime or the degree does not admit a negacyclic NTT.
    #[error(transparent)]
    Math(#[from] fastquery_math::MathError),
}

/// The exponent `e` with `A[i] = a(psi^e)` in the canonical order: `2*brv(i) + 1`.
#[inline]
pub fn canonical_exponent(i: usize, log_n: u32) -> usize {
    2 * fastquery_math::bit_reverse(i, log_n) + 1
}
