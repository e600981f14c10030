//! # fastquery-cpu
//!
//! The CPU implementation of [`fastquery_backend::Backend`]. It is the fallback when no GPU is
//! present and the oracle that the GPU backends must match word for word.
//!
//! * Transforms: tfhe-ntt through [`fastquery_ntt::NttPlan`] (canonical order verified when the
//!   plan is built), one `(poly, limb)` row per rayon task.
//! * Multiply-accumulate: on AVX-512 and on AVX2, register-blocked with packed tiles (one
//!   kernel for both, [`mac_simd`]); elsewhere tiles of coefficients, lazily reduced `u64`
//!   accumulators ([`fastquery_math::Modulus::lazy_products`] products between Barrett
//!   reductions), compiled for the baseline by pulp's run-time dispatch; each plaintext tile is
//!   read once for all rows of a batch.
//! * Threads: rayon's global pool, or a private pool of a chosen size ([`CpuBackend::with_threads`]).
#![forbid(unsafe_code)]

use std::sync::{Arc, Mutex};

use fastquery_backend::{Backend, BackendError, BackendInfo, MacDims, RingContext, Shape, host};
use fastquery_math::Modulus;
use fastquery_ntt::NttPlan;
use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
mod mac_simd;
mod permute;
mod pool;

pub use pool::{
    BufferPool, CpuBuffer, DEFAULT_LARGE_POOL_BYTES, DEFAULT_POOL_BYTES, MAX_POOLED_WORDS, MIN_POOLED_WORDS,
};

/// Target size, in words, of the work of one rayon task for cheap elementwise kernels.
const MIN_TASK_WORDS: usize = 1 << 15;
/// Target size, in `u64`s, of the accumulators of one multiply-accumulate tile (L1/L2 resident).
const MAC_ACC_WORDS: usize = 1 << 14;
/// Longest coefficient tile of the multiply-accumulate.
const MAC_MAX_TILE: usize = 1024;

/// The multi-threaded CPU backend.
#[derive(Clone)]
pub struct CpuBackend {
    pool: Option<Arc<rayon::ThreadPool>>,
    /// Freed buffers kept for reuse, shared by clones ([`pool`]).
    buffers: Arc<BufferPool>,
    arch: pulp::Arch,
    /// The widest register-blocked multiply-accumulate that may run (where the CPU has it).
    mac: MacKernel,
}

/// Which multiply-accumulate kernel the CPU backend may use: the widest one the CPU has, up to
/// this one ([`CpuBackend::with_mac_kernel`]). The test suite runs every one of them, so each
/// is checked on any x86-64 machine that has its instructions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum MacKernel {
    /// Tiles of lazily reduced `u64` accumulators, vectorised by the compiler (any CPU).
    Portable,
    /// Register-blocked, AVX2 (x86-64-v3): blocks of 4 rows x 8 coefficients.
    Avx2,
    /// Register-blocked, AVX-512 (x86-64-v4): blocks of 8 rows x 16 coefficients.
    Avx512,
}

impl std::fmt::Debug for CpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuBackend").field("threads", &self.threads()).finish()
    }
}

impl Default for CpuBackend {
    fn default() -> Self {
        Self::new()
    }
}

/// The CPU backend's per-ring data: moduli and NTT plans.
#[derive(Debug)]
pub struct CpuRing {
    n: usize,
    moduli: Vec<Modulus>,
    plans: Vec<NttPlan>,
    /// [`monomial_evaluations`] by shift, made on first use (an expansion uses one shift per
    /// level, `log2 N` at most; a Shoup factor is a division per word, worth keeping).
    monomials: Mutex<Vec<(usize, Arc<[Evaluations]>)>>,
    /// The block form of each gather seen ([`permute::BlockGather`]; None where it has none),
    /// by its indices: a few per ring (one per automorphism exponent and form). Read by the
    /// x86-64 gathers only.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    gathers: Mutex<Vec<KnownGather>>,
}

/// A gather's indices and its block form, where it has one.
type KnownGather = (Vec<u32>, Option<Arc<permute::BlockGather>>);

/// A polynomial's NTT evaluations in one limb and their Shoup factors.
type Evaluations = (Vec<u32>, Vec<u32>);

impl CpuBackend {
    /// A backend on rayon's global pool (`RAYON_NUM_THREADS`, default: all cores).
    pub fn new() -> Self {
        Self {
            pool: None,
            buffers: Arc::new(BufferPool::with_large(pool_bytes(), large_pool_bytes())),
            arch: pulp::Arch::new(),
            mac: MacKernel::Avx512,
        }
    }

    /// A backend on a private pool of `threads` threads.
    pub fn with_threads(threads: usize) -> Result<Self, BackendError> {
        if threads == 0 {
            return Err(BackendError::InvalidInput("the CPU backend needs at least one thread".into()));
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("fastquery-cpu-{i}"))
            .build()
            .map_err(|e| BackendError::Device(format!("cannot start {threads} threads: {e}")))?;
        Ok(Self { pool: Some(Arc::new(pool)), ..Self::new() })
    }

    /// The same backend with the portable multiply-accumulate only, as on a CPU without AVX2
    /// (the test suite runs every kernel).
    pub fn portable(self) -> Self {
        self.with_mac_kernel(MacKernel::Portable)
    }

    /// The same backend using at most `kernel` for the multiply-accumulate (the default is the
    /// widest the CPU has).
    pub fn with_mac_kernel(mut self, kernel: MacKernel) -> Self {
        self.mac = kernel;
        self
    }

    /// The multiply-accumulate kernel this backend runs on this CPU.
    pub fn mac_kernel(&self) -> MacKernel {
        #[cfg(target_arch = "x86_64")]
        {
            if self.v4().is_some() {
                return MacKernel::Avx512;
            }
            if self.v3().is_some() {
                return MacKernel::Avx2;
            }
        }
        MacKernel::Portable
    }

    /// The same backend keeping at most `bytes` of freed buffers for reuse (0: none; the
    /// default is [`DEFAULT_POOL_BYTES`]), and no freed large buffers. Clones made before this
    /// call keep the old pool.
    pub fn with_buffer_pool(mut self, bytes: usize) -> Self {
        self.buffers = Arc::new(BufferPool::new(bytes));
        self
    }

    /// Bytes of freed buffers the backend holds for reuse now.
    pub fn pooled_bytes(&self) -> usize {
        self.buffers.held_bytes()
    }

    /// Number of worker threads.
    pub fn threads(&self) -> usize {
        self.pool.as_ref().map_or_else(rayon::current_num_threads, |p| p.current_num_threads())
    }

    fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match &self.pool {
            Some(p) => p.install(f),
            None => f(),
        }
    }

    /// [`Backend::mac`] register-blocked on AVX-512 or AVX2: see [`mac_simd`]. Tasks are
    /// `(limb, tile)` pairs.
    #[cfg(target_arch = "x86_64")]
    #[allow(clippy::too_many_arguments)]
    fn mac_simd<I: mac_simd::Lanes + Send + Sync>(
        &self,
        simd: I,
        ring: &CpuRing,
        out: &mut [u32],
        a: &[u32],
        b: MacRight<'_>,
        dims: MacDims,
        limbs: usize,
        accumulate: bool,
    ) {
        let n = ring.n;
        let MacDims { rows, inner, cols } = dims;
        if rows == 0 || cols == 0 {
            return;
        }
        let poly = limbs * n;
        let tile = match b {
            // The packed rows of a tile stay in cache while the columns stream (see X_BYTES).
            MacRight::RowMajor(_) => {
                let fit = (mac_simd::X_BYTES / (rows * inner.max(1) * 4)).max(1);
                (1usize << fit.ilog2()).clamp(I::LANES, mac_simd::MAX_TILE.min(n))
            }
            // Only one block of the packed rows is in use at a time: the tile bounds the
            // task's copy of them (LAID_X_BYTES) and leaves four tasks per thread.
            MacRight::LaidOut(_) => {
                let fit = (mac_simd::LAID_X_BYTES / (rows * inner.max(1) * 4)).max(1);
                let spread = (limbs * n / (4 * self.threads())).max(1);
                (1usize << fit.min(spread).ilog2()).clamp(I::LANES, mac_simd::MAX_TILE.min(n))
            }
        };
        let tiles = n / tile;
        // Output slices by task, each task's in (row, column) order.
        let mut tasks: Vec<Vec<&mut [u32]>> =
            (0..limbs * tiles).map(|_| Vec::with_capacity(rows * cols)).collect();
        for (k, s) in out.chunks_mut(tile).enumerate() {
            tasks[k % (limbs * tiles)].push(s);
        }
        let run = |(task, outs): (usize, Vec<&mut [u32]>)| {
            let l = task / tiles;
            let off = l * n + (task % tiles) * tile;
            let xs = (0..rows * inner).map(|k| &a[k * poly + off..][..tile]).collect();
            let ys = match b {
                MacRight::RowMajor(b) => {
                    mac_simd::Ys::Slices((0..inner * cols).map(|k| &b[k * poly + off..][..tile]).collect())
                }
                MacRight::LaidOut(b) => {
                    // Blocks `off / LANES ..` of the limb-major laid-out order.
                    let per_block = cols * inner * I::LANES;
                    mac_simd::Ys::LaidOut(
                        &b[(l * n + task % tiles * tile) / I::LANES * per_block..]
                            [..tile / I::LANES * per_block],
                    )
                }
            };
            let m = ring.moduli[l];
            simd.run(mac_simd::Bucket { simd, m, rows, inner, cols, tile, xs, ys, outs, accumulate });
        };
        if self.parallel(tasks.len()) {
            self.install(|| tasks.into_par_iter().enumerate().for_each(run));
        } else {
            tasks.into_iter().enumerate().for_each(run);
        }
    }

    /// The register width (coefficients) of the SIMD multiply-accumulate at degree `n`, which
    /// sets the laid-out order of [`Backend::mac_layout`]; None where no SIMD kernel runs (the
    /// operand then keeps the row-major order).
    fn mac_lanes(&self, n: usize) -> Option<usize> {
        #[cfg(target_arch = "x86_64")]
        {
            use mac_simd::Lanes;
            if self.v4().is_some() && n.is_multiple_of(pulp::x86::V4::LANES) {
                return Some(pulp::x86::V4::LANES);
            }
            if self.v3().is_some() && n.is_multiple_of(pulp::x86::V3::LANES) {
                return Some(pulp::x86::V3::LANES);
            }
        }
        let _ = n;
        None
    }

    /// [`CpuBackend::mac_simd`] on the kernel `mac_lanes` names for this degree (the widest
    /// the backend may use); false where none runs.
    #[cfg(target_arch = "x86_64")]
    #[allow(clippy::too_many_arguments)]
    fn mac_simd_widest(
        &self,
        ring: &CpuRing,
        out: &mut [u32],
        a: &[u32],
        b: MacRight<'_>,
        dims: MacDims,
        limbs: usize,
        accumulate: bool,
    ) -> bool {
        use mac_simd::Lanes;
        let lanes = self.mac_lanes(ring.n);
        if lanes == Some(pulp::x86::V4::LANES)
            && let Some(simd) = self.v4()
        {
            self.mac_simd(simd, ring, out, a, b, dims, limbs, accumulate);
            return true;
        }
        if lanes == Some(pulp::x86::V3::LANES)
            && let Some(simd) = self.v3()
        {
            self.mac_simd(simd, ring, out, a, b, dims, limbs, accumulate);
            return true;
        }
        false
    }

    /// Seed `s`'s expansion ([`host::expand_uniform_into`]) into `rows[s]`, one task per
    /// seed (each seed's stream is sequential).
    fn expand_each(&self, ctx: &RingContext, limbs: usize, seeds: &[[u8; 32]], mut rows: Vec<&mut [u32]>) {
        let work =
            |(seed, dst): (&[u8; 32], &mut &mut [u32])| host::expand_uniform_into(ctx, limbs, seed, dst);
        if self.parallel(seeds.len()) {
            self.install(|| seeds.par_iter().zip(rows.par_iter_mut()).for_each(work));
        } else {
            seeds.iter().zip(rows.iter_mut()).for_each(work);
        }
    }

    /// The AVX-512 token, where the CPU has it and the kernel may run.
    #[cfg(target_arch = "x86_64")]
    fn v4(&self) -> Option<pulp::x86::V4> {
        pulp::x86::V4::try_new().filter(|_| self.mac >= MacKernel::Avx512)
    }

    /// The AVX2 token, where the CPU has it and the kernel may run.
    #[cfg(target_arch = "x86_64")]
    fn v3(&self) -> Option<pulp::x86::V3> {
        pulp::x86::V3::try_new().filter(|_| self.mac >= MacKernel::Avx2)
    }

    /// The gather `idx` as block moves, where the machine has AVX-512 and `idx` has the block
    /// form (every NTT-domain automorphism): made once per ring and gather, then looked up.
    fn block_gather(&self, ring: &CpuRing, idx: &[u32]) -> Option<Arc<permute::BlockGather>> {
        #[cfg(target_arch = "x86_64")]
        {
            self.v4()?;
            let mut cache = ring.gathers.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((_, plan)) = cache.iter().find(|(known, _)| known.as_slice() == idx) {
                return plan.clone();
            }
            let plan = permute::BlockGather::of(idx).filter(|p| p.len() == ring.n).map(Arc::new);
            // A ring sees a few dozen exponents at most (expansion, packing); past 64 the
            // cache stops growing and the rest are made per call.
            if cache.len() < 64 {
                cache.push((idx.to_vec(), plan.clone()));
            }
            plan
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (ring, idx);
            None
        }
    }

    /// `dst[k] = src[idx[k]]` mod `m` (signed: see [`host::NEGATE`]), or with `add` the same
    /// added into `dst`: by blocks where `plan` (the block form of `idx`) is given.
    fn gather_row(
        &self,
        plan: Option<&permute::BlockGather>,
        m: Modulus,
        (dst, src, idx): (&mut [u32], &[u32], &[u32]),
        add: bool,
    ) {
        #[cfg(target_arch = "x86_64")]
        if let (Some(plan), Some(simd)) = (plan, self.v4()) {
            let add = add.then_some(m.value());
            return simd.vectorize(permute::GatherBlocks { simd, plan, src, dst, add });
        }
        let _ = plan;
        if add {
            self.arch.dispatch(AddGathered { p: m.value(), acc: dst, x: src, idx });
        } else {
            host::gather_row(m, dst, src, idx);
        }
    }

    /// The fused key-switching product of `decompose_mac` (and, with `twin`, of
    /// `decompose_mac_twin`): one task per output row `(poly r, limb l)`.
    #[allow(clippy::too_many_arguments)]
    fn digit_products(
        &self,
        ring: &CpuRing,
        a: &[u32],
        twin: Option<&[u32]>,
        (polys, limbs): (usize, usize),
        (digit_bits, digits): (u32, usize),
        keys: [&CpuBuffer; 2],
        [o0, o1]: [&mut CpuBuffer; 2],
        (accumulate, sets): (bool, usize),
    ) {
        let n = ring.n;
        // Polynomial r meets key set r % sets, each set `limbs * digits` polynomials.
        let set_words = limbs * digits * limbs * n;
        let run = |(row, (d0, d1)): (usize, (&mut [u32], &mut [u32]))| {
            let (r, l) = (row / limbs, row % limbs);
            let key = (r % sets.max(1)) * set_words + l * n;
            let job = DigitRow {
                m: ring.moduli[l],
                plan: &ring.plans[l],
                src: &a[r * limbs * n..][..limbs * n],
                src_moduli: &ring.moduli[..limbs],
                keys: [&keys[0][key..], &keys[1][key..]],
                stride: limbs * n,
                digit_bits,
                digits,
                own: twin.map(|t| (l, &t[row * n..][..n])),
            };
            job.run(self, [d0, d1], accumulate);
        };
        if sets > 1 {
            // One set's rows after another (each thread takes a run of them), so a key set stays
            // in cache for its rows instead of every next row wanting another token's (1.6 MB
            // per set at N = 8192 with five limbs).
            let mut tasks: Vec<_> = o0.chunks_mut(n).zip(o1.chunks_mut(n)).enumerate().collect();
            tasks.sort_by_key(|&(row, _)| (row / limbs % sets, row));
            if self.parallel(polys * limbs) {
                self.install(|| tasks.into_par_iter().for_each(run));
            } else {
                tasks.into_iter().for_each(run);
            }
        } else if self.parallel(polys * limbs) {
            self.install(|| o0.par_chunks_mut(n).zip(o1.par_chunks_mut(n)).enumerate().for_each(run));
        } else {
            o0.chunks_mut(n).zip(o1.chunks_mut(n)).enumerate().for_each(run);
        }
    }

    /// `out[k] (+)= sum_e digits[e] * keys[k][e * stride ..]` for the two halves of a key
    /// switch, over the transformed digit rows (see `mac_simd::DigitMac`).
    fn digit_mac(
        &self,
        m: Modulus,
        digits: DigitRows<'_>,
        keys: [&[u32]; 2],
        stride: usize,
        out: [&mut [u32]; 2],
        accumulate: bool,
    ) {
        let n = out[0].len();
        #[cfg(target_arch = "x86_64")]
        if n.is_multiple_of(16) {
            if let Some(simd) = self.v4() {
                return simd.vectorize(mac_simd::DigitMac { simd, m, digits, keys, stride, out, accumulate });
            }
            if let Some(simd) = self.v3() {
                return simd.vectorize(mac_simd::DigitMac { simd, m, digits, keys, stride, out, accumulate });
            }
        }
        let big = lazy_bound(m);
        let mut acc = [vec![0u64; n], vec![0u64; n]];
        if accumulate {
            for (a, o) in acc.iter_mut().zip(&out) {
                a.iter_mut().zip(o.iter()).for_each(|(s, &v)| *s = u64::from(v));
            }
        }
        for e in 0..digits.count() {
            let x = digits.row(e);
            for (a, key) in acc.iter_mut().zip(keys) {
                let y = &key[e * stride..][..n];
                self.arch.dispatch(AccumulateRow { acc: a, x, y, big });
            }
        }
        for (a, o) in acc.iter().zip(out) {
            self.reduce_row(m, a, o);
        }
    }

    /// `out[j] = acc[j] mod p` for accumulators below `2^63`.
    fn reduce_row(&self, m: Modulus, acc: &[u64], out: &mut [u32]) {
        #[cfg(target_arch = "x86_64")]
        if acc.len().is_multiple_of(8) {
            if let Some(simd) = self.v4() {
                return simd.vectorize(mac_simd::ReduceRow { simd, m, acc, out });
            }
            if let Some(simd) = self.v3() {
                return simd.vectorize(mac_simd::ReduceRow { simd, m, acc, out });
            }
        }
        out.iter_mut().zip(acc).for_each(|(o, &s)| *o = m.reduce_u64(s));
    }

    /// [`Backend::zero_noise`] (with `e0`) or [`Backend::zero_noise_c1`] (without): one job
    /// per seed, its rows of `u`, `e1` and, where asked, `e0`.
    fn zero_noise_rows(
        &self,
        ring: &CpuRing,
        ctx: &RingContext,
        seeds: &[[u8; 32]],
        (limbs, eta): (usize, u32),
        [u, e1]: [&mut CpuBuffer; 2],
        e0: Option<&mut CpuBuffer>,
    ) {
        let per = limbs * ring.n;
        type Job<'a> = (&'a [u8; 32], [&'a mut [u32]; 2], Option<&'a mut [u32]>);
        let work =
            |(seed, out, e0): Job<'_>| self.arch.dispatch(ZeroNoise { ctx, limbs, seed, eta, out, e0 });
        let e0_rows: Vec<Option<&mut [u32]>> = match e0 {
            Some(e0) => e0.chunks_mut(per).map(Some).collect(),
            None => (0..seeds.len()).map(|_| None).collect(),
        };
        let jobs: Vec<Job<'_>> = seeds
            .iter()
            .zip(u.chunks_mut(per).zip(e1.chunks_mut(per)))
            .zip(e0_rows)
            .map(|((s, (a, c)), b)| (s, [a, c], b))
            .collect();
        if self.parallel(seeds.len()) {
            self.install(|| jobs.into_par_iter().for_each(work));
        } else {
            jobs.into_iter().for_each(work);
        }
    }

    /// Whether `tasks` tasks are worth handing to the pool: a hand-off costs a thread wake-up
    /// (microseconds, as much as one NTT), so a single task, or a one-thread backend, runs inline.
    fn parallel(&self, tasks: usize) -> bool {
        tasks > 1 && self.threads() > 1
    }

    /// `f((index, item))` for every item of `rows` (the rows of a batch, `tasks` of them), in
    /// parallel where the backend has threads for it.
    fn each_row<T: Send>(
        &self,
        tasks: usize,
        rows: impl Iterator<Item = T>,
        f: impl Fn((usize, T)) + Sync + Send,
    ) {
        if self.parallel(tasks) {
            let rows: Vec<_> = rows.enumerate().collect();
            self.install(|| rows.into_par_iter().for_each(f));
        } else {
            rows.enumerate().for_each(f);
        }
    }

    /// Applies `f(limb, row)` to every `(poly, limb)` row, `min_rows` rows per task at least.
    fn rows(
        &self,
        buf: &mut [u32],
        n: usize,
        shape: Shape,
        min_rows: usize,
        f: impl Fn(usize, &mut [u32]) + Sync,
    ) {
        if !self.parallel(buf.len() / n / min_rows) {
            buf.chunks_exact_mut(n).enumerate().for_each(|(row, c)| f(row % shape.limbs, c));
            return;
        }
        self.install(|| {
            buf.par_chunks_mut(n)
                .enumerate()
                .with_min_len(min_rows)
                .for_each(|(row, c)| f(row % shape.limbs, c));
        });
    }

    /// `dst = src` (equal lengths), on the backend's threads from [`PARALLEL_COPY_WORDS`]
    /// words: with one thread's `memmove` the other idled through the copies of a one-token
    /// request (a fold's operands, the first dimension's rows, the RGSW rows: tens of MB each;
    /// docs/BENCHMARKS.md, 2026-12-03).
    fn copy_slice(&self, dst: &mut [u32], src: &[u32]) {
        if dst.len() >= PARALLEL_COPY_WORDS && self.parallel(2) {
            self.install(|| {
                dst.par_chunks_mut(COPY_TASK_WORDS)
                    .zip(src.par_chunks(COPY_TASK_WORDS))
                    .for_each(|(d, s)| d.copy_from_slice(s));
            });
        } else {
            dst.copy_from_slice(src);
        }
    }

    /// A new buffer of `words` words whose row `r` (`n` words) `f(r, row)` writes, rows in
    /// parallel (`min_rows` per task at least) where the backend has threads for it.
    fn new_rows(
        &self,
        words: usize,
        n: usize,
        min_rows: usize,
        f: impl Fn(usize, &mut [u32]) + Sync,
    ) -> Result<CpuBuffer, BackendError> {
        let mut out = self.alloc_zeroed(words)?;
        if self.parallel(words / n / min_rows) {
            self.install(|| {
                out.par_chunks_mut(n).enumerate().with_min_len(min_rows).for_each(|(r, x)| f(r, x))
            });
        } else {
            out.chunks_exact_mut(n).enumerate().for_each(|(r, x)| f(r, x));
        }
        Ok(out)
    }

    /// `a[j] = op(m, a[j], b[j])` for every coefficient, `m` the modulus of its limb.
    fn zip_with(
        &self,
        ring: &CpuRing,
        a: &mut [u32],
        b: &[u32],
        shape: Shape,
        op: impl Fn(Modulus, u32, u32) -> u32 + Sync + Copy,
    ) {
        self.row_pairs(a, b, ring.n, shape, |l, x, y| {
            let m = ring.moduli[l];
            x.iter_mut().zip(y).for_each(|(u, &v)| *u = op(m, *u, v));
        });
    }

    /// `tau(c1)` for the `count` ciphertexts at `at` of `c1s` (the gather `idx`), one pass.
    fn gather_batch(
        &self,
        ring: &CpuRing,
        c1s: &CpuBuffer,
        (at, count): (usize, usize),
        limbs: usize,
        idx: &[u32],
    ) -> Result<CpuBuffer, BackendError> {
        let poly = limbs * ring.n;
        let mut tau1 = self.alloc_zeroed(count * poly)?;
        self.row_pairs(
            &mut tau1,
            &c1s[at * poly..][..count * poly],
            ring.n,
            Shape::new(count, limbs),
            |l, x, y| host::gather_row(ring.moduli[l], x, y, idx),
        );
        Ok(tau1)
    }

    /// The key products of one expansion level, row by row: for ciphertext `i` and limb `l`,
    /// `product(i, l, [b, a])` writes the key products of `tau(c1)` (in the form of `src`);
    /// each task then forms `t = (tau(c0) + b, a)` (`idx`: the automorphism's gather in that
    /// form) and writes the row's children `c + t` at `at + i` and `X^shift (c - t)` at
    /// `at + odd + i` of `dst` (`split`: the monomial's shift, or its NTT evaluations).
    #[allow(clippy::too_many_arguments)]
    fn expand_rows(
        &self,
        ring: &CpuRing,
        src: [&CpuBuffer; 2],
        dst: [&mut CpuBuffer; 2],
        (at, count, odd): (usize, usize, usize),
        limbs: usize,
        idx: &[u32],
        split: Split<'_>,
        product: impl Fn(usize, usize, [&mut [u32]; 2]) + Sync,
    ) {
        let n = ring.n;
        let poly = limbs * n;
        let words = count * poly;
        let c0 = &src[0][at * poly..][..words];
        let c1 = &src[1][at * poly..][..words];
        // Even children at [at, at + count), odd ones at [at + odd, ..): disjoint as count <= odd.
        let [d0, d1] = dst;
        let (e0, o0) = d0.split_at_mut((at + odd) * poly);
        let (e1, o1) = d1.split_at_mut((at + odd) * poly);
        let (e0, o0) = (&mut e0[at * poly..][..words], &mut o0[..words]);
        let (e1, o1) = (&mut e1[at * poly..][..words], &mut o1[..words]);
        let plan = self.block_gather(ring, idx);
        let run = |(row, (((e0, o0), e1), o1)): (usize, ChildRows<'_>)| {
            let (i, l) = (row / limbs, row % limbs);
            let m = ring.moduli[l];
            let (mut b, mut a) = (vec![0u32; n], vec![0u32; n]);
            product(i, l, [&mut b, &mut a]);
            let (x0, x1) = (&c0[row * n..][..n], &c1[row * n..][..n]);
            // t0 = tau(c0) + b (into b), t1 = a.
            self.gather_row(plan.as_deref(), m, (&mut b, x0, idx), true);
            match split {
                Split::Coeff(shift) => {
                    self.arch.dispatch(SplitRow { p: m.value(), x: x0, t: &b, even: e0, odd: o0, shift });
                    self.arch.dispatch(SplitRow { p: m.value(), x: x1, t: &a, even: e1, odd: o1, shift });
                }
                Split::Ntt(mono) => {
                    let w = &mono[l];
                    self.arch.dispatch(SplitRowNtt { m, x: x0, t: &b, even: e0, odd: o0, w });
                    self.arch.dispatch(SplitRowNtt { m, x: x1, t: &a, even: e1, odd: o1, w });
                }
            }
        };
        let rows = e0.chunks_mut(n).zip(o0.chunks_mut(n)).zip(e1.chunks_mut(n)).zip(o1.chunks_mut(n));
        self.each_row(count * limbs, rows, run);
    }

    /// The key products of a hybrid key switch in the special prime's limb (`limbs`), back in
    /// coefficient form, for each of the `polys` polynomials of `src` (`limbs` limbs): the
    /// remainders the division by `P` rounds with.
    fn hybrid_special_rows(
        &self,
        ring: &CpuRing,
        src: &[u32],
        polys: usize,
        limbs: usize,
        keys: [&CpuBuffer; 2],
    ) -> Vec<[Vec<u32>; 2]> {
        let (n, poly) = (ring.n, limbs * ring.n);
        let run = |i: usize| {
            let (mut b, mut a) = (vec![0u32; n], vec![0u32; n]);
            self.hybrid_products(ring, &src[i * poly..][..poly], limbs, limbs, keys, [&mut b, &mut a]);
            [b, a]
        };
        if self.parallel(polys) {
            self.install(|| (0..polys).into_par_iter().map(run).collect())
        } else {
            (0..polys).map(run).collect()
        }
    }

    /// Row `l` of the hybrid key switch of one polynomial `src`: its key products in limb `l`,
    /// back in coefficient form, divided by `P` with the special prime's rows `special`
    /// (rounding as `mod_switch_down`).
    #[allow(clippy::too_many_arguments)]
    fn hybrid_row(
        &self,
        ring: &CpuRing,
        src: &[u32],
        limbs: usize,
        l: usize,
        keys: [&CpuBuffer; 2],
        special: &[Vec<u32>; 2],
        [b, a]: [&mut [u32]; 2],
    ) {
        self.hybrid_products(ring, src, limbs, l, keys, [&mut *b, &mut *a]);
        for (row, rem) in [b, a].into_iter().zip(special) {
            divide_out(self.arch, ring.moduli[l], ring.moduli[limbs], row, rem);
        }
    }

    /// The hybrid key products of one polynomial `src` (`limbs` limbs, one digit each) in limb
    /// `l` of `q P` (the special prime's is `l = limbs`), back in coefficient form.
    fn hybrid_products(
        &self,
        ring: &CpuRing,
        src: &[u32],
        limbs: usize,
        l: usize,
        keys: [&CpuBuffer; 2],
        [b, a]: [&mut [u32]; 2],
    ) {
        hybrid_digits(ring, src, limbs, l, keys, None).run(self, [&mut *b, &mut *a], false);
        ring.plans[l].inverse(b);
        ring.plans[l].inverse(a);
    }

    /// `tau(c1)` for the `count` NTT-form ciphertexts at `at` of `c1s`, in both forms: each row
    /// permuted (`idx_ntt`: the NTT form, the twin of the digits), and a copy of it transformed
    /// back (the coefficient form the digits are taken from).
    fn gather_batch_ntt(
        &self,
        ring: &CpuRing,
        c1s: &CpuBuffer,
        (at, count): (usize, usize),
        limbs: usize,
        idx_ntt: &[u32],
    ) -> Result<[CpuBuffer; 2], BackendError> {
        let poly = limbs * ring.n;
        let mut twin = self.alloc_zeroed(count * poly)?;
        let mut tau1 = self.alloc_zeroed(count * poly)?;
        let plan = self.block_gather(ring, idx_ntt);
        self.row_pairs(
            &mut twin,
            &c1s[at * poly..][..count * poly],
            ring.n,
            Shape::new(count, limbs),
            |l, x, y| self.gather_row(plan.as_deref(), ring.moduli[l], (x, y, idx_ntt), false),
        );
        tau1.copy_from_slice(&twin);
        self.rows(&mut tau1, ring.n, Shape::new(count, limbs), 1, |l, row| ring.plans[l].inverse(row));
        Ok([twin, tau1])
    }

    /// Row `l` of the hybrid key switch of one polynomial `src` (coefficient form, `limbs`
    /// limbs) in the NTT domain: its key products in limb `l`, the own digit row taken from
    /// `twin` (row `l` of the NTT form of `src`), divided by `P` there with the special
    /// prime's coefficient-form rows `special`.
    #[allow(clippy::too_many_arguments)]
    fn hybrid_row_ntt(
        &self,
        ring: &CpuRing,
        src: &[u32],
        twin: &[u32],
        limbs: usize,
        l: usize,
        keys: [&CpuBuffer; 2],
        special: &[Vec<u32>; 2],
        [b, a]: [&mut [u32]; 2],
    ) {
        let n = ring.n;
        hybrid_digits(ring, src, limbs, l, keys, Some(twin)).run(self, [&mut *b, &mut *a], false);
        let (m, pl) = (ring.moduli[l], ring.moduli[limbs]);
        let mut y = vec![0u32; n];
        for (row, rem) in [b, a].into_iter().zip(special) {
            // NTT((x - r_c) / P) = (NTT(x) + NTT(-r_c)) P^-1, r_c the centred remainders.
            self.arch.dispatch(DivideOutNtt { m, pl, x: row, rem, y: &mut y, plan: &ring.plans[l] });
        }
    }

    /// The rows of a hybrid key switch of the `polys` polynomials of `a` (`limbs` limbs): the
    /// special prime's rows of every polynomial first, then `row(r, src, special, [b, a])` for
    /// each output row `r = i * limbs + l` (`src`: polynomial `i`, `special`: its rows), one
    /// task each.
    fn hybrid_rows(
        &self,
        ring: &CpuRing,
        a: &[u32],
        (polys, limbs): (usize, usize),
        keys: [&CpuBuffer; 2],
        [o0, o1]: [&mut CpuBuffer; 2],
        row: impl Fn(usize, &[u32], &[Vec<u32>; 2], [&mut [u32]; 2]) + Sync,
    ) {
        let (n, poly) = (ring.n, limbs * ring.n);
        let special = self.hybrid_special_rows(ring, &a[..polys * poly], polys, limbs, keys);
        let run = |(r, (x0, x1)): (usize, (&mut [u32], &mut [u32]))| {
            let i = r / limbs;
            row(r, &a[i * poly..][..poly], &special[i], [x0, x1]);
        };
        let rows = o0[..polys * poly].chunks_mut(n).zip(o1[..polys * poly].chunks_mut(n));
        self.each_row(polys * limbs, rows, run);
    }

    /// Applies `f(limb, a_row, b_row)` to every row pair.
    fn row_pairs(
        &self,
        a: &mut [u32],
        b: &[u32],
        n: usize,
        shape: Shape,
        f: impl Fn(usize, &mut [u32], &[u32]) + Sync,
    ) {
        let min_rows = cheap_rows(n);
        if !self.parallel(a.len() / n / min_rows) {
            a.chunks_exact_mut(n)
                .zip(b.chunks_exact(n))
                .enumerate()
                .for_each(|(row, (x, y))| f(row % shape.limbs, x, y));
            return;
        }
        self.install(|| {
            a.par_chunks_mut(n)
                .zip(b.par_chunks(n))
                .enumerate()
                .with_min_len(min_rows)
                .for_each(|(row, (x, y))| f(row % shape.limbs, x, y));
        });
    }
}

