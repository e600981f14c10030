use thiserror::Error;

/// Errors of the backend layer.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum BackendError {
    /// A backend that is not compiled in or has no device.
    #[error("backend '{backend}' is unavailable: {reason}")]
    Unavailable { backend: &'static str, reason: String },
    /// Shapes that do not fit together (a caller bug or a malformed message).
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// Input words that are not valid residues, or a parameter out of range.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// Operands that belong to different rings.
    #[error("operands belong to different rings")]
    RingMismatch,
    /// A device-side failure (allocation, launch, transfer).
    #[error("device error: {0}")]
    Device(String),
    /// Ring parameters that admit no NTT.
    #[error(transparent)]
    Ntt(#[from] fastquery_ntt::NttError),
    /// Bad moduli.
    #[error(transparent)]
    Math(#[from] fastquery_math::MathError),
}
