// The table product on the tensor cores (sm_80 and later): out[r][c] (+)= sum_i a[r][i] b[i][c],
// pointwise in the NTT domain, as mac_ntt_r8c4_u32 computes it, with the word products done by
// 8-bit integer matrix instructions (mma.m16n8k32, u8 x u8 -> s32).
//
// Byte planes. For words x = sum_p x_p 2^(8p) and y = sum_q y_q 2^(8q) (bytes p, q in 0..3),
// x y = sum_s D_s 2^(8s) with D_s = sum_{p+q=s} x_p y_q, s in 0..6. A step takes 32 inner
// indices, the K dimension of one mma; each lane's four consecutive words of a fragment row are
// transposed into four byte planes (8 byte permutes per four words), and the 16 plane pairs
// (p, q) are 16 mma instructions accumulating into class p + q. The s32 accumulator of class s
// sums exactly D_s; at the end out = sum_s D_s (2^(8s) mod p) mod p, fully reduced:
// bit-identical to every other backend. 16 byte products per word product, the least there is.
// (The first version took the words of `a` unchanged as 4 bytes of K and permuted `b` into 7
// classes: 28 byte products and 106 instructions per 8 inner indices; scripts/sass.py.)
//
// Bounds: D_s <= inner x 4 x 255^2 < 2^29 for inner <= MMA_MAX_INNER (2048), so the s32
// accumulators never overflow and sum_s D_s (2^(8s) mod p) < 7 x 2^60 fits a u64.
//
// Tiling. A block of 8 warps computes one tile of 16 rows x 32 columns for 4 consecutive
// coefficients of one limb: two warps per coefficient, each with two n8 column tiles (7 x 2 x 4
// s32 accumulators per thread). Per step the block stages `a` (16 x 32 x 4 words) and `b`
// (32 x 32 x 4 words) in shared memory, loaded as 16-byte runs of the 4 coefficients and
// transposed so that each warp reads its own coefficient's words as 16-byte runs of four inner
// indices; the row pitch (48 words, 16 mod 32) keeps the 16-byte fragment loads free of bank
// conflicts. `a` and `b` must be 16-byte aligned (device allocations are). Blocks of one coefficient group are consecutive in the grid
// (x = tile + tiles x group), so the tiles that share a group's `b` and `a` run together and
// meet in L2.
//
// Launch: grid = (tiles x limbs x N / 4, 1, 1) with tiles = ceil(rows / 16) x ceil(cols / 32),
// block = 256 (exactly), dynamic shared memory MMA_SMEM_WORDS x 4 bytes; N % 4 == 0,
// inner <= MMA_MAX_INNER.

#define MMA_THREADS 256
#define MMA_COEFFS 4
#define MMA_ROWS 16
#define MMA_COLS 32
#define MMA_K 32
#define MMA_PITCH 48
#define MMA_A_WORDS (MMA_ROWS * MMA_PITCH + 8)
#define MMA_B_WORDS (MMA_COLS * MMA_PITCH + 8)
#define MMA_SMEM_WORDS (MMA_COEFFS * (MMA_A_WORDS + MMA_B_WORDS))
#define MMA_MAX_INNER 2048
#define MMA_A_LOADS (MMA_ROWS * MMA_K / MMA_THREADS)
#define MMA_B_LOADS (MMA_COLS * MMA_K / MMA_THREADS)

#ifdef FQ_EMULATOR
#define mma_m16n8k32_u8 fq_emu::warp_mma_m16n8k32_u8
#else
// d = a b + c for one warp: a is 16 x 32 bytes (row-major), b 32 x 8 (column-major), c and d
// 16 x 8 s32. Fragment layout (PTX ISA, mma.m16n8k32 with .u8): lane = 4 g + t; a[0] holds
// row g, k = 4t..4t+3; a[1] row g + 8, same k; a[2], a[3] the same rows at k + 16; b[0] holds
// k = 4t..4t+3 of column g, b[1] k + 16; c[0], c[1] row g, columns 2t, 2t + 1; c[2], c[3] row
// g + 8.
__device__ __forceinline__ void mma_m16n8k32_u8(u32* d, const u32* a, const u32* b, const u32* c) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.s32.u8.u8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%10,%11,%12,%13};\n"
        : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "r"(c[0]), "r"(c[1]), "r"(c[2]),
          "r"(c[3]));
