//! The multiply-accumulate on x86-64 with register-resident accumulators: one kernel, written
//! once over [`Lanes`], compiled for AVX-512 (x86-64-v4, 16 coefficients per register, blocks
//! of 8 rows) and for AVX2 (x86-64-v3, 8 coefficients per register, blocks of 4 rows).
//!
//! A task owns one limb and one tile of coefficients for every `(row, column)` of the product.
//! It first copies its slices of the rows (`x`) into one contiguous buffer, and then, column by
//! column, the column's slices of the plaintexts (`y`): the polynomials sit at power-of-two
//! strides, so read in place the slices of one tile all fall in the same cache sets and evict
//! each other (measured: 2.5 G products/s in place on two threads). For each block of
//! coefficients it keeps the sums of a block of rows in registers for the whole inner sum, so
//! no accumulator is loaded or stored per product.
//!
//! A right operand laid out once ([`lay_out_part`], for a preprocessed table) needs no copy:
//! the task reads its tile as one contiguous run, block by block, each block with every column,
//! so only one block of the packed rows is in use at a time and it stays in L1/L2 (see
//! [`Ys::LaidOut`]; on the AVX2 VM 1.4-2.5x the row-major product over operands larger than
//! the caches, 1.0-1.2x at 16 rows over a few MB, docs/BENCHMARKS.md).
//!
//! Arithmetic: a 64-bit lane holds two coefficients; `vpmuludq` multiplies the even ones and,
//! after a 32-bit shift, the odd ones. Each product (`< 2^62`, both factors reduced) is added to
//! a `u64` kept below `P = floor(2^63 / p) p` by one conditional subtraction, and the sum is
//! reduced once at the end with two Shoup products (see [`reduce`]), where the portable kernel
//! runs a Barrett pass over its accumulators every four products. The conditional subtraction
//! is `min(s, s - P)` on AVX-512 (`vpminuq`); AVX2 has no unsigned 64-bit minimum, so there it
//! selects by the sign bit of `s - P` (`vblendvpd`): for `s < P + 2^63` and `P <= 2^63`,
//! `s - P` wraps to `2^63` or more exactly when `s < P`.

use std::arch::x86_64::{__m256i, __m512i};

use fastquery_math::Modulus;
use pulp::x86::{V3, V4};

/// Bytes of the rows' slices of one tile, which set the tile's length. Longer tiles read the
/// table in longer runs (a tile's slice of a plaintext is contiguous, the slices are 20 MB
/// apart at llama-7b); the packed rows then live in L2 or L3. Measured on a 2-vCPU AVX2 EPYC
/// (llama-7b, the folded product, alternating runs, table product per request): 256 KB
/// 1.69-1.87 s, 512 KB 1.54-1.99 s, 1 MB 1.35-2.04 s, 2 MB 1.17-1.55 s, 4 MB 1.40-1.65 s.
pub(crate) const X_BYTES: usize = 1 << 21;
/// Longest tile.
pub(crate) const MAX_TILE: usize = 512;
/// Bound on a task's packed rows with a laid-out operand, where one block of them (`rows *
/// inner * LANES` words) is in use at a time and the tile only sets the copy's size.
pub(crate) const LAID_X_BYTES: usize = 8 << 20;

/// How many columns ahead the laid-out path asks for its operand, into L2 (64 KB at llama-7b's
/// 125 inner, 16 lanes). A one-token product (two rows, two products per word) went from 12.2
/// to 17.9 GiB/s with this, pairs and the two-row block together (16.5 without the prefetch;
/// `cpu/mac_laid_out/8192/2x125x32/5`, alternating binaries; docs/BENCHMARKS.md). Asked for
/// as the block's loop goes instead of in one burst per column (2026-12-03, twenty-fifth
/// session): the whole one-token product, `cpu/mac_laid_out/8192/2x125x128/5`, 1.18-1.53x in
/// five alternating pairs; the decode step's product in the server 0.87-0.92x the time in five
/// of six pairs (the sixth in a slow phase of the VM; two earlier pairs, both in slow phases
/// for the new kernel, measured it 1.28x and 1.65x: docs/BENCHMARKS.md).
const PREFETCH_AHEAD: usize = 8;

