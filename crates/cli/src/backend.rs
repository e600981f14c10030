//! Run-time choice of the compute backend. Library code is generic over
//! [`fastquery_backend::Backend`]; this enum is where the binary picks one.

use std::{str::FromStr, sync::Arc};

use fastquery_backend::{Backend, BackendError};
use fastquery_cpu::{CpuBackend, MacKernel};

/// A backend named on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    Cpu,
    Cuda,
    /// The CUDA backend's code on the CPU emulator of its kernels (feature `cuda-emulator`).
    CudaEmulator,
    Wgpu,
}

impl FromStr for BackendKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda),
            "cuda-emulator" => Ok(Self::CudaEmulator),
            "wgpu" => Ok(Self::Wgpu),
            other => Err(format!("unknown backend '{other}' (expected cpu, cuda, cuda-emulator or wgpu)")),
        }
    }
}

/// An opened backend. GPU variants exist only when their cargo feature is on.
#[derive(Debug)]
pub enum AnyBackend {
    Cpu(Arc<CpuBackend>),
    #[cfg(feature = "cuda")]
    Cuda(Arc<fastquery_cuda::CudaBackend>),
    #[cfg(feature = "wgpu")]
    Wgpu(Arc<fastquery_wgpu::WgpuBackend>),
}

/// Runs `$body` with `$b` bound to the concrete backend (`&Arc<B>`), whichever was opened:
/// library code stays generic, the binary dispatches once.
#[macro_export]
macro_rules! with_backend {
    ($any:expr, $b:ident => $body:expr) => {
        match $any {
            $crate::backend::AnyBackend::Cpu($b) => $body,
            #[cfg(feature = "cuda")]
            $crate::backend::AnyBackend::Cuda($b) => $body,
            #[cfg(feature = "wgpu")]
            $crate::backend::AnyBackend::Wgpu($b) => $body,
        }
    };
}

impl BackendKind {
    /// Opens the backend, or says why it cannot be used.
    pub fn open(self, threads: Option<usize>) -> Result<AnyBackend, BackendError> {
        self.open_device(threads, 0, false)
    }

    /// Whether it can open several devices ([`BackendKind::open_device`] past 0).
    pub fn has_devices(self) -> bool {
        matches!(self, Self::Cuda | Self::CudaEmulator)
    }

    /// Opens device `ordinal` of the backend: a CUDA device by its ordinal (`again`: one already
    /// opened, whose new backend then takes a stream of its own), or a fresh emulated device for
    /// each call on the emulator. The CPU and wgpu backends have one device, whatever `ordinal`
    /// (a caller naming several checks [`BackendKind::has_devices`] first).
    #[cfg_attr(not(feature = "cuda"), allow(unused_variables))]
    pub fn open_device(
        self,
        threads: Option<usize>,
        ordinal: usize,
        again: bool,
    ) -> Result<AnyBackend, BackendError> {
        match self {
            Self::Cpu => {
                let cpu = match threads {
                    Some(t) => CpuBackend::with_threads(t)?,
                    None => CpuBackend::new(),
                };
                let cpu = match std::env::var("FASTQUERY_CPU_MAC").as_deref() {
                    Err(_) | Ok("best") => cpu,
                    Ok("avx512") => cpu.with_mac_kernel(MacKernel::Avx512),
                    Ok("avx2") => cpu.with_mac_kernel(MacKernel::Avx2),
                    Ok("portable") => cpu.with_mac_kernel(MacKernel::Portable),
                    Ok(other) => {
                        return Err(BackendError::InvalidInput(format!(
                            "FASTQUERY_CPU_MAC={other}: expected best, avx512, avx2 or portable"
                        )));
                    }
                };
                Ok(AnyBackend::Cpu(Arc::new(cpu)))
            }
            #[cfg(feature = "cuda")]
            Self::Cuda => Ok(AnyBackend::Cuda(Arc::new(match again {
                false => fastquery_cuda::CudaBackend::new(ordinal)?,
                true => fastquery_cuda::CudaBackend::with_own_stream(ordinal)?,
            }))),
            #[cfg(not(feature = "cuda"))]
            Self::Cuda => Err(BackendError::Unavailable {
                backend: "cuda",
                reason:
                    "this build has no CUDA backend: rebuild with `cargo build --release --features cuda` \
                         (needs an NVIDIA driver and NVRTC at run time); or use --backend cpu"
                        .into(),
            }),
            #[cfg(feature = "cuda-emulator")]
            Self::CudaEmulator => {
                eprintln!(
                    "CUDA emulator: the CUDA backend's kernels run on the CPU (checks launches; slow by design)"
                );
                Ok(AnyBackend::Cuda(Arc::new(fastquery_cuda::CudaBackend::emulated()?)))
            }
            #[cfg(not(feature = "cuda-emulator"))]
            Self::CudaEmulator => Err(BackendError::Unavailable {
                backend: "cuda-emulator",
                reason:
                    "this build has no CUDA emulator: rebuild with `cargo build --features cuda-emulator` \
                         (needs a C++17 compiler); or use --backend cpu"
                        .into(),
            }),
            #[cfg(feature = "wgpu")]
            Self::Wgpu => {
                let b = fastquery_wgpu::WgpuBackend::new()?;
                eprintln!("wgpu adapter: {}", b.describe());
                if b.is_software() {
                    eprintln!("  (a software adapter: correct, but slower than the CPU backend)");
                }
                Ok(AnyBackend::Wgpu(Arc::new(b)))
            }
            #[cfg(not(feature = "wgpu"))]
            Self::Wgpu => Err(BackendError::Unavailable {
                backend: "wgpu",
                reason:
                    "this build has no wgpu backend: rebuild with `cargo build --release --features wgpu` \
                         (needs a Vulkan, Metal or DX12 driver at run time); or use --backend cpu"
                        .into(),
            }),
        }
    }
}

impl AnyBackend {
    /// Name and device of the opened backend.
    pub fn info(&self) -> fastquery_backend::BackendInfo {
        crate::with_backend!(self, b => b.info())
    }

    /// The design inputs of a server on this backend over `table` (what its clients are told).
    pub fn design_inputs(
        &self,
        table: &fastquery_table::IntTable,
        plain_bits: u32,
        tokens: usize,
    ) -> Result<fastquery_protocol::harness::DesignInputs, fastquery_protocol::ProtocolError> {
        crate::with_backend!(self, b => fastquery_protocol::harness::DesignInputs::for_backend(b.as_ref(), table, plain_bits, tokens))
    }

    /// Worker threads of the host side.
    pub fn threads(&self) -> usize {
        match self {
            Self::Cpu(b) => b.threads(),
            #[cfg(feature = "cuda")]
            Self::Cuda(_) => rayon_threads(),
            #[cfg(feature = "wgpu")]
            Self::Wgpu(_) => rayon_threads(),
        }
    }
}

#[cfg(any(feature = "cuda", feature = "wgpu"))]
fn rayon_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |c| c.get())
}

impl AnyBackend {
    /// Whether this is the CPU backend.
    pub fn is_cpu(&self) -> bool {
        matches!(self, Self::Cpu(_))
    }
}