#else
    __trap();  // the backend launches this kernel on compute capability 8.0 and later only
#endif
}
#endif

// The byte planes of four words: out[p] holds byte p of w.x, w.y, w.z, w.w (in that order).
__device__ __forceinline__ void mma_byte_planes(const uint4 w, u32* out) {
    const u32 t0 = __byte_perm(w.x, w.y, 0x5140u), t1 = __byte_perm(w.x, w.y, 0x7362u);
    const u32 t2 = __byte_perm(w.z, w.w, 0x5140u), t3 = __byte_perm(w.z, w.w, 0x7362u);
    out[0] = __byte_perm(t0, t2, 0x5410u);
    out[1] = __byte_perm(t0, t2, 0x7632u);
    out[2] = __byte_perm(t1, t3, 0x5410u);
    out[3] = __byte_perm(t1, t3, 0x7632u);
}

// One thread's part of a step's staging: LOADS 16-byte words (the four coefficients of one row
// or column and inner index) `stride` words apart, those whose bit of `in` is set (the rest
// zero, and all of them when the inner index is past the end: `live` false), each stored to
// the four coefficients' planes (PLANE words apart), 8 rows apart.
template <u32 LOADS, u32 PLANE>
__device__ __forceinline__ void mma_stage(const u32* from, u64 stride, u32 in, bool live, u32* to) {
#pragma unroll
    for (u32 k = 0; k < LOADS; ++k, from += stride) {
        const uint4 v = live && (in >> k & 1) ? *(const uint4*)from : make_uint4(0, 0, 0, 0);
        u32* row = to + k * (MMA_THREADS / MMA_K) * MMA_PITCH;
        row[0] = v.x;
        row[PLANE] = v.y;
        row[2 * PLANE] = v.z;
        row[3 * PLANE] = v.w;
    }
}