/// The vector operations the kernel needs, on 64-bit lanes.
pub(crate) trait Lanes: Copy {
    /// One register.
    type V: Copy;
    /// Coefficients (32-bit words) per register: two per 64-bit lane.
    const LANES: usize;
    /// Rows whose `2 x ROW_BLOCK` accumulators stay in registers (8 or 4).
    const ROW_BLOCK: usize;
    /// Whether the table product ([`Bucket`]) adds two products per conditional subtraction,
    /// which costs two instructions on both (AVX-512: subtract, unsigned minimum; AVX2:
    /// subtract, blend). Pairs are faster on both since 2026-12-03 (AVX-512 on Zen 4: a
    /// one-token table product 1.3-1.5x with the two-row block and the prefetch).
    const PAIRED: bool;
    /// The same for the key-switching product ([`DigitMac`]), which then streams two digit
    /// rows and four key rows at once: slower on AVX-512 (Zen 4: a hybrid key switch 1.1-1.3x
    /// the time, a token's fold 1.1-1.3x, alternating binaries on 2026-12-03), faster on AVX2.
    const DIGITS_PAIRED: bool;
    /// Runs `f` compiled for this instruction set.
    fn run<F: pulp::NullaryFnOnce>(self, f: F) -> F::Output;
    /// `s[at .. at + LANES]` (`at + LANES <= s.len()`).
    fn load(self, s: &[u32], at: usize) -> Self::V;
    /// `s[at .. at + LANES]` into the register.
    fn store(self, v: Self::V, s: &mut [u32], at: usize);
    /// `s[at .. at + LANES / 2]` (`at + LANES / 2 <= s.len()`).
    fn load_u64(self, s: &[u64], at: usize) -> Self::V;
    /// The register's 64-bit lanes into `s[at .. at + LANES / 2]`.
    fn store_u64(self, v: Self::V, s: &mut [u64], at: usize);
    fn splat(self, v: u64) -> Self::V;
    fn zero(self) -> Self::V;
    fn and(self, a: Self::V, b: Self::V) -> Self::V;
    fn or(self, a: Self::V, b: Self::V) -> Self::V;
    fn shr32(self, a: Self::V) -> Self::V;
    fn shl32(self, a: Self::V) -> Self::V;
    fn add(self, a: Self::V, b: Self::V) -> Self::V;
    fn sub(self, a: Self::V, b: Self::V) -> Self::V;
    /// The low 32 bits of each lane of `a` times those of `b`, as 64-bit products.
    fn mul(self, a: Self::V, b: Self::V) -> Self::V;
    /// `s - m` where `s >= m`, else `s`, for `m <= 2^63` and `s < m + 2^63`.
    fn csub(self, s: Self::V, m: Self::V) -> Self::V;
    /// Asks for the cache line holding `s[0]` (a hint: no fault, no effect on any value).
    fn prefetch(self, s: &[u32]);
    /// [`Lanes::prefetch`] into L2 only, for a stream read a while later: into L1 it would
    /// evict the packed rows the kernel is reading.
    fn prefetch_l2(self, s: &[u32]);
}

/// `prefetcht0` of the line holding `s[0]`.
#[inline(always)]
fn prefetch_line(simd: V3, s: &[u32]) {
    simd.sse._mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(s.as_ptr().cast());
}

/// `prefetcht1` of the line holding `s[0]`.
#[inline(always)]
fn prefetch_line_l2(simd: V3, s: &[u32]) {
    simd.sse._mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(s.as_ptr().cast());
}

impl Lanes for V4 {
    type V = __m512i;
    const LANES: usize = 16;
    const ROW_BLOCK: usize = 8;
    const PAIRED: bool = true;
    const DIGITS_PAIRED: bool = false;

    #[inline(always)]
    fn prefetch(self, s: &[u32]) {
        prefetch_line(*self, s);
    }
    #[inline(always)]
    fn prefetch_l2(self, s: &[u32]) {
        prefetch_line_l2(*self, s);
    }
    #[inline(always)]
    fn run<F: pulp::NullaryFnOnce>(self, f: F) -> F::Output {
        self.vectorize(f)
    }
    #[inline(always)]
    fn load(self, s: &[u32], at: usize) -> __m512i {
        let a: [u32; 16] = s[at..at + 16].try_into().expect("a tile holds whole blocks");
        pulp::cast(a)
    }
    #[inline(always)]
    fn store(self, v: __m512i, s: &mut [u32], at: usize) {
        let a: [u32; 16] = pulp::cast(v);
        s[at..at + 16].copy_from_slice(&a);
    }
    #[inline(always)]
    fn load_u64(self, s: &[u64], at: usize) -> __m512i {
        let a: [u64; 8] = s[at..at + 8].try_into().expect("whole registers");
        pulp::cast(a)
    }
    #[inline(always)]
    fn store_u64(self, v: __m512i, s: &mut [u64], at: usize) {
        let a: [u64; 8] = pulp::cast(v);
        s[at..at + 8].copy_from_slice(&a);
    }
    #[inline(always)]
    fn splat(self, v: u64) -> __m512i {
        self.avx512f._mm512_set1_epi64(v as i64)
    }
    #[inline(always)]
    fn zero(self) -> __m512i {
        self.avx512f._mm512_setzero_si512()
    }
    #[inline(always)]
    fn and(self, a: __m512i, b: __m512i) -> __m512i {
        self.avx512f._mm512_and_si512(a, b)
    }
    #[inline(always)]
    fn or(self, a: __m512i, b: __m512i) -> __m512i {
        self.avx512f._mm512_or_si512(a, b)
    }
    #[inline(always)]
    fn shr32(self, a: __m512i) -> __m512i {
        self.avx512f._mm512_srli_epi64::<32>(a)
    }
    #[inline(always)]
    fn shl32(self, a: __m512i) -> __m512i {
        self.avx512f._mm512_slli_epi64::<32>(a)
    }
    #[inline(always)]
    fn add(self, a: __m512i, b: __m512i) -> __m512i {
        self.avx512f._mm512_add_epi64(a, b)
    }
    #[inline(always)]
    fn sub(self, a: __m512i, b: __m512i) -> __m512i {
        self.avx512f._mm512_sub_epi64(a, b)
    }
    #[inline(always)]
    fn mul(self, a: __m512i, b: __m512i) -> __m512i {
        self.avx512f._mm512_mul_epu32(a, b)
    }
    #[inline(always)]
    fn csub(self, s: __m512i, m: __m512i) -> __m512i {
        let f = self.avx512f;
        f._mm512_min_epu64(s, f._mm512_sub_epi64(s, m))
    }
}

impl Lanes for V3 {
    type V = __m256i;
    const LANES: usize = 8;
    const ROW_BLOCK: usize = 4;
    const PAIRED: bool = true;
    const DIGITS_PAIRED: bool = true;

