//! Run-time choice of the compute backend. Library code is generic over
//! [`fastquery_backend::Backend`]; this enum is where the binary picks one.

use std::{str::FromStr, sync::Arc};

use fastquery_backend::{Backend, BackendError};
use fastquery_cpu::CpuBackend;

/// A backend named on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    Cpu,
    Cuda,
    Wgpu,
}

impl FromStr for BackendKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda),
            "wgpu" => Ok(Self::Wgpu),
            other => Err(format!("unknown backend '{other}' (expected cpu, cuda or wgpu)")),
        }
    }
}

/// An opened backend. GPU variants join this enum behind their cargo features.
#[derive(Debug)]
pub enum AnyBackend {
    Cpu(Arc<CpuBackend>),
}

impl BackendKind {
    /// Opens the backend, or says why it cannot be used.
    pub fn open(self, threads: Option<usize>) -> Result<AnyBackend, BackendError> {
        match self {
            Self::Cpu => {
                let cpu = match threads {
                    Some(t) => CpuBackend::with_threads(t)?,
                    None => CpuBackend::new(),
                };
                Ok(AnyBackend::Cpu(Arc::new(cpu)))
            }
            Self::Cuda => Err(BackendError::Unavailable {
                backend: "cuda",
                reason: "this build has no CUDA backend (it arrives as the crate fastquery-cuda behind \
                         the cargo feature `cuda`; see docs/ARCHITECTURE.md); use --backend cpu"
                    .into(),
            }),
            Self::Wgpu => Err(BackendError::Unavailable {
                backend: "wgpu",
                reason: "this build has no wgpu backend (it arrives as the crate fastquery-wgpu behind \
                         the cargo feature `wgpu`; see docs/ARCHITECTURE.md); use --backend cpu"
                    .into(),
            }),
        }
    }
}

impl AnyBackend {
    /// The CPU backend, when that is what was opened.
    pub fn info(&self) -> fastquery_backend::BackendInfo {
        match self {
            Self::Cpu(b) => b.info(),
        }
    }
}