/// The buffer pool's bound: `FASTQUERY_CPU_POOL_MB` (MiB, 0 turns pooling off) or
/// [`DEFAULT_POOL_BYTES`].
fn pool_bytes() -> usize {
    std::env::var("FASTQUERY_CPU_POOL_MB")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .map_or(DEFAULT_POOL_BYTES, |mb| mb.saturating_mul(1 << 20))
}

/// The bound on freed large buffers: `FASTQUERY_CPU_LARGE_POOL_MB` (MiB, 0 keeps none) or
/// [`DEFAULT_LARGE_POOL_BYTES`]; none when `FASTQUERY_CPU_POOL_MB` turns pooling off.
fn large_pool_bytes() -> usize {
    if pool_bytes() == 0 {
        return 0;
    }
    std::env::var("FASTQUERY_CPU_LARGE_POOL_MB")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .map_or(DEFAULT_LARGE_POOL_BYTES, |mb| mb.saturating_mul(1 << 20))
}

fn cannot_allocate(words: usize) -> BackendError {
    BackendError::Device(format!("cannot allocate {words} words"))
}

/// Copies of at least this many words (4 MiB) run on the backend's threads
/// ([`CpuBackend::copy_slice`]).
const PARALLEL_COPY_WORDS: usize = 1 << 20;