    #[inline(always)]
    fn prefetch(self, s: &[u32]) {
        prefetch_line(self, s);
    }
    #[inline(always)]
    fn prefetch_l2(self, s: &[u32]) {
        prefetch_line_l2(self, s);
    }
    #[inline(always)]
    fn run<F: pulp::NullaryFnOnce>(self, f: F) -> F::Output {
        self.vectorize(f)
    }
    #[inline(always)]
    fn load(self, s: &[u32], at: usize) -> __m256i {
        let a: [u32; 8] = s[at..at + 8].try_into().expect("a tile holds whole blocks");
        pulp::cast(a)
    }
    #[inline(always)]
    fn store(self, v: __m256i, s: &mut [u32], at: usize) {
        let a: [u32; 8] = pulp::cast(v);
        s[at..at + 8].copy_from_slice(&a);
    }
    #[inline(always)]
    fn load_u64(self, s: &[u64], at: usize) -> __m256i {
        let a: [u64; 4] = s[at..at + 4].try_into().expect("whole registers");
        pulp::cast(a)
    }
    #[inline(always)]
    fn store_u64(self, v: __m256i, s: &mut [u64], at: usize) {
        let a: [u64; 4] = pulp::cast(v);
        s[at..at + 4].copy_from_slice(&a);
    }
    #[inline(always)]
    fn splat(self, v: u64) -> __m256i {
        self.avx._mm256_set1_epi64x(v as i64)
    }
    #[inline(always)]
    fn zero(self) -> __m256i {
        self.avx._mm256_setzero_si256()
    }
    #[inline(always)]
    fn and(self, a: __m256i, b: __m256i) -> __m256i {
        self.avx2._mm256_and_si256(a, b)
    }
    #[inline(always)]
    fn or(self, a: __m256i, b: __m256i) -> __m256i {
        self.avx2._mm256_or_si256(a, b)
    }
    #[inline(always)]
    fn shr32(self, a: __m256i) -> __m256i {
        self.avx2._mm256_srli_epi64::<32>(a)
    }
    #[inline(always)]
    fn shl32(self, a: __m256i) -> __m256i {
        self.avx2._mm256_slli_epi64::<32>(a)
    }
    #[inline(always)]
    fn add(self, a: __m256i, b: __m256i) -> __m256i {
        self.avx2._mm256_add_epi64(a, b)
    }
    #[inline(always)]
    fn sub(self, a: __m256i, b: __m256i) -> __m256i {
        self.avx2._mm256_sub_epi64(a, b)
    }
    #[inline(always)]
    fn mul(self, a: __m256i, b: __m256i) -> __m256i {
        self.avx2._mm256_mul_epu32(a, b)
    }
    #[inline(always)]
    fn csub(self, s: __m256i, m: __m256i) -> __m256i {
        // `d = s - m` has its sign bit set exactly when `s < m` (module docs): keep `s` there.
        let d = self.avx2._mm256_sub_epi64(s, m);
        let a = self.avx;
        a._mm256_castpd_si256(a._mm256_blendv_pd(
            a._mm256_castsi256_pd(d),
            a._mm256_castsi256_pd(s),
            a._mm256_castsi256_pd(d),
        ))
    }
}

/// One task: `outs[r * cols + c] (+)= sum_i xs[r * inner + i] * y(i, c)`, every slice `tile`
/// coefficients of one limb (`tile` a multiple of `I::LANES`).
pub(crate) struct Bucket<'a, I> {
    pub simd: I,
    pub m: Modulus,
    pub rows: usize,
    pub inner: usize,
    pub cols: usize,
    pub tile: usize,
    pub xs: Vec<&'a [u32]>,
    pub ys: Ys<'a>,
    pub outs: Vec<&'a mut [u32]>,
    pub accumulate: bool,
}

