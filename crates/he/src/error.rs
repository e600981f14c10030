use thiserror::Error;

/// Errors of the HE layer.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum HeError {
    /// The modulus is too large for the ring degree at 128-bit security.
    #[error(
        "insecure parameters: N = {n} allows log2 q <= {limit} at 128-bit security (HomomorphicEncryption.org), this set uses {log2_q:.1}"
    )]
    Insecure { n: usize, log2_q: f64, limit: u32 },
    /// Inconsistent or unsupported parameters.
    #[error("invalid parameters: {0}")]
    BadParams(String),
    /// The noise bound exceeds what decryption tolerates.
    #[error("noise budget exceeded: {0}")]
    NoiseBudget(String),
    /// Data that does not match the parameters (lengths, residues).
    #[error("invalid input: {0}")]
    BadInput(String),
    /// A backend failure.
    #[error(transparent)]
    Backend(#[from] fastquery_backend::BackendError),
}
