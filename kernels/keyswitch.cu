// The product of key switching, fused (Backend::decompose_mac): for output row (r, l),
//   out[k][r][l] (+)= sum_e NTT_l(D_e(a[r])) * keys[k][e][l],   k = 0, 1,
// where D_e, e = i * digits + j, is digit j (digit_bits wide) of limb i of a[r], reduced mod p_l.
// One block per output row: each digit row is built in shared memory, transformed there
// (ntt_forward_shared, the plain kernel's stages, so the same words) and multiplied into both
// keys at once, the two accumulator rows also in shared memory (registers would put a
// 1024-thread block over the register file: ptxas gave 92 per thread with them there); the
// digits never go to global memory. The unfused path writes them (limbs x digits rows per input
// row), transforms them in place and reads them twice, about five passes over `digits x limbs`
// times the input; here the input, the keys and the two outputs are each touched once per block
// (the keys, shared by every polynomial, mostly from L2).
//
// `a` has `src_limbs` rows per polynomial and the outputs `limbs`: equal for a key switch
// without a special prime; for a hybrid one (Backend::keyswitch_hybrid) `a` is over the chain
// (src_limbs = L) and the products over the chain and the special prime (limbs = L + 1), so
// neither a lifted copy of `a` nor the special prime's zero digit is ever made.
//
// With `use_twin` (Backend::decompose_mac_twin: one digit per limb, src_limbs = limbs), `twin`
// holds the NTT form of `a`, and digit row e = l (limb l's own residue, reduced into p_l: the
// residue itself) is row (r, l) of `twin`, read instead of built and transformed: one transform
// fewer per block. Otherwise `twin` is unused (the caller passes `a`).
//
// With `key_sets` > 1 (Backend::decompose_mac_sets) each key holds that many sets of
// src_limbs x digits polynomials side by side, and polynomial r meets set r % key_sets: a batch
// of several tokens' ciphertexts in turn, each with its own RGSW. One set: the plain product.
//
// Launch: grid = polys x limbs, block = min(N/2, 1024) threads, dynamic shared memory
// 3 N * 4 bytes (the row and two accumulators: N <= 16384 on an H100).

extern "C" __global__ void decompose_mac_u32(u32* out0, u32* out1, const u32* a, const u32* key0, const u32* key1,
                                             const u32* tw, const u32* tw_shoup, const u32* moduli,
                                             const u64* barrett, u32 n, u32 log_n, u32 limbs, u32 digit_bits,
                                             u32 digits, u32 accumulate, u32 src_limbs, const u32* twin,
                                             u32 use_twin, u32 key_sets) {
    extern __shared__ u32 s[];
    u32* acc0 = s + n;
    u32* acc1 = s + 2 * n;
    const u32 row = blockIdx.x, r = row / limbs, l = row % limbs;
    // Key set r % key_sets (Backend::decompose_mac_sets), each src_limbs * digits keys.
    const size_t key_at = (size_t)(r % key_sets) * src_limbs * digits * limbs * n;
    key0 += key_at;
    key1 += key_at;
    const u32 T = blockDim.x, t = threadIdx.x;
    const u32 p = moduli[l];
    const u64 bar = barrett[l];
    const u32* w = tw + (size_t)l * n;
    const u32* ws = tw_shoup + (size_t)l * n;
    u32* o0 = out0 + (size_t)row * n;
    u32* o1 = out1 + (size_t)row * n;
    for (u32 c = t; c < n; c += T) {
        acc0[c] = accumulate ? o0[c] : 0u;
        acc1[c] = accumulate ? o1[c] : 0u;
    }
    const u32 mask = (1u << digit_bits) - 1;
    const u32 g = src_limbs * digits;
    for (u32 e = 0; e < g; ++e) {
        const u32 i = e / digits, shift = (e % digits) * digit_bits;
        const u32* src = a + ((size_t)r * src_limbs + i) * n;
        // Uniform across the block (e, l and use_twin are), so the barriers stay matched.
        const bool own = use_twin && e == l;
        if (own) {
            const u32* own_row = twin + (size_t)row * n;
            for (u32 c = t; c < n; c += T) s[c] = own_row[c];
        } else {
            for (u32 c = t; c < n; c += T) {
                const u32 d = shift < 32 ? (src[c] >> shift) & mask : 0u;
                s[c] = d >= p ? d % p : d;
            }
        }
        __syncthreads();
        if (!own) ntt_forward_shared(s, w, ws, p, n, log_n);
        const u32* y0 = key0 + ((size_t)e * limbs + l) * n;
        const u32* y1 = key1 + ((size_t)e * limbs + l) * n;
        // Each thread updates the accumulator words it owns (c = t mod T), so no barrier is
        // needed between digits for them; the one below protects `s`.
        for (u32 c = t; c < n; c += T) {
            const u32 x = s[c];
            acc0[c] = add_mod(acc0[c], mul_mod(x, y0[c], p, bar), p);
            acc1[c] = add_mod(acc1[c], mul_mod(x, y1[c], p, bar), p);
        }
        __syncthreads();
    }
    for (u32 c = t; c < n; c += T) {
        o0[c] = acc0[c];
        o1[c] = acc1[c];
    }
}

