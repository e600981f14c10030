//! Scheme `bumblebee`: Bumblebee's parameters (Lu et al., NDSS 2025: N = 8192, shares in
//! `Z_{2^64}`) with its matmul split and its response packing, in this engine.
//!
//! * Layout: Cheetah's split with a power-of-two input block `d1`, chosen by bytes
//!   ([`StridedLayout`]); for LLaMA-7B that is `d1 = 4096, d0 = 2`: 8 query ciphertexts and
//!   2,048 products per token, whose channels sit at multiples of `d1`.
//! * Packing: the products are packed `d1`-to-one (PackLWEs on strided ciphertexts, with
//!   `log2(count)` Galois keys, one-time setup), so one response ciphertext carries a whole row.
//! * Modulus: five 31-bit primes (155 bits) for ciphertexts and a 31-bit special prime for
//!   key switching (hybrid: one digit per limb, keys mod `q P`, 186 bits in all), whose noise
//!   the analysis adds before flooding. Bumblebee's own chain is 59 + 55 + 49 bits plus a
//!   49-bit special prime (212 bits); ours is within the same 218-bit limit at N = 8192, with
//!   word-sized primes for every backend. (Until 2026-12-01 this baseline used the RNS gadget
//!   with 16-bit digits and no special prime: 1.7x the key bytes and more transforms per key
//!   switch than its own design.)
//! * The client supplies the one-hot. In SPU, Bumblebee's host, the one-hot of a secret-shared
//!   token id is computed inside MPC first, which costs more than what is measured here.

use std::sync::Arc;

use fastquery_he::{ParamSpec, Params};
use fastquery_pack::StridedLayout;

use crate::{
    ProtocolError,
    blocked::{Design, Packing},
};

/// Wire id of the scheme.
pub const SCHEME_ID: u8 = 3;

/// Digit width of the Galois keys: hybrid key switching, one digit per limb.
pub const DIGIT_BITS: u32 = fastquery_he::galois::HYBRID_DIGIT_BITS;

/// Bumblebee-sized parameters with share ring `2^plain_bits` (64 in Bumblebee).
pub fn params(plain_bits: u32) -> Result<Params, ProtocolError> {
    Ok(Params::new(ParamSpec {
        n: 8192,
        prime_bits: vec![31, 31, 31, 31, 31],
        response_limbs: 3,
        plain_bits,
        flood_bits: 40,
        special_bits: crate::fold::SPECIAL_PRIME_BITS,
    })?)
}

/// The design for an `m x d` table of `table_bits` signed bits.
pub fn design(m: usize, d: usize, table_bits: u32, plain_bits: u32) -> Result<Design, ProtocolError> {
    let params = Arc::new(params(plain_bits)?);
    // Bytes of one query ciphertext (c0 over the chain) and of one packed response (c1 and
    // up to N kept c0 coefficients over the response modulus), for the split's cost model.
    let n = params.n() as f64;
    let query_ct = n * params.log2_q() / 8.0;
    let response_ct = 2.0 * n * params.log2_q_response() / 8.0;
    let layout = StridedLayout::choose(m, d, params.n(), query_ct, response_ct)?;
    let packing = Packing { count: layout.pack, digit_bits: DIGIT_BITS };
    Design::new(SCHEME_ID, "bumblebee", params, Arc::new(layout.inner), Some(packing), table_bits)
}