/// The right operand of a [`Bucket`].
pub(crate) enum Ys<'a> {
    /// `y(i, c) = ys[i * cols + c]`, slices of `tile` words anywhere (of a row-major operand):
    /// the task copies each column's slices into one contiguous buffer before its products.
    Slices(Vec<&'a [u32]>),
    /// The task's part of an operand in the laid-out order ([`lay_out_part`]): `LANES` words of
    /// `y(i, c)` for block `jb` of the tile at `((jb * cols + c) * inner + i) * LANES`. The
    /// task reads it once, front to back.
    LaidOut(&'a [u32]),
}

/// Moves polynomials `[first, first + count)` (held in `src`, `limbs` limbs of `n` words each)
/// of an `inner x cols` operand of row-major polynomials into the laid-out order,
/// `dst[(((l * n / lanes + jb) * cols + c) * inner + i) * lanes + q] =
/// poly(i * cols + c)[l * n + jb * lanes + q]`: a task's tile of a limb is then one contiguous
/// run (read at the speed of a stream, where the row-major slices of a tile lie megabytes
/// apart), and within it each block of `lanes` coefficients holds every column's inner sum in
/// order. This fills those polynomials' words of part `part` of `dst`, the `(limb, block)` pair
/// `(part / (n / lanes), part % (n / lanes))` (`cols * inner * lanes` words); the whole operand
/// is `first = 0`, `count = inner * cols`.
pub(crate) fn lay_out_part(
    src: &[u32],
    (first, count): (usize, usize),
    (inner, cols, limbs, n): (usize, usize, usize, usize),
    lanes: usize,
    part: usize,
    dst: &mut [u32],
) {
    let (l, jb) = (part / (n / lanes), part % (n / lanes));
    let poly = limbs * n;
    for k in 0..count {
        let (i, c) = ((first + k) / cols, (first + k) % cols);
        let from = &src[k * poly + l * n + jb * lanes..][..lanes];
        dst[(c * inner + i) * lanes..][..lanes].copy_from_slice(from);
    }
}

/// The blocks of rows the kernel takes, `(first row, rows)`: as many of `I::ROW_BLOCK` as fit,
/// then of 4, then of 2 (a one-token request's `c0` and `c1`: each operand word loaded once for
/// both: 1.27x against two single rows in one pair of runs on AVX-512), then single rows.
fn row_blocks<I: Lanes>(rows: usize) -> Vec<(usize, usize)> {
    let mut blocks = Vec::new();
    let mut r0 = 0;
    while r0 < rows {
        let rb = match rows - r0 {
            n if n >= I::ROW_BLOCK => I::ROW_BLOCK,
            4.. => 4,
            2.. => 2,
            _ => 1,
        };
        blocks.push((r0, rb));
        r0 += rb;
    }
    blocks
}

impl<I: Lanes> pulp::NullaryFnOnce for Bucket<'_, I> {
    type Output = ();

    #[inline(always)]
    fn call(self) {
        let Self { simd, m, rows, inner, cols, tile, xs, ys, mut outs, accumulate } = self;
        let k = Consts::new(simd, m);
        let lanes = I::LANES;
        let blocks = row_blocks::<I>(rows);
        // The rows packed per register block: block `jb` of coefficients, then a block of
        // rows `(r0, rb)`, then the inner index, then the block's rows, `LANES` words each; so
        // one block's whole inner sum reads one contiguous run (no bounds check, no stride).
        let mut x = vec![0u32; rows * inner * tile];
        for &(r0, rb) in &blocks {
            for i in 0..inner {
                for r in 0..rb {
                    let src = xs[(r0 + r) * inner + i];
                    for (jb, piece) in src.chunks_exact(lanes).enumerate() {
                        let at = ((jb * rows + r0) * inner + i * rb + r) * lanes;
                        x[at..at + lanes].copy_from_slice(piece);
                    }
                }
            }
        }
        let jbs = tile / lanes;
        let ys = match ys {
            Ys::Slices(ys) => ys,
            Ys::LaidOut(y) => {
                // Block by block; within a block every column: the rows' packed block (`rows *
                // inner * LANES` words) stays in L1 or L2 for all columns, and the operand
                // streams past once.
                let per_col = inner * lanes;
                for jb in 0..jbs {
                    for c in 0..cols {
                        let at = (jb * cols + c) * per_col;
                        let yb = &y[at..][..per_col];
                        // The hardware prefetcher alone left a one-token product (two products
                        // per word) waiting on this stream. The first row block asks for the
                        // column `PREFETCH_AHEAD` ahead as it goes, a line per operand register:
                        // asked all at once before the block, the requests filled the miss
                        // queue and stalled the core (a fifth of the kernel's samples).
                        let ahead = y.get(at + PREFETCH_AHEAD * per_col..).unwrap_or(&[]);
                        let ahead = &ahead[..per_col.min(ahead.len())];
                        for (b, &(r0, rb)) in blocks.iter().enumerate() {
                            let xb = &x[(jb * rows + r0) * inner * lanes..][..inner * rb * lanes];
                            let ahead = if b == 0 { ahead } else { &[] };
                            let job = Job { k, x: xb, y: yb, ahead, j: jb * lanes, accumulate };
                            let row = |r: usize| (r0 + r) * cols + c;
                            run_block::<I>(rb, job, &mut outs, row);
                        }
                    }
                }
                return;
            }
        };
        // One column at a time, packed as block `jb`, inner index, `LANES` words.
        let mut y = vec![0u32; inner * tile];
        let pack = |y: &mut [u32], c: usize| {
            for i in 0..inner {
                for (jb, piece) in ys[i * cols + c].chunks_exact(lanes).enumerate() {
                    let at = (jb * inner + i) * lanes;
                    y[at..at + lanes].copy_from_slice(piece);
                }
            }
        };
        for c in 0..cols {
            pack(&mut y, c);
            for jb in 0..jbs {
                // The next column's slices are fetched while this one computes: the table is
                // read from memory at strides no hardware prefetcher follows.
                if c + 1 < cols {
                    for i in (jb * inner / jbs)..((jb + 1) * inner / jbs) {
                        ys[i * cols + c + 1].chunks(16).for_each(|line| simd.prefetch(line));
                    }
                }
                let yb = &y[jb * inner * lanes..][..inner * lanes];
                for &(r0, rb) in &blocks {
                    let xb = &x[(jb * rows + r0) * inner * lanes..][..inner * rb * lanes];
                    let job = Job { k, x: xb, y: yb, ahead: &[], j: jb * lanes, accumulate };
                    let row = |r: usize| (r0 + r) * cols + c;
                    run_block::<I>(rb, job, &mut outs, row);
                }
            }
        }
    }
}

/// One register block of `rb` rows (a size [`row_blocks`] gives).
#[inline(always)]
fn run_block<I: Lanes>(rb: usize, job: Job<'_, I>, outs: &mut [&mut [u32]], row: impl Fn(usize) -> usize) {
    // `I::ROW_BLOCK` is a constant: the compiler keeps one of the first two arms.
    match rb {
        8 if I::ROW_BLOCK >= 8 => block::<I, 8>(job, outs, row),
        4 => block::<I, 4>(job, outs, row),
        2 => block::<I, 2>(job, outs, row),
        _ => block::<I, 1>(job, outs, row),
    }
}

/// The modulus and its constants as vectors.
#[derive(Clone, Copy)]
struct Consts<I: Lanes> {
    simd: I,
    /// `floor(2^63 / p) p`: the accumulators stay below it.
    big: I::V,
    p: I::V,
    two_p: I::V,
    /// `2^32 mod p` and its Shoup constant, and 1 and its Shoup constant.
    r32: I::V,
    r32_shoup: I::V,
    one: I::V,
    one_shoup: I::V,
    low32: I::V,
}

