//! # fastquery-math
//!
//! The bottom of the crate graph: arithmetic modulo the engine's word-sized primes.
//!
//! * [`Modulus`]: a prime `p < 2^31` with its Barrett and Shoup constants. Every backend (CPU,
//!   CUDA, WGSL) computes with 32-bit words; a 31-bit bound leaves one spare bit so that sums of
//!   two residues never overflow and lazy reductions have head room (see `docs/ARCHITECTURE.md`,
//!   "Word size").
//! * [`primes`]: deterministic primality and generation of NTT-friendly primes `p = 1 mod 2N`.
//! * [`roots`]: the primitive `2N`-th root of unity that fixes the canonical NTT domain.
//! * [`RnsBasis`]: a residue number system over several such primes, with exact CRT composition
//!   and decomposition through big integers.
//!
//! Nothing here knows about polynomials; `fastquery-ntt` builds the transforms on top.
#![forbid(unsafe_code)]

mod error;
mod modulus;
pub mod primes;
mod rns;
pub mod roots;

pub use error::MathError;
pub use modulus::{MAX_MODULUS_BITS, Modulus};
pub use rns::RnsBasis;

/// Reverses the lowest `bits` bits of `x` (`bits = 0` gives 0).
#[inline]
pub fn bit_reverse(x: usize, bits: u32) -> usize {
    if bits == 0 { 0 } else { x.reverse_bits() >> (usize::BITS - bits) }
}

#[cfg(test)]
mod tests {
    use super::bit_reverse;

    #[test]
    fn bit_reverse_is_an_involution_and_reverses() {
        for bits in 0..12u32 {
            for x in 0..(1usize << bits) {
                let r = bit_reverse(x, bits);
                assert!(r < (1usize << bits).max(1));
                assert_eq!(bit_reverse(r, bits), x);
                for b in 0..bits {
                    assert_eq!((x >> b) & 1, (r >> (bits - 1 - b)) & 1);
                }
            }
        }
    }
}