/// Words per task of a parallel copy (1 MiB).
const COPY_TASK_WORDS: usize = 1 << 18;

fn cheap_rows(n: usize) -> usize {
    (MIN_TASK_WORDS / n).max(1)
}

/// Human-readable SIMD level, for the device string.
fn simd_level() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return "AVX-512";
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            return "AVX2";
        }
    }
    "scalar"
}

impl Backend for CpuBackend {
    type Buffer = CpuBuffer;
    type Ring = CpuRing;

    fn info(&self) -> BackendInfo {
        BackendInfo {
            name: "cpu",
            device: format!("{} CPU, {} threads, {}", std::env::consts::ARCH, self.threads(), simd_level()),
            accelerator: false,
            memory: None,
        }
    }

    fn load_ring(&self, ring: &RingContext) -> Result<CpuRing, BackendError> {
        let plans =
            ring.moduli().iter().map(|m| NttPlan::new(m.value(), ring.n())).collect::<Result<Vec<_>, _>>()?;
        Ok(CpuRing {
            n: ring.n(),
            moduli: ring.moduli().to_vec(),
            plans,
            monomials: Mutex::default(),
            gathers: Mutex::default(),
        })
    }

    fn alloc_zeroed(&self, words: usize) -> Result<CpuBuffer, BackendError> {
        let zeroed = || CpuBuffer::zeroed(&self.buffers, words);
        // A large buffer in the backend's own pool, so that, if fresh, its threads zero it.
        let buf = if words >= pool::PARALLEL_ZERO_WORDS { self.install(zeroed) } else { zeroed() };
        buf.map_err(cannot_allocate)
    }

    fn upload(&self, words: &[u32]) -> Result<CpuBuffer, BackendError> {
        CpuBuffer::copy_of(&self.buffers, words).map_err(cannot_allocate)
    }

    /// The vector itself, no copy (a llama-7b table's records: 2.6 GB, which one thread
    /// copied into fresh pages in 9 s on the 2-vCPU VM).
    fn upload_vec(&self, words: Vec<u32>) -> Result<CpuBuffer, BackendError> {
        Ok(CpuBuffer::from_vec(&self.buffers, words))
    }

    fn download(&self, buf: &CpuBuffer, out: &mut [u32]) -> Result<(), BackendError> {
        if buf.len() != out.len() {
            return Err(BackendError::Shape(format!("download of {} words into {}", buf.len(), out.len())));
        }
        out.copy_from_slice(buf);
        Ok(())
    }

    fn host_threads(&self) -> Option<usize> {
        Some(self.threads())
    }

    fn duplicate(&self, buf: &CpuBuffer) -> Result<CpuBuffer, BackendError> {
        if buf.len() < PARALLEL_COPY_WORDS {
            return self.upload(buf);
        }
        let mut out = self.alloc_zeroed(buf.len())?;
        self.copy_slice(&mut out, buf);
        Ok(out)
    }

    /// In place: the dropped words are zeroed as the pool zeroes a freed buffer (on the
    /// backend's threads where they are many) and the allocation kept.
    fn truncate(&self, mut buf: CpuBuffer, words: usize) -> Result<CpuBuffer, BackendError> {
        // Onto the backend's threads only where `zero` splits the work (a hop costs a wake-up).
        buf.truncate(words, |tail| {
            if tail.len() >= pool::PARALLEL_ZERO_WORDS {
                self.install(|| pool::zero(tail))
            } else {
                pool::zero(tail)
            }
        });
        Ok(buf)
    }

    /// Row by row, in parallel: each output row is written once from its two source rows.
    fn difference(
        &self,
        ring: &CpuRing,
        src: &CpuBuffer,
        (minuend, subtrahend): (usize, usize),
        shape: Shape,
        n: usize,
    ) -> Result<CpuBuffer, BackendError> {
        let words =
            fastquery_backend::difference_words(src.len(), (minuend, subtrahend), shape, (n, ring.n))?;
        let (b, a) = (&src[minuend..][..words], &src[subtrahend..][..words]);
        self.new_rows(words, n, cheap_rows(n), |row, x| {
            let m = ring.moduli[row % shape.limbs];
            let (b, a) = (&b[row * n..][..n], &a[row * n..][..n]);
            x.iter_mut().zip(b.iter().zip(a)).for_each(|(o, (&u, &v))| *o = m.sub(u, v));
        })
    }

    /// Each row copied just before it is transformed, so the copy is read back from L1.
    fn ntt_inverse_copy(
        &self,
        ring: &CpuRing,
        src: &CpuBuffer,
        shape: Shape,
    ) -> Result<CpuBuffer, BackendError> {
        let n = ring.n;
        self.new_rows(src.len(), n, 1, |r, x| {
            x.copy_from_slice(&src[r * n..][..n]);
            ring.plans[r % shape.limbs].inverse(x);
        })
    }

    fn copy_words(
        &self,
        src: &CpuBuffer,
        src_at: usize,
        dst: &mut CpuBuffer,
        dst_at: usize,
        words: usize,
    ) -> Result<(), BackendError> {
        self.copy_slice(&mut dst[dst_at..dst_at + words], &src[src_at..src_at + words]);
        Ok(())
    }

    fn ntt_forward(&self, ring: &CpuRing, buf: &mut CpuBuffer, shape: Shape) -> Result<(), BackendError> {
        self.rows(buf, ring.n, shape, 1, |l, row| ring.plans[l].forward(row));
        Ok(())
    }

    fn ntt_inverse(&self, ring: &CpuRing, buf: &mut CpuBuffer, shape: Shape) -> Result<(), BackendError> {
        self.rows(buf, ring.n, shape, 1, |l, row| ring.plans[l].inverse(row));
        Ok(())
    }

    fn add_assign(
        &self,
        ring: &CpuRing,
        a: &mut CpuBuffer,
        b: &CpuBuffer,
        shape: Shape,
    ) -> Result<(), BackendError> {
        self.zip_with(ring, a, b, shape, Modulus::add);
        Ok(())
    }

    fn sub_assign(
        &self,
        ring: &CpuRing,
        a: &mut CpuBuffer,
        b: &CpuBuffer,
        shape: Shape,
    ) -> Result<(), BackendError> {
        self.zip_with(ring, a, b, shape, Modulus::sub);
        Ok(())
    }

    fn neg_assign(&self, ring: &CpuRing, a: &mut CpuBuffer, shape: Shape) -> Result<(), BackendError> {
        self.rows(a, ring.n, shape, cheap_rows(ring.n), |l, x| {
            let m = ring.moduli[l];
            x.iter_mut().for_each(|u| *u = m.neg(*u));
        });
        Ok(())
    }

    fn scalar_mul_assign(
        &self,
        ring: &CpuRing,
        a: &mut CpuBuffer,
        scalars: &[u32],
        shape: Shape,
    ) -> Result<(), BackendError> {
        self.rows(a, ring.n, shape, cheap_rows(ring.n), |l, x| {
            let m = ring.moduli[l];
            let (s, s_shoup) = (scalars[l], m.shoup(scalars[l]));
            x.iter_mut().for_each(|u| *u = m.mul_shoup(*u, s, s_shoup));
        });
        Ok(())
    }

    fn mul_assign(
        &self,
        ring: &CpuRing,
        a: &mut CpuBuffer,
        b: &CpuBuffer,
        shape: Shape,
    ) -> Result<(), BackendError> {
        self.zip_with(ring, a, b, shape, Modulus::mul);
        Ok(())
    }

    /// One pass over `a` for both keys, the products by the keys' Shoup factors (computed
    /// here, once per call: two polynomials), each row branch-free and vectorised. Through two
    /// [`Backend::mac`]s of one inner term, the finish of cheetah's llama-7b token spent a
    /// fifth of its time in the multiply-accumulate kernel (`perf` of `cpu/finish_ntt`,
    /// 2026-12-03): its row blocks are laid out for long sums, not for one product per word.
    fn mul_broadcast_pair(
        &self,
        ring: &CpuRing,
        a: &CpuBuffer,
        keys: [&CpuBuffer; 2],
        [o0, o1]: [&mut CpuBuffer; 2],
        shape: Shape,
        accumulate: bool,
    ) -> Result<(), BackendError> {
        let (n, limbs) = (ring.n, shape.limbs);
        let words = shape.words(n);
        let factors: [Vec<u32>; 2] = keys
            .map(|k| k[..limbs * n].iter().enumerate().map(|(w, &v)| ring.moduli[w / n].shoup(v)).collect());
        let rows = o0[..words].chunks_mut(n).zip(o1[..words].chunks_mut(n)).zip(a[..words].chunks(n));
        self.each_row(shape.polys * limbs, rows, |(r, ((x0, x1), y))| {
            let l = r % limbs;
            self.arch.dispatch(MulKeyPair {
                m: ring.moduli[l],
                y,
                keys: [&keys[0][l * n..][..n], &keys[1][l * n..][..n]],
                factors: [&factors[0][l * n..][..n], &factors[1][l * n..][..n]],
                outs: [x0, x1],
                accumulate,
            });
        });
        Ok(())
    }

    fn monomial_mul_assign(
        &self,
        ring: &CpuRing,
        a: &mut CpuBuffer,
        k: usize,
        shape: Shape,
    ) -> Result<(), BackendError> {
        let n = ring.n;
        self.rows(a, n, shape, cheap_rows(n), |l, x| {
            let m = ring.moduli[l];
            // X^k with k < N rotates right by k and negates what wrapped; X^(N+k) = -X^k.
            let (shift, flip) = if k < n { (k, false) } else { (k - n, true) };
            x.rotate_right(shift);
            for (j, u) in x.iter_mut().enumerate() {
                if (j < shift) != flip {
                    *u = m.neg(*u);
                }
            }
        });
        Ok(())
    }

    fn gather_signed(
        &self,
        ring: &CpuRing,
        _ctx: &RingContext,
        out: &mut CpuBuffer,
        a: &CpuBuffer,
        idx: &[u32],
        shape: Shape,
    ) -> Result<(), BackendError> {
        let plan = self.block_gather(ring, idx);
        self.row_pairs(out, a, ring.n, shape, |l, x, y| {
            self.gather_row(plan.as_deref(), ring.moduli[l], (x, y, idx), false)
        });
        Ok(())
    }

    /// One task per seed (each seed's stream is sequential), in place.
    fn expand_seeds(
        &self,
        ring: &CpuRing,
        ctx: &RingContext,
        seeds: &[[u8; 32]],
        polys: usize,
        limbs: usize,
        out: &mut CpuBuffer,
    ) -> Result<(), BackendError> {
        let per = polys * limbs * ring.n;
        if per == 0 {
            return Ok(());
        }
        self.expand_each(ctx, limbs, seeds, out.chunks_mut(per).collect());
        Ok(())
    }

    /// In place: one task per seed, into its polynomial of `out`.
    fn expand_seeds_into(
        &self,
        ring: &CpuRing,
        ctx: &RingContext,
        seeds: &[[u8; 32]],
        limbs: usize,
        out: &mut CpuBuffer,
        (first, group, stride): (usize, usize, usize),
    ) -> Result<(), BackendError> {
        let poly = limbs * ring.n;
        if poly == 0 || group == 0 {
            return Ok(());
        }
        // Each group's polynomials, as one slice per seed (the groups do not overlap).
        let mut rows: Vec<&mut [u32]> = Vec::with_capacity(seeds.len());
        let mut rest: &mut [u32] = &mut out[first * poly..];
        for g in 0..seeds.len() / group {
            let skip = if g == 0 { 0 } else { (stride - group) * poly };
            let (block, tail) = std::mem::take(&mut rest)[skip..].split_at_mut(group * poly);
            rows.extend(block.chunks_exact_mut(poly));
            rest = tail;
        }
        self.expand_each(ctx, limbs, seeds, rows);
        Ok(())
    }