impl<I: Lanes> Consts<I> {
    #[inline(always)]
    fn new(simd: I, m: Modulus) -> Self {
        let p = u64::from(m.value());
        let r32 = ((1u64 << 32) % p) as u32;
        let set = |v: u64| simd.splat(v);
        Self {
            simd,
            big: set(crate::lazy_bound(m)),
            p: set(p),
            two_p: set(2 * p),
            r32: set(u64::from(r32)),
            r32_shoup: set(u64::from(m.shoup(r32))),
            one: set(1),
            one_shoup: set(u64::from(m.shoup(1))),
            low32: set(u64::from(u32::MAX)),
        }
    }
}

/// One register block: the packed rows `x` of a row block (`inner x RB x LANES` words) times
/// the packed column `y` (`inner x LANES`), into coefficients `j .. j + LANES` of the outputs.
#[derive(Clone, Copy)]
struct Job<'s, I: Lanes> {
    k: Consts<I>,
    x: &'s [u32],
    y: &'s [u32],
    /// Operand words to ask into L2 while `y` is read, a line per register of `y` as far as it
    /// reaches (none: empty).
    ahead: &'s [u32],
    j: usize,
    accumulate: bool,
}

/// Rows `0 .. RB` of the block into `outs[out(r)]`.
#[inline(always)]
fn block<I: Lanes, const RB: usize>(job: Job<'_, I>, outs: &mut [&mut [u32]], out: impl Fn(usize) -> usize) {
    let Job { k, x, y, ahead, j, accumulate } = job;
    let s = k.simd;
    let mut even = [s.zero(); RB];
    let mut odd = [s.zero(); RB];
    if accumulate {
        for r in 0..RB {
            let v = s.load(outs[out(r)], j);
            even[r] = s.and(v, k.low32);
            odd[r] = s.shr32(v);
        }
    }
    let (l, step) = (I::LANES, RB * I::LANES);
    let (y_pairs, x_pairs) = (y.chunks_exact(2 * l), x.chunks_exact(2 * step));
    let (y_rest, x_rest) = (y_pairs.remainder(), x_pairs.remainder());
    let pairs = y_pairs.len();
    if I::PAIRED {
        // Two products per conditional subtraction: `s + u v + u' v' < 2^63 + 2^63`.
        for (q, (yi, xi)) in y_pairs.zip(x_pairs).enumerate() {
            if let Some(a) = ahead.get(2 * q * l..) {
                s.prefetch_l2(a);
                if let Some(a) = a.get(l..) {
                    s.prefetch_l2(a);
                }
            }
            let (y0, y1) = (s.load(yi, 0), s.load(yi, l));
            let (y0_odd, y1_odd) = (s.shr32(y0), s.shr32(y1));
            for r in 0..RB {
                let (x0, x1) = (s.load(xi, r * l), s.load(xi, step + r * l));
                let e = s.add(s.add(even[r], s.mul(x0, y0)), s.mul(x1, y1));
                even[r] = s.csub(e, k.big);
                let o = s.add(s.add(odd[r], s.mul(s.shr32(x0), y0_odd)), s.mul(s.shr32(x1), y1_odd));
                odd[r] = s.csub(o, k.big);
            }
        }
    }
    // The registers of `y` before the rest: `ahead`'s lines are numbered by them.
    let (y, x, first) = if I::PAIRED { (y_rest, x_rest, 2 * pairs) } else { (y, x, 0) };
    for (i, (yi, xi)) in y.chunks_exact(l).zip(x.chunks_exact(step)).enumerate() {
        if let Some(a) = ahead.get((first + i) * l..) {
            s.prefetch_l2(a);
        }
        let yv = s.load(yi, 0);
        let y_odd = s.shr32(yv);
        for r in 0..RB {
            let xv = s.load(xi, r * l);
            even[r] = s.csub(s.add(even[r], s.mul(xv, yv)), k.big);
            odd[r] = s.csub(s.add(odd[r], s.mul(s.shr32(xv), y_odd)), k.big);
        }
    }
    for r in 0..RB {
        // Both below p < 2^31 after `reduce`: one lane holds the even and the odd coefficient.
        let v = s.or(reduce(k, even[r]), s.shl32(reduce(k, odd[r])));
        s.store(v, outs[out(r)], j);
    }
}

