//! Automorphisms of NTT evaluations as block moves with in-register shuffles.
//!
//! In this engine's NTT order (bit-reversed evaluations at the odd powers of a `2N`-th root),
//! an automorphism `X -> X^g` maps every aligned block of 16 evaluations onto one aligned block
//! of 16: each output block is one source block with its lanes shuffled. Why, for every odd
//! `g` and `N >= 16`: position `k` holds the evaluation at `psi^(2 rev(k) + 1)`, `rev` the
//! bit reversal over `log2 N` bits, so the 16 positions of block `b` (the same high bits of
//! `k`, any low four) have exponents `e` that agree modulo `2^(log2 N - 3)` (the low
//! `log2 N - 4` bits of `rev(k)`, doubled, plus one). The automorphism's output at `k` is the
//! input's evaluation at `psi^(e g)`, and `e g mod 2^(log2 N - 3)` depends only on `e` modulo
//! the same power of two: the 16 sources share the low bits of their `rev`, that is the high
//! bits of their position, one block. (The tests check every odd `g` up to N = 8192, the
//! expansion's exponents and random ones at 2^14, and [`BlockGather::of`] checks the gather it
//! is given.) So the gather, 16 scalar index loads per block, becomes one load, one `vpermd`
//! and one store on AVX-512. A gather without that shape (coefficient form, with its signs)
//! keeps the scalar path.

use fastquery_backend::host::NEGATE;
#[cfg(target_arch = "x86_64")]
use pulp::x86::V4;

/// Words per block: one AVX-512 register of 32-bit lanes.
const BLOCK: usize = 16;

/// A gather `dst[k] = src[idx[k]]` as blocks: output block `b` is source block `src[b]`
/// with lane `q` taken from lane `lanes[b][q]`.
#[derive(Debug, PartialEq, Eq)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) struct BlockGather {
    src: Vec<u32>,
    lanes: Vec<[u32; BLOCK]>,
}

// Made and used only where AVX-512 can run the moves (`CpuBackend::block_gather`).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
impl BlockGather {
    /// The block form of `idx`, where it has one (no sign, every block from one block).
    pub(crate) fn of(idx: &[u32]) -> Option<Self> {
        if idx.is_empty() || !idx.len().is_multiple_of(BLOCK) {
            return None;
        }
        let (mut src, mut lanes) =
            (Vec::with_capacity(idx.len() / BLOCK), Vec::with_capacity(idx.len() / BLOCK));
        for block in idx.chunks_exact(BLOCK) {
            let from = block[0] / BLOCK as u32;
            if block.iter().any(|&k| k & NEGATE != 0 || k / BLOCK as u32 != from) {
                return None;
            }
            src.push(from);
            lanes.push(std::array::from_fn(|q| block[q] % BLOCK as u32));
        }
        Some(Self { src, lanes })
    }

    /// Words the gather covers.
    pub(crate) fn len(&self) -> usize {
        self.src.len() * BLOCK
    }
}

/// `dst[k] = src[idx[k]]` (`add`: `dst[k] = dst[k] + src[idx[k]] mod p`, both reduced below
/// `p < 2^31`) for the gather `plan`, on AVX-512.
#[cfg(target_arch = "x86_64")]
pub(crate) struct GatherBlocks<'a> {
    pub simd: V4,
    pub plan: &'a BlockGather,
    pub src: &'a [u32],
    pub dst: &'a mut [u32],
    /// `Some(p)`: add into `dst` mod `p` instead of overwriting it.
    pub add: Option<u32>,
}