// The same product with the three-pass transform of kernels/ntt.cu (N = 4096 and 8192, NTT
// version 3): T = N/16 threads, each building 16 words of a digit row in registers (pass A's
// layout, straight from the input) and transforming them (three barriers per digit row instead
// of the plain transform's log2(N) + 1). After pass C a thread holds words t*16 + k and
// multiplies them into both keys (16-byte key loads); the two accumulator rows are in shared
// memory at the same swizzled positions, each word only ever touched by its thread (with them
// in registers ptxas wanted 216 registers per thread).
//
// Launch: grid = polys x limbs, block = N/16 threads, dynamic shared memory 3 N * 4 bytes.
// Keeps the compiler from hoisting the next group's key loads (and their 64-bit products) above
// this point: with all 32 products of a thread in flight ptxas spilled at 128 registers.
#define FQ_ORDER() asm volatile("" ::: "memory")

// Thread t's 16 words of a digit row for the three-pass transform: word t + k N/16 of the source
// row's digit at `shift` (`mask` its width), reduced mod p, in x[k] (pass A's input order).
template <u32 LN>
__device__ __forceinline__ void digit_row_regs(u32 x[16], const u32* src, u32 shift, u32 mask, u32 p, u32 t) {
    constexpr u32 T = (1u << LN) / 16;
#pragma unroll
    for (u32 k = 0; k < 16; ++k) {
        const u32 d = shift < 32 ? (src[t + k * T] >> shift) & mask : 0u;
        x[k] = d >= p ? d % p : d;
    }
}

