// The table product on the tensor cores (sm_80 and later): out[r][c] (+)= sum_i a[r][i] b[i][c],
// pointwise in the NTT domain, as mac_ntt_r8c4_u32 computes it, with the word products done by
// 8-bit integer matrix instructions (mma.m16n8k32, u8 x u8 -> s32).
//
// Byte classes. For words x = sum_p x_p 2^(8p) and y = sum_q y_q 2^(8q) (bytes p, q in 0..3),
// x y = sum_s D_s 2^(8s) with D_s = sum_{p+q=s} x_p y_q, s in 0..6. One mma step takes the K
// dimension as 8 inner indices of 4 bytes each (k = 4 i + p): the A operand is the words of `a`
// as they are (byte p of a word is element k = 4 i + p, no unpacking), and for class s the B
// operand holds byte s - p of the `b` word at element 4 i + p (zero outside 0..3): one byte
// permute per word and class. The s32 accumulator of class s then sums exactly D_s over the
// inner indices. At the end, out = sum_s D_s (2^(8s) mod p) mod p, fully reduced: bit-identical
// to every other backend.
//
// Bounds: D_s <= inner x 4 x 255^2 < 2^29 for inner <= MMA_MAX_INNER (2048), so the s32
// accumulators never overflow and sum_s D_s (2^(8s) mod p) < 7 x 2^60 fits a u64.
//
// Work per word product: 7 classes x 4 bytes = 28 byte products (16 would be the least), traded
// for no unpacking of `a` and 14 byte permutes per 8 inner indices and 8 columns.
//
// Tiling. A block of 8 warps computes one tile of 16 rows x 32 columns for 4 consecutive
// coefficients of one limb: two warps per coefficient, each with two n8 column tiles (7 x 2 x 4
// s32 accumulators per thread; four column tiles per warp took 252 registers, one block per
// SM). Per step of 8 inner indices the block stages `a` (16 x 8 x 4 words) and `b` (8 x 32 x 4
// words) in shared memory, transposed so that each warp's fragments are its own coefficient's
// words, padded so that neither the staging stores nor the fragment loads have bank conflicts.
// The next step's words are loaded into registers while this step's products run. Blocks of
// one coefficient group are consecutive in the grid (x = tile + tiles x group), so the tiles
// that share a group's `b` and `a` run together and meet in L2.
//
// Launch: grid = (tiles x limbs x N / 4, 1, 1) with tiles = ceil(rows / 16) x ceil(cols / 32),
// block = 256 (exactly), dynamic shared memory MMA_SMEM_WORDS x 4 bytes; N % 4 == 0,
// inner <= MMA_MAX_INNER.

#define MMA_THREADS 256
#define MMA_COEFFS 4
#define MMA_ROWS 16
#define MMA_COLS 32
#define MMA_K 8
#define MMA_PITCH 12
#define MMA_A_WORDS (MMA_ROWS * MMA_PITCH + 8)
#define MMA_B_WORDS (MMA_COLS * MMA_PITCH + 8)
#define MMA_SMEM_WORDS (MMA_COEFFS * (MMA_A_WORDS + MMA_B_WORDS))
#define MMA_MAX_INNER 2048
#define MMA_A_LOADS (MMA_ROWS * MMA_K * MMA_COEFFS / MMA_THREADS)
#define MMA_B_LOADS (MMA_COLS * MMA_K * MMA_COEFFS / MMA_THREADS)

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

// Byte selectors of class s: result byte p is byte s - p of the word, or zero (selector 4 picks
// byte 0 of the zero operand).
__device__ __forceinline__ u32 mma_class_bytes(u32 w, u32 cls) {
    const u32 sel[7] = {0x4440u, 0x4401u, 0x4012u, 0x0123u, 0x1234u, 0x2344u, 0x3444u};
    return __byte_perm(w, 0u, sel[cls]);
}

