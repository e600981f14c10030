// One level of oblivious expansion (Backend::expand_step) in three kernels around the fused key
// switch, instead of the composed default's dozen launches, copies and temporaries:
//   gather_signed_u32   t1 = tau(c1) for the chunk (the key switch's input; kernels/permute.cu);
//   decompose_mac_u32   (b, a) = key products of t1, then two inverse NTTs (host side);
//   expand_combine_u32  t = (tau(c0) + b, a), written straight into both children:
//                       even c + t at row `at + i`, odd X^shift (c - t) at row `at + odd + i`.
// Same words as the composed steps (each a kernel already bit-exact against the CPU).
// Rows are (polynomial, limb) rows of N words; `at_row` = at x limbs, `odd_row` = (at + odd) x limbs.

// One thread per word (row, k) of the chunk: reads c0, c1, tau(c0) at k, and the switched
// (b, a); writes the even children at k and the odd ones at (k + shift) mod 2N (negated past N).
extern "C" __global__ void expand_combine_u32(u32* dst0, u32* dst1, const u32* src0, const u32* src1, const u32* ks0,
                                              const u32* ks1, const u32* idx, const u32* moduli, u32 log_n,
                                              u32 limbs, u64 at_row, u64 odd_row, u32 shift, u64 total) {
    const u32 n = 1u << log_n;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (u64)gridDim.x * blockDim.x) {
        const u64 row = i >> log_n;
        const u32 k = (u32)(i & (n - 1));
        const u32 p = moduli[row % limbs];
        const u64 base = (at_row + row) << log_n;
        const u32 t0 = add_mod(gather_word(src0 + base, idx[k], p), ks0[i], p);
        const u32 t1 = ks1[i];
        const u32 c0 = src0[base + k], c1 = src1[base + k];
        dst0[base + k] = add_mod(c0, t0, p);
        dst1[base + k] = add_mod(c1, t1, p);
        const u32 d0 = sub_mod(c0, t0, p), d1 = sub_mod(c1, t1, p);
        const u32 e = (k + shift) % (2 * n);
        const u64 obase = (odd_row + row) << log_n;
        if (e < n) {
            dst0[obase + e] = d0;
            dst1[obase + e] = d1;
        } else {
            dst0[obase + e - n] = neg_mod(d0, p);
            dst1[obase + e - n] = neg_mod(d1, p);
        }
    }
}