#[cfg(target_arch = "x86_64")]
impl pulp::NullaryFnOnce for GatherBlocks<'_> {
    type Output = ();

    #[inline(always)]
    fn call(self) {
        let Self { simd, plan, src, dst, add } = self;
        let f = simd.avx512f;
        let p = f._mm512_set1_epi32(add.unwrap_or(0) as i32);
        for ((out, &from), lanes) in dst.chunks_exact_mut(BLOCK).zip(&plan.src).zip(&plan.lanes) {
            let block: [u32; BLOCK] =
                src[from as usize * BLOCK..][..BLOCK].try_into().expect("a whole block");
            let v = f._mm512_permutexvar_epi32(pulp::cast(*lanes), pulp::cast(block));
            let v = if add.is_some() {
                let acc: [u32; BLOCK] = (&*out).try_into().expect("a whole block");
                let s = f._mm512_add_epi32(pulp::cast(acc), v);
                f._mm512_min_epu32(s, f._mm512_sub_epi32(s, p))
            } else {
                v
            };
            let words: [u32; BLOCK] = pulp::cast(v);
            out.copy_from_slice(&words);
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use fastquery_backend::host::automorphism_index;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    use super::*;

    /// Every automorphism of the expansion and of packing, at every degree the engine runs,
    /// in the NTT order: each has the block form, and the block gather (plain and added) gives
    /// the scalar gather's words. Coefficient-form gathers (signed) have none.
    #[test]
    fn ntt_automorphisms_are_block_gathers() {
        let mut rng = StdRng::seed_from_u64(5);
        let p = 2_147_483_647u32; // 2^31 - 1: the sums reach 2^32 - 2
        for n in [1024usize, 2048, 4096, 8192, 16384] {
            let random: Vec<usize> = (0..8).map(|_| 2 * rng.random_range(0..n) + 1).collect();
            let exponents = (0..n.ilog2()).map(|j| n / (1 << j) + 1).chain([2 * n - 1, 3]).chain(random);
            for g in exponents {
                let idx = automorphism_index(n, g, true).expect("odd");
                let plan = BlockGather::of(&idx).unwrap_or_else(|| panic!("n={n} g={g}: no block form"));
                assert_eq!(plan.len(), n);
                let src: Vec<u32> = (0..n).map(|_| rng.random_range(0..p)).collect();
                let acc: Vec<u32> = (0..n).map(|_| rng.random_range(0..p)).collect();
                let want: Vec<u32> = idx.iter().map(|&k| src[k as usize]).collect();
                let want_sum: Vec<u32> = acc
                    .iter()
                    .zip(&want)
                    .map(|(&a, &w)| ((u64::from(a) + u64::from(w)) % u64::from(p)) as u32)
                    .collect();
                let Some(simd) = V4::try_new() else { continue };
                let mut dst = vec![0u32; n];
                simd.vectorize(GatherBlocks { simd, plan: &plan, src: &src, dst: &mut dst, add: None });
                assert_eq!(dst, want, "n={n} g={g}");
                let mut sum = acc.clone();
                simd.vectorize(GatherBlocks { simd, plan: &plan, src: &src, dst: &mut sum, add: Some(p) });
                assert_eq!(sum, want_sum, "n={n} g={g} added");
            }
            let signed = automorphism_index(n, n / 2 + 1, false).expect("odd");
            assert!(BlockGather::of(&signed).is_none(), "n={n}: a signed gather has no block form");
        }
        // The argument of the module's documentation, checked for every odd exponent where
        // that is cheap: each has the block form, and the plan reproduces the index.
        for n in [16usize, 64, 1024, 2048, 4096, 8192] {
            for g in (1..2 * n).step_by(2) {
                let idx = automorphism_index(n, g, true).expect("odd");
                let plan = BlockGather::of(&idx).unwrap_or_else(|| panic!("n={n} g={g}: no block form"));
                let back =
                    plan.src.iter().zip(&plan.lanes).flat_map(|(&s, l)| l.map(|q| s * BLOCK as u32 + q));
                assert!(back.eq(idx.iter().copied()), "n={n} g={g}: the plan is not the gather");
            }
        }
        // A block drawing from two blocks has none either.
        let mut idx: Vec<u32> = (0..32).collect();
        idx.swap(3, 20);
        assert!(BlockGather::of(&idx).is_none());
    }
}
