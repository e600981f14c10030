// The canonical negacyclic NTT (fastquery-ntt): one thread block per (polynomial, limb) row,
// the row held in shared memory through all log2(N) stages. The butterflies and their order are
// those of fastquery_ntt::reference, with the same twiddle tables (psi^k at bit-reversed k, and
// their Shoup companions), so the output words are the CPU backend's.
//
// Launch: grid = rows, block = min(N/2, 1024) threads, dynamic shared memory = N * 4 bytes.

// The forward transform of the row in shared memory `s` (written and synchronised by the
// caller), all log2(N) stages, the block's threads striding over the butterflies; ends
// synchronised. Also the transform inside the fused key switch (kernels/keyswitch.cu).
__device__ __forceinline__ void ntt_forward_shared(u32* s, const u32* w, const u32* ws, u32 p, u32 n, u32 log_n) {
    u32 log_half = log_n - 1;
    for (u32 groups = 1; groups < n; groups <<= 1, --log_half) {
        const u32 half = 1u << log_half;
        for (u32 k = threadIdx.x; k < (n >> 1); k += blockDim.x) {
            const u32 g = k >> log_half;
            const u32 x = (g << (log_half + 1)) + (k & (half - 1));
            const u32 y = x + half;
            const u32 u = s[x];
            const u32 v = mul_shoup(s[y], w[groups + g], ws[groups + g], p);
            s[x] = add_mod(u, v, p);
            s[y] = sub_mod(u, v, p);
        }
        __syncthreads();
    }
}

extern "C" __global__ void ntt_forward_u32(u32* data, const u32* tw, const u32* tw_shoup,
                                           const u32* moduli, u32 n, u32 log_n, u32 limbs) {
    extern __shared__ u32 s[];
    const u32 row = blockIdx.x;
    const u32 limb = row % limbs;
    const u32 p = moduli[limb];
    const u32* w = tw + (size_t)limb * n;
    const u32* ws = tw_shoup + (size_t)limb * n;
    u32* a = data + (size_t)row * n;
    for (u32 i = threadIdx.x; i < n; i += blockDim.x) s[i] = a[i];
    __syncthreads();
    ntt_forward_shared(s, w, ws, p, n, log_n);
    for (u32 i = threadIdx.x; i < n; i += blockDim.x) a[i] = s[i];
}

extern "C" __global__ void ntt_inverse_u32(u32* data, const u32* tw, const u32* tw_shoup,
                                           const u32* moduli, const u32* n_inv, const u32* n_inv_shoup,
                                           u32 n, u32 log_n, u32 limbs) {
    extern __shared__ u32 s[];
    const u32 row = blockIdx.x;
    const u32 limb = row % limbs;
    const u32 p = moduli[limb];
    const u32* w = tw + (size_t)limb * n;
    const u32* ws = tw_shoup + (size_t)limb * n;
    u32* a = data + (size_t)row * n;
    for (u32 i = threadIdx.x; i < n; i += blockDim.x) s[i] = a[i];
    __syncthreads();
    u32 log_half = 0;
    for (u32 groups = n >> 1; groups >= 1; groups >>= 1, ++log_half) {
        const u32 half = 1u << log_half;
        for (u32 k = threadIdx.x; k < (n >> 1); k += blockDim.x) {
            const u32 g = k >> log_half;
            const u32 x = (g << (log_half + 1)) + (k & (half - 1));
            const u32 y = x + half;
            const u32 u = s[x];
            const u32 v = s[y];
            s[x] = add_mod(u, v, p);
            s[y] = mul_shoup(sub_mod(u, v, p), w[groups + g], ws[groups + g], p);
        }
        __syncthreads();
    }
    const u32 ni = n_inv[limb], nis = n_inv_shoup[limb];
    for (u32 i = threadIdx.x; i < n; i += blockDim.x) a[i] = mul_shoup(s[i], ni, nis, p);
}