/// The products of a key switch or external product, one output row of each half:
/// `out[k] (+)= sum_e digits[e] * keys[k][e * stride ..]` for `k = 0, 1`, where `digits` holds
/// the row's transformed digit rows (`rows x n` words) and `keys[k][e * stride ..]` is key `k`'s
/// row for digit `e` in this limb. The sums of a tile of [`DIGIT_TILE`] coefficients stay in L1
/// over every digit and each is reduced once (the portable path keeps whole `u64` rows in memory
/// and reads and writes them once per digit and key).
pub(crate) struct DigitMac<'a, I> {
    pub simd: I,
    pub m: Modulus,
    pub digits: crate::DigitRows<'a>,
    pub keys: [&'a [u32]; 2],
    pub stride: usize,
    pub out: [&'a mut [u32]; 2],
    pub accumulate: bool,
}

/// Coefficients per tile of [`DigitMac`]: its sums (two `u64` per coefficient, 8 KB) stay in
/// L1 while every digit's slices of the tile stream past.
const DIGIT_TILE: usize = 512;

impl<I: Lanes> pulp::NullaryFnOnce for DigitMac<'_, I> {
    type Output = ();

    #[inline(always)]
    fn call(self) {
        let Self { simd: s, m, digits, keys, stride, out: [o0, o1], accumulate } = self;
        let k = Consts::new(s, m);
        let l = I::LANES;
        let (n, rows) = (o0.len(), digits.count());
        let outs = [o0, o1];
        // Per register block of the tile: even and odd sums of both halves. Digit by digit
        // (two at a time on AVX2) over the tile, so only a few rows stream at once: the rows
        // sit at power-of-two strides and all fall in the same cache sets.
        let blocks = DIGIT_TILE / l;
        let mut acc = vec![s.zero(); 4 * blocks];
        for t in (0..n).step_by(DIGIT_TILE) {
            let len = DIGIT_TILE.min(n - t);
            for (jb, a) in acc.chunks_exact_mut(4).take(len / l).enumerate() {
                let j = t + jb * l;
                for h in 0..2 {
                    let v = if accumulate { s.load(outs[h], j) } else { s.zero() };
                    a[2 * h] = s.and(v, k.low32);
                    a[2 * h + 1] = s.shr32(v);
                }
            }
            let mut e = 0;
            while I::DIGITS_PAIRED && e + 1 < rows {
                let (x0, x1) = (&digits.row(e)[t..][..len], &digits.row(e + 1)[t..][..len]);
                let y = [0, 1]
                    .map(|h| (&keys[h][e * stride + t..][..len], &keys[h][(e + 1) * stride + t..][..len]));
                for (jb, a) in acc.chunks_exact_mut(4).take(len / l).enumerate() {
                    let j = jb * l;
                    let (u0, u1) = (s.load(x0, j), s.load(x1, j));
                    let (u0_odd, u1_odd) = (s.shr32(u0), s.shr32(u1));
                    for (h, &(y0, y1)) in y.iter().enumerate() {
                        let (v0, v1) = (s.load(y0, j), s.load(y1, j));
                        let sum = s.add(s.add(a[2 * h], s.mul(u0, v0)), s.mul(u1, v1));
                        a[2 * h] = s.csub(sum, k.big);
                        let sum = s
                            .add(s.add(a[2 * h + 1], s.mul(u0_odd, s.shr32(v0))), s.mul(u1_odd, s.shr32(v1)));
                        a[2 * h + 1] = s.csub(sum, k.big);
                    }
                }
                e += 2;
            }
            for e in e..rows {
                let x = &digits.row(e)[t..][..len];
                let y = [0, 1].map(|h| &keys[h][e * stride + t..][..len]);
                for (jb, a) in acc.chunks_exact_mut(4).take(len / l).enumerate() {
                    let j = jb * l;
                    let u = s.load(x, j);
                    let u_odd = s.shr32(u);
                    for (h, yh) in y.iter().enumerate() {
                        let v = s.load(yh, j);
                        a[2 * h] = s.csub(s.add(a[2 * h], s.mul(u, v)), k.big);
                        a[2 * h + 1] = s.csub(s.add(a[2 * h + 1], s.mul(u_odd, s.shr32(v))), k.big);
                    }
                }
            }
            for (jb, a) in acc.chunks_exact(4).take(len / l).enumerate() {
                for h in 0..2 {
                    let v = s.or(reduce(k, a[2 * h]), s.shl32(reduce(k, a[2 * h + 1])));
                    s.store(v, outs[h], t + jb * l);
                }
            }
        }
    }
}

/// `out[j] = acc[j] mod p` for accumulators below `2^63` (`acc.len()` a multiple of
/// `I::LANES / 2`).
pub(crate) struct ReduceRow<'a, I> {
    pub simd: I,
    pub m: Modulus,
    pub acc: &'a [u64],
    pub out: &'a mut [u32],
}

impl<I: Lanes> pulp::NullaryFnOnce for ReduceRow<'_, I> {
    type Output = ();

    #[inline(always)]
    fn call(self) {
        let Self { simd, m, acc, out } = self;
        let k = Consts::new(simd, m);
        let step = I::LANES / 2;
        let mut r = [0u64; 8];
        for (at, o) in (0..acc.len()).step_by(step).zip(out.chunks_exact_mut(step)) {
            simd.store_u64(reduce(k, simd.load_u64(acc, at)), &mut r, 0);
            // Below p < 2^31 after `reduce`.
            o.iter_mut().zip(r).for_each(|(x, y)| *x = y as u32);
        }
    }
}

/// `s mod p` for `s < 2^63`: with `s = h 2^32 + l`, `h (2^32 mod p)` and `l` each by one Shoup
/// product to `[0, 2p)`, then two conditional subtractions.
#[inline(always)]
fn reduce<I: Lanes>(k: Consts<I>, s: I::V) -> I::V {
    let f = k.simd;
    let h = f.shr32(s);
    let l = f.and(s, k.low32);
    let shoup = |a: I::V, w: I::V, w_shoup: I::V| {
        let q = f.shr32(f.mul(a, w_shoup));
        f.sub(f.mul(a, w), f.mul(q, k.p))
    };
    let t = f.add(shoup(h, k.r32, k.r32_shoup), shoup(l, k.one, k.one_shoup));
    f.csub(f.csub(t, k.two_p), k.p)
}

#[cfg(test)]
mod tests {
    use fastquery_math::primes::ntt_primes;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    use super::*;