    fn zero_noise(
        &self,
        ring: &CpuRing,
        ctx: &RingContext,
        seeds: &[[u8; 32]],
        limbs: usize,
        eta: u32,
        out: [&mut CpuBuffer; 3],
    ) -> Result<(), BackendError> {
        let [u, e0, e1] = out;
        self.zero_noise_rows(ring, ctx, seeds, (limbs, eta), [u, e1], Some(e0));
        Ok(())
    }

    fn zero_noise_c1(
        &self,
        ring: &CpuRing,
        ctx: &RingContext,
        seeds: &[[u8; 32]],
        limbs: usize,
        eta: u32,
        out: [&mut CpuBuffer; 2],
    ) -> Result<(), BackendError> {
        self.zero_noise_rows(ring, ctx, seeds, (limbs, eta), out, None);
        Ok(())
    }

    fn gather_words(
        &self,
        a: &CpuBuffer,
        _words: usize,
        idx: &[u32],
        out: &mut [u32],
    ) -> Result<(), BackendError> {
        for (o, &i) in out.iter_mut().zip(idx) {
            *o = a[i as usize];
        }
        Ok(())
    }

    fn flood_mask_add(
        &self,
        ring: &CpuRing,
        ctx: &RingContext,
        a: &mut CpuBuffer,
        limbs: usize,
        spec: &host::Flooding,
        seeds: &[[u8; 32]],
        (positions, starts): (&[u32], &[u32]),
    ) -> Result<(), BackendError> {
        let (n, moduli) = (ctx.n(), &ring.moduli[..limbs]);
        let work = |(ct, x): (usize, &mut [u32])| {
            let pos = &positions[starts[ct] as usize..starts[ct + 1] as usize];
            host::flood_mask_ciphertext(moduli, n, spec, &seeds[ct], pos, x);
        };
        self.install(|| a[..seeds.len() * limbs * n].par_chunks_mut(limbs * n).enumerate().for_each(work));
        Ok(())
    }

    fn decompose(
        &self,
        ring: &CpuRing,
        _ctx: &RingContext,
        a: &CpuBuffer,
        _polys: usize,
        limbs: usize,
        digit_bits: u32,
        digits: usize,
        out: &mut CpuBuffer,
    ) -> Result<(), BackendError> {
        let n = ring.n;
        let moduli = &ring.moduli[..limbs];
        // One task per source row (poly p, limb i): its digits over every limb.
        let work = |(src, dst): (&[u32], &mut [u32])| host::decompose_row(moduli, src, digit_bits, dst);
        let chunk = digits * limbs * n;
        if self.parallel(a.len() / n) {
            self.install(|| a.par_chunks(n).zip(out.par_chunks_mut(chunk)).for_each(work));
        } else {
            a.chunks(n).zip(out.chunks_mut(chunk)).for_each(work);
        }
        Ok(())
    }

    /// Fused: one task per output row `(poly r, limb l)` takes every digit of `a[r]` reduced
    /// into `p_l`, transforms it and multiplies it into both keys' limb `l`, one row (`N` words)
    /// at a time, so the `limbs * digits * limbs` digit rows are never written to memory (the
    /// unfused sequence moved about 15 MB per ciphertext at N = 8192, six limbs, 16-bit digits).
    fn decompose_mac(
        &self,
        ring: &CpuRing,
        _ctx: &RingContext,
        a: &CpuBuffer,
        (polys, limbs): (usize, usize),
        (digit_bits, digits): (u32, usize),
        keys: [&CpuBuffer; 2],
        out: [&mut CpuBuffer; 2],
        accumulate: bool,
    ) -> Result<(), BackendError> {
        self.digit_products(ring, a, None, (polys, limbs), (digit_bits, digits), keys, out, (accumulate, 1));
        Ok(())
    }

    /// As `decompose_mac` with one digit per limb; the task of row `(r, l)` copies row `l` of
    /// the twin's `r` for its own-limb digit instead of extracting and transforming it.
    fn decompose_mac_twin(
        &self,
        ring: &CpuRing,
        _ctx: &RingContext,
        a: &CpuBuffer,
        twin: &CpuBuffer,
        (polys, limbs): (usize, usize),
        digit_bits: u32,
        keys: [&CpuBuffer; 2],
        out: [&mut CpuBuffer; 2],
        accumulate: bool,
    ) -> Result<(), BackendError> {
        self.digit_products(ring, a, Some(twin), (polys, limbs), (digit_bits, 1), keys, out, (accumulate, 1));
        Ok(())
    }

    fn takes_twin(&self, _n: usize) -> bool {
        true
    }

    /// The fused products with each row's key set chosen where its task starts.
    fn decompose_mac_sets(
        &self,
        ring: &CpuRing,
        _ctx: &RingContext,
        a: &CpuBuffer,
        twin: Option<&CpuBuffer>,
        (polys, limbs): (usize, usize),
        (digit_bits, digits): (u32, usize),
        keys: [&CpuBuffer; 2],
        out: [&mut CpuBuffer; 2],
        (accumulate, sets): (bool, usize),
    ) -> Result<(), BackendError> {
        let twin = twin.map(|t| &t[..]);
        self.digit_products(
            ring,
            a,
            twin,
            (polys, limbs),
            (digit_bits, digits),
            keys,
            out,
            (accumulate, sets),
        );
        Ok(())
    }

    /// Every destination polynomial written by one task, in parallel where there are many.
    fn copy_polys_at(
        &self,
        src: &CpuBuffer,
        dst: &mut CpuBuffer,
        poly: usize,
        moves: &[[u32; 2]],
    ) -> Result<(), BackendError> {
        let mut from = vec![u32::MAX; dst.len() / poly.max(1)];
        for &[f, t] in moves {
            from[t as usize] = f;
        }
        let copy = |(to, d): (usize, &mut [u32])| {
            if let Some(&f) = from.get(to).filter(|&&f| f != u32::MAX) {
                d.copy_from_slice(&src[f as usize * poly..][..poly]);
            }
        };
        if moves.len() * poly >= PARALLEL_COPY_WORDS && self.parallel(moves.len()) {
            self.install(|| dst.par_chunks_mut(poly).enumerate().for_each(copy));
        } else {
            dst.chunks_mut(poly).enumerate().for_each(copy);
        }
        Ok(())
    }

    /// Any batch at once: the fused products keep their digit rows in a per-thread scratch
    /// (and the hybrid key switch its special-prime rows per polynomial), so a call makes no
    /// temporaries that grow with the batch beyond its outputs. Chunking the fold's first levels
    /// copied every chunk out and back: 0.75-0.83x of a token's fold without it (criterion
    /// `cpu/fold/8192/5/128`, docs/BENCHMARKS.md).
    fn key_product_chunk(&self, _n: usize) -> usize {
        usize::MAX
    }

    /// Fused: `tau(c1)` of the batch is gathered once (one pass); then one task per
    /// `(ciphertext, limb)` row computes that row's key-switch product from the digits (as in
    /// `decompose_mac`), transforms it back, and writes the row's even and odd children
    /// straight into `dst`. The composed default moved each ciphertext about a dozen times.
    fn expand_step(
        &self,
        ring: &CpuRing,
        _ctx: &RingContext,
        src: [&CpuBuffer; 2],
        dst: [&mut CpuBuffer; 2],
        (at, count, odd): (usize, usize, usize),
        limbs: usize,
        idx: &[u32],
        (digit_bits, digits): (u32, usize),
        keys: [&CpuBuffer; 2],
        shift: usize,
    ) -> Result<(), BackendError> {
        let (n, poly) = (ring.n, limbs * ring.n);
        let tau1 = self.gather_batch(ring, src[1], (at, count), limbs, idx)?;
        let product = |i: usize, l: usize, [b, a]: [&mut [u32]; 2]| {
            let job = DigitRow {
                m: ring.moduli[l],
                plan: &ring.plans[l],
                src: &tau1[i * poly..][..poly],
                src_moduli: &ring.moduli[..limbs],
                keys: [&keys[0][l * n..], &keys[1][l * n..]],
                stride: poly,
                digit_bits,
                digits,
                own: None,
            };
            job.run(self, [&mut *b, &mut *a], false);
            ring.plans[l].inverse(b);
            ring.plans[l].inverse(a);
        };
        self.expand_rows(ring, src, dst, (at, count, odd), limbs, idx, Split::Coeff(shift), product);
        Ok(())
    }

    /// Fused as [`CpuBackend::expand_step`], with the hybrid key switch of
    /// [`CpuBackend::keyswitch_hybrid`]: the special prime's rows of the batch first, then one
    /// task per row.
    fn expand_step_hybrid(
        &self,
        ring: &CpuRing,
        _ctx: &RingContext,
        src: [&CpuBuffer; 2],
        dst: [&mut CpuBuffer; 2],
        (at, count, odd): (usize, usize, usize),
        limbs: usize,
        idx: &[u32],
        keys: [&CpuBuffer; 2],
        shift: usize,
    ) -> Result<(), BackendError> {
        let poly = limbs * ring.n;
        let tau1 = self.gather_batch(ring, src[1], (at, count), limbs, idx)?;
        let special = self.hybrid_special_rows(ring, &tau1, count, limbs, keys);
        let product = |i: usize, l: usize, out: [&mut [u32]; 2]| {
            self.hybrid_row(ring, &tau1[i * poly..][..poly], limbs, l, keys, &special[i], out);
        };
        self.expand_rows(ring, src, dst, (at, count, odd), limbs, idx, Split::Coeff(shift), product);
        Ok(())
    }

    /// Fused: one task per `(pair, limb)` row writes the sum `A1 + X^shift B1` of the `c1`s
    /// straight into `dst` and the gathered difference `tau(A1 - X^shift B1)` into the batch
    /// the key switch reads; the special prime's rows of the batch; then one task per row
    /// forms the key products, the `c0` sum and the gathered `c0` difference, and adds them
    /// into `dst`. No temporary but the batch's gathered `c1`s and one row per task.
    fn pack_step_hybrid(
        &self,
        ring: &CpuRing,
        _ctx: &RingContext,
        src: [&CpuBuffer; 2],
        dst: [&mut CpuBuffer; 2],
        (a_at, b_at, out_at, count): (usize, usize, usize, usize),
        limbs: usize,
        idx: &[u32],
        keys: [&CpuBuffer; 2],
        shift: usize,
    ) -> Result<(), BackendError> {
        let (n, poly) = (ring.n, limbs * ring.n);
        let words = count * poly;
        let [d0, d1] = dst;
        let (out0, out1) = (&mut d0[out_at * poly..][..words], &mut d1[out_at * poly..][..words]);
        let pair =
            |k: usize, r: usize| (&src[k][a_at * poly + r * n..][..n], &src[k][b_at * poly + r * n..][..n]);
        let mut tau1 = self.alloc_zeroed(words)?;
        let first = |(r, (t, sum)): (usize, (&mut [u32], &mut [u32]))| {
            let (m, (a, b)) = (ring.moduli[r % limbs], pair(1, r));
            let mut diff = vec![0u32; n];
            self.arch.dispatch(SumDiffRow { p: m.value(), a, b, shift, sum, diff: &mut diff });
            host::gather_row(m, t, &diff, idx);
        };
        let rows = tau1.chunks_mut(n).zip(out1.chunks_mut(n));
        self.each_row(count * limbs, rows, first);
        let special = self.hybrid_special_rows(ring, &tau1, count, limbs, keys);
        let second = |(r, (o0, o1)): (usize, (&mut [u32], &mut [u32]))| {
            let (i, l) = (r / limbs, r % limbs);
            let p = ring.moduli[l].value();
            let (mut kb, mut ka) = (vec![0u32; n], vec![0u32; n]);
            self.hybrid_row(ring, &tau1[i * poly..][..poly], limbs, l, keys, &special[i], [&mut kb, &mut ka]);
            let (a, b) = pair(0, r);
            let mut diff = vec![0u32; n];
            self.arch.dispatch(SumDiffRow { p, a, b, shift, sum: &mut *o0, diff: &mut diff });
            o0.iter_mut().zip(&kb).for_each(|(u, &v)| *u = add_mod(p, *u, v));
            self.arch.dispatch(AddGathered { p, acc: o0, x: &diff, idx });
            o1.iter_mut().zip(&ka).for_each(|(u, &v)| *u = add_mod(p, *u, v));
        };
        let rows = out0.chunks_mut(n).zip(out1.chunks_mut(n));
        self.each_row(count * limbs, rows, second);
        Ok(())
    }

