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

pub use backend::{CudaBackend, CudaBuffer, CudaRing, NTT_VERSIONS};

use cudarc::nvrtc::{CompileOptions, Ptx, compile_ptx_with_opts};
use fastquery_backend::BackendError;

/// The kernel sources, in the order they are concatenated into one NVRTC program.
pub const SOURCES: [(&str, &str); 10] = [
    ("modarith.cuh", include_str!("../../../kernels/modarith.cuh")),
    ("ntt.cu", include_str!("../../../kernels/ntt.cu")),
    ("elementwise.cu", include_str!("../../../kernels/elementwise.cu")),
    ("mac.cu", include_str!("../../../kernels/mac.cu")),
    ("modswitch.cu", include_str!("../../../kernels/modswitch.cu")),
    ("permute.cu", include_str!("../../../kernels/permute.cu")),
    ("sample.cu", include_str!("../../../kernels/sample.cu")),
    ("keyswitch.cu", include_str!("../../../kernels/keyswitch.cu")),
    ("expand.cu", include_str!("../../../kernels/expand.cu")),
    ("mma.cu", include_str!("../../../kernels/mma.cu")),
];

/// Every kernel entry point (for loading and for the compile test), with the most threads per
/// block the backend launches it with (for the register check, [`resource_usage`]).
pub const KERNELS: [(&str, u32); 36] = [
    ("ntt_forward_u32", 1024),
    ("ntt_inverse_u32", 1024),
    ("ntt_forward_reg16_u32", 256),
    ("ntt_inverse_reg16_u32", 256),
    ("ntt_forward_4096_u32", 256),
    ("ntt_inverse_4096_u32", 256),
    ("ntt_forward_8192_u32", 512),
    ("ntt_inverse_8192_u32", 512),
    ("add_u32", 256),
    ("sub_u32", 256),
    ("difference_u32", 256),
    ("copy_polys_u32", 256),
    ("neg_u32", 256),
    ("mul_u32", 256),
    ("scalar_mul_u32", 256),
    ("monomial_mul_u32", 256),
    ("mac_ntt_u32", 256),
    ("mac_ntt_r8c4_u32", 256),
    ("mac_ntt_r2c8_u32", 256),
    ("mac_ntt_r2c8_cols_u32", 256),
    ("mac_ntt_mma_u32", 256),
    ("mod_switch_down_u32", 256),
    ("gather_signed_u32", 256),
    ("decompose_u32", 256),
    ("expand_seeds_u32", 256),
    ("zero_noise_u32", 256),
    ("flood_mask_u32", 256),
    ("gather_words_u32", 256),
    ("decompose_mac_u32", 1024),
    ("decompose_mac_4096_u32", 256),
    ("decompose_mac_8192_u32", 512),
    ("decompose_mac_split_u32", 1024),
    ("decompose_mac_split_4096_u32", 256),
    ("decompose_mac_split_8192_u32", 512),
    ("sum_digits_u32", 256),
    ("expand_combine_u32", 256),
];

/// 32-bit registers per streaming multiprocessor (sm_80 and sm_90): a block of `T` threads
/// using `r` registers each launches only if `T x r` (rounded to 8 registers per thread) fits.
pub const REGISTERS_PER_SM: u32 = 65_536;

/// What ptxas reports for one kernel compiled to machine code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelResources {
    pub name: String,
    pub registers: u32,
    pub spill_store_bytes: u32,
    pub spill_load_bytes: u32,
}

impl KernelResources {
    /// Registers a block of `threads` threads needs ([`block_registers`]).
    pub fn block_registers(&self, threads: u32) -> u32 {
        block_registers(self.registers, threads)
    }
}

/// Registers a block of `threads` threads of `registers` each needs (allocation granularity 8
/// per thread).
pub fn block_registers(registers: u32, threads: u32) -> u32 {
    registers.div_ceil(8) * 8 * threads
}

/// What the driver reports of one kernel loaded on a GPU ([`CudaBackend::loaded_kernels`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadedKernel {
    pub name: &'static str,
    pub registers: u32,
    /// Local memory per thread: spills and stack frames.
    pub local_bytes: u32,
    /// The most threads a block of this kernel can have on this device (registers included).
    pub max_threads: u32,
}