    /// Scalar lanes in the shapes of the vector kernels (`H` 64-bit lanes, blocks of `RB`
    /// rows, pairs or not), so that every path of the generic kernel runs on any machine:
    /// `Emu<8, 8, true>` is AVX-512's table product and `Emu<8, 8, false>` its key-switching
    /// product, `Emu<4, 4, true>` AVX2's. Its conditional subtraction
    /// is AVX2's sign-bit select, and it asserts the select's precondition on every call.
    #[derive(Clone, Copy)]
    struct Emu<const H: usize, const RB: usize, const PAIRED: bool>;

    impl<const H: usize, const RB: usize, const PAIRED: bool> Lanes for Emu<H, RB, PAIRED> {
        type V = [u64; H];
        const LANES: usize = 2 * H;
        const ROW_BLOCK: usize = RB;
        const PAIRED: bool = PAIRED;
        const DIGITS_PAIRED: bool = PAIRED;

        fn run<F: pulp::NullaryFnOnce>(self, f: F) -> F::Output {
            f.call()
        }
        fn load(self, s: &[u32], at: usize) -> [u64; H] {
            std::array::from_fn(|q| u64::from(s[at + 2 * q]) | (u64::from(s[at + 2 * q + 1]) << 32))
        }
        fn store(self, v: [u64; H], s: &mut [u32], at: usize) {
            for (q, w) in v.into_iter().enumerate() {
                s[at + 2 * q] = w as u32;
                s[at + 2 * q + 1] = (w >> 32) as u32;
            }
        }
        fn load_u64(self, s: &[u64], at: usize) -> [u64; H] {
            std::array::from_fn(|q| s[at + q])
        }
        fn store_u64(self, v: [u64; H], s: &mut [u64], at: usize) {
            s[at..at + H].copy_from_slice(&v);
        }
        fn splat(self, v: u64) -> [u64; H] {
            [v; H]
        }
        fn zero(self) -> [u64; H] {
            [0; H]
        }
        fn and(self, a: [u64; H], b: [u64; H]) -> [u64; H] {
            std::array::from_fn(|q| a[q] & b[q])
        }
        fn or(self, a: [u64; H], b: [u64; H]) -> [u64; H] {
            std::array::from_fn(|q| a[q] | b[q])
        }
        fn shr32(self, a: [u64; H]) -> [u64; H] {
            a.map(|w| w >> 32)
        }
        fn shl32(self, a: [u64; H]) -> [u64; H] {
            a.map(|w| w << 32)
        }
        fn add(self, a: [u64; H], b: [u64; H]) -> [u64; H] {
            std::array::from_fn(|q| a[q].checked_add(b[q]).expect("a sum overflowed 64 bits"))
        }
        fn sub(self, a: [u64; H], b: [u64; H]) -> [u64; H] {
            std::array::from_fn(|q| a[q].wrapping_sub(b[q]))
        }
        fn mul(self, a: [u64; H], b: [u64; H]) -> [u64; H] {
            std::array::from_fn(|q| (a[q] & 0xffff_ffff) * (b[q] & 0xffff_ffff))
        }
        fn csub(self, s: [u64; H], m: [u64; H]) -> [u64; H] {
            std::array::from_fn(|q| {
                let (s, m) = (s[q], m[q]);
                assert!(m <= 1 << 63 && u128::from(s) < u128::from(m) + (1 << 63), "select out of range");
                let d = s.wrapping_sub(m);
                if (d as i64) < 0 { s } else { d }
            })
        }
        fn prefetch(self, _: &[u32]) {}
        fn prefetch_l2(self, _: &[u32]) {}
    }