template <u32 LN>
__device__ __forceinline__ void decompose_mac_3pass(u32* out0, u32* out1, const u32* a, const u32* key0,
                                                    const u32* key1, const u32* tw, const u32* tw_shoup,
                                                    const u32* moduli, const u64* barrett, u32 limbs,
                                                    u32 digit_bits, u32 digits, u32 accumulate,
                                                    u32 src_limbs, const u32* twin, u32 use_twin,
                                                    u32 key_sets) {
    extern __shared__ u32 s[];
    constexpr u32 N = 1u << LN;
    u32* acc0 = s + N;
    u32* acc1 = s + 2 * N;
    const u32 row = blockIdx.x, r = row / limbs, l = row % limbs, t = threadIdx.x;
    const size_t key_at = (size_t)(r % key_sets) * src_limbs * digits * limbs * N;
    key0 += key_at;
    key1 += key_at;
    const u32 sc = swz(t * 16);
    const u32 p = moduli[l];
    const u64 bar = barrett[l];
    const u32* w = tw + (size_t)l * N;
    const u32* ws = tw_shoup + (size_t)l * N;
    uint4* o0 = (uint4*)(out0 + (size_t)row * N + t * 16);
    uint4* o1 = (uint4*)(out1 + (size_t)row * N + t * 16);
    // The own limb's digit row with a twin (e = l, one digit per limb): its transform is the
    // twin's row, whose word t*16 + k is what pass C would leave in x[k]; its products go into
    // the accumulators' starting values (the sums are reduced mod p, so the order is free), and
    // the loop below skips it. Uniform across the block.
    const uint4* own = (const uint4*)(twin + (size_t)row * N + t * 16);
    const uint4* own0 = (const uint4*)(key0 + ((size_t)l * limbs + l) * N + t * 16);
    const uint4* own1 = (const uint4*)(key1 + ((size_t)l * limbs + l) * N + t * 16);
#pragma unroll
    for (u32 j = 0; j < 4; ++j) {
        const uint4 z = make_uint4(0, 0, 0, 0);
        const uint4 v0 = accumulate ? o0[j] : z, v1 = accumulate ? o1[j] : z;
        u32 a0[4] = {v0.x, v0.y, v0.z, v0.w}, a1[4] = {v1.x, v1.y, v1.z, v1.w};
        if (use_twin) {
            const uint4 x = own[j], k0 = own0[j], k1 = own1[j];
            const u32 xs[4] = {x.x, x.y, x.z, x.w}, y0[4] = {k0.x, k0.y, k0.z, k0.w},
                      y1[4] = {k1.x, k1.y, k1.z, k1.w};
#pragma unroll
            for (u32 q = 0; q < 4; ++q) {
                a0[q] = add_mod(a0[q], mul_mod(xs[q], y0[q], p, bar), p);
                a1[q] = add_mod(a1[q], mul_mod(xs[q], y1[q], p, bar), p);
            }
        }
#pragma unroll
        for (u32 q = 0; q < 4; ++q) {
            acc0[FQ_AT_C(4 * j + q)] = a0[q];
            acc1[FQ_AT_C(4 * j + q)] = a1[q];
        }
    }
    const u32 mask = (1u << digit_bits) - 1;
    const u32 g = src_limbs * digits;
    for (u32 e = 0; e < g; ++e) {
        if (use_twin && e == l) continue;
        u32 x[16];
        digit_row_regs<LN>(x, a + ((size_t)r * src_limbs + e / digits) * N, (e % digits) * digit_bits, mask, p, t);
        // The previous digit row's pass C read the row until here.
        if (e > 0) __syncthreads();
        ntt_forward_3pass_regs<LN>(x, s, w, ws, p, t);
        const uint4* y0 = (const uint4*)(key0 + ((size_t)e * limbs + l) * N + t * 16);
        const uint4* y1 = (const uint4*)(key1 + ((size_t)e * limbs + l) * N + t * 16);
#pragma unroll
        for (u32 j = 0; j < 4; ++j) {
            const uint4 k0 = y0[j], k1 = y1[j];
            const u32 a0[4] = {k0.x, k0.y, k0.z, k0.w}, a1[4] = {k1.x, k1.y, k1.z, k1.w};
#pragma unroll
            for (u32 q = 0; q < 4; ++q) {
                const u32 at = FQ_AT_C(4 * j + q);
                acc0[at] = add_mod(acc0[at], mul_mod(x[4 * j + q], a0[q], p, bar), p);
                acc1[at] = add_mod(acc1[at], mul_mod(x[4 * j + q], a1[q], p, bar), p);
            }
            FQ_ORDER();
        }
    }
#pragma unroll
    for (u32 j = 0; j < 4; ++j) {
        const u32 c = FQ_AT_C(4 * j);
        o0[j] = make_uint4(acc0[c], acc0[FQ_AT_C(4 * j + 1)], acc0[FQ_AT_C(4 * j + 2)], acc0[FQ_AT_C(4 * j + 3)]);
        o1[j] = make_uint4(acc1[c], acc1[FQ_AT_C(4 * j + 1)], acc1[FQ_AT_C(4 * j + 2)], acc1[FQ_AT_C(4 * j + 3)]);
    }
}

// Entry points: decompose_mac_u32's arguments; n and log_n must be 4096 and 12 (8192 and 13).
extern "C" __global__ void __launch_bounds__(256, 2)
decompose_mac_4096_u32(u32* out0, u32* out1, const u32* a, const u32* key0, const u32* key1, const u32* tw,
                       const u32* tw_shoup, const u32* moduli, const u64* barrett, u32 n, u32 log_n, u32 limbs,
                       u32 digit_bits, u32 digits, u32 accumulate, u32 src_limbs, const u32* twin, u32 use_twin,
                       u32 key_sets) {
    decompose_mac_3pass<12>(out0, out1, a, key0, key1, tw, tw_shoup, moduli, barrett, limbs, digit_bits, digits,
                            accumulate, src_limbs, twin, use_twin, key_sets);
}
extern "C" __global__ void __launch_bounds__(512, 1)
decompose_mac_8192_u32(u32* out0, u32* out1, const u32* a, const u32* key0, const u32* key1, const u32* tw,
                       const u32* tw_shoup, const u32* moduli, const u64* barrett, u32 n, u32 log_n, u32 limbs,
                       u32 digit_bits, u32 digits, u32 accumulate, u32 src_limbs, const u32* twin, u32 use_twin,
                       u32 key_sets) {
    decompose_mac_3pass<13>(out0, out1, a, key0, key1, tw, tw_shoup, moduli, barrett, limbs, digit_bits, digits,
                            accumulate, src_limbs, twin, use_twin, key_sets);
}

