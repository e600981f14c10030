// Elementwise kernels over buffers laid out [poly][limb][coefficient]; grid-stride loops.
// The limb of word idx is (idx >> log_n) % limbs.

#define GRID_STRIDE(total) for (u64 idx = (u64)blockIdx.x * blockDim.x + threadIdx.x; idx < (total); idx += (u64)gridDim.x * blockDim.x)

extern "C" __global__ void add_u32(u32* a, const u32* b, const u32* moduli, u32 log_n, u32 limbs, u64 total) {
    GRID_STRIDE(total) { a[idx] = add_mod(a[idx], b[idx], moduli[(idx >> log_n) % limbs]); }
}

extern "C" __global__ void sub_u32(u32* a, const u32* b, const u32* moduli, u32 log_n, u32 limbs, u64 total) {
    GRID_STRIDE(total) { a[idx] = sub_mod(a[idx], b[idx], moduli[(idx >> log_n) % limbs]); }
}

// out = src[minuend..] - src[subtrahend..], two ranges of one buffer (word offsets that are
// whole polynomials, so word idx of either range is in limb (idx >> log_n) % limbs): the
// fold's B - A in one pass, without copying the halves out.
extern "C" __global__ void difference_u32(u32* out, const u32* src, u64 minuend, u64 subtrahend, const u32* moduli,
                                          u32 log_n, u32 limbs, u64 total) {
    GRID_STRIDE(total) { out[idx] = sub_mod(src[minuend + idx], src[subtrahend + idx], moduli[(idx >> log_n) % limbs]); }
}

// Whole polynomials moved (Backend::copy_polys_at): block (j, y) copies slices of polynomial
// moves[2j] of src to polynomial moves[2j + 1] of dst, `quads` 16-byte words each (a
// transposition of a batch's rows, or the gathering of every token's rows of a bit, in one
// launch). The caller checked the ranges and that no destination repeats.
extern "C" __global__ void copy_polys_u32(u32* dst, const u32* src, const u32* moves, u32 quads) {
    const uint4* s = (const uint4*)src + (u64)moves[2 * blockIdx.x] * quads;
    uint4* d = (uint4*)dst + (u64)moves[2 * blockIdx.x + 1] * quads;
    for (u32 c = blockIdx.y * blockDim.x + threadIdx.x; c < quads; c += gridDim.y * blockDim.x) d[c] = s[c];
}

extern "C" __global__ void neg_u32(u32* a, const u32* moduli, u32 log_n, u32 limbs, u64 total) {
    GRID_STRIDE(total) { a[idx] = neg_mod(a[idx], moduli[(idx >> log_n) % limbs]); }
}

extern "C" __global__ void mul_u32(u32* a, const u32* b, const u32* moduli, const u64* barrett, u32 log_n, u32 limbs, u64 total) {
    GRID_STRIDE(total) {
        const u32 l = (idx >> log_n) % limbs;
        a[idx] = mul_mod(a[idx], b[idx], moduli[l], barrett[l]);
    }
}

extern "C" __global__ void scalar_mul_u32(u32* a, const u32* scalars, const u32* scalars_shoup, const u32* moduli,
                                          u32 log_n, u32 limbs, u64 total) {
    GRID_STRIDE(total) {
        const u32 l = (idx >> log_n) % limbs;
        a[idx] = mul_shoup(a[idx], scalars[l], scalars_shoup[l], moduli[l]);
    }
}

// out = in * X^k (0 <= k < 2N), negacyclic; out and in are distinct buffers.
extern "C" __global__ void monomial_mul_u32(u32* out, const u32* in, const u32* moduli, u32 log_n, u32 limbs, u32 k, u64 total) {
    const u32 n = 1u << log_n;
    GRID_STRIDE(total) {
        const u64 row = idx >> log_n;
        const u32 j = (u32)(idx & (n - 1));
        const u32 e = (j + k) % (2 * n);  // destination exponent of coefficient j
        const u32 p = moduli[row % limbs];
        const u32 x = in[idx];
        if (e < n) out[(row << log_n) + e] = x;
        else out[(row << log_n) + e - n] = neg_mod(x, p);
    }
}