/// Compiles every kernel for the real architecture `arch` (machine code, through NVRTC's
/// ptxas) and returns what ptxas reports per kernel: registers and spills. Needs only NVRTC, no
/// GPU: a kernel whose block would not fit the register file fails here, in CI, instead of with
/// `CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES` on the first GPU it meets.
pub fn resource_usage(arch: &str) -> Result<Vec<KernelResources>, BackendError> {
    use cudarc::nvrtc::result;
    use std::ffi::CString;
    if !nvrtc_present() {
        return Err(nvrtc_missing());
    }
    let fail = |e: cudarc::nvrtc::result::NvrtcError| BackendError::Device(format!("NVRTC: {e:?}"));
    let src = CString::new(source()).map_err(|_| BackendError::Device("NUL in a kernel source".into()))?;
    let name = CString::new("fastquery_kernels.cu").expect("no NUL");
    let prog = result::create_program(&src, Some(&name)).map_err(fail)?;
    let opts = [format!("--gpu-architecture={arch}"), "--std=c++17".into(), "--ptxas-options=-v".into()];
    // SAFETY: `prog` is a live program from create_program; it is destroyed once, below, after
    // its log is read.
    #[allow(unsafe_code)]
    let (compiled, log) = unsafe {
        let compiled = result::compile_program(prog, &opts);
        let log = result::get_program_log(prog);
        let _ = result::destroy_program(prog);
        (compiled, log)
    };
    let log: Vec<u8> = log.map_err(fail)?.into_iter().map(|c| c as u8).take_while(|&c| c != 0).collect();
    let log = String::from_utf8_lossy(&log);
    compiled
        .map_err(|e| BackendError::Device(format!("NVRTC failed to compile for {arch}: {e:?}\n{log}")))?;
    let usage = parse_ptxas_log(&log);
    if usage.is_empty() {
        // Seen with the CUDA 13.0 toolkit's own NVRTC on an H200 (2026-12-04); the PyPI
        // package's NVRTC prints the report. Say which NVRTC, and what it printed instead.
        let excerpt: String = log.chars().take(400).collect();
        return Err(BackendError::Device(format!(
            "NVRTC {} printed no ptxas report for {arch} ({} bytes of log: {excerpt:?})",
            nvrtc_version().map_or("of unknown version".into(), |(a, b)| format!("{a}.{b}")),
            log.len()
        )));
    }
    Ok(usage)
}

/// NVRTC's version (major, minor), where it can be loaded.
pub fn nvrtc_version() -> Option<(i32, i32)> {
    if !nvrtc_present() {
        return None;
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: NVRTC is present (checked above); the call writes two ints it is given.
    #[allow(unsafe_code)]
    let r = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    (r == cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS).then_some((major, minor))
}

/// The per-kernel lines of a `ptxas -v` log.
fn parse_ptxas_log(log: &str) -> Vec<KernelResources> {
    let number_before = |line: &str, word: &str| -> Option<u32> {
        let at = line.find(word)?;
        line[..at].split_whitespace().last()?.parse().ok()
    };
    let mut out: Vec<KernelResources> = Vec::new();
    for line in log.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let name = rest.split('\'').next().unwrap_or_default().to_string();
            out.push(KernelResources { name, registers: 0, spill_store_bytes: 0, spill_load_bytes: 0 });
        } else if let Some(k) = out.last_mut() {
            if let Some(r) = number_before(line, "registers") {
                k.registers = r;
            }
            if let Some(s) = number_before(line, "bytes spill stores") {
                k.spill_store_bytes = s;
            }
            if let Some(s) = number_before(line, "bytes spill loads") {
                k.spill_load_bytes = s;
            }
        }
    }
    out
}

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

/// The error of a machine without NVRTC, with how to get it.
fn nvrtc_missing() -> BackendError {
    BackendError::Unavailable {
        backend: "cuda",
        reason: "NVRTC (libnvrtc.so) not found: install the CUDA toolkit's NVRTC or the PyPI package \
                 nvidia-cuda-nvrtc and put its lib folder on LD_LIBRARY_PATH (scripts/setup.sh does this)"
            .into(),
    }
}

/// The kernel sources as one NVRTC program.
fn source() -> String {
    SOURCES.iter().map(|(name, text)| format!("// ---- {name}\n{text}\n")).collect()
}

/// Compiles every kernel for `arch` (for example `"sm_90"`) with NVRTC. Needs only NVRTC, no
/// GPU and no driver.
pub fn compile(arch: &'static str) -> Result<Ptx, BackendError> {
    compile_with(arch, true)
}

/// [`compile`], choosing the conditional subtraction of `kernels/modarith.cuh`: `minmax` as an
/// unsigned minimum (the default), or else as a compare and select (`FQ_SELECT_REDUCE`, the
/// form before 2026-12-01; `FASTQUERY_CUDA_MINMAX=0` on the backend, for A/B runs).
pub fn compile_with(arch: &'static str, minmax: bool) -> Result<Ptx, BackendError> {
    if !nvrtc_present() {
        return Err(nvrtc_missing());
    }
    let src = source();
    let mut options = vec!["--std=c++17".to_string()];
    if !minmax {
        options.push("-DFQ_SELECT_REDUCE".into());
    }
    let opts = CompileOptions {
        arch: Some(arch),
        name: Some("fastquery_kernels.cu".into()),
        options,
        ..Default::default()
    };
    compile_ptx_with_opts(src, opts)
        .map_err(|e| BackendError::Device(format!("NVRTC failed to compile the kernels for {arch}: {e:?}")))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_ptxas_log_is_read_per_kernel() {
        let log = "ptxas info    : 0 bytes gmem\n\
ptxas info    : Compiling entry function 'mac_x' for 'sm_90'\n\
ptxas info    : Function properties for mac_x\n\
ptxas         .     8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads\n\
ptxas info    : Used 128 registers, used 0 barriers\n\
ptxas info    : Compiling entry function 'ntt_y' for 'sm_90'\n\
ptxas info    : Used 22 registers, used 1 barriers\n";
        let k = super::parse_ptxas_log(log);
        assert_eq!(k.len(), 2);
        assert_eq!(
            (k[0].name.as_str(), k[0].registers, k[0].spill_store_bytes, k[0].spill_load_bytes),
            ("mac_x", 128, 4, 12)
        );
        assert_eq!((k[1].name.as_str(), k[1].registers, k[1].spill_store_bytes), ("ntt_y", 22, 0));
        assert_eq!(k[1].block_registers(1024), 24 * 1024);
    }
}