    /// Fused: the special prime's key products of every polynomial first (one task each), then
    /// one task per `(polynomial, limb)` row forms its products from the digits, transforms
    /// them back and divides by `P` in place.
    fn keyswitch_hybrid(
        &self,
        ring: &CpuRing,
        _ctx: &RingContext,
        a: &CpuBuffer,
        (polys, limbs): (usize, usize),
        keys: [&CpuBuffer; 2],
        out: [&mut CpuBuffer; 2],
    ) -> Result<(), BackendError> {
        self.hybrid_rows(ring, a, (polys, limbs), keys, out, |row, src, special, outs| {
            self.hybrid_row(ring, src, limbs, row % limbs, keys, special, outs);
        });
        Ok(())
    }

    fn mod_switch_down(
        &self,
        ring: &CpuRing,
        a: &CpuBuffer,
        polys: usize,
        in_limbs: usize,
        out: &mut CpuBuffer,
        out_limbs: usize,
    ) -> Result<(), BackendError> {
        let n = ring.n;
        let step = |(src, dst): (&[u32], &mut [u32])| {
            // Work limb by limb from the last: x <- (x - [x]_{p_last}) / p_last, with the
            // remainder centred, which is round(x / p_last).
            let mut cur: Vec<u32> = src.to_vec();
            for last in (out_limbs..in_limbs).rev() {
                let pl = ring.moduli[last];
                let (head, tail) = cur.split_at_mut(last * n);
                let rem = &tail[..n];
                for (i, &m) in ring.moduli[..last].iter().enumerate() {
                    divide_out(self.arch, m, pl, &mut head[i * n..(i + 1) * n], rem);
                }
            }
            dst.copy_from_slice(&cur[..out_limbs * n]);
        };
        let pairs = a.chunks_exact(in_limbs * n).zip(out.chunks_exact_mut(out_limbs * n));
        if self.parallel(polys) {
            let pairs: Vec<_> = pairs.collect();
            self.install(|| pairs.into_par_iter().for_each(step));
        } else {
            pairs.for_each(step);
        }
        Ok(())
    }

    /// Fused: the special prime's products of every polynomial first (coefficient form, as in
    /// [`CpuBackend::keyswitch_hybrid`]), then one task per row: its products with the twin's
    /// own row, divided by `P` in the NTT domain.
    fn keyswitch_hybrid_ntt(
        &self,
        ring: &CpuRing,
        _ctx: &RingContext,
        a: &CpuBuffer,
        twin: &CpuBuffer,
        (polys, limbs): (usize, usize),
        keys: [&CpuBuffer; 2],
        out: [&mut CpuBuffer; 2],
    ) -> Result<(), BackendError> {
        let n = ring.n;
        self.hybrid_rows(ring, a, (polys, limbs), keys, out, |row, src, special, outs| {
            let own = &twin[row * n..][..n];
            self.hybrid_row_ntt(ring, src, own, limbs, row % limbs, keys, special, outs);
        });
        Ok(())
    }

    /// Fused: `tau(c1)` permuted in the NTT domain and a copy back in coefficient form for the
    /// digits (one inverse transform per row), the special prime's rows of the batch, then one
    /// task per row: the key products with the own digit row from the permuted one, divided by
    /// `P` in the NTT domain, `tau(c0)` permuted, and the children with the monomial's
    /// evaluations.
    fn expand_step_hybrid_ntt(
        &self,
        ring: &CpuRing,
        _ctx: &RingContext,
        src: [&CpuBuffer; 2],
        dst: [&mut CpuBuffer; 2],
        (at, count, odd): (usize, usize, usize),
        limbs: usize,
        [idx, idx_ntt]: [&[u32]; 2],
        keys: [&CpuBuffer; 2],
        shift: usize,
    ) -> Result<(), BackendError> {
        let (n, poly) = (ring.n, limbs * ring.n);
        let _ = idx; // tau(c1)'s coefficient form is its permuted NTT form transformed back
        let [twin, tau1] = self.gather_batch_ntt(ring, src[1], (at, count), limbs, idx_ntt)?;
        let special = self.hybrid_special_rows(ring, &tau1, count, limbs, keys);
        let mono = monomial_evaluations(ring, shift);
        let product = |i: usize, l: usize, out: [&mut [u32]; 2]| {
            let own = &twin[(i * limbs + l) * n..][..n];
            self.hybrid_row_ntt(ring, &tau1[i * poly..][..poly], own, limbs, l, keys, &special[i], out);
        };
        self.expand_rows(ring, src, dst, (at, count, odd), limbs, idx_ntt, Split::Ntt(&mono), product);
        Ok(())
    }

    fn fuses_hybrid_ntt(&self) -> bool {
        true
    }

    fn mac(
        &self,
        ring: &CpuRing,
        out: &mut CpuBuffer,
        a: &CpuBuffer,
        b: &CpuBuffer,
        dims: MacDims,
        limbs: usize,
        accumulate: bool,
    ) -> Result<(), BackendError> {
        let n = ring.n;
        #[cfg(target_arch = "x86_64")]
        // The register kernel wins where a block of rows reuses each plaintext line or the inner
        // sums are short; for one or two rows over long sums the portable kernel's long tiles
        // read faster on AVX-512 (probe, N = 4096, 4 limbs, 2 threads: 2 x 500 x 16 at 2.3
        // against 2.4-2.8 G products/s, 2 x 180 x 179 at 2.4-2.5 against 2.6; 2 x 4 x 512 at
        // 3.3-3.8 against 1.1-1.2).
        if (dims.rows >= 4 || dims.inner <= 32)
            && self.mac_simd_widest(ring, out, a, MacRight::RowMajor(b), dims, limbs, accumulate)
        {
            return Ok(());
        }
        let (rows, cols) = (dims.rows, dims.cols);
        // Blocking: a task owns one limb, one tile of `tile` coefficients and a group of `group`
        // columns, with accumulators for rows x group x tile (at most MAC_ACC_WORDS). Long tiles
        // keep the table reads in long contiguous runs (few pages, full vectors); the group lets
        // each `a` tile be reused from cache across columns; each `b` tile is read exactly once.
        let min_group = cols.clamp(1, 4);
        let tile =
            (MAC_ACC_WORDS / (rows.max(1) * min_group)).clamp(64, MAC_MAX_TILE).next_power_of_two().min(n);
        let group = (MAC_ACC_WORDS / (rows.max(1) * tile)).clamp(1, cols.max(1));
        let tiles = n / tile;
        let groups = cols.div_ceil(group);
        let poly = limbs * n;
        let arch = self.arch;
        let tasks = groups * limbs * tiles;
        let run = |task: usize| -> Vec<u32> {
            let (g, rest) = (task / (limbs * tiles), task % (limbs * tiles));
            let (l, t) = (rest / tiles, rest % tiles);
            let off = l * n + t * tile;
            let (c0, gc) = (g * group, group.min(cols - g * group));
            let mut acc = vec![0u64; rows * gc * tile];
            if accumulate {
                for (k, acc_k) in acc.chunks_exact_mut(tile).enumerate() {
                    let (r, c) = (k / gc, c0 + k % gc);
                    let o = &out[(r * cols + c) * poly + off..][..tile];
                    acc_k.iter_mut().zip(o).for_each(|(s, &v)| *s = u64::from(v));
                }
            }
            mac_tile(
                arch,
                ring.moduli[l],
                &mut acc,
                tile,
                MacDims { rows, inner: dims.inner, cols: gc },
                |r, i| &a[(r * dims.inner + i) * poly + off..][..tile],
                |i, c| &b[(i * cols + c0 + c) * poly + off..][..tile],
            );
            // Every accumulator is reduced below p < 2^31 by mac_tile.
            acc.into_iter().map(|s| s as u32).collect()
        };
        let results: Vec<Vec<u32>> = if self.parallel(tasks) {
            self.install(|| (0..tasks).into_par_iter().map(run).collect())
        } else {
            (0..tasks).map(run).collect()
        };
        for (task, res) in results.into_iter().enumerate() {
            let (g, rest) = (task / (limbs * tiles), task % (limbs * tiles));
            let (l, t) = (rest / tiles, rest % tiles);
            let off = l * n + t * tile;
            let (c0, gc) = (g * group, group.min(cols - g * group));
            for (k, r) in res.chunks_exact(tile).enumerate() {
                let (row, c) = (k / gc, c0 + k % gc);
                out[(row * cols + c) * poly + off..][..tile].copy_from_slice(r);
            }
        }
        Ok(())
    }

    /// The limb-major laid-out order of `mac_simd::lay_out_part` where a SIMD kernel runs
    /// (blocks of its register width); the row-major order otherwise.
    fn mac_layout(
        &self,
        ring: &CpuRing,
        b: CpuBuffer,
        inner: usize,
        cols: usize,
        limbs: usize,
    ) -> Result<CpuBuffer, BackendError> {
        let n = ring.n;
        if self.mac_lanes(n).is_none() {
            return Ok(b);
        }
        let mut dst = self.alloc_zeroed(inner * cols * limbs * n)?;
        self.mac_layout_part(ring, &mut dst, &b, (0, inner * cols), (inner, cols, limbs, n))?;
        Ok(dst)
    }

    /// Each `(limb, block)` part of `dst` on its own task ([`mac_simd::lay_out_part`]); a copy
    /// where the product reads the row-major layout (no SIMD kernel for this degree).
    fn mac_layout_part(
        &self,
        ring: &CpuRing,
        dst: &mut CpuBuffer,
        part: &CpuBuffer,
        (first, count): (usize, usize),
        (inner, cols, limbs, n): (usize, usize, usize, usize),
    ) -> Result<(), BackendError> {
        let poly = limbs * n;
        // The part's words (a buffer may be longer than its shape) and the operand's.
        if part.len() < count * poly || dst.len() < inner * cols * poly || first + count > inner * cols {
            return Err(BackendError::Shape(format!(
                "polys {first}..+{count} of a {inner} x {cols} operand from {} words into {}",
                part.len(),
                dst.len()
            )));
        }
        let Some(lanes) = self.mac_lanes(ring.n) else {
            dst[first * poly..][..count * poly].copy_from_slice(&part[..count * poly]);
            return Ok(());
        };
        #[cfg(target_arch = "x86_64")]
        {
            let per_block = (cols * inner * lanes).max(1);
            let fill = |(block, d): (usize, &mut [u32])| {
                mac_simd::lay_out_part(part, (first, count), (inner, cols, limbs, n), lanes, block, d);
            };
            let dst = &mut dst[..inner * cols * poly];
            if self.parallel(limbs * n / lanes) {
                self.install(|| dst.par_chunks_mut(per_block).enumerate().for_each(fill));
            } else {
                dst.chunks_mut(per_block).enumerate().for_each(fill);
            }
        }
        let _ = lanes;
        Ok(())
    }

    fn mac_laid_out(
        &self,
        ring: &CpuRing,
        out: &mut CpuBuffer,
        a: &CpuBuffer,
        b: &CpuBuffer,
        dims: MacDims,
        limbs: usize,
        accumulate: bool,
    ) -> Result<(), BackendError> {
        // The kernel of `mac_lanes`, which laid `b` out; none there: `b` is row-major.
        #[cfg(target_arch = "x86_64")]
        if self.mac_simd_widest(ring, out, a, MacRight::LaidOut(b), dims, limbs, accumulate) {
            return Ok(());
        }
        self.mac(ring, out, a, b, dims, limbs, accumulate)
    }
}

