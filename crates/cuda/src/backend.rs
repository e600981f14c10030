//! The backend: the ring tables on the device and one launch per operation, written once
//! against [`Device`] (the GPU, or the emulator in tests). The kernel launches are the
//! crate's `unsafe`, each with its argument list beside it.
#![allow(unsafe_code)]

use cudarc::driver::{
    CudaContext, LaunchConfig,
    sys::{CUdevice_attribute, CUfunction_attribute},
};
use fastquery_backend::{Backend, BackendError, BackendInfo, MacDims, RingContext, Shape, host};

use crate::device::{Arg, Device, Mem, dev};
use crate::{KERNELS, compile_with, driver_present};

/// Threads per block of the elementwise kernels.
const BLOCK: u32 = 256;
/// Rows per thread tile of the one-column multiply-accumulate (MAC_ROWS in kernels/mac.cu).
const MAC_ROWS: usize = 16;
/// An automorphism's gather table and its copy on the device.
type IndexTable = (Vec<u32>, std::sync::Arc<Mem<u32>>);
/// Automorphism index tables kept on the device (expansion uses log2 N exponents, packing a few).
const INDEX_TABLES: usize = 64;
/// Threads per block of the seeded expansion (a power of two; kernels/sample.cu).
const EXPAND_THREADS: u32 = 256;
/// Most limbs modulus switching handles (MAX_LIMBS in kernels/modswitch.cu).
const MAX_LIMBS: usize = 32;

/// A device buffer of `u32` words (`None` when empty: CUDA cannot allocate zero bytes).
#[derive(Debug)]
pub struct CudaBuffer {
    data: Option<Mem<u32>>,
    len: usize,
}

/// A ring's tables on the device.
#[derive(Debug)]
pub struct CudaRing {
    n: usize,
    log_n: u32,
    limbs: usize,
    moduli: Mem<u32>,
    barrett: Mem<u64>,
    lazy: Mem<u32>,
    fwd: Mem<u32>,
    fwd_shoup: Mem<u32>,
    inv: Mem<u32>,
    inv_shoup: Mem<u32>,
    n_inv: Mem<u32>,
    n_inv_shoup: Mem<u32>,
    /// `p_last^{-1} mod p_i` at `last * limbs + i`, and Shoup companions (modulus switching).
    ms_inv: Mem<u32>,
    ms_inv_shoup: Mem<u32>,
    host_moduli: Vec<fastquery_math::Modulus>,
}

/// The CUDA backend on one device.
pub struct CudaBackend {
    device: Device,
    /// Automorphism index tables already on the device (a handful per ring: one per Galois
    /// exponent in use), so that gathers and expansion steps do not upload N words each time.
    index_tables: std::sync::Mutex<Vec<IndexTable>>,
    /// Whether decompose_mac runs the fused kernel (FASTQUERY_CUDA_FUSED_KS=0 turns it off, for
    /// A/B measurements against the composed steps).
    fused_key_switch: bool,
    /// Whether table products may run on the tensor cores (compute capability 8.0 or later;
    /// FASTQUERY_CUDA_MMA=0 turns it off, for A/B measurements).
    tensor_cores: std::sync::atomic::AtomicBool,
    /// Whether products of at most two rows take mac_ntt_r2c8_u32 (FASTQUERY_CUDA_R2C8=0 turns
    /// it off: mac_ntt_r8c4_u32 as before, for A/B measurements).
    two_row_mac: std::sync::atomic::AtomicBool,
    /// Whether the two-row kernel's grid runs over column tiles first (mac_ntt_r2c8_cols_u32:
    /// the tiles that read the same words of `a` run together; FASTQUERY_CUDA_COLS_FIRST=0 for
    /// the coefficients first, mac_ntt_r2c8_u32, for A/B measurements).
    columns_first: std::sync::atomic::AtomicBool,
    /// Whether the device has them (compute capability 8.0 or later; the emulator does).
    has_tensor_cores: bool,
    /// The newest NTT kernel version allowed ([`NTT_VERSIONS`]; FASTQUERY_CUDA_NTT, for A/B
    /// measurements).
    ntt_version: std::sync::atomic::AtomicU8,
    name: String,
    arch: &'static str,
    max_smem: usize,
    /// Bytes of device memory (None on the emulator).
    memory: Option<usize>,
    /// Every launch timed (`FASTQUERY_CUDA_PROFILE=1`), for [`Backend::kernel_times`].
    profile: Option<crate::device::Profile>,
    /// Key-switch products of fewer output rows than this run split by digit
    /// (`decompose_mac_split_u32`; FASTQUERY_CUDA_SPLIT_KS=1: the multiprocessors' count; 0 off).
    split_rows: std::sync::atomic::AtomicUsize,
    /// Streaming multiprocessors (132 on the emulator, an H100's).
    multiprocessors: usize,
}

impl std::fmt::Debug for CudaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaBackend").field("device", &self.name).field("arch", &self.arch).finish()
    }
}

/// An on/off switch from the environment: unset or `1` is on, `0` off; anything else is an
/// error that names the variable (a typo must not silently measure the other path).
fn switch(name: &str, value: Option<&str>) -> Result<bool, BackendError> {
    match value.map(str::trim) {
        None | Some("1") => Ok(true),
        Some("0") => Ok(false),
        Some(v) => Err(BackendError::InvalidInput(format!("{name} must be 0 or 1, not '{v}'"))),
    }
}

fn env_switch(name: &str) -> Result<bool, BackendError> {
    switch(name, std::env::var(name).ok().as_deref())
}

/// FASTQUERY_CUDA_FUSED_KS: `0` runs key switching as its composed steps.
fn fused_key_switch() -> Result<bool, BackendError> {
    env_switch("FASTQUERY_CUDA_FUSED_KS")
}

/// FASTQUERY_CUDA_MINMAX (read at backend creation): `0` compiles the kernels' conditional
/// subtractions as compare and select instead of unsigned minima ([`crate::compile_with`]).
fn minmax_reductions() -> Result<bool, BackendError> {
    env_switch("FASTQUERY_CUDA_MINMAX")
}

/// FASTQUERY_CUDA_MMA: `0` keeps table products off the tensor cores.
fn tensor_cores_allowed() -> Result<bool, BackendError> {
    env_switch("FASTQUERY_CUDA_MMA")
}

/// The NTT kernel versions of kernels/ntt.cu (docs/GPU_NOTES.md), oldest first: a transform runs
/// on the newest allowed version that applies to its degree.
/// 1. `ntt_forward_u32`: one block per row, one barrier per stage; every N;
/// 2. `ntt_forward_reg16_u32`: the first and last four stages in registers; 1024 <= N <= 4096;
/// 3. `ntt_forward_4096_u32`, `ntt_forward_8192_u32`: three passes of four stages in registers,
///    three barriers; N = 4096 and 8192 (the default).
pub const NTT_VERSIONS: std::ops::RangeInclusive<u8> = 1..=3;

/// FASTQUERY_CUDA_NTT: the newest NTT kernel version allowed, `1`, `2` or `3` (unset: 3).
fn ntt_version(value: Option<&str>) -> Result<u8, BackendError> {
    let Some(v) = value.map(str::trim) else { return Ok(*NTT_VERSIONS.end()) };
    match v.parse::<u8>() {
        Ok(x) if NTT_VERSIONS.contains(&x) && v.len() == 1 => Ok(x),
        _ => Err(BackendError::InvalidInput(format!("FASTQUERY_CUDA_NTT must be 1, 2 or 3, not '{v}'"))),
    }
}

fn ntt_version_allowed() -> Result<u8, BackendError> {
    ntt_version(std::env::var("FASTQUERY_CUDA_NTT").ok().as_deref())
}

/// Whether degree `n` runs the three-pass kernels (transform and fused key switch) under NTT
/// `version`: N/16 threads of 16 words.
fn three_pass(version: u8, n: u32) -> bool {
    version >= 3 && matches!(n, 4096 | 8192)
}

/// FASTQUERY_CUDA_R2C8: `0` keeps products of two rows on the 8 x 4 tile.
fn two_row_mac_allowed() -> Result<bool, BackendError> {
    env_switch("FASTQUERY_CUDA_R2C8")
}

/// FASTQUERY_CUDA_COLS_FIRST: `0` runs the two-row kernel's grid over coefficients first.
fn columns_first_allowed() -> Result<bool, BackendError> {
    env_switch("FASTQUERY_CUDA_COLS_FIRST")
}

/// FASTQUERY_CUDA_SPLIT_KS: `1` splits the key-switch products of batches smaller than the
/// device's multiprocessors by digit (`decompose_mac_split_u32`); unset or `0` does not (not yet
/// measured on a GPU: the A/B of `scripts/gpu_run.sh quick`).
fn split_key_switch(value: Option<&str>) -> Result<bool, BackendError> {
    match value.map(str::trim) {
        None | Some("0") => Ok(false),
        Some("1") => Ok(true),
        Some(v) => {
            Err(BackendError::InvalidInput(format!("FASTQUERY_CUDA_SPLIT_KS must be 0 or 1, not '{v}'")))
        }
    }
}