// Staged word w of a step: coefficient w % 4, inner index w / 4 % 8, then the row (of `a`) or
// the column (of `b`): 16-byte runs of coefficients per quarter warp, and banks 8 jj + ii + const
// for the stores (the padded strides are 8 mod 32).
extern "C" __global__ void __launch_bounds__(MMA_THREADS, 2) mac_ntt_mma_u32(u32* out, const u32* a, const u32* b, const u32* moduli,
                                           const u64* barrett, u32 log_n, u32 limbs, u32 rows, u32 inner,
                                           u32 cols, u32 accumulate) {
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
    u32 pa[MMA_A_LOADS], pb[MMA_B_LOADS];
    // This thread's words: inner index ii = threadIdx.x / 4 % 8 of each step (the same for
    // every load), coefficient threadIdx.x % 4, row (column) threadIdx.x / 32 + 8 k. Rows and
    // columns outside the product read as zero; so do inner indices past the end.
    const u32 ii = (threadIdx.x >> 2) & 7, jt = threadIdx.x & 3, rc = threadIdx.x >> 5;
    const u64 a_step = (u64)MMA_K * poly, b_step = (u64)MMA_K * cols * poly;
    // Consecutive loads of a thread are 8 rows (columns) apart: constant strides, and which of
    // them fall inside the product is fixed for the whole loop (bit k of a_in, b_in).
    const u64 a_stride = (u64)(MMA_THREADS / 32) * inner * poly, b_stride = (u64)(MMA_THREADS / 32) * poly;
    u32 a_in = 0, b_in = 0;
#pragma unroll
    for (u32 k = 0; k < MMA_A_LOADS; ++k) a_in |= (u32)(r0 + rc + k * (MMA_THREADS / 32) < rows) << k;
#pragma unroll
    for (u32 k = 0; k < MMA_B_LOADS; ++k) b_in |= (u32)(c0 + rc + k * (MMA_THREADS / 32) < cols) << k;
    const u32* a_at = a + ((u64)(r0 + rc) * inner + ii) * poly + lc0 + jt;
    const u32* b_at = b + ((u64)ii * cols + c0 + rc) * poly + lc0 + jt;
    auto fetch = [&](u32 i0) {
        const bool live = i0 + ii < inner;
        const u32* p = a_at;
#pragma unroll
        for (u32 k = 0; k < MMA_A_LOADS; ++k, p += a_stride) pa[k] = live && (a_in >> k & 1) ? *p : 0;
        const u32* q = b_at;
#pragma unroll
        for (u32 k = 0; k < MMA_B_LOADS; ++k, q += b_stride) pb[k] = live && (b_in >> k & 1) ? *q : 0;
        a_at += a_step;
        b_at += b_step;
    };
    u32 acc[2][7][4];
#pragma unroll
    for (u32 n = 0; n < 2; ++n)
#pragma unroll
        for (u32 c = 0; c < 7; ++c)
#pragma unroll
            for (u32 e = 0; e < 4; ++e) acc[n][c][e] = 0;
    fetch(0);
    for (u32 i0 = 0; i0 < inner; i0 += MMA_K) {
#pragma unroll
        for (u32 k = 0; k < MMA_A_LOADS; ++k) {
            const u32 w = threadIdx.x + k * MMA_THREADS;
            sa[(w & 3) * MMA_A_WORDS + (w >> 5) * MMA_PITCH + ((w >> 2) & 7)] = pa[k];
        }
#pragma unroll
        for (u32 k = 0; k < MMA_B_LOADS; ++k) {
            const u32 w = threadIdx.x + k * MMA_THREADS;
            sb[(w & 3) * MMA_B_WORDS + (w >> 5) * MMA_PITCH + ((w >> 2) & 7)] = pb[k];
        }
        __syncthreads();
        if (i0 + MMA_K < inner) fetch(i0 + MMA_K);
        const u32* wa = sa + jw * MMA_A_WORDS;
        const u32* wb = sb + jw * MMA_B_WORDS;
        const u32 fa[4] = {wa[g * MMA_PITCH + t], wa[(g + 8) * MMA_PITCH + t], wa[g * MMA_PITCH + t + 4],
                           wa[(g + 8) * MMA_PITCH + t + 4]};
#pragma unroll
        for (u32 n = 0; n < 2; ++n) {
            const u32 col = (half * 2 + n) * 8 + g;
            const u32 w0 = wb[col * MMA_PITCH + t], w1 = wb[col * MMA_PITCH + t + 4];
#pragma unroll
            for (u32 c = 0; c < 7; ++c) {
                const u32 fb[2] = {mma_class_bytes(w0, c), mma_class_bytes(w1, c)};
                mma_m16n8k32_u8(acc[n][c], fa, fb, acc[n][c]);
            }
        }
        __syncthreads();
    }
    // Every coefficient of the block is in one limb (N % 4 == 0).
    const u32 limb = (u32)(lc0 >> log_n);
    const u32 p = moduli[limb];
    const u64 bar = barrett[limb];
    u64 pw[7];
#pragma unroll
    for (u32 c = 0; c < 7; ++c) pw[c] = reduce_u64(1ull << (8 * c), p, bar);
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
                u32 v = reduce_u64(x, p, bar);
                if (accumulate) v = add_mod(v, out[o], p);
                out[o] = v;
            }
        }
    }
}