// The same products split by digit, for batches too small to fill the device
// (FASTQUERY_CUDA_SPLIT_KS): block (row, e) of a grid of polys x limbs by g = src_limbs x digits
// builds digit row e of row (r, l) (or takes the twin's row, as above), transforms it with the
// plain kernel's stages and writes its two products to parts[k][(row g + e) N ..]; then
// sum_digits_u32 adds each row's g parts (to the output, when accumulating). A fused block
// transforms its g digit rows one after another: with one ciphertext (five limbs) the device
// runs five or six blocks; split, g times as many, each one transform long. The parts cost
// 2 g words per output word of memory traffic, which a small batch can afford.
//
// decompose_mac_u32's argument list, the parts in place of the outputs (`accumulate` is the
// sum's, unused here). Launch: grid = (polys x limbs, g), block = min(N/2, 1024) threads,
// dynamic shared memory N * 4 bytes; part0 and part1 hold polys x limbs x g rows.
extern "C" __global__ void decompose_mac_split_u32(u32* part0, u32* part1, const u32* a, const u32* key0,
                                                   const u32* key1, const u32* tw, const u32* tw_shoup,
                                                   const u32* moduli, const u64* barrett, u32 n, u32 log_n,
                                                   u32 limbs, u32 digit_bits, u32 digits, u32 accumulate,
                                                   u32 src_limbs, const u32* twin, u32 use_twin, u32 key_sets) {
    extern __shared__ u32 s[];
    const u32 row = blockIdx.x, e = blockIdx.y, r = row / limbs, l = row % limbs;
    const u32 T = blockDim.x, t = threadIdx.x;
    const u32 p = moduli[l];
    const u64 bar = barrett[l];
    const u32 g = src_limbs * digits;
    const size_t key_at = (size_t)(r % key_sets) * g * limbs * n + ((size_t)e * limbs + l) * n;
    const u32* y0 = key0 + key_at;
    const u32* y1 = key1 + key_at;
    u32* o0 = part0 + ((size_t)row * g + e) * n;
    u32* o1 = part1 + ((size_t)row * g + e) * n;
    // Uniform across the block (e, l and use_twin are).
    const bool own = use_twin && e == l;
    if (own) {
        const u32* own_row = twin + (size_t)row * n;
        for (u32 c = t; c < n; c += T) s[c] = own_row[c];
    } else {
        const u32 mask = (1u << digit_bits) - 1;
        const u32 i = e / digits, shift = (e % digits) * digit_bits;
        const u32* src = a + ((size_t)r * src_limbs + i) * n;
        for (u32 c = t; c < n; c += T) {
            const u32 d = shift < 32 ? (src[c] >> shift) & mask : 0u;
            s[c] = d >= p ? d % p : d;
        }
    }
    __syncthreads();
    if (!own) ntt_forward_shared(s, tw + (size_t)l * n, tw_shoup + (size_t)l * n, p, n, log_n);
    for (u32 c = t; c < n; c += T) {
        const u32 x = s[c];
        o0[c] = mul_mod(x, y0[c], p, bar);
        o1[c] = mul_mod(x, y1[c], p, bar);
    }
}

