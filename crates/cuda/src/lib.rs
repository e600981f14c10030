//! # fastquery-cuda
//!
//! The CUDA implementation of [`fastquery_backend::Backend`], for servers on NVIDIA GPUs. Sits
//! beside `fastquery-cpu` above the backend trait; the binary enables it with the cargo feature
//! `cuda`.
//!
//! * Kernels are the files of `kernels/` at the workspace root, embedded with `include_str!` and
//!   compiled by NVRTC for the device's architecture when a backend is created (once per
//!   backend). [`compile`] compiles them for any architecture without a GPU (CI does this for
//!   sm_80 and sm_90).
//! * cudarc loads `libcuda` and `libnvrtc` at run time. It panics when a library is missing, so
//!   [`CudaBackend::new`] probes for both first and returns [`BackendError::Unavailable`].
//! * Every kernel mirrors the CPU backend's arithmetic step for step (the NTT's butterflies and
//!   tables, Barrett and Shoup reductions, the per-prime rounding of modulus switching), so
//!   results are bit-identical; the shared conformance suite checks it.
//! * With the feature `emulator`, [`CudaBackend::emulated`] runs the same backend code on the
//!   kernels compiled for the host (`emu/`), so the conformance suite and the schemes check
//!   every kernel and every launch on machines without a GPU (CI does).
#![deny(unsafe_code)]

mod backend;
mod device;
#[cfg(feature = "emulator")]
mod emulator;

/// Dynamic shared memory per block the emulator allows (an H100's opt-in limit, 227 KiB;
/// `SMEM_BYTES` in emu/emulator.cpp).
#[cfg(feature = "emulator")]
pub const EMULATED_SHARED_MEMORY: usize = 232_448;

pub use backend::{CudaBackend, CudaBuffer, CudaRing};

use cudarc::nvrtc::{CompileOptions, Ptx, compile_ptx_with_opts};
use fastquery_backend::BackendError;

/// The kernel sources, in the order they are concatenated into one NVRTC program.
pub const SOURCES: [(&str, &str); 8] = [
    ("modarith.cuh", include_str!("../../../kernels/modarith.cuh")),
    ("ntt.cu", include_str!("../../../kernels/ntt.cu")),
    ("elementwise.cu", include_str!("../../../kernels/elementwise.cu")),
    ("mac.cu", include_str!("../../../kernels/mac.cu")),
    ("modswitch.cu", include_str!("../../../kernels/modswitch.cu")),
    ("permute.cu", include_str!("../../../kernels/permute.cu")),
    ("sample.cu", include_str!("../../../kernels/sample.cu")),
    ("keyswitch.cu", include_str!("../../../kernels/keyswitch.cu")),
];

/// Every kernel entry point (for loading and for the compile test).
pub const KERNELS: [&str; 16] = [
    "ntt_forward_u32",
    "ntt_inverse_u32",
    "ntt_forward_reg16_u32",
    "ntt_inverse_reg16_u32",
    "add_u32",
    "sub_u32",
    "neg_u32",
    "mul_u32",
    "scalar_mul_u32",
    "monomial_mul_u32",
    "mac_ntt_u32",
    "mod_switch_down_u32",
    "gather_signed_u32",
    "decompose_u32",
    "expand_seeds_u32",
    "decompose_mac_u32",
];

/// Whether NVRTC can be loaded (it is needed to compile the kernels).
pub fn nvrtc_present() -> bool {
    // SAFETY: only tries to dlopen the library by its candidate names; no symbol is called.
    #[allow(unsafe_code)]
    unsafe {
        cudarc::nvrtc::sys::is_culib_present()
    }
}

/// Whether the CUDA driver library can be loaded.
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen the library by its candidate names; no symbol is called.
    #[allow(unsafe_code)]
    unsafe {
        cudarc::driver::sys::is_culib_present()
    }
}

/// Compiles every kernel for `arch` (for example `"sm_90"`) with NVRTC. Needs only NVRTC, no
/// GPU and no driver.
pub fn compile(arch: &'static str) -> Result<Ptx, BackendError> {
    if !nvrtc_present() {
        return Err(BackendError::Unavailable {
            backend: "cuda",
            reason: "NVRTC (libnvrtc.so) not found: install the CUDA toolkit's NVRTC or the PyPI package \
                     nvidia-cuda-nvrtc and put its lib folder on LD_LIBRARY_PATH (scripts/setup.sh does this)"
                .into(),
        });
    }
    let src: String = SOURCES.iter().map(|(name, text)| format!("// ---- {name}\n{text}\n")).collect();
    let opts = CompileOptions {
        arch: Some(arch),
        name: Some("fastquery_kernels.cu".into()),
        options: vec!["--std=c++17".into()],
        ..Default::default()
    };
    compile_ptx_with_opts(src, opts)
        .map_err(|e| BackendError::Device(format!("NVRTC failed to compile the kernels for {arch}: {e:?}")))
}
