// Modulus switching down (coefficient form): for each dropped prime p_last, last first,
// x <- (x - r) / p_last with r = x mod p_last centred into (-p_last/2, p_last/2]: exactly the CPU
// backend's per-prime rounding. One thread per (polynomial, coefficient).

#define MAX_LIMBS 32

extern "C" __global__ void mod_switch_down_u32(u32* out, const u32* in, const u32* moduli, const u32* inv,
                                               const u32* inv_shoup, u32 log_n, u32 ring_limbs, u32 in_limbs,
                                               u32 out_limbs, u64 total) {
    const u32 n = 1u << log_n;
    for (u64 idx = (u64)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += (u64)gridDim.x * blockDim.x) {
        const u64 poly = idx >> log_n;
        const u32 j = (u32)(idx & (n - 1));
        u32 cur[MAX_LIMBS];
        for (u32 l = 0; l < in_limbs; ++l) cur[l] = in[((poly * in_limbs + l) << log_n) + j];
        for (u32 last = in_limbs - 1; last >= out_limbs; --last) {
            const u32 pl = moduli[last];
            const u32 r = cur[last];
            for (u32 i = 0; i < last; ++i) {
                const u32 p = moduli[i];
                const u32 rc = r > pl / 2 ? neg_mod((pl - r) % p, p) : r % p;
                const u32 k = last * ring_limbs + i;
                cur[i] = mul_shoup(sub_mod(cur[i], rc, p), inv[k], inv_shoup[k], p);
            }
            if (last == 0) break;
        }
        for (u32 l = 0; l < out_limbs; ++l) out[((poly * out_limbs + l) << log_n) + j] = cur[l];
    }
}