// ---- Register-blocked variants (1024 <= N <= 4096, E = 16): each of T = N/E threads holds E
// words in registers. (At N >= 16384 a 1024-thread block of them exceeds the register file, and
// at 8192 they measured slower than the plain kernel on an H100: see docs/GPU_NOTES.md.)
// Forward: the first log2(E) stages on words t + k*T (pairs stay inside a thread), the middle
// stages through shared memory, the last log2(E) stages on words t*E + k; the inverse runs the
// same phases backwards. Same butterflies, same twiddles as above, so the same words; about half
// the barriers. Shared memory is padded by one word per 32 (index i + i/32) so that the
// consecutive-chunk phase is free of bank conflicts.

__device__ __forceinline__ u32 pad(u32 i) { return i + (i >> 5); }

template <u32 E, u32 LOGE>
__device__ __forceinline__ void ntt_forward_reg(u32* data, const u32* tw, const u32* tw_shoup, const u32* moduli,
                                                u32 n, u32 log_n, u32 limbs) {
    extern __shared__ u32 s[];
    const u32 row = blockIdx.x, limb = row % limbs, p = moduli[limb];
    const u32* w = tw + (size_t)limb * n;
    const u32* ws = tw_shoup + (size_t)limb * n;
    u32* a = data + (size_t)row * n;
    const u32 T = n / E, t = threadIdx.x;
    u32 x[E];
#pragma unroll
    for (u32 k = 0; k < E; ++k) x[k] = a[t + k * T];
    // Phase A: stages 0 .. LOGE-1 (half = N/2 .. T), pairs (k, k + hk) of this thread.
#pragma unroll
    for (u32 st = 0; st < LOGE; ++st) {
        const u32 hk = E >> (st + 1);
        const u32 log_half = log_n - 1 - st;
        const u32 groups = 1u << st;
#pragma unroll
        for (u32 kk = 0; kk < E / 2; ++kk) {
            const u32 k = (kk / hk) * 2 * hk + (kk % hk);
            const u32 g = (t + k * T) >> (log_half + 1);
            const u32 u = x[k];
            const u32 v = mul_shoup(x[k + hk], w[groups + g], ws[groups + g], p);
            x[k] = add_mod(u, v, p);
            x[k + hk] = sub_mod(u, v, p);
        }
    }
#pragma unroll
    for (u32 k = 0; k < E; ++k) s[pad(t + k * T)] = x[k];
    __syncthreads();
    // Phase B: middle stages through shared memory (half = T/2 .. E).
    for (u32 log_half = log_n - 1 - LOGE; log_half >= LOGE; --log_half) {
        const u32 half = 1u << log_half;
        const u32 groups = n >> (log_half + 1);
        for (u32 k = t; k < (n >> 1); k += T) {
            const u32 g = k >> log_half;
            const u32 xi = (g << (log_half + 1)) + (k & (half - 1));
            const u32 yi = xi + half;
            const u32 u = s[pad(xi)];
            const u32 v = mul_shoup(s[pad(yi)], w[groups + g], ws[groups + g], p);
            s[pad(xi)] = add_mod(u, v, p);
            s[pad(yi)] = sub_mod(u, v, p);
        }
        __syncthreads();
    }
    // Phase C: the last LOGE stages (half = E/2 .. 1) on the consecutive words t*E + k.
#pragma unroll
    for (u32 k = 0; k < E; ++k) x[k] = s[pad(t * E + k)];
#pragma unroll
    for (u32 st = 0; st < LOGE; ++st) {
        const u32 log_half = LOGE - 1 - st;
        const u32 hk = 1u << log_half;
        const u32 groups = n >> (log_half + 1);
#pragma unroll
        for (u32 kk = 0; kk < E / 2; ++kk) {
            const u32 k = (kk / hk) * 2 * hk + (kk % hk);
            const u32 g = (t * E + k) >> (log_half + 1);
            const u32 u = x[k];
            const u32 v = mul_shoup(x[k + hk], w[groups + g], ws[groups + g], p);
            x[k] = add_mod(u, v, p);
            x[k + hk] = sub_mod(u, v, p);
        }
    }
    __syncthreads();
#pragma unroll
    for (u32 k = 0; k < E; ++k) s[pad(t * E + k)] = x[k];
    __syncthreads();
#pragma unroll
    for (u32 k = 0; k < E; ++k) a[t + k * T] = s[pad(t + k * T)];
}