/// The rows below which key-switch products split by digit: the multiprocessors where
/// FASTQUERY_CUDA_SPLIT_KS is `1`, none otherwise.
fn split_rows(multiprocessors: usize) -> Result<usize, BackendError> {
    let on = split_key_switch(std::env::var("FASTQUERY_CUDA_SPLIT_KS").ok().as_deref())?;
    Ok(if on { multiprocessors } else { 0 })
}

/// The emulator's multiprocessor count (an H100's), for the split key switch's threshold.
#[cfg(feature = "emulator")]
const EMULATED_MULTIPROCESSORS: usize = 132;

/// FASTQUERY_CUDA_POOL: `0` leaves the device's memory pool at the driver's default release
/// threshold (0: unused pool memory goes back to the device at every synchronisation).
fn keep_pool_memory() -> Result<bool, BackendError> {
    env_switch("FASTQUERY_CUDA_POOL")
}

/// FASTQUERY_CUDA_PROFILE: `1` times every kernel launch ([`Backend::kernel_times`]); unset or
/// `0` does not (the events cost a few microseconds a launch).
fn profile_launches() -> Result<Option<crate::device::Profile>, BackendError> {
    const NAME: &str = "FASTQUERY_CUDA_PROFILE";
    // Off where unset (the other switches are on where unset); the values as theirs.
    let on = match std::env::var(NAME) {
        Ok(v) => switch(NAME, Some(&v))?,
        Err(_) => false,
    };
    Ok(on.then(Default::default))
}

/// Lets the device's default memory pool (behind cudarc's stream-ordered allocations) keep the
/// memory its buffers free instead of returning it at each synchronisation: a request allocates
/// and frees its intermediates many times between downloads, and with the default threshold of
/// 0 each allocation after a synchronisation maps fresh memory. The pool's peak then stays
/// mapped for this process: at most what one request held at once.
fn keep_freed_memory_in_pool(ctx: &CudaContext) -> Result<(), BackendError> {
    use cudarc::driver::sys;
    if !ctx.has_async_alloc() {
        return Ok(()); // no stream-ordered allocator: nothing to set
    }
    ctx.bind_to_thread().map_err(dev)?;
    let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
    let mut threshold = u64::MAX;
    // SAFETY: the context is current on this thread (above); the driver writes the pool handle
    // of the context's device into `pool`, then reads one u64 from `threshold` (the attribute's
    // documented type, cuuint64_t).
    #[allow(unsafe_code)]
    unsafe {
        sys::cuDeviceGetDefaultMemPool(&mut pool, ctx.cu_device()).result().map_err(dev)?;
        sys::cuMemPoolSetAttribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            (&mut threshold as *mut u64).cast(),
        )
        .result()
        .map_err(dev)?;
    }
    Ok(())
}

/// The NTT kernel for degree `n` under `version`: its name, threads per block and bytes of
/// shared memory.
fn ntt_kernel(version: u8, n: u32, inverse: bool) -> (&'static str, u32, u32) {
    match (n, inverse) {
        (4096, false) if three_pass(version, n) => ("ntt_forward_4096_u32", n / 16, n * 4),
        (4096, true) if three_pass(version, n) => ("ntt_inverse_4096_u32", n / 16, n * 4),
        (8192, false) if three_pass(version, n) => ("ntt_forward_8192_u32", n / 16, n * 4),
        (8192, true) if three_pass(version, n) => ("ntt_inverse_8192_u32", n / 16, n * 4),
        (1024..=4096, false) if version >= 2 => ("ntt_forward_reg16_u32", n / 16, (n + n / 32) * 4),
        (1024..=4096, true) if version >= 2 => ("ntt_inverse_reg16_u32", n / 16, (n + n / 32) * 4),
        (_, false) => ("ntt_forward_u32", (n / 2).clamp(1, 1024), n * 4),
        (_, true) => ("ntt_inverse_u32", (n / 2).clamp(1, 1024), n * 4),
    }
}

/// The most inner terms of one tensor-core product (MMA_MAX_INNER in kernels/mma.cu: the s32
/// byte-class sums stay below 2^29).
const MMA_MAX_INNER: usize = 2048;
/// Shared memory of the tensor-core product (MMA_SMEM_WORDS in kernels/mma.cu).
const MMA_SMEM_BYTES: u32 = 4 * ((16 * 48 + 8) + (32 * 48 + 8)) * 4;
/// Consecutive coefficients per block of the tensor-core product (MMA_COEFFS).
const MMA_COEFFS: usize = 4;

fn unavailable(reason: impl Into<String>) -> BackendError {
    BackendError::Unavailable { backend: "cuda", reason: reason.into() }
}

/// The NVRTC architecture name of a compute capability.
fn arch_of(major: i32, minor: i32) -> &'static str {
    match (major, minor) {
        (9, _) => "sm_90",
        (8, 9) => "sm_89",
        (8, 6) => "sm_86",
        (8, _) => "sm_80",
        (10, _) => "sm_100",
        (12, _) => "sm_120",
        (7, 5) => "sm_75",
        _ => "sm_80",
    }
}

impl CudaBackend {
    /// Opens device `ordinal`, compiling the kernels for it. A missing driver, NVRTC or device
    /// is [`BackendError::Unavailable`] (never a panic). Its work goes to the device's default
    /// stream.
    pub fn new(ordinal: usize) -> Result<Self, BackendError> {
        Self::open(ordinal, false)
    }

    /// [`CudaBackend::new`] with a stream of its own: another backend on the same device (a
    /// server holding two copies of the table there) then runs beside this one instead of after
    /// it, so one GPU can answer two batches at once where each leaves it partly idle.
    pub fn with_own_stream(ordinal: usize) -> Result<Self, BackendError> {
        Self::open(ordinal, true)
    }

