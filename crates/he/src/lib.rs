//! # fastquery-he
//!
//! The RLWE engine every scheme shares, above the backend layer (`fastquery-backend`) and below
//! the layouts and protocol (`fastquery-pack`, `fastquery-protocol`).
//!
//! * [`Params`]: `N`, the RNS modulus chain, the plaintext modulus `t = 2^l`, the flooding margin
//!   `sigma`; refused unless inside the 128-bit classical limits of the HomomorphicEncryption.org
//!   standard, counting every prime any ciphertext or key uses.
//! * [`noise`]: bounds with a stated failure probability (2^-40 over every decrypted
//!   coefficient), which parameter selection uses and tests check against measured noise.
//! * [`SecretKey`], [`PublicKey`], client-side [`client`] encryption (seeded: `c1` travels as 32
//!   bytes) and decryption; server-side [`server`] evaluation on any backend: query expansion,
//!   re-randomisation with a fresh public-key encryption of zero, noise flooding, masking,
//!   modulus switching.
//!
//! ## Encoding
//! A ciphertext `(c0, c1)` of `m in Z_t[X]/(X^N+1)` satisfies `c0 + c1 s = round(q m / t) + e
//! (mod q)`. Scaling by `q/t` with rounding (not `floor(q/t) m`) keeps the error independent of
//! `q mod t`, so `q` need not be a multiple of `t`; decryption is `round(t v / q) mod t`,
//! correct while `|e| < q / (2t) - 1/2`.
#![forbid(unsafe_code)]

pub mod client;
mod error;
pub mod fold;
pub mod galois;
mod keys;
pub mod noise;
mod params;
pub mod rounding;
pub mod sample;
pub mod server;
pub mod share;

pub use error::HeError;
pub use keys::{PublicKey, SecretKey};
pub use params::{ParamSpec, Params, security_limit};
