// The canonical negacyclic NTT (fastquery-ntt): one thread block per (polynomial, limb) row,
// the row held in shared memory through all log2(N) stages. The butterflies and their order are
// those of fastquery_ntt::reference, with the same twiddle tables (psi^k at bit-reversed k, and
// their Shoup companions), so the output words are the CPU backend's.
//
// Launch: grid = rows, block = min(N/2, 1024) threads, dynamic shared memory = N * 4 bytes.

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
