// The server's hot loop: out[r][c] (+)= sum_i a[r][i] * b[i][c], pointwise in the NTT domain.
// One thread per (limb, coefficient) of one tile of R rows and C columns: it reads each word of
// b once for the R rows of its tile and each word of a once for its C columns, coalesced across
// the warp; products accumulate in u64 and are reduced every `lazy` terms
// (the same bound as the CPU), so the final, fully reduced words are the CPU backend's.
//
// Launch: grid = (ceil(limbs*N / block), ceil(cols / C), ceil(rows / R)) for a kernel of R x C.

#define MAC_ROWS 16

// The accumulators of a tile: loaded from `out` (or zero), reduced, stored (fully reduced) to
// the rows and columns inside the product.
template <u32 R, u32 C>
__device__ __forceinline__ void mac_tile_load(u64 (&acc)[R][C], const u32* out, u32 accumulate, u32 r0, u32 rt,
                                              u32 c0, u32 ct, u32 cols, u64 poly, u64 lc) {
#pragma unroll
    for (u32 t = 0; t < R; ++t) {
#pragma unroll
        for (u32 u = 0; u < C; ++u) {
            acc[t][u] = (accumulate && t < rt && u < ct) ? (u64)out[((u64)(r0 + t) * cols + c0 + u) * poly + lc] : 0;
        }
    }
}

template <u32 R, u32 C>
__device__ __forceinline__ void mac_tile_reduce(u64 (&acc)[R][C], u32 p, u64 bar) {
#pragma unroll
    for (u32 t = 0; t < R; ++t) {
#pragma unroll
        for (u32 u = 0; u < C; ++u) acc[t][u] = reduce_u64(acc[t][u], p, bar);
    }
}

template <u32 R, u32 C>
__device__ __forceinline__ void mac_tile_store(const u64 (&acc)[R][C], u32* out, u32 p, u64 bar, u32 r0, u32 rt,
                                               u32 c0, u32 ct, u32 cols, u64 poly, u64 lc) {
#pragma unroll
    for (u32 t = 0; t < R; ++t) {
#pragma unroll
        for (u32 u = 0; u < C; ++u) {
            if (t < rt && u < ct) out[((u64)(r0 + t) * cols + c0 + u) * poly + lc] = reduce_u64(acc[t][u], p, bar);
        }
    }
}

// A tile of R rows x C columns per thread: each word of b is read once per R rows and each word
// of a once per C columns, R x C products per R + C loads. The grid's y runs over column tiles,
// z over row tiles.
template <u32 R, u32 C>
__device__ __forceinline__ void mac_tile(u32* out, const u32* a, const u32* b, const u32* moduli, const u64* barrett,
                                         const u32* lazy, u32 log_n, u32 limbs, u32 rows, u32 inner, u32 cols,
                                         u32 accumulate) {
    const u64 lc = (u64)blockIdx.x * blockDim.x + threadIdx.x;  // limb * N + coefficient
    const u64 poly = (u64)limbs << log_n;
    if (lc >= poly) return;
    const u32 limb = (u32)(lc >> log_n);
    const u32 c0 = blockIdx.y * C;
    const u32 r0 = blockIdx.z * R;
    const u32 rt = min(R, rows - r0);
    const u32 ct = min(C, cols - c0);
    const u32 p = moduli[limb];
    const u64 bar = barrett[limb];
    const u32 lz = lazy[limb];
    u64 acc[R][C];
    mac_tile_load<R, C>(acc, out, accumulate, r0, rt, c0, ct, cols, poly, lc);
    u32 count = 0;
    for (u32 i = 0; i < inner; ++i) {
        u64 y[C];
#pragma unroll
        for (u32 u = 0; u < C; ++u) y[u] = u < ct ? (u64)b[((u64)i * cols + c0 + u) * poly + lc] : 0;
#pragma unroll
        for (u32 t = 0; t < R; ++t) {
            if (t < rt) {
                const u64 x = a[((u64)(r0 + t) * inner + i) * poly + lc];
#pragma unroll
                for (u32 u = 0; u < C; ++u) acc[t][u] += x * y[u];
            }
        }
        if (++count == lz) {
            mac_tile_reduce<R, C>(acc, p, bar);
            count = 0;
        }
    }
    mac_tile_store<R, C>(acc, out, p, bar, r0, rt, c0, ct, cols, poly, lc);
}

// 16 rows x 1 column: the table read once for 16 rows (few columns, many rows).
extern "C" __global__ void mac_ntt_u32(u32* out, const u32* a, const u32* b, const u32* moduli, const u64* barrett,
                                       const u32* lazy, u32 log_n, u32 limbs, u32 rows, u32 inner, u32 cols,
                                       u32 accumulate) {
    mac_tile<MAC_ROWS, 1>(out, a, b, moduli, barrett, lazy, log_n, limbs, rows, inner, cols, accumulate);
}

// 8 rows x 4 columns (many columns: the schemes' table products). With one column per thread,
// `a` is read again for every column: for FastQuery's llama-7b product (16 x 125 by 125 x 128
// polynomials, `a` 328 MB, larger than L2) that is 17x the table's bytes; here 6x.
extern "C" __global__ void mac_ntt_r8c4_u32(u32* out, const u32* a, const u32* b, const u32* moduli,
                                            const u64* barrett, const u32* lazy, u32 log_n, u32 limbs, u32 rows,
                                            u32 inner, u32 cols, u32 accumulate) {
    mac_tile<8, 4>(out, a, b, moduli, barrett, lazy, log_n, limbs, rows, inner, cols, accumulate);
}