/// The right operand of `CpuBackend::mac_simd`, row-major or in the laid-out order of
/// [`Backend::mac_layout`]. Used by the x86-64 kernels only.
#[derive(Clone, Copy)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
enum MacRight<'a> {
    RowMajor(&'a [u32]),
    LaidOut(&'a [u32]),
}

/// `acc[r][c] += sum_i x(r, i) * y(i, c)` over one tile, fully reduced at the end. `acc` enters
/// below `p` (zeros or a previous output) and is Barrett-reduced every `lazy_products()` terms,
/// so the `u64` sums never overflow.
#[inline(always)]
fn mac_tile<'s>(
    arch: pulp::Arch,
    m: Modulus,
    acc: &mut [u64],
    tile: usize,
    dims: MacDims,
    x: impl Fn(usize, usize) -> &'s [u32],
    y: impl Fn(usize, usize) -> &'s [u32],
) {
    arch.dispatch(MacTile { m, acc, tile, dims, x, y });
}

/// The body of [`mac_tile`] as a `pulp::WithSimd` value: pulp compiles `with_simd` once per
/// instruction set (AVX-512, AVX2, baseline) and picks one at run time. (A closure does not
/// work here: its `FnOnce` shim is compiled without the target features, which leaves the loop
/// at SSE2 - seen in a profile.)
struct MacTile<'a, X, Y> {
    m: Modulus,
    acc: &'a mut [u64],
    tile: usize,
    dims: MacDims,
    x: X,
    y: Y,
}

impl<'s, X: Fn(usize, usize) -> &'s [u32], Y: Fn(usize, usize) -> &'s [u32]> pulp::WithSimd
    for MacTile<'_, X, Y>
{
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let Self { m, acc, tile, dims, x, y } = self;
        let lazy = m.lazy_products();
        for i in 0..dims.inner {
            for (r, acc_r) in acc.chunks_exact_mut(tile * dims.cols).enumerate() {
                let xi = x(r, i);
                for (c, acc_rc) in acc_r.chunks_exact_mut(tile).enumerate() {
                    fma_row(acc_rc, xi, y(i, c));
                }
            }
            if (i + 1) % lazy == 0 {
                acc.iter_mut().for_each(|s| *s = u64::from(m.reduce_u64(*s)));
            }
        }
        acc.iter_mut().for_each(|s| *s = u64::from(m.reduce_u64(*s)));
    }
}

/// `acc[j] += x[j] * y[j]` in `u64`: the loop the compiler vectorises (vpmuludq).
#[inline(always)]
fn fma_row(acc: &mut [u64], x: &[u32], y: &[u32]) {
    for ((s, &u), &v) in acc.iter_mut().zip(x).zip(y) {
        *s += u64::from(u) * u64::from(v);
    }
}

/// `floor(2^63 / p) p`: the `u64` sums of both lazy kernels stay below it, one conditional
/// subtraction after each product (`< 2^62`) keeping them there.
pub(crate) fn lazy_bound(m: Modulus) -> u64 {
    let p = u64::from(m.value());
    (1u64 << 63) / p * p
}

/// One output row of [`Backend::decompose_mac`]: limb `l` (modulus `m`, transform `plan`) of one
/// polynomial, whose source `src` holds all its limbs; `keys[k][e * stride..]` is key `k`'s
/// gadget element `e` at limb `l`.
/// The four output rows of one `(ciphertext, limb)` of [`Backend::expand_step`]: even `c0`, odd
/// `c0`, even `c1`, odd `c1`.
type ChildRows<'a> = (((&'a mut [u32], &'a mut [u32]), &'a mut [u32]), &'a mut [u32]);

/// `x <- (x - r_c) / p_last` in limb `m`, where `r_c` is the centred remainder (in
/// `(-p_last/2, p_last/2]`) of the residues `rem` mod `p_last`: `round(x / p_last)`, the exact
/// division of modulus switching.
fn divide_out(arch: pulp::Arch, m: Modulus, pl: Modulus, x: &mut [u32], rem: &[u32]) {
    arch.dispatch(DivideOut { m, pl, x, rem });
}

/// [`divide_out`] as a `pulp::WithSimd` value, so that its loop is compiled for the widest
/// vectors the machine has (the 64-bit products of Shoup's multiplication included).
struct DivideOut<'a> {
    m: Modulus,
    pl: Modulus,
    x: &'a mut [u32],
    rem: &'a [u32],
}

impl pulp::WithSimd for DivideOut<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let Self { m, pl, x, rem } = self;
        let d = Divisor::new(m, pl);
        for (x, &r) in x.iter_mut().zip(rem) {
            *x = d.add_divide(*x, d.neg_centred(r));
        }
    }
}

/// The constants of dividing out the prime `P` in the limb of `m` (see [`divide_out`]).
#[derive(Clone, Copy)]
struct Divisor {
    m: Modulus,
    /// `P^-1 mod p` and its Shoup factor.
    inv: u32,
    inv_shoup: u32,
    /// `P mod p`, `P / 2`, and whether `P < 2p` (a residue mod `P` then reduces in one step).
    lift: u32,
    half: u32,
    one_step: bool,
}

impl Divisor {
    fn new(m: Modulus, pl: Modulus) -> Self {
        let (p, big) = (m.value(), pl.value());
        let inv = m.inv(m.reduce(big)).unwrap_or(0); // distinct primes: invertible
        let one_step = u64::from(big) < 2 * u64::from(p);
        Self { m, inv, inv_shoup: m.shoup(inv), lift: m.reduce(big), half: big / 2, one_step }
    }

    /// `-r_c mod p` for a residue `r` mod `P`, `r_c` its centred value: `[r > P/2] (P mod p) -
    /// (r mod p)`, in branch-free steps the compiler vectorises (every intermediate below
    /// `2p < 2^32`).
    #[inline(always)]
    fn neg_centred(self, r: u32) -> u32 {
        let p = self.m.value();
        let rr = if self.one_step { r.min(r.wrapping_sub(p)) } else { self.m.reduce(r) };
        sub_mod(p, if r > self.half { self.lift } else { 0 }, rr)
    }

    /// `(x + y) P^-1 mod p` for reduced `x, y`, branch-free.
    #[inline(always)]
    fn add_divide(self, x: u32, y: u32) -> u32 {
        let p = self.m.value();
        self.m.mul_shoup(add_mod(p, x, y), self.inv, self.inv_shoup)
    }
}

/// `even = x + t` and `odd = X^shift (x - t)` for one row mod `p` (`X^N = -1`, `shift < 2N`),
/// in contiguous runs: `x_j - t_j` lands at `j + k` (negated with `X^N`), and the last `k` of
/// them wrap to the front with the other sign. Branch-free, as a `pulp::WithSimd` value
/// (compiled for the machine's widest vectors).
struct SplitRow<'a> {
    p: u32,
    x: &'a [u32],
    t: &'a [u32],
    even: &'a mut [u32],
    odd: &'a mut [u32],
    shift: usize,
}

impl pulp::WithSimd for SplitRow<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let Self { p, x, t, even, odd, shift } = self;
        let n = x.len();
        let (k, flip) = if shift < n { (shift, false) } else { (shift - n, true) };
        even.iter_mut().zip(x).zip(t).for_each(|((e, &u), &v)| *e = add_mod(p, u, v));
        let (x_lo, x_hi) = x.split_at(n - k);
        let (t_lo, t_hi) = t.split_at(n - k);
        let (odd_wrapped, odd_shifted) = odd.split_at_mut(k);
        let diff = |out: &mut [u32], x: &[u32], t: &[u32], negate: bool| {
            if negate {
                out.iter_mut().zip(x).zip(t).for_each(|((o, &u), &v)| *o = sub_mod(p, v, u));
            } else {
                out.iter_mut().zip(x).zip(t).for_each(|((o, &u), &v)| *o = sub_mod(p, u, v));
            }
        };
        diff(odd_shifted, x_lo, t_lo, flip);
        diff(odd_wrapped, x_hi, t_hi, !flip);
    }
}

/// One row of a PackLWEs level: `sum = a + X^shift b` and `diff = a - X^shift b` mod `p`
/// (`shift < 2N`: `X^(N+k) = -X^k`; what `X^k` rotates past the end comes back negated).
struct SumDiffRow<'a> {
    p: u32,
    a: &'a [u32],
    b: &'a [u32],
    shift: usize,
    sum: &'a mut [u32],
    diff: &'a mut [u32],
}

impl pulp::WithSimd for SumDiffRow<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let Self { p, a, b, shift, sum, diff } = self;
        let n = a.len();
        let (k, flip) = if shift < n { (shift, false) } else { (shift - n, true) };
        // Coefficient j >= k of X^k b is b[j - k]; j < k is -b[j - k + n]; all negated by flip.
        let (b_lo, b_hi) = b.split_at(n - k);
        let parts = [(k, b_lo, flip), (0, b_hi, !flip)];
        for (from, bs, negate) in parts {
            let len = bs.len();
            let (a, s, d) = (&a[from..from + len], &mut sum[from..from + len], &mut diff[from..from + len]);
            let rows = a.iter().zip(bs).zip(s.iter_mut().zip(d.iter_mut()));
            if negate {
                rows.for_each(|((&u, &v), (s, d))| (*s, *d) = (sub_mod(p, u, v), add_mod(p, u, v)));
            } else {
                rows.for_each(|((&u, &v), (s, d))| (*s, *d) = (add_mod(p, u, v), sub_mod(p, u, v)));
            }
        }
    }
}

/// The digit rows of a hybrid key switch of `src` (`limbs` limbs, one whole-residue digit
/// each) into limb `l` of `q P`, against the keys' rows of that limb; `twin`: the NTT form of
/// `src`'s row `l`, the own digit's row.
fn hybrid_digits<'a>(
    ring: &'a CpuRing,
    src: &'a [u32],
    limbs: usize,
    l: usize,
    keys: [&'a CpuBuffer; 2],
    twin: Option<&'a [u32]>,
) -> DigitRow<'a> {
    let n = ring.n;
    DigitRow {
        m: ring.moduli[l],
        plan: &ring.plans[l],
        src,
        src_moduli: &ring.moduli[..limbs],
        keys: [&keys[0][l * n..], &keys[1][l * n..]],
        stride: (limbs + 1) * n,
        digit_bits: fastquery_backend::HYBRID_DIGIT_BITS,
        digits: 1,
        own: twin.map(|t| (l, t)),
    }
}

/// How an expansion step's odd children are multiplied by `X^shift`: rotated in coefficient
/// form, or multiplied pointwise by the monomial's NTT evaluations (per limb: the values and
/// their Shoup factors).
#[derive(Clone, Copy)]
enum Split<'a> {
    Coeff(usize),
    Ntt(&'a [Evaluations]),
}

/// `X^shift` (`shift < 2N`) in the NTT domain of every limb of the ring, with the Shoup
/// factors of its evaluations; kept in the ring after the first use.
fn monomial_evaluations(ring: &CpuRing, shift: usize) -> Arc<[Evaluations]> {
    let mut cache = ring.monomials.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, w)) = cache.iter().find(|(s, _)| *s == shift) {
        return w.clone();
    }
    let n = ring.n;
    let w: Arc<[Evaluations]> = (0..ring.moduli.len())
        .map(|l| {
            let m = ring.moduli[l];
            let mut w = vec![0u32; n];
            w[shift % n] = if shift < n { 1 } else { m.value() - 1 };
            ring.plans[l].forward(&mut w);
            let w_shoup = w.iter().map(|&v| m.shoup(v)).collect();
            (w, w_shoup)
        })
        .collect();
    cache.push((shift, w.clone()));
    w
}

/// `even = x + t` and `odd = w (x - t)` for one NTT-form row mod `m`, `w` the evaluations of
/// `X^shift` and their Shoup factors: [`SplitRow`] in the NTT domain, branch-free.
struct SplitRowNtt<'a> {
    m: Modulus,
    x: &'a [u32],
    t: &'a [u32],
    even: &'a mut [u32],
    odd: &'a mut [u32],
    w: &'a Evaluations,
}