template <u32 E, u32 LOGE>
__device__ __forceinline__ void ntt_inverse_reg(u32* data, const u32* tw, const u32* tw_shoup, const u32* moduli,
                                                const u32* n_inv, const u32* n_inv_shoup, u32 n, u32 log_n, u32 limbs) {
    extern __shared__ u32 s[];
    const u32 row = blockIdx.x, limb = row % limbs, p = moduli[limb];
    const u32* w = tw + (size_t)limb * n;
    const u32* ws = tw_shoup + (size_t)limb * n;
    u32* a = data + (size_t)row * n;
    const u32 T = n / E, t = threadIdx.x;
    u32 x[E];
#pragma unroll
    for (u32 k = 0; k < E; ++k) s[pad(t + k * T)] = a[t + k * T];
    __syncthreads();
    // Phase C (first for the inverse): half = 1 .. E/2 on the consecutive words t*E + k.
#pragma unroll
    for (u32 k = 0; k < E; ++k) x[k] = s[pad(t * E + k)];
#pragma unroll
    for (u32 log_half = 0; log_half < LOGE; ++log_half) {
        const u32 hk = 1u << log_half;
        const u32 groups = n >> (log_half + 1);
#pragma unroll
        for (u32 kk = 0; kk < E / 2; ++kk) {
            const u32 k = (kk / hk) * 2 * hk + (kk % hk);
            const u32 g = (t * E + k) >> (log_half + 1);
            const u32 u = x[k], v = x[k + hk];
            x[k] = add_mod(u, v, p);
            x[k + hk] = mul_shoup(sub_mod(u, v, p), w[groups + g], ws[groups + g], p);
        }
    }
    __syncthreads();
#pragma unroll
    for (u32 k = 0; k < E; ++k) s[pad(t * E + k)] = x[k];
    __syncthreads();
    // Phase B: half = E .. T/2 through shared memory.
    for (u32 log_half = LOGE; log_half < log_n - LOGE; ++log_half) {
        const u32 half = 1u << log_half;
        const u32 groups = n >> (log_half + 1);
        for (u32 k = t; k < (n >> 1); k += T) {
            const u32 g = k >> log_half;
            const u32 xi = (g << (log_half + 1)) + (k & (half - 1));
            const u32 yi = xi + half;
            const u32 u = s[pad(xi)], v = s[pad(yi)];
            s[pad(xi)] = add_mod(u, v, p);
            s[pad(yi)] = mul_shoup(sub_mod(u, v, p), w[groups + g], ws[groups + g], p);
        }
        __syncthreads();
    }
    // Phase A (last for the inverse): half = T .. N/2 on words t + k*T.
#pragma unroll
    for (u32 k = 0; k < E; ++k) x[k] = s[pad(t + k * T)];
#pragma unroll
    for (u32 st = 0; st < LOGE; ++st) {
        const u32 hk = 1u << st;
        const u32 log_half = log_n - LOGE + st;
        const u32 groups = n >> (log_half + 1);
#pragma unroll
        for (u32 kk = 0; kk < E / 2; ++kk) {
            const u32 k = (kk / hk) * 2 * hk + (kk % hk);
            const u32 g = (t + k * T) >> (log_half + 1);
            const u32 u = x[k], v = x[k + hk];
            x[k] = add_mod(u, v, p);
            x[k + hk] = mul_shoup(sub_mod(u, v, p), w[groups + g], ws[groups + g], p);
        }
    }
    const u32 ni = n_inv[limb], nis = n_inv_shoup[limb];
#pragma unroll
    for (u32 k = 0; k < E; ++k) a[t + k * T] = mul_shoup(x[k], ni, nis, p);
}

extern "C" __global__ void ntt_forward_reg16_u32(u32* d, const u32* tw, const u32* tws, const u32* m, u32 n, u32 log_n, u32 limbs) {
    ntt_forward_reg<16, 4>(d, tw, tws, m, n, log_n, limbs);
}
extern "C" __global__ void ntt_inverse_reg16_u32(u32* d, const u32* tw, const u32* tws, const u32* m, const u32* ni,
                                                 const u32* nis, u32 n, u32 log_n, u32 limbs) {
    ntt_inverse_reg<16, 4>(d, tw, tws, m, ni, nis, n, log_n, limbs);
}