// 2 rows x 8 columns, with the next inner index's words loaded before this one's products: the
// one-token products (two rows: the halves of one query ciphertext) stream the table once and
// compute little, so what bounds them is the number of loads in flight. The 16 x 1 kernel had 3
// per thread (Cheetah's one-token product measured 7.3x its memory floor on an H100); this one
// has up to 20 (10 words of b and a for this index and the next), with 16 accumulators, so
// more threads fit an SM than with the 8 x 4 tile's 32.
//
// ColsFirst: the grid's x runs over the column tiles and y over the blocks of coefficients, so
// the column tiles that read the same words of `a` run at once and share them through L2. With
// the coefficients first (x), a column tile's blocks sweep all of `a` (41 MB for a llama-7b
// token) before the next tile reads it again, after 160 MB of `b` have evicted it: `a` crossed
// DRAM once per column tile (16 times, a quarter more traffic than the table itself).
template <u32 R, u32 C, bool ColsFirst>
__device__ __forceinline__ void mac_tile_prefetch(u32* out, const u32* a, const u32* b, const u32* moduli,
                                                  const u64* barrett, const u32* lazy, u32 log_n, u32 limbs,
                                                  u32 rows, u32 inner, u32 cols, u32 accumulate) {
    const u32 lane_block = ColsFirst ? blockIdx.y : blockIdx.x;
    const u32 col_tile = ColsFirst ? blockIdx.x : blockIdx.y;
    const u64 lc = (u64)lane_block * blockDim.x + threadIdx.x;  // limb * N + coefficient
    const u64 poly = (u64)limbs << log_n;
    if (lc >= poly) return;
    const u32 limb = (u32)(lc >> log_n);
    const u32 c0 = col_tile * C;
    const u32 r0 = blockIdx.z * R;
    const u32 rt = min(R, rows - r0);
    const u32 ct = min(C, cols - c0);
    const u32 p = moduli[limb];
    const u64 bar = barrett[limb];
    const u32 lz = lazy[limb];
    u64 acc[R][C];
    mac_tile_load<R, C>(acc, out, accumulate, r0, rt, c0, ct, cols, poly, lc);
    // Words of b for columns c0.. and of a for rows r0.. at inner index i, as u32.
    const u32* bp = b + (u64)c0 * poly + lc;
    const u32* ap = a + (u64)r0 * inner * poly + lc;
    const u64 b_step = (u64)cols * poly, a_row = (u64)inner * poly;
    u32 yn[C], xn[R];
#pragma unroll
    for (u32 u = 0; u < C; ++u) yn[u] = (u < ct && inner > 0) ? bp[u * poly] : 0;
#pragma unroll
    for (u32 t = 0; t < R; ++t) xn[t] = (t < rt && inner > 0) ? ap[t * a_row] : 0;
    u32 count = 0;
    for (u32 i = 0; i < inner; ++i) {
        u32 y[C], x[R];
#pragma unroll
        for (u32 u = 0; u < C; ++u) y[u] = yn[u];
#pragma unroll
        for (u32 t = 0; t < R; ++t) x[t] = xn[t];
        if (i + 1 < inner) {
            bp += b_step;
            ap += poly;
#pragma unroll
            for (u32 u = 0; u < C; ++u) yn[u] = u < ct ? bp[u * poly] : 0;
#pragma unroll
            for (u32 t = 0; t < R; ++t) xn[t] = t < rt ? ap[t * a_row] : 0;
        }
#pragma unroll
        for (u32 t = 0; t < R; ++t) {
#pragma unroll
            for (u32 u = 0; u < C; ++u) acc[t][u] += (u64)x[t] * y[u];
        }
        if (++count == lz) {
            mac_tile_reduce<R, C>(acc, p, bar);
            count = 0;
        }
    }
    mac_tile_store<R, C>(acc, out, p, bar, r0, rt, c0, ct, cols, poly, lc);
}

// Launch: grid = (ceil(limbs*N / block), ceil(cols / 8), ceil(rows / 2)).
extern "C" __global__ void __launch_bounds__(256, 2)
mac_ntt_r2c8_u32(u32* out, const u32* a, const u32* b, const u32* moduli, const u64* barrett, const u32* lazy,
                 u32 log_n, u32 limbs, u32 rows, u32 inner, u32 cols, u32 accumulate) {
    mac_tile_prefetch<2, 8, false>(out, a, b, moduli, barrett, lazy, log_n, limbs, rows, inner, cols, accumulate);
}

// Launch: grid = (ceil(cols / 8), ceil(limbs*N / block), ceil(rows / 2)).
extern "C" __global__ void __launch_bounds__(256, 2)
mac_ntt_r2c8_cols_u32(u32* out, const u32* a, const u32* b, const u32* moduli, const u64* barrett,
                      const u32* lazy, u32 log_n, u32 limbs, u32 rows, u32 inner, u32 cols, u32 accumulate) {
    mac_tile_prefetch<2, 8, true>(out, a, b, moduli, barrett, lazy, log_n, limbs, rows, inner, cols, accumulate);
}
