// The server's hot loop: out[r][c] (+)= sum_i a[r][i] * b[i][c], pointwise in the NTT domain.
// One thread per (limb, coefficient) of one column c and one tile of MAC_ROWS rows: it reads
// each word of b once for all rows of its tile (the table is read rows/MAC_ROWS times in all),
// coalesced across the warp; products accumulate in u64 and are reduced every `lazy` terms
// (the same bound as the CPU), so the final, fully reduced words are the CPU backend's.
//
// Launch: grid = (ceil(limbs*N / block), cols, ceil(rows / MAC_ROWS)).

#define MAC_ROWS 16

extern "C" __global__ void mac_ntt_u32(u32* out, const u32* a, const u32* b, const u32* moduli, const u64* barrett,
                                       const u32* lazy, u32 log_n, u32 limbs, u32 rows, u32 inner, u32 cols,
                                       u32 accumulate) {
    const u64 lc = (u64)blockIdx.x * blockDim.x + threadIdx.x;  // limb * N + coefficient
    const u64 poly = (u64)limbs << log_n;
    if (lc >= poly) return;
    const u32 limb = (u32)(lc >> log_n);
    const u32 c = blockIdx.y;
    const u32 r0 = blockIdx.z * MAC_ROWS;
    const u32 rt = min((u32)MAC_ROWS, rows - r0);
    const u32 p = moduli[limb];
    const u64 bar = barrett[limb];
    const u32 lz = lazy[limb];
    u64 acc[MAC_ROWS];
#pragma unroll
    for (u32 t = 0; t < MAC_ROWS; ++t) {
        acc[t] = (accumulate && t < rt) ? (u64)out[((u64)(r0 + t) * cols + c) * poly + lc] : 0;
    }
    u32 count = 0;
    for (u32 i = 0; i < inner; ++i) {
        const u64 y = b[((u64)i * cols + c) * poly + lc];
#pragma unroll
        for (u32 t = 0; t < MAC_ROWS; ++t) {
            if (t < rt) acc[t] += (u64)a[((u64)(r0 + t) * inner + i) * poly + lc] * y;
        }
        if (++count == lz) {
#pragma unroll
            for (u32 t = 0; t < MAC_ROWS; ++t) acc[t] = reduce_u64(acc[t], p, bar);
            count = 0;
        }
    }
#pragma unroll
    for (u32 t = 0; t < MAC_ROWS; ++t) {
        if (t < rt) out[((u64)(r0 + t) * cols + c) * poly + lc] = reduce_u64(acc[t], p, bar);
    }
}