impl pulp::WithSimd for SplitRowNtt<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let Self { m, x, t, even, odd, w } = self;
        let p = m.value();
        even.iter_mut().zip(x).zip(t).for_each(|((e, &u), &v)| *e = add_mod(p, u, v));
        let (w, w_shoup) = (&w.0[..x.len()], &w.1[..x.len()]);
        for ((((o, &u), &v), &c), &cs) in odd.iter_mut().zip(x).zip(t).zip(w).zip(w_shoup) {
            *o = m.mul_shoup(sub_mod(p, u, v), c, cs);
        }
    }
}

/// [`divide_out`] in the NTT domain, for one row `x` of limb `m`: `y = -r_c mod p` from the
/// remainders `rem` (coefficient form, as [`DivideOut`] centres them), transformed with
/// `plan`, then `x = (x + y) P^-1` (Shoup), branch-free. `y` is scratch.
struct DivideOutNtt<'a> {
    m: Modulus,
    pl: Modulus,
    x: &'a mut [u32],
    rem: &'a [u32],
    y: &'a mut [u32],
    plan: &'a NttPlan,
}

impl pulp::WithSimd for DivideOutNtt<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let Self { m, pl, x, rem, y, plan } = self;
        let d = Divisor::new(m, pl);
        y.iter_mut().zip(rem).for_each(|(y, &r)| *y = d.neg_centred(r));
        plan.forward(y);
        for (u, &v) in x.iter_mut().zip(y.iter()) {
            *u = d.add_divide(*u, v);
        }
    }
}

/// [`host::zero_noise_into`] compiled for the machine's vectors (it is inlined here), as a
/// `pulp::WithSimd` value.
struct ZeroNoise<'a> {
    ctx: &'a RingContext,
    limbs: usize,
    seed: &'a [u8; 32],
    eta: u32,
    /// `u` and `e1`.
    out: [&'a mut [u32]; 2],
    e0: Option<&'a mut [u32]>,
}

impl pulp::WithSimd for ZeroNoise<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let Self { ctx, limbs, seed, eta, out: [u, e1], e0 } = self;
        host::zero_noise_into(ctx, limbs, seed, eta, u, e0, e1);
    }
}

/// `acc[j] += x[idx[j]]` mod `p`, negated where bit 31 of `idx[j]` is set (the signed gather
/// of an automorphism, added), as a `pulp::WithSimd` value.
struct AddGathered<'a> {
    p: u32,
    acc: &'a mut [u32],
    x: &'a [u32],
    idx: &'a [u32],
}

impl pulp::WithSimd for AddGathered<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let Self { p, acc, x, idx } = self;
        for (u, &k) in acc.iter_mut().zip(idx) {
            let v = x[(k & !host::NEGATE) as usize];
            *u = if k & host::NEGATE != 0 { sub_mod(p, *u, v) } else { add_mod(p, *u, v) };
        }
    }
}

/// `outs[k] (+)= y * keys[k]` (`k = 0, 1`) for one row mod `m`, by the keys' Shoup
/// `factors`: a row of [`Backend::mul_broadcast_pair`], branch-free.
struct MulKeyPair<'a> {
    m: Modulus,
    y: &'a [u32],
    keys: [&'a [u32]; 2],
    factors: [&'a [u32]; 2],
    outs: [&'a mut [u32]; 2],
    accumulate: bool,
}

impl pulp::WithSimd for MulKeyPair<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let Self { m, y, keys, factors, outs, accumulate } = self;
        let p = m.value();
        for ((out, key), f) in outs.into_iter().zip(keys).zip(factors) {
            let terms = out.iter_mut().zip(y).zip(key).zip(f);
            if accumulate {
                terms.for_each(|(((o, &u), &k), &ks)| *o = add_mod(p, *o, m.mul_shoup(u, k, ks)));
            } else {
                terms.for_each(|(((o, &u), &k), &ks)| *o = m.mul_shoup(u, k, ks));
            }
        }
    }
}

/// `u + v mod p` for reduced `u, v` (`p < 2^31`), branch-free.
#[inline(always)]
fn add_mod(p: u32, u: u32, v: u32) -> u32 {
    let s = u + v;
    s.min(s.wrapping_sub(p))
}

/// `u - v mod p` for reduced `u, v`, branch-free.
#[inline(always)]
fn sub_mod(p: u32, u: u32, v: u32) -> u32 {
    let d = u.wrapping_sub(v);
    d.min(d.wrapping_add(p))
}

struct DigitRow<'a> {
    m: Modulus,
    plan: &'a NttPlan,
    src: &'a [u32],
    /// The moduli of `src`'s rows (its words are reduced residues, below them).
    src_moduli: &'a [Modulus],
    keys: [&'a [u32]; 2],
    stride: usize,
    digit_bits: u32,
    digits: usize,
    /// `(i, row)`: digit row `i` (one digit per limb: source limb `i`, the output's own limb)
    /// is `row`, already transformed (the twin of `decompose_mac_twin`).
    own: Option<(usize, &'a [u32])>,
}

impl DigitRow<'_> {
    /// Every digit row of `src` reduced into `p` and transformed, into the worker's scratch,
    /// then one pass of products over both keys ([`CpuBackend::digit_mac`]).
    fn run(&self, backend: &CpuBackend, out: [&mut [u32]; 2], accumulate: bool) {
        let n = out[0].len();
        let mask = (1u32 << self.digit_bits) - 1;
        let rows = self.src.len() / n * self.digits;
        DIGITS.with_borrow_mut(|scratch| {
            // Grown once per worker and then reused: no allocation and no zeroing per row.
            // Every word in use is written below before it is read. It holds only digits of
            // ciphertexts (never keys, masks or noise), and the next row overwrites it.
            if scratch.len() < rows * n {
                scratch.resize(rows * n, 0);
            }
            let digits = &mut scratch[..rows * n];
            let mut rows_out = digits.chunks_exact_mut(n).enumerate();
            for (row, src_m) in self.src.chunks_exact(n).zip(self.src_moduli) {
                for j in 0..self.digits {
                    let (e, digit) = rows_out.next().expect("rows * n words");
                    // The own row is read from the twin where it lies; its slot stays unused.
                    if !matches!(self.own, Some((i, _)) if i == e) {
                        let shift = j as u32 * self.digit_bits;
                        let (src, m) = (*src_m, self.m);
                        backend.arch.dispatch(DigitsOf { row, digit: &mut *digit, shift, mask, src, m });
                        self.plan.forward(digit);
                    }
                }
            }
            let rows = DigitRows { rows: digits, n, own: self.own };
            backend.digit_mac(self.m, rows, self.keys, self.stride, out, accumulate);
        });
    }
}

/// The transformed digit rows of one key-switch product: `rows` rows of `n` words in a
/// scratch, except row `own.0` (one digit per limb: the output's own limb), which is read from
/// `own.1`, the source's NTT-form row, in place of a copy in the scratch.
#[derive(Clone, Copy)]
pub(crate) struct DigitRows<'a> {
    rows: &'a [u32],
    n: usize,
    own: Option<(usize, &'a [u32])>,
}

impl<'a> DigitRows<'a> {
    /// The number of rows.
    #[inline(always)]
    fn count(&self) -> usize {
        self.rows.len() / self.n
    }

    /// Row `e` (`e < count()`).
    #[inline(always)]
    fn row(&self, e: usize) -> &'a [u32] {
        match self.own {
            Some((i, row)) if i == e => row,
            _ => &self.rows[e * self.n..][..self.n],
        }
    }
}

thread_local! {
    /// The transformed digit rows of one [`DigitRow`] task, per worker thread.
    static DIGITS: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Digit `(v >> shift) & mask` of every word of `row` (residues mod `src`), reduced mod `m`,
/// into `digit`, as a `pulp::WithSimd` value (compiled for the machine's widest vectors). The
/// digits' bound (below the mask's range and below the residues shifted down) sets the
/// reduction: none, one conditional subtraction, or Barrett.
struct DigitsOf<'a> {
    row: &'a [u32],
    digit: &'a mut [u32],
    shift: u32,
    mask: u32,
    src: Modulus,
    m: Modulus,
}

impl pulp::WithSimd for DigitsOf<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let Self { row, digit, shift, mask, src, m } = self;
        let p = m.value();
        let bound = (u64::from(mask) + 1).min(u64::from((src.value() - 1) >> shift.min(31)) + 1);
        let d = |v: u32| v.checked_shr(shift).unwrap_or(0) & mask;
        if bound <= u64::from(p) {
            digit.iter_mut().zip(row).for_each(|(x, &v)| *x = d(v));
        } else if bound <= 2 * u64::from(p) {
            // A digit below 2p (a whole residue of a prime of about the same size, as in
            // hybrid key switching and one digit per limb): one conditional subtraction.
            digit.iter_mut().zip(row).for_each(|(x, &v)| {
                let y = d(v);
                *x = y.min(y.wrapping_sub(p));
            });
        } else {
            // Digits of a much larger prime's residue may exceed this prime several times.
            digit.iter_mut().zip(row).for_each(|(x, &v)| *x = m.reduce(d(v)));
        }
    }
}

/// `acc[j] += x[j] y[j]`, kept below `big = floor(2^63 / p) p` by one conditional subtraction
/// (both factors reduced, so a product is below `2^62`), as a `pulp::WithSimd` value.
struct AccumulateRow<'a> {
    acc: &'a mut [u64],
    x: &'a [u32],
    y: &'a [u32],
    big: u64,
}

impl pulp::WithSimd for AccumulateRow<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let big = self.big;
        for ((s, &u), &v) in self.acc.iter_mut().zip(self.x).zip(self.y) {
            let t = *s + u64::from(u) * u64::from(v);
            *s = t.min(t.wrapping_sub(big));
        }
    }
}

#[cfg(test)]
mod tests {
    use fastquery_math::{Modulus, primes::ntt_prime_iter};
    use rand::{Rng, SeedableRng, rngs::StdRng};

    use super::DigitsOf;

    /// `DigitsOf` against its definition, `((v >> shift) & mask) mod p`, on each of its three
    /// reductions: none (a 24-bit residue into a 31-bit prime), one conditional subtraction
    /// (31-bit into 31-bit), Barrett (31-bit into 24-bit, whose digits exceed `p` many times;
    /// the transform that follows in a key switch would hide an unreduced digit, so the end to
    /// end comparisons cannot tell).
    #[test]
    fn digits_are_reduced_on_every_path() {
        let mut rng = StdRng::seed_from_u64(5);
        let arch = pulp::Arch::new();
        let mut big = ntt_prime_iter(31, 1024).expect("31-bit primes");
        let (q31a, q31b) = (big.next().expect("prime"), big.next().expect("prime"));
        let q24 = ntt_prime_iter(24, 1024).expect("24-bit primes").next().expect("prime");
        for (src, dst) in [(q24, q31a), (q31a, q31b), (q31b, q31a), (q31a, q24)] {
            let (src_m, m) =
                (Modulus::new(src.into()).expect("prime"), Modulus::new(dst.into()).expect("prime"));
            let mut row: Vec<u32> = (0..1024).map(|_| rng.random_range(0..src)).collect();
            row[..3].copy_from_slice(&[0, 1, src - 1]);
            for (digit_bits, j) in [(31u32, 0u32), (16, 0), (16, 1), (12, 2)] {
                let (mask, shift) = ((1u32 << digit_bits) - 1, j * digit_bits);
                let mut digit = vec![0u32; row.len()];
                arch.dispatch(DigitsOf { row: &row, digit: &mut digit, shift, mask, src: src_m, m });
                for (&v, &d) in row.iter().zip(&digit) {
                    assert_eq!(
                        d,
                        ((v >> shift) & mask) % dst,
                        "{src} -> {dst}, {digit_bits}-bit digit {j} of {v}"
                    );
                }
            }
        }
    }
}
