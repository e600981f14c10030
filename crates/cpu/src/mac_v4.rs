//! The multiply-accumulate on AVX-512 (x86-64-v4), with register-resident accumulators.
//!
//! A task owns one limb and one tile of coefficients for every `(row, column)` of the product.
//! It first copies its slices of the rows (`x`) into one contiguous buffer, and then, column by
//! column, the column's slices of the plaintexts (`y`): the polynomials sit at power-of-two
//! strides, so read in place the slices of one tile all fall in the same cache sets and evict
//! each other (measured: 2.5 G products/s in place on two threads). For each block of 16
//! coefficients it keeps the sums of up to 8 rows in 16 registers for the whole inner sum, so no
//! accumulator is loaded or stored per product.
//!
//! Arithmetic: a 64-bit lane holds two coefficients; `vpmuludq` multiplies the even ones and,
//! after a 32-bit shift, the odd ones. Each product (`< 2^62`, both factors reduced) is added to
//! a `u64` kept below `P = floor(2^63 / p) p` by one conditional subtraction (`min(s, s - P)`),
//! and the sum is reduced once at the end with two Shoup products (see [`reduce`]), where the
//! portable kernel runs a Barrett pass over its accumulators every four products.

use std::arch::x86_64::__m512i;

use fastquery_math::Modulus;
use pulp::x86::V4;

/// Coefficients per register block (two coefficients per 64-bit lane).
pub(crate) const LANES: usize = 16;
/// Bytes of the rows' slices of one tile (the packed copy stays in L2).
pub(crate) const X_BYTES: usize = 1 << 19;
/// Longest tile.
pub(crate) const MAX_TILE: usize = 512;
/// Rows per register block: `8 x 2` accumulators are sixteen of the 32 AVX-512 registers.
const ROW_BLOCK: usize = 8;

/// One task: `outs[r * cols + c] (+)= sum_i xs[r * inner + i] * ys[i * cols + c]`, every slice
/// `tile` coefficients of one limb (`tile` a multiple of [`LANES`]).
pub(crate) struct Bucket<'a> {
    pub simd: V4,
    pub m: Modulus,
    pub rows: usize,
    pub inner: usize,
    pub cols: usize,
    pub tile: usize,
    pub xs: Vec<&'a [u32]>,
    pub ys: Vec<&'a [u32]>,
    pub outs: Vec<&'a mut [u32]>,
    pub accumulate: bool,
}

impl pulp::NullaryFnOnce for Bucket<'_> {
    type Output = ();

    #[inline(always)]
    fn call(self) {
        let Self { simd, m, rows, inner, cols, tile, xs, ys, mut outs, accumulate } = self;
        let k = Consts::new(simd, m);
        let mut x = Vec::with_capacity(xs.len() * tile);
        xs.iter().for_each(|s| x.extend_from_slice(s));
        let mut y = vec![0u32; inner * tile];
        for c in 0..cols {
            for (i, dst) in y.chunks_exact_mut(tile).enumerate() {
                dst.copy_from_slice(ys[i * cols + c]);
            }
            for j in (0..tile).step_by(LANES) {
                let mut r0 = 0;
                while r0 < rows {
                    let job = Job { k, x: &x, y: &y, tile, inner, r0, j, accumulate };
                    let row = |r: usize| (r0 + r) * cols + c;
                    r0 += match rows - r0 {
                        ROW_BLOCK.. => block::<ROW_BLOCK>(job, &mut outs, row),
                        4.. => block::<4>(job, &mut outs, row),
                        _ => block::<1>(job, &mut outs, row),
                    };
                }
            }
        }
    }
}

/// The modulus and its constants as vectors.
#[derive(Clone, Copy)]
struct Consts {
    simd: V4,
    /// `floor(2^63 / p) p`: the accumulators stay below it.
    big: __m512i,
    p: __m512i,
    two_p: __m512i,
    /// `2^32 mod p` and its Shoup constant, and 1 and its Shoup constant.
    r32: __m512i,
    r32_shoup: __m512i,
    one: __m512i,
    one_shoup: __m512i,
    low32: __m512i,
}