// Staging: each thread loads the four coefficients of one (row, inner index) of `a` (and of one
// (inner index, column) of `b`) as one 16-byte word and stores them to the four coefficients'
// planes; a warp covers the 32 inner indices of one row, so the stores hit 32 banks.
extern "C" __global__ void __launch_bounds__(MMA_THREADS, 2)
    mac_ntt_mma_u32(u32* out, const u32* a, const u32* b, const u32* moduli, const u64* barrett, u32 log_n,
                    u32 limbs, u32 rows, u32 inner, u32 cols, u32 accumulate) {
    extern __shared__ u32 s[];
    u32* sa = s;
    u32* sb = s + MMA_COEFFS * MMA_A_WORDS;
    const u32 warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const u32 g = lane >> 2, t = lane & 3;
    const u32 jw = warp >> 1, half = warp & 1;  // this warp's coefficient and column half
    const u64 poly = (u64)limbs << log_n;
    const u32 row_tiles = (rows + MMA_ROWS - 1) / MMA_ROWS;
    const u32 tiles = row_tiles * ((cols + MMA_COLS - 1) / MMA_COLS);
    const u32 tile = blockIdx.x % tiles;
    const u64 lc0 = (u64)(blockIdx.x / tiles) * MMA_COEFFS;  // first (limb, coefficient) of the block
    const u32 r0 = (tile % row_tiles) * MMA_ROWS;
    const u32 c0 = (tile / row_tiles) * MMA_COLS;
    // This thread's staged words: inner index ii of each step, rows (columns) rc + 8 k. Rows and
    // columns outside the product, and inner indices past the end, read as zero; which rows and
    // columns are inside is fixed for the loop (bit k of a_in, b_in).
    const u32 ii = threadIdx.x & 31, rc = threadIdx.x >> 5;
    const u32 per = MMA_THREADS / MMA_K;  // rows (columns) per pass of the block: 8
    const u64 a_step = (u64)MMA_K * poly, b_step = (u64)MMA_K * cols * poly;
    const u64 a_stride = (u64)per * inner * poly, b_stride = (u64)per * poly;
    u32 a_in = 0, b_in = 0;
#pragma unroll
    for (u32 k = 0; k < MMA_A_LOADS; ++k) a_in |= (u32)(r0 + rc + k * per < rows) << k;
#pragma unroll
    for (u32 k = 0; k < MMA_B_LOADS; ++k) b_in |= (u32)(c0 + rc + k * per < cols) << k;
    const u32* a_at = a + ((u64)(r0 + rc) * inner + ii) * poly + lc0;
    const u32* b_at = b + ((u64)ii * cols + c0 + rc) * poly + lc0;
    u32* a_to = sa + rc * MMA_PITCH + ii;
    u32* b_to = sb + rc * MMA_PITCH + ii;
    u32 acc[2][7][4];
#pragma unroll
    for (u32 n = 0; n < 2; ++n)
#pragma unroll
        for (u32 c = 0; c < 7; ++c)
#pragma unroll
            for (u32 e = 0; e < 4; ++e) acc[n][c][e] = 0;
    for (u32 i0 = 0; i0 < inner; i0 += MMA_K) {
        const bool live = i0 + ii < inner;
        mma_stage<MMA_A_LOADS, MMA_A_WORDS>(a_at, a_stride, a_in, live, a_to);
        mma_stage<MMA_B_LOADS, MMA_B_WORDS>(b_at, b_stride, b_in, live, b_to);
        a_at += a_step;
        b_at += b_step;
        __syncthreads();
        // Fragments (PTX ISA layout): a0 row g, k 4t..4t+3; a1 row g + 8; a2, a3 the same rows
        // at k + 16; b0 column g, k 4t..4t+3; b1 k + 16. Each as its four byte planes.
        const u32* wa = sa + jw * MMA_A_WORDS;
        u32 ap[4][4];  // [plane][fragment register]
        {
            u32 pl[4];
            mma_byte_planes(*(const uint4*)(wa + g * MMA_PITCH + 4 * t), pl);
#pragma unroll
            for (u32 x = 0; x < 4; ++x) ap[x][0] = pl[x];
            mma_byte_planes(*(const uint4*)(wa + (g + 8) * MMA_PITCH + 4 * t), pl);
#pragma unroll
            for (u32 x = 0; x < 4; ++x) ap[x][1] = pl[x];
            mma_byte_planes(*(const uint4*)(wa + g * MMA_PITCH + 16 + 4 * t), pl);
#pragma unroll
            for (u32 x = 0; x < 4; ++x) ap[x][2] = pl[x];
            mma_byte_planes(*(const uint4*)(wa + (g + 8) * MMA_PITCH + 16 + 4 * t), pl);
#pragma unroll
            for (u32 x = 0; x < 4; ++x) ap[x][3] = pl[x];
        }
#pragma unroll
        for (u32 n = 0; n < 2; ++n) {
            const u32* wb = sb + jw * MMA_B_WORDS + ((half * 2 + n) * 8 + g) * MMA_PITCH;
            u32 lo[4], hi[4];
            mma_byte_planes(*(const uint4*)(wb + 4 * t), lo);
            mma_byte_planes(*(const uint4*)(wb + 16 + 4 * t), hi);
#pragma unroll
            for (u32 y = 0; y < 4; ++y) {
                const u32 fb[2] = {lo[y], hi[y]};
#pragma unroll
                for (u32 x = 0; x < 4; ++x) mma_m16n8k32_u8(acc[n][x + y], ap[x], fb, acc[n][x + y]);
            }
        }
        __syncthreads();
    }
    // Every coefficient of the block is in one limb (N % 4 == 0).
    const u32 limb = (u32)(lc0 >> log_n);
    const u32 pm = moduli[limb];
    const u64 bar = barrett[limb];
    u64 pw[7];
#pragma unroll
    for (u32 c = 0; c < 7; ++c) pw[c] = reduce_u64(1ull << (8 * c), pm, bar);
    const u64 lc = lc0 + jw;
#pragma unroll
    for (u32 n = 0; n < 2; ++n) {
#pragma unroll
        for (u32 e = 0; e < 4; ++e) {
            const u32 r = r0 + g + (e >> 1) * 8, c = c0 + (half * 2 + n) * 8 + 2 * t + (e & 1);
            if (r < rows && c < cols) {
                u64 x = 0;
#pragma unroll
                for (u32 k = 0; k < 7; ++k) x += (u64)acc[n][k][e] * pw[k];
                const u64 o = ((u64)r * cols + c) * poly + lc;
                u32 v = reduce_u64(x, pm, bar);
                if (accumulate) v = add_mod(v, out[o], pm);
                out[o] = v;
            }
        }
    }
}