    fn open(ordinal: usize, own_stream: bool) -> Result<Self, BackendError> {
        if !driver_present() {
            return Err(unavailable("no CUDA driver library (libcuda.so) on this machine"));
        }
        let count = CudaContext::device_count()
            .map_err(|e| unavailable(format!("CUDA driver did not start: {e:?}")))?;
        if ordinal >= count.max(0) as usize {
            return Err(unavailable(format!("no CUDA device {ordinal} (this machine has {count})")));
        }
        let ctx = CudaContext::new(ordinal)
            .map_err(|e| unavailable(format!("cannot open CUDA device {ordinal}: {e:?}")))?;
        let major =
            ctx.attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR).map_err(dev)?;
        let minor =
            ctx.attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR).map_err(dev)?;
        let multiprocessors =
            ctx.attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT).map_err(dev)?.max(1)
                as usize;
        let max_smem = ctx
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
            .map_err(dev)? as usize;
        // Only a speed setting: where the driver refuses it, the backend runs on the default.
        let pool_refused = keep_pool_memory()? && keep_freed_memory_in_pool(&ctx).is_err();
        let arch = arch_of(major, minor);
        let ptx = compile_with(arch, minmax_reductions()?)?;
        let module = ctx.load_module(ptx).map_err(dev)?;
        let funcs = KERNELS
            .iter()
            .map(|(k, _)| module.load_function(k).map(|f| (*k, f)).map_err(dev))
            .collect::<Result<Vec<_>, _>>()?;
        // The NTT and key-switch kernels keep a whole row in shared memory: allow every kernel
        // up to the device's opt-in limit (the default is 48 KiB).
        for (_, f) in &funcs {
            f.set_attribute(
                CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                max_smem as i32,
            )
            .map_err(dev)?;
        }
        let mut name = ctx.name().map_err(dev)?;
        if pool_refused {
            name.push_str(", its memory pool at the driver's default release threshold");
        }
        let memory = ctx.total_mem().ok();
        let stream = if own_stream {
            // SAFETY: only turns off cudarc's cross-stream events for the buffers this context
            // object creates from now on (none exist yet). They are not needed: every buffer of
            // this backend is allocated, used and freed on its one stream, and no buffer is
            // shared with another backend.
            unsafe { ctx.disable_event_tracking() };
            ctx.new_stream().map_err(dev)?
        } else {
            ctx.default_stream()
        };
        let device = Device::Gpu { _ctx: ctx, stream, _module: module, funcs };
        Ok(Self {
            device,
            index_tables: Default::default(),
            fused_key_switch: fused_key_switch()?,
            tensor_cores: (major >= 8 && tensor_cores_allowed()?).into(),
            two_row_mac: two_row_mac_allowed()?.into(),
            columns_first: columns_first_allowed()?.into(),
            has_tensor_cores: major >= 8,
            ntt_version: ntt_version_allowed()?.into(),
            name,
            arch,
            max_smem,
            memory,
            profile: profile_launches()?,
            split_rows: split_rows(multiprocessors)?.into(),
            multiprocessors,
        })
    }

    /// What the driver says of every kernel as loaded on this GPU (registers per thread, local
    /// memory per thread, the most threads a block of it can have); `None` on the emulator.
    /// The check of [`crate::resource_usage`] from the device's side: it needs no ptxas report.
    pub fn loaded_kernels(&self) -> Result<Option<Vec<crate::LoadedKernel>>, BackendError> {
        match &self.device {
            Device::Gpu { funcs, .. } => funcs
                .iter()
                .map(|(name, f)| {
                    Ok(crate::LoadedKernel {
                        name,
                        registers: f.num_regs().map_err(dev)? as u32,
                        local_bytes: f.local_size_bytes().map_err(dev)? as u32,
                        max_threads: f.max_threads_per_block().map_err(dev)? as u32,
                    })
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            #[cfg(feature = "emulator")]
            Device::Emulated { .. } => Ok(None),
        }
    }

    /// The same backend on the CPU emulator of the kernels (feature `emulator`): every launch
    /// this backend makes runs the kernels of `kernels/` compiled for the host, with the
    /// launch checked against an H100's limits. For tests; it is slow by design.
    #[cfg(feature = "emulator")]
    pub fn emulated() -> Result<Self, BackendError> {
        Self::on_emulator(false)
    }

    /// [`CudaBackend::emulated`] that also looks for races: every launch runs twice, threads
    /// (and blocks) first in order, then in reverse order within each barrier interval, from
    /// the same inputs, and a launch whose words differ is an error. A kernel whose result
    /// depends on the order of its threads has a race on a GPU too. Twice as slow.
    #[cfg(feature = "emulator")]
    pub fn emulated_checking_races() -> Result<Self, BackendError> {
        Self::on_emulator(true)
    }

    #[cfg(feature = "emulator")]
    fn on_emulator(races: bool) -> Result<Self, BackendError> {
        Ok(Self {
            device: Device::Emulated { races },
            index_tables: Default::default(),
            fused_key_switch: fused_key_switch()?,
            tensor_cores: tensor_cores_allowed()?.into(),
            two_row_mac: two_row_mac_allowed()?.into(),
            columns_first: columns_first_allowed()?.into(),
            has_tensor_cores: true,
            ntt_version: ntt_version_allowed()?.into(),
            name: if races { "CUDA emulator on the host (race check)" } else { "CUDA emulator on the host" }
                .into(),
            arch: "sm_90",
            max_smem: crate::EMULATED_SHARED_MEMORY,
            memory: None,
            profile: profile_launches()?,
            split_rows: split_rows(EMULATED_MULTIPROCESSORS)?.into(),
            multiprocessors: EMULATED_MULTIPROCESSORS,
        })
    }

    /// Launches the fused key-switch product of kernels/keyswitch.cu (below
    /// [`CudaBackend::split_rows`] output rows, the product split by digit and its sum): `polys`
    /// polynomials of `src_limbs` rows in `a`, outputs and key polynomials of `limbs` limbs.
    #[allow(clippy::too_many_arguments)]
    fn launch_decompose_mac(
        &self,
        ring: &CudaRing,
        a: &CudaBuffer,
        twin: Option<&CudaBuffer>,
        polys: usize,
        (src_limbs, limbs): (usize, usize),
        (digit_bits, digits): (u32, usize),
        keys: [&CudaBuffer; 2],
        out: [&mut CudaBuffer; 2],
        (accumulate, sets): (bool, usize),
    ) -> Result<(), BackendError> {
        let n = ring.n;
        let threads = (n / 2).clamp(1, 1024);
        let [o0, o1] = out;
        let (Some(y0), Some(y1)) = (o0.data.as_mut(), o1.data.as_mut()) else { return Ok(()) };
        let (Some(x), Some(k0), Some(k1)) = (a.data.as_ref(), keys[0].data.as_ref(), keys[1].data.as_ref())
        else {
            return Ok(());
        };
        // Without a twin the kernel never reads the pointer; `a` stands in for it.
        let (twin, use_twin) = match twin.and_then(|t| t.data.as_ref()) {
            Some(t) => (t, 1),
            None => (x, 0),
        };
        // Batches smaller than the device (FASTQUERY_CUDA_SPLIT_KS) split by digit: a block per
        // output row and digit (decompose_mac_split_u32, on the three-pass transform at 4096
        // and 8192 with NTT version 3) writes its products to `parts`, and sum_digits_u32 adds
        // them; otherwise the three-pass kernels (NTT version 3) at 4096 and
        // 8192 (N/16 threads), the plain one elsewhere, shared memory holding the row and both
        // accumulators either way.
        let (g, rows) = (src_limbs * digits, polys * limbs);
        let split = rows < self.split_rows() && g > 1;
        let mut parts = if split {
            // Every word of the parts is written by the split kernel (a block per row and
            // digit, n words of each part) before sum_digits_u32 reads it: no memset.
            Some([self.alloc_scratch(rows * g * n)?, self.alloc_scratch(rows * g * n)?])
        } else {
            None
        };
        let three = three_pass(self.ntt_version(), n as u32);
        let (name, cfg) = match n {
            _ if split && three => (
                if n == 4096 { "decompose_mac_split_4096_u32" } else { "decompose_mac_split_8192_u32" },
                LaunchConfig {
                    grid_dim: (rows as u32, g as u32, 1),
                    block_dim: ((n / 16) as u32, 1, 1),
                    shared_mem_bytes: (n * 4) as u32,
                },
            ),
            _ if split => (
                "decompose_mac_split_u32",
                LaunchConfig {
                    grid_dim: (rows as u32, g as u32, 1),
                    block_dim: (threads as u32, 1, 1),
                    shared_mem_bytes: (n * 4) as u32,
                },
            ),
            4096 | 8192 if three_pass(self.ntt_version(), n as u32) => (
                if n == 4096 { "decompose_mac_4096_u32" } else { "decompose_mac_8192_u32" },
                LaunchConfig {
                    grid_dim: (rows as u32, 1, 1),
                    block_dim: ((n / 16) as u32, 1, 1),
                    shared_mem_bytes: (3 * n * 4) as u32,
                },
            ),
            _ => (
                "decompose_mac_u32",
                LaunchConfig {
                    grid_dim: (rows as u32, 1, 1),
                    block_dim: (threads as u32, 1, 1),
                    shared_mem_bytes: (3 * n * 4) as u32,
                },
            ),
        };
        {
            let targets = match &mut parts {
                Some([p0, p1]) => match (p0.data.as_mut(), p1.data.as_mut()) {
                    (Some(p0), Some(p1)) => [p0, p1],
                    _ => return Ok(()),
                },
                None => [&mut *y0, &mut *y1],
            };
            let [t0, t1] = targets;
            let mut args = [
                Arg::Out(t0),
                Arg::Out(t1),
                Arg::In(x),
                Arg::In(k0),
                Arg::In(k1),
                Arg::In(&ring.fwd),
                Arg::In(&ring.fwd_shoup),
                Arg::In(&ring.moduli),
                Arg::In64(&ring.barrett),
                Arg::U32(n as u32),
                Arg::U32(ring.log_n),
                Arg::U32(limbs as u32),
                Arg::U32(digit_bits),
                Arg::U32(digits as u32),
                Arg::U32(u32::from(accumulate)),
                Arg::U32(src_limbs as u32),
                Arg::In(twin),
                Arg::U32(use_twin),
                Arg::U32(sets.max(1) as u32),
            ];
            // SAFETY: matches the decompose_mac kernels in kernels/keyswitch.cu (one argument
            // list, the split kernel's too); with several key sets, Ring checked that each key
            // holds `sets` sets and that they divide `polys`;
            // a twin (Ring checked it) has a's shape, polys x limbs rows, and comes with one digit
            // per limb and src_limbs = limbs (decompose_mac_twin);
            // Ring checked a = polys x src_limbs rows, each key src_limbs x digits polynomials (at
            // least) of `limbs` limbs, each output polys x limbs rows (limbs = src_limbs, or
            // src_limbs + 1 for the hybrid product, whose keys Ring checked as (src_limbs + 1)^2);
            // the parts hold rows x g rows of N words; the row and the two accumulators fit
            // shared memory (the callers checked `fused`), and so does the split kernel's row.
            unsafe { self.launch(name, cfg, &mut args) }?;
        }
        let Some([p0, p1]) = &parts else { return Ok(()) };
        let (Some(p0), Some(p1)) = (p0.data.as_ref(), p1.data.as_ref()) else { return Ok(()) };
        let total = (rows * n) as u64;
        let mut args = [
            Arg::Out(y0),
            Arg::Out(y1),
            Arg::In(p0),
            Arg::In(p1),
            Arg::In(&ring.moduli),
            Arg::U32(ring.log_n),
            Arg::U32(limbs as u32),
            Arg::U32(g as u32),
            Arg::U32(u32::from(accumulate)),
            Arg::U64(total),
        ];
        // SAFETY: matches sum_digits_u32 (kernels/keyswitch.cu); the outputs hold rows x N
        // words, the parts rows x g rows.
        unsafe { self.launch("sum_digits_u32", self.grid(rows * n), &mut args) }
    }

    /// One expansion level on the device: `tau(c1)` gathered (gather_signed_u32), its key
    /// products in coefficient form from `switch(t1, [b, a])`, then both children written by
    /// one combine (expand_combine_u32).
    #[allow(clippy::too_many_arguments)]
    fn expand_with(
        &self,
        ring: &CudaRing,
        src: [&CudaBuffer; 2],
        dst: [&mut CudaBuffer; 2],
        (at, count, odd): (usize, usize, usize),
        limbs: usize,
        idx: &[u32],
        shift: usize,
        switch: impl FnOnce(&CudaBuffer, [&mut CudaBuffer; 2]) -> Result<(), BackendError>,
    ) -> Result<(), BackendError> {
        let n = ring.n;
        let words = count * limbs * n;
        let table = self.index_table(idx)?;
        let mut t1 = self.alloc_zeroed(words)?;
        let (Some(s0), Some(s1)) = (src[0].data.as_ref(), src[1].data.as_ref()) else { return Ok(()) };
        {
            let Some(t) = t1.data.as_mut() else { return Ok(()) };
            let mut args = [
                Arg::Out(t),
                Arg::In(s1),
                Arg::In(&table),
                Arg::In(&ring.moduli),
                Arg::U32(ring.log_n),
                Arg::U32(limbs as u32),
                Arg::U64((at * limbs) as u64),
                Arg::U64(words as u64),
            ];
            // SAFETY: matches gather_signed_u32 in kernels/permute.cu; `src[1]` holds rows
            // [at x limbs, (at + count) x limbs) (Ring checked the range), `t1` count x limbs
            // rows, `idx` N indices below N (automorphism_index).
            unsafe { self.launch("gather_signed_u32", self.grid(words), &mut args) }?;
        }
        let (mut k0, mut k1) = (self.alloc_zeroed(words)?, self.alloc_zeroed(words)?);
        switch(&t1, [&mut k0, &mut k1])?;
        let [d0, d1] = dst;
        let (Some(y0), Some(y1)) = (d0.data.as_mut(), d1.data.as_mut()) else { return Ok(()) };
        let (Some(b), Some(a)) = (k0.data.as_ref(), k1.data.as_ref()) else { return Ok(()) };
        let mut args = [
            Arg::Out(y0),
            Arg::Out(y1),
            Arg::In(s0),
            Arg::In(s1),
            Arg::In(b),
            Arg::In(a),
            Arg::In(&table),
            Arg::In(&ring.moduli),
            Arg::U32(ring.log_n),
            Arg::U32(limbs as u32),
            Arg::U64((at * limbs) as u64),
            Arg::U64(((at + odd) * limbs) as u64),
            Arg::U32(shift as u32),
            Arg::U64(words as u64),
        ];
        // SAFETY: matches expand_combine_u32 in kernels/expand.cu; Ring checked that both
        // children's ranges [at, at + count) and [at + odd, at + odd + count) lie in `dst` and do
        // not overlap, that `src` holds the parents, and shift < 2N; k0, k1 hold count x limbs rows.
        unsafe { self.launch("expand_combine_u32", self.grid(words), &mut args) }
    }

    /// Whether the fused key switch (and the expansion around it) runs at degree `n`: the row
    /// and two accumulators fit shared memory, and FASTQUERY_CUDA_FUSED_KS is not `0`.
    fn fused(&self, n: usize) -> bool {
        self.fused_key_switch && 3 * n * 4 <= self.max_smem
    }

    /// Whether table products may run on the tensor cores (kernels/mma.cu): the device has them
    /// and they were not turned off (FASTQUERY_CUDA_MMA=0, [`CudaBackend::set_tensor_cores`]).
    pub fn tensor_cores(&self) -> bool {
        self.tensor_cores.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Allows or forbids the tensor-core table product from now on (for side-by-side
    /// measurements in one run); returns whether it is now allowed, which it cannot be on a
    /// device without tensor cores. Results are bit-identical either way.
    pub fn set_tensor_cores(&self, on: bool) -> bool {
        let on = on && self.has_tensor_cores;
        self.tensor_cores.store(on, std::sync::atomic::Ordering::Relaxed);
        on
    }

    /// Whether products of at most two rows and eight or more columns take the two-row kernel
    /// with prefetching (`mac_ntt_r2c8_u32`) instead of the 8 x 4 tile.
    pub fn two_row_mac(&self) -> bool {
        self.two_row_mac.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Turns the two-row kernel on or off from now on (for side-by-side measurements in one
    /// run); the words are the same either way.
    pub fn set_two_row_mac(&self, on: bool) {
        self.two_row_mac.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the two-row kernel's grid runs over column tiles first.
    pub fn columns_first(&self) -> bool {
        self.columns_first.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Sets the two-row kernel's grid order from now on (for side-by-side measurements in one
    /// run); the words are the same either way.
    pub fn set_columns_first(&self, on: bool) {
        self.columns_first.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// [`crate::device::Device::alloc_scratch`] as a buffer: words a kernel overwrites in full.
    fn alloc_scratch(&self, words: usize) -> Result<CudaBuffer, BackendError> {
        let data = if words == 0 { None } else { Some(self.device.alloc_scratch(words)?) };
        Ok(CudaBuffer { data, len: words })
    }

    /// Key-switch products of fewer output rows (polynomials times limbs) than this run split by
    /// digit; 0: never.
    pub fn split_rows(&self) -> usize {
        self.split_rows.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Splits key-switch products by digit below `rows` output rows from now on (`0` never,
    /// `usize::MAX` always; FASTQUERY_CUDA_SPLIT_KS=1 sets the multiprocessors' count); the
    /// words are the same either way.
    pub fn set_split_rows(&self, rows: usize) {
        self.split_rows.store(rows, std::sync::atomic::Ordering::Relaxed);
    }

    /// Streaming multiprocessors of the device (the emulator says an H100's 132).
    pub fn multiprocessors(&self) -> usize {
        self.multiprocessors
    }

    /// The newest NTT kernel version allowed ([`NTT_VERSIONS`]).
    pub fn ntt_version(&self) -> u8 {
        self.ntt_version.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Allows NTT kernels up to `version` from now on (for side-by-side measurements in one
    /// run). Results are bit-identical for every version.
    pub fn set_ntt_version(&self, version: u8) -> Result<(), BackendError> {
        if !NTT_VERSIONS.contains(&version) {
            return Err(BackendError::InvalidInput(format!("no NTT kernel version {version} (1 to 3)")));
        }
        self.ntt_version.store(version, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Whether a table product of `dims` at degree `n` runs on the tensor cores
    /// (kernels/mma.cu): where they are allowed, with at least 8 rows and 8 columns (below that
    /// most of each 16 x 32 tile would be padding, and the integer pipes of mac_ntt_r8c4_u32
    /// do fewer wasted products), inner sums within the kernel's bound and N a multiple of
    /// the block's 4 coefficients.
    fn use_tensor_cores(&self, n: usize, limbs: usize, dims: MacDims) -> bool {
        let blocks = (dims.rows.div_ceil(16) * dims.cols.div_ceil(32)).checked_mul(limbs * n / MMA_COEFFS);
        self.tensor_cores()
            && dims.rows >= 8
            && dims.cols >= 8
            && dims.inner <= MMA_MAX_INNER
            && n.is_multiple_of(MMA_COEFFS)
            && blocks.is_some_and(|b| b <= i32::MAX as usize)
    }

    /// 32-byte seeds on the device as ChaCha20 keys: eight little-endian words each.
    fn seed_keys(&self, seeds: &[[u8; 32]]) -> Result<Mem<u32>, BackendError> {
        let words: Vec<u32> = seeds
            .iter()
            .flat_map(|s| s.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect();
        self.device.htod(&words)
    }

    /// `idx` on the device, uploaded once per distinct table (at most [`INDEX_TABLES`] kept).
    fn index_table(&self, idx: &[u32]) -> Result<std::sync::Arc<Mem<u32>>, BackendError> {
        let mut cache = self.index_tables.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, m)) = cache.iter().find(|(k, _)| k.as_slice() == idx) {
            return Ok(m.clone());
        }
        if cache.len() >= INDEX_TABLES {
            cache.remove(0);
        }
        let m = std::sync::Arc::new(self.device.htod(idx)?);
        cache.push((idx.to_vec(), m.clone()));
        Ok(m)
    }

    fn grid(&self, total: usize) -> LaunchConfig {
        let blocks = total.div_ceil(BLOCK as usize).clamp(1, 65_535 * 8) as u32;
        LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 }
    }

    /// # Safety
    /// As [`Device::launch`]: `args` match kernel `name` and the launch stays in bounds.
    unsafe fn launch(&self, name: &str, cfg: LaunchConfig, args: &mut [Arg<'_>]) -> Result<(), BackendError> {
        match &self.profile {
            // SAFETY: forwarded contract.
            None => unsafe { self.device.launch(name, cfg, args) },
            // SAFETY: forwarded contract; the profile only records events around the launch.
            Some(p) => p.time(&self.device, name, || unsafe { self.device.launch(name, cfg, args) }),
        }
    }

    /// Launches an elementwise kernel: `a` (and `b`), the moduli, the Barrett constants when
    /// the kernel takes them, then `log_n`, `limbs`, `total`.
    fn elementwise(
        &self,
        name: &str,
        ring: &CudaRing,
        a: &mut CudaBuffer,
        b: Option<&CudaBuffer>,
        with_barrett: bool,
        shape: Shape,
    ) -> Result<(), BackendError> {
        let total = shape.words(ring.n) as u64;
        let Some(x) = a.data.as_mut() else { return Ok(()) };
        let mut args = vec![Arg::Out(x)];
        if let Some(b) = b {
            let Some(y) = b.data.as_ref() else { return Ok(()) };
            args.push(Arg::In(y));
        }
        args.push(Arg::In(&ring.moduli));
        if with_barrett {
            args.push(Arg::In64(&ring.barrett));
        }
        args.extend([Arg::U32(ring.log_n), Arg::U32(shape.limbs as u32), Arg::U64(total)]);
        // SAFETY: the argument list matches the kernel's signature in kernels/elementwise.cu;
        // the buffers hold `total` words (Ring validated the shapes), the tables `limbs` entries.
        unsafe { self.launch(name, self.grid(total as usize), &mut args) }
    }
}

impl Backend for CudaBackend {
    type Buffer = CudaBuffer;
    type Ring = CudaRing;

    fn synchronize(&self) -> Result<(), BackendError> {
        self.device.synchronize()
    }

    fn kernel_times(&self) -> Result<Option<Vec<fastquery_backend::work::KernelTime>>, BackendError> {
        self.profile.as_ref().map(|p| p.drain(&self.device)).transpose()
    }

    fn kernel_ms_so_far(&self) -> Result<Option<f64>, BackendError> {
        self.profile.as_ref().map(|p| p.total_ms(&self.device)).transpose()
    }

    fn info(&self) -> BackendInfo {
        let accelerator = matches!(self.device, Device::Gpu { .. });
        BackendInfo {
            name: "cuda",
            device: format!("{} ({})", self.name, self.arch),
            accelerator,
            memory: self.memory.map(|m| m as u64),
        }
    }

    fn load_ring(&self, ring: &RingContext) -> Result<CudaRing, BackendError> {
        let n = ring.n();
        if (n + n / 32) * 4 > self.max_smem {
            return Err(BackendError::InvalidInput(format!(
                "N = {n} does not fit the device's shared memory"
            )));
        }
        if ring.limbs() > MAX_LIMBS {
            return Err(BackendError::InvalidInput(format!(
                "{} limbs exceed the kernels' {MAX_LIMBS}",
                ring.limbs()
            )));
        }
        let moduli = ring.moduli();
        let cat = |f: &dyn Fn(&fastquery_ntt::NttTables) -> Vec<u32>| -> Vec<u32> {
            ring.tables().iter().flat_map(|t| f(t)).collect()
        };
        let limbs = ring.limbs();
        let mut ms_inv = vec![0u32; limbs * limbs];
        let mut ms_inv_shoup = vec![0u32; limbs * limbs];
        for last in 0..limbs {
            for i in 0..last {
                let m = moduli[i];
                // Distinct primes: p_last is invertible mod p_i.
                let inv = m.inv(m.reduce(moduli[last].value())).unwrap_or(0);
                ms_inv[last * limbs + i] = inv;
                ms_inv_shoup[last * limbs + i] = m.shoup(inv);
            }
        }
        Ok(CudaRing {
            n,
            log_n: n.trailing_zeros(),
            limbs,
            moduli: self.device.htod(&moduli.iter().map(|m| m.value()).collect::<Vec<_>>())?,
            barrett: self.device.htod(&moduli.iter().map(|m| m.barrett_constant()).collect::<Vec<_>>())?,
            lazy: self.device.htod(
                &moduli.iter().map(|m| m.lazy_products().min(u32::MAX as usize) as u32).collect::<Vec<_>>(),
            )?,
            fwd: self.device.htod(&cat(&|t| t.forward().to_vec()))?,
            fwd_shoup: self.device.htod(&cat(&|t| t.forward_shoup().to_vec()))?,
            inv: self.device.htod(&cat(&|t| t.inverse().to_vec()))?,
            inv_shoup: self.device.htod(&cat(&|t| t.inverse_shoup().to_vec()))?,
            n_inv: self.device.htod(&ring.tables().iter().map(|t| t.n_inv()).collect::<Vec<_>>())?,
            n_inv_shoup: self
                .device
                .htod(&ring.tables().iter().map(|t| t.modulus().shoup(t.n_inv())).collect::<Vec<_>>())?,
            ms_inv: self.device.htod(&ms_inv)?,
            ms_inv_shoup: self.device.htod(&ms_inv_shoup)?,
            host_moduli: moduli.to_vec(),
        })
    }

    fn alloc_zeroed(&self, words: usize) -> Result<CudaBuffer, BackendError> {
        let data = if words == 0 { None } else { Some(self.device.alloc_zeros::<u32>(words)?) };
        Ok(CudaBuffer { data, len: words })
    }

    fn upload(&self, words: &[u32]) -> Result<CudaBuffer, BackendError> {
        let data = if words.is_empty() { None } else { Some(self.device.htod(words)?) };
        Ok(CudaBuffer { data, len: words.len() })
    }

    fn download(&self, buf: &CudaBuffer, out: &mut [u32]) -> Result<(), BackendError> {
        if buf.len != out.len() {
            return Err(BackendError::Shape(format!("download of {} words into {}", buf.len, out.len())));
        }
        match &buf.data {
            Some(d) => self.device.dtoh(d, out),
            None => Ok(()),
        }
    }

    fn duplicate(&self, buf: &CudaBuffer) -> Result<CudaBuffer, BackendError> {
        let data = match &buf.data {
            Some(d) => Some(self.device.dtod(d)?),
            None => None,
        };
        Ok(CudaBuffer { data, len: buf.len })
    }

    fn copy_words(
        &self,
        src: &CudaBuffer,
        src_at: usize,
        dst: &mut CudaBuffer,
        dst_at: usize,
        words: usize,
    ) -> Result<(), BackendError> {
        if src_at + words > src.len || dst_at + words > dst.len {
            return Err(BackendError::Shape(format!(
                "copy of {words} words from {src_at} of {} to {dst_at} of {}",
                src.len, dst.len
            )));
        }
        let (Some(s), Some(d)) = (src.data.as_ref(), dst.data.as_mut()) else { return Ok(()) };
        self.device.copy(s, src_at, d, dst_at, words)
    }

    fn ntt_forward(&self, ring: &CudaRing, buf: &mut CudaBuffer, shape: Shape) -> Result<(), BackendError> {
        self.ntt(ring, buf, shape, false)
    }

    fn ntt_inverse(&self, ring: &CudaRing, buf: &mut CudaBuffer, shape: Shape) -> Result<(), BackendError> {
        self.ntt(ring, buf, shape, true)
    }

    fn add_assign(
        &self,
        ring: &CudaRing,
        a: &mut CudaBuffer,
        b: &CudaBuffer,
        shape: Shape,
    ) -> Result<(), BackendError> {
        self.elementwise("add_u32", ring, a, Some(b), false, shape)
    }

    fn sub_assign(
        &self,
        ring: &CudaRing,
        a: &mut CudaBuffer,
        b: &CudaBuffer,
        shape: Shape,
    ) -> Result<(), BackendError> {
        self.elementwise("sub_u32", ring, a, Some(b), false, shape)
    }

    /// One kernel reads both ranges where they lie and writes the difference (the default
    /// copied both out first: two more passes over the data).
    fn difference(
        &self,
        ring: &CudaRing,
        src: &CudaBuffer,
        (minuend, subtrahend): (usize, usize),
        shape: Shape,
        n: usize,
    ) -> Result<CudaBuffer, BackendError> {
        let words = fastquery_backend::difference_words(src.len, (minuend, subtrahend), shape, (n, ring.n))?;
        let mut out = self.alloc_zeroed(words)?;
        let (Some(x), Some(s)) = (out.data.as_mut(), src.data.as_ref()) else { return Ok(out) };
        let mut args = [
            Arg::Out(x),
            Arg::In(s),
            Arg::U64(minuend as u64),
            Arg::U64(subtrahend as u64),
            Arg::In(&ring.moduli),
            Arg::U32(ring.log_n),
            Arg::U32(shape.limbs as u32),
            Arg::U64(words as u64),
        ];
        // SAFETY: matches difference_u32 in kernels/elementwise.cu; `out` holds `words` words
        // and both ranges of `src` lie inside it (checked above).
        unsafe { self.launch("difference_u32", self.grid(words), &mut args) }?;
        Ok(out)
    }

    fn neg_assign(&self, ring: &CudaRing, a: &mut CudaBuffer, shape: Shape) -> Result<(), BackendError> {
        self.elementwise("neg_u32", ring, a, None, false, shape)
    }

    fn mul_assign(
        &self,
        ring: &CudaRing,
        a: &mut CudaBuffer,
        b: &CudaBuffer,
        shape: Shape,
    ) -> Result<(), BackendError> {
        self.elementwise("mul_u32", ring, a, Some(b), true, shape)
    }

    fn scalar_mul_assign(
        &self,
        ring: &CudaRing,
        a: &mut CudaBuffer,
        scalars: &[u32],
        shape: Shape,
    ) -> Result<(), BackendError> {
        let Some(x) = a.data.as_mut() else { return Ok(()) };
        let shoup: Vec<u32> = scalars.iter().zip(&ring.host_moduli).map(|(&s, m)| m.shoup(s)).collect();
        let (s, ss) = (self.device.htod(scalars)?, self.device.htod(&shoup)?);
        let total = shape.words(ring.n) as u64;
        let mut args = [
            Arg::Out(x),
            Arg::In(&s),
            Arg::In(&ss),
            Arg::In(&ring.moduli),
            Arg::U32(ring.log_n),
            Arg::U32(shape.limbs as u32),
            Arg::U64(total),
        ];
        // SAFETY: matches scalar_mul_u32; `scalars` has one entry per limb (checked by Ring).
        unsafe { self.launch("scalar_mul_u32", self.grid(total as usize), &mut args) }
    }

    fn monomial_mul_assign(
        &self,
        ring: &CudaRing,
        a: &mut CudaBuffer,
        k: usize,
        shape: Shape,
    ) -> Result<(), BackendError> {
        let Some(x) = a.data.as_mut() else { return Ok(()) };
        let src = self.device.dtod(x)?;
        let total = shape.words(ring.n) as u64;
        let mut args = [
            Arg::Out(x),
            Arg::In(&src),
            Arg::In(&ring.moduli),
            Arg::U32(ring.log_n),
            Arg::U32(shape.limbs as u32),
            Arg::U32(k as u32),
            Arg::U64(total),
        ];
        // SAFETY: matches monomial_mul_u32; `src` is a distinct copy of the same length.
        unsafe { self.launch("monomial_mul_u32", self.grid(total as usize), &mut args) }
    }

    fn mod_switch_down(
        &self,
        ring: &CudaRing,
        a: &CudaBuffer,
        polys: usize,
        in_limbs: usize,
        out: &mut CudaBuffer,
        out_limbs: usize,
    ) -> Result<(), BackendError> {
        let (Some(x), Some(y)) = (a.data.as_ref(), out.data.as_mut()) else { return Ok(()) };
        let total = (polys * ring.n) as u64;
        let mut args = [
            Arg::Out(y),
            Arg::In(x),
            Arg::In(&ring.moduli),
            Arg::In(&ring.ms_inv),
            Arg::In(&ring.ms_inv_shoup),
            Arg::U32(ring.log_n),
            Arg::U32(ring.limbs as u32),
            Arg::U32(in_limbs as u32),
            Arg::U32(out_limbs as u32),
            Arg::U64(total),
        ];
        // SAFETY: matches mod_switch_down_u32; `a` holds polys x in_limbs rows and `out`
        // polys x out_limbs rows (Ring allocated it), in_limbs <= ring limbs <= MAX_LIMBS.
        unsafe { self.launch("mod_switch_down_u32", self.grid(total as usize), &mut args) }
    }

    fn gather_signed(
        &self,
        ring: &CudaRing,
        _ctx: &RingContext,
        out: &mut CudaBuffer,
        a: &CudaBuffer,
        idx: &[u32],
        shape: Shape,
    ) -> Result<(), BackendError> {
        let (Some(y), Some(x)) = (out.data.as_mut(), a.data.as_ref()) else { return Ok(()) };
        let table = self.index_table(idx)?;
        let total = shape.words(ring.n) as u64;
        let mut args = [
            Arg::Out(y),
            Arg::In(x),
            Arg::In(&table),
            Arg::In(&ring.moduli),
            Arg::U32(ring.log_n),
            Arg::U32(shape.limbs as u32),
            Arg::U64(0),
            Arg::U64(total),
        ];
        // SAFETY: matches gather_signed_u32 in kernels/permute.cu (from row 0); `out` and `a` hold `total`
        // words (Ring allocated `out` with a's shape), `idx` holds N indices below N (from
        // automorphism_index, checked by Ring).
        unsafe { self.launch("gather_signed_u32", self.grid(total as usize), &mut args) }
    }

    fn decompose(
        &self,
        ring: &CudaRing,
        _ctx: &RingContext,
        a: &CudaBuffer,
        polys: usize,
        limbs: usize,
        digit_bits: u32,
        digits: usize,
        out: &mut CudaBuffer,
    ) -> Result<(), BackendError> {
        let (Some(x), Some(y)) = (a.data.as_ref(), out.data.as_mut()) else { return Ok(()) };
        let total = (polys * limbs * digits * limbs * ring.n) as u64;
        let mut args = [
            Arg::Out(y),
            Arg::In(x),
            Arg::In(&ring.moduli),
            Arg::U32(ring.log_n),
            Arg::U32(limbs as u32),
            Arg::U32(digit_bits),
            Arg::U32(digits as u32),
            Arg::U64(total),
        ];
        // SAFETY: matches decompose_u32 in kernels/permute.cu; `a` holds polys x limbs rows and
        // `out` polys x limbs x digits x limbs rows (Ring allocated it), digit_bits in 1..=31.
        unsafe { self.launch("decompose_u32", self.grid(total as usize), &mut args) }
    }

    /// 256 ciphertexts: at five limbs, 1,280 blocks of the fused key switch (about ten per
    /// multiprocessor of an H100) instead of 80 at the CPU's 16, and a sixteenth of the
    /// launches. The composed fallback's temporaries grow with it (about 0.4 GB of digits at
    /// N = 8192 and five limbs), well within a data-centre GPU.
    fn keyswitch_chunk(&self) -> usize {
        256
    }

    /// Any batch at once where the product is fused (its digit rows live in shared memory, so a
    /// call makes nothing that grows with the batch beyond its outputs: a 128-token fold's first
    /// level, 8,192 external products, is one launch, not 32 chunks copied out and back); the
    /// composed fallback's chunk otherwise.
    fn key_product_chunk(&self, n: usize) -> usize {
        if self.fused(n) { usize::MAX } else { self.keyswitch_chunk() }
    }

    fn gpu(&self) -> bool {
        true
    }

    /// Fused (kernels/keyswitch.cu) where the row and two accumulators fit shared memory
    /// (N <= 16384 on an H100) and `FASTQUERY_CUDA_FUSED_KS` is not `0`; the composed steps
    /// otherwise.
    fn decompose_mac(
        &self,
        ring: &CudaRing,
        ctx: &RingContext,
        a: &CudaBuffer,
        (polys, limbs): (usize, usize),
        (digit_bits, digits): (u32, usize),
        keys: [&CudaBuffer; 2],
        out: [&mut CudaBuffer; 2],
        accumulate: bool,
    ) -> Result<(), BackendError> {
        if !self.fused(ring.n) {
            return fastquery_backend::composed_decompose_mac(
                self,
                ring,
                ctx,
                a,
                (polys, limbs),
                (digit_bits, digits),
                keys,
                out,
                accumulate,
            );
        }
        self.launch_decompose_mac(
            ring,
            a,
            None,
            polys,
            (limbs, limbs),
            (digit_bits, digits),
            keys,
            out,
            (accumulate, 1),
        )
    }

    /// The fused product with the own-limb digit rows read from the twin (kernels/keyswitch.cu,
    /// `use_twin`); the default (the twin ignored) where the fused kernel does not run.
    fn decompose_mac_twin(
        &self,
        ring: &CudaRing,
        ctx: &RingContext,
        a: &CudaBuffer,
        twin: &CudaBuffer,
        (polys, limbs): (usize, usize),
        digit_bits: u32,
        keys: [&CudaBuffer; 2],
        out: [&mut CudaBuffer; 2],
        accumulate: bool,
    ) -> Result<(), BackendError> {
        if !self.fused(ring.n) {
            return self.decompose_mac(ring, ctx, a, (polys, limbs), (digit_bits, 1), keys, out, accumulate);
        }
        self.launch_decompose_mac(
            ring,
            a,
            Some(twin),
            polys,
            (limbs, limbs),
            (digit_bits, 1),
            keys,
            out,
            (accumulate, 1),
        )
    }

    fn takes_twin(&self, n: usize) -> bool {
        self.fused(n)
    }

    /// The fused product with each row's key set chosen in the kernel (`r % sets`): one launch
    /// for every token of a batch; the composed sets where the fused product does not run.
    fn decompose_mac_sets(
        &self,
        ring: &CudaRing,
        ctx: &RingContext,
        a: &CudaBuffer,
        twin: Option<&CudaBuffer>,
        (polys, limbs): (usize, usize),
        (digit_bits, digits): (u32, usize),
        keys: [&CudaBuffer; 2],
        out: [&mut CudaBuffer; 2],
        (accumulate, sets): (bool, usize),
    ) -> Result<(), BackendError> {
        if !self.fused(ring.n) {
            return fastquery_backend::composed_decompose_mac_sets(
                self,
                ring,
                ctx,
                a,
                twin,
                (polys, limbs),
                (digit_bits, digits),
                keys,
                out,
                (accumulate, sets),
            );
        }
        let dims = (limbs, limbs);
        self.launch_decompose_mac(
            ring,
            a,
            twin,
            polys,
            dims,
            (digit_bits, digits),
            keys,
            out,
            (accumulate, sets),
        )
    }

    /// One launch (kernels/elementwise.cu `copy_polys_u32`): a block per move and slice of a
    /// polynomial, 16 bytes a thread; the move list is cached like an index table. A single
    /// run of consecutive polynomials is one device copy instead.
    fn copy_polys_at(
        &self,
        src: &CudaBuffer,
        dst: &mut CudaBuffer,
        poly: usize,
        moves: &[[u32; 2]],
    ) -> Result<(), BackendError> {
        let fits =
            |m: &[u32; 2]| (m[0] as usize + 1) * poly <= src.len && (m[1] as usize + 1) * poly <= dst.len;
        if !moves.iter().all(fits) {
            return Err(BackendError::Shape(format!("a move of {poly}-word polys out of range")));
        }
        // One run of consecutive polynomials (a token's rows) is one device copy.
        let one_run = moves.windows(2).all(|w| w[1] == [w[0][0].wrapping_add(1), w[0][1].wrapping_add(1)]);
        if one_run || !poly.is_multiple_of(4) || poly / 4 > u32::MAX as usize {
            return fastquery_backend::copy_polys_in_runs(self, src, dst, poly, moves);
        }
        let (Some(s), Some(d)) = (src.data.as_ref(), dst.data.as_mut()) else { return Ok(()) };
        let flat: Vec<u32> = moves.iter().flatten().copied().collect();
        let table = self.index_table(&flat)?;
        let quads = poly / 4;
        let parts = quads.div_ceil(BLOCK as usize).clamp(1, 65_535) as u32;
        let cfg = LaunchConfig {
            grid_dim: (moves.len() as u32, parts, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut args = [Arg::Out(d), Arg::In(s), Arg::In(&table), Arg::U32(quads as u32)];
        // SAFETY: matches copy_polys_u32 (kernels/elementwise.cu); every move's source and
        // destination polynomial lie inside their buffers (checked above), `poly` is a multiple
        // of four words (16-byte accesses on the allocations' 256-byte alignment), and Ring
        // checked that no destination is written twice.
        unsafe { self.launch("copy_polys_u32", cfg, &mut args) }
    }

    /// The fused product over `q P` straight from the chain's rows (kernels/keyswitch.cu with
    /// `src_limbs = limbs`, outputs over `limbs + 1`: no lifted copy, no zero digit), then the
    /// inverse transforms and the modulus switch down to `q`; the composed steps where the
    /// fused product does not run.
    fn keyswitch_hybrid(
        &self,
        ring: &CudaRing,
        ctx: &RingContext,
        a: &CudaBuffer,
        (polys, limbs): (usize, usize),
        keys: [&CudaBuffer; 2],
        out: [&mut CudaBuffer; 2],
    ) -> Result<(), BackendError> {
        if !self.fused(ring.n) {
            return fastquery_backend::composed_keyswitch_hybrid(
                self,
                ring,
                ctx,
                a,
                (polys, limbs),
                keys,
                out,
            );
        }
        let wide = limbs + 1;
        let words = polys * wide * ring.n;
        let mut prod = [self.alloc_zeroed(words)?, self.alloc_zeroed(words)?];
        {
            let [p0, p1] = &mut prod;
            let digits = (fastquery_backend::HYBRID_DIGIT_BITS, 1);
            self.launch_decompose_mac(
                ring,
                a,
                None,
                polys,
                (limbs, wide),
                digits,
                keys,
                [p0, p1],
                (false, 1),
            )?;
        }
        for (p, o) in prod.iter_mut().zip(out) {
            self.ntt_inverse(ring, p, Shape::new(polys, wide))?;
            self.mod_switch_down(ring, p, polys, wide, o, limbs)?;
        }
        Ok(())
    }

    /// A gather, the fused key switch, two inverse NTTs and the combine of kernels/expand.cu where that switch runs;
    /// the composed steps otherwise.
    fn expand_step(
        &self,
        ring: &CudaRing,
        ctx: &RingContext,
        src: [&CudaBuffer; 2],
        dst: [&mut CudaBuffer; 2],
        (at, count, odd): (usize, usize, usize),
        limbs: usize,
        idx: &[u32],
        (digit_bits, digits): (u32, usize),
        keys: [&CudaBuffer; 2],
        shift: usize,
    ) -> Result<(), BackendError> {
        if !self.fused(ring.n) {
            return fastquery_backend::composed_expand_step(
                self,
                ring,
                ctx,
                src,
                dst,
                (at, count, odd),
                limbs,
                idx,
                (digit_bits, digits),
                keys,
                shift,
            );
        }
        self.expand_with(ring, src, dst, (at, count, odd), limbs, idx, shift, |t1, out| {
            fastquery_backend::gadget_keyswitch(
                self,
                ring,
                ctx,
                t1,
                (count, limbs),
                (digit_bits, digits),
                keys,
                out,
            )
        })
    }

    /// The gather and the combine of [`CudaBackend::expand_step`] around the hybrid key switch
    /// ([`CudaBackend::keyswitch_hybrid`]); the composed steps where the fused product does not
    /// run.
    fn expand_step_hybrid(
        &self,
        ring: &CudaRing,
        ctx: &RingContext,
        src: [&CudaBuffer; 2],
        dst: [&mut CudaBuffer; 2],
        (at, count, odd): (usize, usize, usize),
        limbs: usize,
        idx: &[u32],
        keys: [&CudaBuffer; 2],
        shift: usize,
    ) -> Result<(), BackendError> {
        if !self.fused(ring.n) {
            return fastquery_backend::composed_expand_step_hybrid(
                self,
                ring,
                ctx,
                src,
                dst,
                (at, count, odd),
                limbs,
                idx,
                keys,
                shift,
            );
        }
        self.expand_with(ring, src, dst, (at, count, odd), limbs, idx, shift, |t1, out| {
            self.keyswitch_hybrid(ring, ctx, t1, (count, limbs), keys, out)
        })
    }

    fn expand_seeds(
        &self,
        ring: &CudaRing,
        _ctx: &RingContext,
        seeds: &[[u8; 32]],
        polys: usize,
        limbs: usize,
        out: &mut CudaBuffer,
    ) -> Result<(), BackendError> {
        let Some(y) = out.data.as_mut() else { return Ok(()) };
        let key = self.seed_keys(seeds)?;
        let cfg = LaunchConfig {
            grid_dim: (seeds.len() as u32, 1, 1),
            block_dim: (EXPAND_THREADS, 1, 1),
            shared_mem_bytes: (2 * EXPAND_THREADS + 1) * 4,
        };
        let mut args = [
            Arg::Out(y),
            Arg::In(&key),
            Arg::In(&ring.moduli),
            Arg::U32(ring.log_n),
            Arg::U32(limbs as u32),
            Arg::U32(polys as u32),
        ];
        // SAFETY: matches expand_seeds_u32 in kernels/sample.cu; `out` holds seeds x polys x
        // limbs rows of N words (Ring allocated it), `key` 8 words per seed, limbs <= the ring's.
        unsafe { self.launch("expand_seeds_u32", cfg, &mut args) }
    }

    fn zero_noise(
        &self,
        ring: &CudaRing,
        _ctx: &RingContext,
        seeds: &[[u8; 32]],
        limbs: usize,
        eta: u32,
        out: [&mut CudaBuffer; 3],
    ) -> Result<(), BackendError> {
        let [u, e0, e1] = out;
        let (Some(u), Some(e0), Some(e1)) = (u.data.as_mut(), e0.data.as_mut(), e1.data.as_mut()) else {
            return Ok(());
        };
        let key = self.seed_keys(seeds)?;
        let pairs = (ring.n / 2).max(1);
        for seed0 in (0..seeds.len()).step_by(65_535) {
            let count = (seeds.len() - seed0).min(65_535);
            let cfg = LaunchConfig {
                grid_dim: (pairs.div_ceil(BLOCK as usize) as u32, count as u32, 1),
                block_dim: (BLOCK, 1, 1),
                shared_mem_bytes: 0,
            };
            let mut args = [
                Arg::Out(u),
                Arg::Out(e0),
                Arg::Out(e1),
                Arg::In(&key),
                Arg::In(&ring.moduli),
                Arg::U32(ring.log_n),
                Arg::U32(limbs as u32),
                Arg::U32(eta),
                Arg::U32(seed0 as u32),
            ];
            // SAFETY: matches zero_noise_u32 in kernels/sample.cu; each output holds seeds x limbs
            // rows of N words (Ring allocated them), `key` 8 words per seed, limbs <= the ring's,
            // eta in 1..=32 (Ring checked).
            unsafe { self.launch("zero_noise_u32", cfg, &mut args)? };
        }
        Ok(())
    }

    fn flood_mask_add(
        &self,
        ring: &CudaRing,
        _ctx: &RingContext,
        a: &mut CudaBuffer,
        limbs: usize,
        spec: &host::Flooding,
        seeds: &[[u8; 32]],
        (positions, starts): (&[u32], &[u32]),
    ) -> Result<(), BackendError> {
        let Some(x) = a.data.as_mut() else { return Ok(()) };
        let (key, pos, st) =
            (self.seed_keys(seeds)?, self.device.htod(positions)?, self.device.htod(starts)?);
        let floor_res = self.device.htod(&spec.floor_res()[..limbs])?;
        let mut args = [
            Arg::Out(x),
            Arg::In(&key),
            Arg::In(&pos),
            Arg::In(&st),
            Arg::In(&ring.moduli),
            Arg::In(&floor_res),
            Arg::U32(ring.log_n),
            Arg::U32(limbs as u32),
            Arg::U32(seeds.len() as u32),
            Arg::U32(positions.len() as u32),
            Arg::U64(spec.bound() as u64),
            Arg::U64((spec.bound() >> 64) as u64),
            Arg::U64(spec.q_mod_t()),
            Arg::U32(spec.plain_bits()),
        ];
        // SAFETY: matches flood_mask_u32 in kernels/sample.cu; `a` holds seeds x limbs rows of N
        // words, `key` 8 words per seed, `starts` seeds + 1 offsets ending at the positions'
        // count, every position below N (Ring checked), floor_res one word per limb; Flooding
        // holds bound < 2^127 and plain_bits in 1..=64.
        unsafe { self.launch("flood_mask_u32", self.grid(positions.len()), &mut args) }
    }

    fn gather_words(
        &self,
        a: &CudaBuffer,
        _words: usize,
        idx: &[u32],
        out: &mut [u32],
    ) -> Result<(), BackendError> {
        let Some(x) = a.data.as_ref() else { return Ok(()) };
        if idx.is_empty() {
            return Ok(());
        }
        let i = self.device.htod(idx)?;
        let mut o = self.device.alloc_zeros::<u32>(idx.len())?;
        let mut args = [Arg::Out(&mut o), Arg::In(x), Arg::In(&i), Arg::U32(idx.len() as u32)];
        // SAFETY: matches gather_words_u32 in kernels/sample.cu; Ring checked every index is
        // below the buffer's words, and `o` holds one word per index.
        unsafe { self.launch("gather_words_u32", self.grid(idx.len()), &mut args)? };
        self.device.dtoh(&o, out)
    }

    fn mac(
        &self,
        ring: &CudaRing,
        out: &mut CudaBuffer,
        a: &CudaBuffer,
        b: &CudaBuffer,
        dims: MacDims,
        limbs: usize,
        accumulate: bool,
    ) -> Result<(), BackendError> {
        let Some(o) = out.data.as_mut() else { return Ok(()) };
        let (Some(x), Some(y)) = (a.data.as_ref(), b.data.as_ref()) else {
            // inner == 0: the sum is empty; keep or clear `out`.
            if !accumulate {
                self.device.zero(o)?;
            }
            return Ok(());
        };
        let lc = limbs * ring.n;
        let tensor = self.use_tensor_cores(ring.n, limbs, dims);
        let (name, cfg) = if tensor {
            let tiles = dims.rows.div_ceil(16) * dims.cols.div_ceil(32);
            let cfg = LaunchConfig {
                grid_dim: ((tiles * lc / MMA_COEFFS) as u32, 1, 1),
                block_dim: (BLOCK, 1, 1),
                shared_mem_bytes: MMA_SMEM_BYTES,
            };
            ("mac_ntt_mma_u32", cfg)
        } else {
            // Four columns per thread where there are that many (the table products): `a` is
            // then read once per four columns instead of once per column; two rows and eight
            // columns with the next terms prefetched for the one-token products, which only
            // stream the table.
            let (name, tile_rows, tile_cols) = match (dims.rows, dims.cols) {
                (..=2, 8..) if self.two_row_mac() => ("mac_ntt_r2c8_u32", 2, 8),
                (_, 4..) => ("mac_ntt_r8c4_u32", 8, 4),
                _ => ("mac_ntt_u32", MAC_ROWS, 1),
            };
            let (lanes, tiles) = (lc.div_ceil(BLOCK as usize) as u32, dims.cols.div_ceil(tile_cols) as u32);
            // The two-row kernel with the column tiles first, where the coefficients' blocks
            // fit the grid's y (at most 65,535).
            let (name, x, y) = match name {
                "mac_ntt_r2c8_u32" if self.columns_first() && lanes <= 65_535 => {
                    ("mac_ntt_r2c8_cols_u32", tiles, lanes)
                }
                _ => (name, lanes, tiles),
            };
            let cfg = LaunchConfig {
                grid_dim: (x, y, dims.rows.div_ceil(tile_rows) as u32),
                block_dim: (BLOCK, 1, 1),
                shared_mem_bytes: 0,
            };
            (name, cfg)
        };
        let mut args =
            vec![Arg::Out(o), Arg::In(x), Arg::In(y), Arg::In(&ring.moduli), Arg::In64(&ring.barrett)];
        if !tensor {
            args.push(Arg::In(&ring.lazy)); // the integer kernels reduce every `lazy` terms
        }
        args.extend([
            Arg::U32(ring.log_n),
            Arg::U32(limbs as u32),
            Arg::U32(dims.rows as u32),
            Arg::U32(dims.inner as u32),
            Arg::U32(dims.cols as u32),
            Arg::U32(u32::from(accumulate)),
        ]);
        // SAFETY: matches the integer kernels of kernels/mac.cu (one argument list), and
        // mac_ntt_mma_u32 in kernels/mma.cu (the same parameters without `lazy`); Ring checked
        // a = rows x inner, b = inner x cols and out = rows x cols polynomials of `limbs` limbs.
        // For the tensor cores, use_tensor_cores checked N % 4 == 0, inner <= MMA_MAX_INNER and
        // the grid's size, and the block is the kernel's 256 threads.
        unsafe { self.launch(name, cfg, &mut args) }
    }
}

impl CudaBackend {
    /// One block per `(poly, limb)` row, the row in `n * 4` bytes of shared memory (within the
    /// opt-in limit checked in load_ring).
    fn ntt(
        &self,
        ring: &CudaRing,
        buf: &mut CudaBuffer,
        shape: Shape,
        inverse: bool,
    ) -> Result<(), BackendError> {
        let Some(d) = buf.data.as_mut() else { return Ok(()) };
        let (n, log_n, limbs) = (ring.n as u32, ring.log_n, shape.limbs as u32);
        let (name, threads, smem) = ntt_kernel(self.ntt_version(), n, inverse);
        let cfg = LaunchConfig {
            grid_dim: (shape.rows() as u32, 1, 1),
            block_dim: (threads, 1, 1),
            shared_mem_bytes: smem,
        };
        let mut args = if inverse {
            vec![
                Arg::Out(d),
                Arg::In(&ring.inv),
                Arg::In(&ring.inv_shoup),
                Arg::In(&ring.moduli),
                Arg::In(&ring.n_inv),
                Arg::In(&ring.n_inv_shoup),
            ]
        } else {
            vec![Arg::Out(d), Arg::In(&ring.fwd), Arg::In(&ring.fwd_shoup), Arg::In(&ring.moduli)]
        };
        args.extend([Arg::U32(n), Arg::U32(log_n), Arg::U32(limbs)]);
        // SAFETY: the argument lists match the NTT kernels in kernels/ntt.cu; every row of the
        // buffer holds `n` words (Ring validated the shape).
        unsafe { self.launch(name, cfg, &mut args) }
    }
}

#[cfg(test)]
mod tests {
    use super::{ntt_kernel, ntt_version, split_key_switch, switch};

    /// The split key switch is off unless asked for (it has not run on a GPU); a typo is an
    /// error, not the other path.
    #[test]
    fn the_split_key_switch_is_opt_in() {
        assert_eq!(split_key_switch(None), Ok(false));
        assert_eq!(split_key_switch(Some("0")), Ok(false));
        assert_eq!(split_key_switch(Some(" 1\n")), Ok(true));
        for bad in ["", "2", "yes", "on"] {
            let e = split_key_switch(Some(bad)).unwrap_err().to_string();
            assert!(e.contains("FASTQUERY_CUDA_SPLIT_KS must be 0 or 1"), "{e}");
        }
    }

    #[test]
    fn the_ntt_version_is_1_2_or_3() {
        assert_eq!(ntt_version(None), Ok(3));
        assert_eq!(ntt_version(Some("2")), Ok(2));
        assert_eq!(ntt_version(Some(" 1\n")), Ok(1));
        for bad in ["", "0", "4", "v3", "03", "-1", "three"] {
            let e = ntt_version(Some(bad)).unwrap_err().to_string();
            assert!(e.contains("FASTQUERY_CUDA_NTT must be 1, 2 or 3"), "{e}");
        }
    }

    /// Each version runs where it applies and falls back to the newest older one elsewhere.
    #[test]
    fn ntt_kernels_by_version_and_degree() {
        let name = |v, n| ntt_kernel(v, n, false).0;
        assert_eq!(name(3, 4096), "ntt_forward_4096_u32");
        assert_eq!(name(3, 8192), "ntt_forward_8192_u32");
        assert_eq!(ntt_kernel(3, 8192, true), ("ntt_inverse_8192_u32", 512, 32768));
        assert_eq!(name(3, 2048), "ntt_forward_reg16_u32");
        assert_eq!(name(3, 16384), "ntt_forward_u32");
        assert_eq!(name(2, 4096), "ntt_forward_reg16_u32");
        assert_eq!(name(2, 8192), "ntt_forward_u32");
        assert_eq!(name(1, 4096), "ntt_forward_u32");
        assert_eq!(ntt_kernel(1, 16, true), ("ntt_inverse_u32", 8, 64));
    }

    #[test]
    fn environment_switches_accept_0_and_1_only() {
        assert_eq!(switch("X", None), Ok(true));
        assert_eq!(switch("X", Some("1")), Ok(true));
        assert_eq!(switch("X", Some(" 0\n")), Ok(false));
        for bad in ["", "off", "false", "2", "00"] {
            let e = switch("FASTQUERY_CUDA_MMA", Some(bad)).unwrap_err().to_string();
            assert!(e.contains("FASTQUERY_CUDA_MMA must be 0 or 1"), "{e}");
        }
    }
}