impl Consts {
    #[inline(always)]
    fn new(simd: V4, m: Modulus) -> Self {
        let f = simd.avx512f;
        let p = u64::from(m.value());
        let r32 = ((1u64 << 32) % p) as u32;
        let set = |v: u64| f._mm512_set1_epi64(v as i64);
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

/// Which block to compute: rows `r0 ..` of the packed `x` (`(r inner + i) tile + j`) times the
/// packed column `y` (`i tile + j`), coefficients `j .. j + LANES`.
#[derive(Clone, Copy)]
struct Job<'s> {
    k: Consts,
    x: &'s [u32],
    y: &'s [u32],
    tile: usize,
    inner: usize,
    r0: usize,
    j: usize,
    accumulate: bool,
}

#[inline(always)]
fn load(s: &[u32], at: usize) -> __m512i {
    // Invariant: every block lies inside its tile, so `at + LANES <= s.len()`.
    let a: [u32; LANES] = s[at..at + LANES].try_into().expect("a tile holds whole blocks");
    pulp::cast(a)
}

/// Rows `r0 .. r0 + RB` into `outs[out(r)]`; returns `RB`.
#[inline(always)]
fn block<const RB: usize>(job: Job<'_>, outs: &mut [&mut [u32]], out: impl Fn(usize) -> usize) -> usize {
    let Job { k, x, y, tile, inner, r0, j, accumulate } = job;
    let f = k.simd.avx512f;
    let zero = f._mm512_setzero_si512();
    let mut even = [zero; RB];
    let mut odd = [zero; RB];
    if accumulate {
        for r in 0..RB {
            let v = load(outs[out(r)], j);
            even[r] = f._mm512_and_si512(v, k.low32);
            odd[r] = f._mm512_srli_epi64::<32>(v);
        }
    }
    for i in 0..inner {
        let yv = load(y, i * tile + j);
        let y_odd = f._mm512_srli_epi64::<32>(yv);
        for r in 0..RB {
            let xv = load(x, ((r0 + r) * inner + i) * tile + j);
            let se = f._mm512_add_epi64(even[r], f._mm512_mul_epu32(xv, yv));
            even[r] = f._mm512_min_epu64(se, f._mm512_sub_epi64(se, k.big));
            let so = f._mm512_add_epi64(odd[r], f._mm512_mul_epu32(f._mm512_srli_epi64::<32>(xv), y_odd));
            odd[r] = f._mm512_min_epu64(so, f._mm512_sub_epi64(so, k.big));
        }
    }
    for r in 0..RB {
        let e: [u64; 8] = pulp::cast(reduce(k, even[r]));
        let o: [u64; 8] = pulp::cast(reduce(k, odd[r]));
        let dst = &mut outs[out(r)][j..j + LANES];
        for q in 0..8 {
            // Both below p < 2^31 after `reduce`.
            dst[2 * q] = e[q] as u32;
            dst[2 * q + 1] = o[q] as u32;
        }
    }
    RB
}

/// `out[j] = acc[j] mod p` for accumulators below `2^63` (`acc.len()` a multiple of 8).
pub(crate) struct ReduceRow<'a> {
    pub simd: V4,
    pub m: Modulus,
    pub acc: &'a [u64],
    pub out: &'a mut [u32],
}

impl pulp::NullaryFnOnce for ReduceRow<'_> {
    type Output = ();

    #[inline(always)]
    fn call(self) {
        let k = Consts::new(self.simd, self.m);
        for (a, o) in self.acc.chunks_exact(8).zip(self.out.chunks_exact_mut(8)) {
            let v: [u64; 8] = a.try_into().expect("chunks of 8");
            let r: [u64; 8] = pulp::cast(reduce(k, pulp::cast(v)));
            // Below p < 2^31 after `reduce`.
            o.iter_mut().zip(r).for_each(|(x, y)| *x = y as u32);
        }
    }
}

/// `s mod p` for `s < 2^63`: with `s = h 2^32 + l`, `h (2^32 mod p)` and `l` each by one Shoup
/// product to `[0, 2p)`, then two conditional subtractions.
#[inline(always)]
fn reduce(k: Consts, s: __m512i) -> __m512i {
    let f = k.simd.avx512f;
    let h = f._mm512_srli_epi64::<32>(s);
    let l = f._mm512_and_si512(s, k.low32);
    let shoup = |a: __m512i, w: __m512i, w_shoup: __m512i| {
        let q = f._mm512_srli_epi64::<32>(f._mm512_mul_epu32(a, w_shoup));
        f._mm512_sub_epi64(f._mm512_mul_epu32(a, w), f._mm512_mul_epu32(q, k.p))
    };
    let t = f._mm512_add_epi64(shoup(h, k.r32, k.r32_shoup), shoup(l, k.one, k.one_shoup));
    let t = f._mm512_min_epu64(t, f._mm512_sub_epi64(t, k.two_p));
    f._mm512_min_epu64(t, f._mm512_sub_epi64(t, k.p))
}