// The split products on the three-pass transform at 4096 and 8192 (FASTQUERY_CUDA_SPLIT_KS with
// NTT version 3): block (row, e) holds digit row e of row (r, l) in registers (16 words per
// thread, N/16 threads), transforms it as decompose_mac_3pass does (or takes the twin's row,
// already in pass C's layout) and writes its two products, words t*16 .. t*16 + 15 of the
// part, as four 16-byte stores each. The plain split kernel transforms with the shared-memory
// stages of NTT version 1 (14 barriers at 8192, about 90 K warp instructions per row against
// 38.6 K): its blocks took 36 us, against 62 us for a fused block's five rows.
//
// decompose_mac_split_u32's arguments and launch, except block = N/16 threads.
template <u32 LN>
__device__ __forceinline__ void decompose_mac_split_3pass(u32* part0, u32* part1, const u32* a, const u32* key0,
                                                          const u32* key1, const u32* tw, const u32* tw_shoup,
                                                          const u32* moduli, const u64* barrett, u32 limbs,
                                                          u32 digit_bits, u32 digits, u32 src_limbs,
                                                          const u32* twin, u32 use_twin, u32 key_sets) {
    extern __shared__ u32 s[];
    constexpr u32 N = 1u << LN;
    const u32 row = blockIdx.x, e = blockIdx.y, r = row / limbs, l = row % limbs, t = threadIdx.x;
    const u32 p = moduli[l];
    const u64 bar = barrett[l];
    const u32 g = src_limbs * digits;
    u32 x[16];
    // Uniform across the block (e, l and use_twin are): the transform's barriers are reached by
    // every thread or by none.
    if (use_twin && e == l) {
        const uint4* own = (const uint4*)(twin + (size_t)row * N + t * 16);
#pragma unroll
        for (u32 j = 0; j < 4; ++j) {
            const uint4 v = own[j];
            x[4 * j] = v.x;
            x[4 * j + 1] = v.y;
            x[4 * j + 2] = v.z;
            x[4 * j + 3] = v.w;
        }
    } else {
        digit_row_regs<LN>(x, a + ((size_t)r * src_limbs + e / digits) * N, (e % digits) * digit_bits,
                           (1u << digit_bits) - 1, p, t);
        ntt_forward_3pass_regs<LN>(x, s, tw + (size_t)l * N, tw_shoup + (size_t)l * N, p, t);
    }
    const size_t key_at = (size_t)(r % key_sets) * g * limbs * N + ((size_t)e * limbs + l) * N + t * 16;
    const uint4* y0 = (const uint4*)(key0 + key_at);
    const uint4* y1 = (const uint4*)(key1 + key_at);
    uint4* o0 = (uint4*)(part0 + ((size_t)row * g + e) * N + t * 16);
    uint4* o1 = (uint4*)(part1 + ((size_t)row * g + e) * N + t * 16);
#pragma unroll
    for (u32 j = 0; j < 4; ++j) {
        const uint4 k0 = y0[j], k1 = y1[j];
        const u32* v = x + 4 * j;
        o0[j] = make_uint4(mul_mod(v[0], k0.x, p, bar), mul_mod(v[1], k0.y, p, bar), mul_mod(v[2], k0.z, p, bar),
                           mul_mod(v[3], k0.w, p, bar));
        o1[j] = make_uint4(mul_mod(v[0], k1.x, p, bar), mul_mod(v[1], k1.y, p, bar), mul_mod(v[2], k1.z, p, bar),
                           mul_mod(v[3], k1.w, p, bar));
    }
}

extern "C" __global__ void __launch_bounds__(256, 2)
decompose_mac_split_4096_u32(u32* part0, u32* part1, const u32* a, const u32* key0, const u32* key1, const u32* tw,
                             const u32* tw_shoup, const u32* moduli, const u64* barrett, u32 n, u32 log_n,
                             u32 limbs, u32 digit_bits, u32 digits, u32 accumulate, u32 src_limbs, const u32* twin,
                             u32 use_twin, u32 key_sets) {
    decompose_mac_split_3pass<12>(part0, part1, a, key0, key1, tw, tw_shoup, moduli, barrett, limbs, digit_bits,
                                  digits, src_limbs, twin, use_twin, key_sets);
}
extern "C" __global__ void __launch_bounds__(512, 1)
decompose_mac_split_8192_u32(u32* part0, u32* part1, const u32* a, const u32* key0, const u32* key1, const u32* tw,
                             const u32* tw_shoup, const u32* moduli, const u64* barrett, u32 n, u32 log_n,
                             u32 limbs, u32 digit_bits, u32 digits, u32 accumulate, u32 src_limbs, const u32* twin,
                             u32 use_twin, u32 key_sets) {
    decompose_mac_split_3pass<13>(part0, part1, a, key0, key1, tw, tw_shoup, moduli, barrett, limbs, digit_bits,
                                  digits, src_limbs, twin, use_twin, key_sets);
}

// out[k][row] (+)= sum_e parts[k][row g + e] for the rows of the split kernels (total = rows x
// N words; the limb of a row is row % limbs).
extern "C" __global__ void sum_digits_u32(u32* out0, u32* out1, const u32* part0, const u32* part1,
                                          const u32* moduli, u32 log_n, u32 limbs, u32 g, u32 accumulate,
                                          u64 total) {
    GRID_STRIDE(total) {
        const u64 row = idx >> log_n, c = idx & ((1ull << log_n) - 1);
        const u32 p = moduli[row % limbs];
        u32 acc0 = accumulate ? out0[idx] : 0u, acc1 = accumulate ? out1[idx] : 0u;
        for (u32 e = 0; e < g; ++e) {
            const u64 at = ((row * g + e) << log_n) | c;
            acc0 = add_mod(acc0, part0[at], p);
            acc1 = add_mod(acc1, part1[at], p);
        }
        out0[idx] = acc0;
        out1[idx] = acc1;
    }
}
