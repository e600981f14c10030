use thiserror::Error;

/// Errors of the arithmetic layer. Every constructor that takes numbers from a caller validates
/// them and returns one of these instead of panicking.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum MathError {
    /// A modulus outside `3 ..= 2^31 - 1` or even.
    #[error("modulus {0} is not an odd integer in 3..2^31 (the engine's word bound)")]
    BadModulus(u64),
    /// A modulus that must be prime is not.
    #[error("modulus {0} is not prime")]
    NotPrime(u64),
    /// The ring degree is not a power of two in the supported range.
    #[error("ring degree {0} is not a power of two in 2..=2^17")]
    BadDegree(usize),
    /// `p` is not `1 mod 2N`, so no primitive `2N`-th root of unity exists.
    #[error("prime {p} is not 1 mod 2N for N = {n}: no negacyclic NTT exists")]
    NotNttFriendly { p: u32, n: usize },
    /// Not enough primes of the requested size.
    #[error("only {found} primes of {bits} bits are 1 mod {two_n}, {wanted} wanted")]
    NotEnoughPrimes { bits: u32, two_n: usize, wanted: usize, found: usize },
    /// Prime bit size outside the supported range.
    #[error("prime size {0} bits is outside 10..=31")]
    BadPrimeBits(u32),
    /// An RNS basis with no primes or a repeated prime.
    #[error("RNS basis is empty or repeats a prime")]
    BadBasis,
    /// Residue vector of the wrong length or with a residue not reduced.
    #[error("residues do not match the basis: {0}")]
    BadResidues(String),
}