    /// `Bucket<I>` against `u128` sums on random words (and on every word `p - 1`), over row
    /// counts that take every block size, inner lengths odd and even, both `accumulate`s, the
    /// right operand as slices and laid out.
    fn bucket_matches_scalar<I: Lanes>(simd: I) {
        let p = ntt_primes(31, 64, 1).expect("a 31-bit prime")[0];
        let m = Modulus::new(u64::from(p)).expect("a prime");
        let mut rng = StdRng::seed_from_u64(21);
        for (rows, inner, cols, tile, top) in [
            (1, 1, 1, I::LANES, false),
            (13, 7, 3, 2 * I::LANES, false),
            (8, 2, 2, I::LANES, false),
            (4, 9, 5, 4 * I::LANES, false),
            (17, 40, 2, 2 * I::LANES, false),
            (9, 301, 2, I::LANES, true),
            (2, 11, 4, 2 * I::LANES, false),
            (7, 6, 3, I::LANES, false),
            (14, 5, 2, I::LANES, false),
            (2, 301, 2, I::LANES, true),
            (3, 300, 1, I::LANES, true),
        ] {
            let mut word = |_| if top { p - 1 } else { rng.random_range(0..p) };
            let x: Vec<Vec<u32>> = (0..rows * inner).map(|_| (0..tile).map(&mut word).collect()).collect();
            let y: Vec<Vec<u32>> = (0..inner * cols).map(|_| (0..tile).map(&mut word).collect()).collect();
            let start: Vec<Vec<u32>> = (0..rows * cols).map(|_| (0..tile).map(&mut word).collect()).collect();
            // The same operand in the laid-out order, as one task of one limb sees it.
            let lanes = I::LANES;
            let (flat, mut laid) = (y.concat(), vec![0u32; inner * cols * tile]);
            for (part, d) in laid.chunks_exact_mut(cols * inner * lanes).enumerate() {
                lay_out_part(&flat, (0, inner * cols), (inner, cols, 1, tile), lanes, part, d);
            }
            for (accumulate, laid_out) in [(false, false), (true, false), (false, true), (true, true)] {
                let mut out = start.clone();
                let ys = if laid_out {
                    Ys::LaidOut(&laid)
                } else {
                    Ys::Slices(y.iter().map(Vec::as_slice).collect())
                };
                let bucket = Bucket {
                    simd,
                    m,
                    rows,
                    inner,
                    cols,
                    tile,
                    xs: x.iter().map(Vec::as_slice).collect(),
                    ys,
                    outs: out.iter_mut().map(Vec::as_mut_slice).collect(),
                    accumulate,
                };
                simd.run(bucket);
                for r in 0..rows {
                    for c in 0..cols {
                        for j in 0..tile {
                            let mut want = if accumulate { u128::from(start[r * cols + c][j]) } else { 0 };
                            for i in 0..inner {
                                want += u128::from(x[r * inner + i][j]) * u128::from(y[i * cols + c][j]);
                            }
                            let want = (want % u128::from(p)) as u32;
                            assert_eq!(
                                out[r * cols + c][j],
                                want,
                                "rows {rows} inner {inner} cols {cols} tile {tile} accumulate {accumulate} laid out {laid_out}: ({r}, {c}, {j})"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn the_avx512_shapes_match_scalar() {
        bucket_matches_scalar(Emu::<8, 8, true>);
        bucket_matches_scalar(Emu::<8, 8, false>);
    }

    #[test]
    fn the_avx2_shapes_match_scalar() {
        bucket_matches_scalar(Emu::<4, 4, true>);
    }

    #[test]
    fn the_machine_kernels_match_scalar() {
        if let Some(simd) = V4::try_new() {
            bucket_matches_scalar(simd);
        }
        if let Some(simd) = V3::try_new() {
            bucket_matches_scalar(simd);
        }
    }

    /// `DigitMac<I>` against `u128` sums: digit counts odd and even (the pairs and the single
    /// tail), rows shorter than a tile and with a partial last tile, keys at a stride wider than
    /// a row, both `accumulate`s, random words and every word `p - 1`, and with one row read
    /// from outside the scratch (first, middle, last) while its slot there holds other words.
    fn digit_mac_matches_scalar<I: Lanes>(simd: I) {
        let p = ntt_primes(31, 64, 1).expect("a 31-bit prime")[0];
        let m = Modulus::new(u64::from(p)).expect("a prime");
        let mut rng = StdRng::seed_from_u64(23);
        for (rows, n, top) in [
            (1, 2 * I::LANES, false),
            (5, DIGIT_TILE + 4 * I::LANES, false),
            (6, 3 * I::LANES, false),
            (12, DIGIT_TILE * 2, true),
        ] {
            let stride = n + 3 * I::LANES;
            let mut word = |_| if top { p - 1 } else { rng.random_range(0..p) };
            let digits: Vec<u32> = (0..rows * n).map(&mut word).collect();
            let keys: [Vec<u32>; 2] = std::array::from_fn(|_| (0..rows * stride).map(&mut word).collect());
            let start: [Vec<u32>; 2] = std::array::from_fn(|_| (0..n).map(&mut word).collect());
            for (accumulate, own) in [false, true].into_iter().flat_map(|a| {
                [None, Some(0), Some(rows / 2), Some(rows - 1)].into_iter().map(move |o| (a, o))
            }) {
                // With an own row, the scratch's slot holds other words; the sums must use the
                // own row (which holds the words the scratch would have).
                let mut scratch = digits.clone();
                if let Some(e) = own {
                    scratch[e * n..][..n].iter_mut().for_each(|w| *w = (*w + 1) % p);
                }
                let rows_view =
                    crate::DigitRows { rows: &scratch, n, own: own.map(|e| (e, &digits[e * n..][..n])) };
                let mut out = start.clone();
                let [o0, o1] = &mut out;
                let job = DigitMac {
                    simd,
                    m,
                    digits: rows_view,
                    keys: [&keys[0], &keys[1]],
                    stride,
                    out: [o0, o1],
                    accumulate,
                };
                simd.run(job);
                for h in 0..2 {
                    for j in 0..n {
                        let mut want = if accumulate { u128::from(start[h][j]) } else { 0 };
                        for e in 0..rows {
                            want += u128::from(digits[e * n + j]) * u128::from(keys[h][e * stride + j]);
                        }
                        let want = (want % u128::from(p)) as u32;
                        assert_eq!(
                            out[h][j], want,
                            "rows {rows} n {n} accumulate {accumulate} own {own:?}: half {h}, {j}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn digit_mac_matches_scalar_in_every_shape() {
        digit_mac_matches_scalar(Emu::<8, 8, false>);
        digit_mac_matches_scalar(Emu::<4, 4, true>);
        if let Some(simd) = V4::try_new() {
            digit_mac_matches_scalar(simd);
        }
        if let Some(simd) = V3::try_new() {
            digit_mac_matches_scalar(simd);
        }
    }

    #[test]
    fn reduce_row_matches_scalar() {
        let p = ntt_primes(31, 64, 1).expect("a 31-bit prime")[0];
        let m = Modulus::new(u64::from(p)).expect("a prime");
        let mut rng = StdRng::seed_from_u64(22);
        let acc: Vec<u64> =
            (0..64).map(|k| if k < 2 { (1 << 63) - 1 - k } else { rng.random_range(0..1 << 63) }).collect();
        let want: Vec<u32> = acc.iter().map(|&s| (s % u64::from(p)) as u32).collect();
        let mut out = vec![0u32; 64];
        Emu::<8, 8, false>.run(ReduceRow { simd: Emu::<8, 8, false>, m, acc: &acc, out: &mut out });
        assert_eq!(out, want);
        Emu::<4, 4, true>.run(ReduceRow { simd: Emu::<4, 4, true>, m, acc: &acc, out: &mut out });
        assert_eq!(out, want);
    }
}
