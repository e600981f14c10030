use fastquery_math::{Modulus, bit_reverse, roots::primitive_2n_root};

use crate::NttError;

/// Everything a backend needs to run the canonical NTT for one prime and one degree.
///
/// `forward[brv(k)] = psi^k` and `inverse[brv(k)] = psi^{-k}` for `k < N` (index 0 unused by the
/// butterflies but kept for a simple layout); `*_shoup` hold `floor(w * 2^32 / p)` of each entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NttTables {
    n: usize,
    modulus: Modulus,
    psi: u32,
    forward: Vec<u32>,
    forward_shoup: Vec<u32>,
    inverse: Vec<u32>,
    inverse_shoup: Vec<u32>,
    n_inv: u32,
}

impl NttTables {
    /// Builds the tables; fails if `p` is not an NTT-friendly prime for this `n`.
    pub fn new(p: u32, n: usize) -> Result<Self, NttError> {
        let modulus = Modulus::new(u64::from(p))?;
        let psi = primitive_2n_root(modulus, n)?;
        // psi has order 2N, so it is invertible.
        let psi_inv = modulus.pow(psi, 2 * n as u64 - 1);
        let log_n = n.trailing_zeros();
        let mut forward = vec![0u32; n];
        let mut inverse = vec![0u32; n];
        let (mut w, mut w_inv) = (1u32, 1u32);
        for k in 0..n {
            forward[bit_reverse(k, log_n)] = w;
            inverse[bit_reverse(k, log_n)] = w_inv;
            w = modulus.mul(w, psi);
            w_inv = modulus.mul(w_inv, psi_inv);
        }
        let forward_shoup = forward.iter().map(|&x| modulus.shoup(x)).collect();
        let inverse_shoup = inverse.iter().map(|&x| modulus.shoup(x)).collect();
        let n_inv = modulus.pow(n as u32, u64::from(p - 2));
        Ok(Self { n, modulus, psi, forward, forward_shoup, inverse, inverse_shoup, n_inv })
    }

    /// The degree `N`.
    pub fn n(&self) -> usize {
        self.n
    }

    /// The prime.
    pub fn modulus(&self) -> Modulus {
        self.modulus
    }

    /// The canonical primitive `2N`-th root of unity.
    pub fn psi(&self) -> u32 {
        self.psi
    }

    /// `psi^k` at index `brv(k)`.
    pub fn forward(&self) -> &[u32] {
        &self.forward
    }

    /// Shoup companions of [`Self::forward`].
    pub fn forward_shoup(&self) -> &[u32] {
        &self.forward_shoup
    }

    /// `psi^{-k}` at index `brv(k)`.
    pub fn inverse(&self) -> &[u32] {
        &self.inverse
    }

    /// Shoup companions of [`Self::inverse`].
    pub fn inverse_shoup(&self) -> &[u32] {
        &self.inverse_shoup
    }

    /// `N^{-1} mod p`.
    pub fn n_inv(&self) -> u32 {
        self.n_inv
    }
}
