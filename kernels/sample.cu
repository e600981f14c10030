// Seeded uniform expansion on the device: exactly fastquery_backend::host::expand_uniform_into
// (see Backend::expand_seeds). One block per seed. The stream is ChaCha20 keyed by the seed
// (block counter from 0, stream 0: rand_chacha's ChaCha20Rng), each thread computing one
// 64-byte block of every chunk of 16 x blockDim words. Rejection keeps a word (masked to the
// prime's bit length) when it is below the prime, in stream order, limb after limb; a block-wide
// prefix sum over the threads' counts gives every kept word its place, and where a limb fills up
// inside a chunk the rest of the chunk is judged again against the next limb's prime.
//
// Launch: grid = seeds, block = T threads (a power of two), dynamic shared memory (2T + 1) * 4.

__device__ __forceinline__ u32 rotl32(u32 x, u32 r) { return (x << r) | (x >> (32 - r)); }

#define CHACHA_QR(a, b, c, d)                 \
    a += b; d ^= a; d = rotl32(d, 16);        \
    c += d; b ^= c; b = rotl32(b, 12);        \
    a += b; d ^= a; d = rotl32(d, 8);         \
    c += d; b ^= c; b = rotl32(b, 7);

// Block `counter` of stream `stream` of the ChaCha20 generator keyed by `key` (RFC 7539 rounds,
// 64-bit counter in words 12-13, 64-bit stream id in words 14-15: rand_chacha's set_stream).
__device__ __forceinline__ void chacha20_block(const u32 key[8], u64 counter, u64 stream, u32 out[16]) {
    u32 x[16] = {0x61707865u, 0x3320646eu, 0x79622d32u, 0x6b206574u,
                 key[0], key[1], key[2], key[3], key[4], key[5], key[6], key[7],
                 (u32)counter, (u32)(counter >> 32), (u32)stream, (u32)(stream >> 32)};
    u32 in[16];
#pragma unroll
    for (int i = 0; i < 16; ++i) in[i] = x[i];
#pragma unroll
    for (int i = 0; i < 10; ++i) {
        CHACHA_QR(x[0], x[4], x[8], x[12]);
        CHACHA_QR(x[1], x[5], x[9], x[13]);
        CHACHA_QR(x[2], x[6], x[10], x[14]);
        CHACHA_QR(x[3], x[7], x[11], x[15]);
        CHACHA_QR(x[0], x[5], x[10], x[15]);
        CHACHA_QR(x[1], x[6], x[11], x[12]);
        CHACHA_QR(x[2], x[7], x[8], x[13]);
        CHACHA_QR(x[3], x[4], x[9], x[14]);
    }
#pragma unroll
    for (int i = 0; i < 16; ++i) out[i] = x[i] + in[i];
}

// out: seeds x (polys x limbs) rows of N words; seeds: 8 little-endian words per seed.
extern "C" __global__ void expand_seeds_u32(u32* out, const u32* seeds, const u32* moduli, u32 log_n, u32 limbs,
                                            u32 polys) {
    extern __shared__ u32 s[];
    const u32 T = blockDim.x, t = threadIdx.x;
    const u32 n = 1u << log_n;
    const u32 rows = polys * limbs;
    const u32 chunk = 16 * T;
    u32 key[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) key[i] = seeds[(size_t)blockIdx.x * 8 + i];
    u32* dst = out + (size_t)blockIdx.x * rows * n;
    u32 row = 0, filled = 0;
    for (u64 round = 0; row < rows; ++round) {
        u32 w[16];
        chacha20_block(key, round * T + t, 0, w);
        u32 start = 0;  // the first word of this chunk not yet consumed
        while (row < rows && start < chunk) {
            const u32 p = moduli[row % limbs];
            const u32 mask = 0xffffffffu >> __clz((int)p);
            u32 cnt = 0;
#pragma unroll
            for (u32 k = 0; k < 16; ++k) cnt += (t * 16 + k >= start && (w[k] & mask) < p) ? 1u : 0u;
            // Inclusive prefix sum of the counts (Hillis-Steele, two buffers).
            u32* a = s;
            u32* b = s + T;
            a[t] = cnt;
            __syncthreads();
            for (u32 off = 1; off < T; off <<= 1) {
                b[t] = a[t] + (t >= off ? a[t - off] : 0u);
                __syncthreads();
                u32* c = a;
                a = b;
                b = c;
            }
            const u32 total = a[T - 1];
            u32 rank = a[t] - cnt;
            const u32 need = n - filled;
#pragma unroll
            for (u32 k = 0; k < 16; ++k) {
                const u32 pos = t * 16 + k;
                const u32 v = w[k] & mask;
                if (pos >= start && v < p) {
                    if (rank < need) {
                        dst[(size_t)row * n + filled + rank] = v;
                        if (rank == need - 1) s[2 * T] = pos;
                    }
                    ++rank;
                }
            }
            __syncthreads();
            if (total < need) {
                filled += total;
                start = chunk;
            } else {
                start = s[2 * T] + 1;
                ++row;
                filled = 0;
            }
            __syncthreads();
        }
    }
}

// The noise of public-key encryptions of zero: exactly fastquery_backend::host::zero_noise_into.
// Counter-based: coefficient j of seed s is half j % 2 of block j / 2 of the seed's stream, so
// one thread computes one block and writes two coefficients (u ternary from four words as a
// 128-bit integer mod 3, using 2^32 = 1 mod 3; e0 and e1 centred binomial from two 64-bit words)
// into every limb.
//
// Launch: grid = (ceil(N / 2 / block), seeds in this launch), block = any; seed0 = the first
// seed of the launch (grids hold at most 65535 seeds).
extern "C" __global__ void zero_noise_u32(u32* u, u32* e0, u32* e1, const u32* seeds, const u32* moduli, u32 log_n,
                                          u32 limbs, u32 eta, u32 seed0) {
    const u32 n = 1u << log_n;
    const u32 pair = blockIdx.x * blockDim.x + threadIdx.x;
    if (pair >= n / 2) return;
    const u32 seed = seed0 + blockIdx.y;
    u32 key[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) key[i] = seeds[(size_t)seed * 8 + i];
    u32 w[16];
    chacha20_block(key, pair, 0, w);
    const u64 low = (1ull << eta) - 1;
    const size_t base = (size_t)seed * limbs * n;
#pragma unroll
    for (u32 h = 0; h < 2; ++h) {
        const u32* x = w + 8 * h;
        const u32 t = (u32)(((u64)x[0] + x[1] + x[2] + x[3]) % 3);  // u = t - 1
        const u64 y0 = (u64)x[4] | ((u64)x[5] << 32), y1 = (u64)x[6] | ((u64)x[7] << 32);
        const int a = __popcll(y0 & low) - __popcll((y0 >> eta) & low);
        const int b = __popcll(y1 & low) - __popcll((y1 >> eta) & low);
        const size_t j = 2 * (size_t)pair + h;
        for (u32 l = 0; l < limbs; ++l) {
            const u32 p = moduli[l];
            const size_t at = base + (size_t)l * n + j;
            u[at] = t == 0 ? p - 1 : t - 1;
            e0[at] = a < 0 ? p - (u32)(-a) : (u32)a;
            e1[at] = b < 0 ? p - (u32)(-b) : (u32)b;
        }
    }
}

// x mod p for x = hi 2^64 + lo, 32 bits at a time (a few per kept coefficient).
__device__ __forceinline__ u32 reduce_u128_slow(u64 hi, u64 lo, u32 p) {
    u64 r = (hi >> 32) % p;
    r = ((r << 32) | (hi & 0xffffffffull)) % p;
    r = ((r << 32) | (lo >> 32)) % p;
    return (u32)(((r << 32) | (lo & 0xffffffffull)) % p);
}

// The first of a block's four 128-bit candidates (words 4c, 4c+1 the high u64, 4c+2, 4c+3 the
// low, masked) below the width; false if none is.
__device__ __forceinline__ bool flood_candidate(const u32 w[16], u64 m_hi, u64 m_lo, u64 w_hi, u64 w_lo, u64& x_hi,
                                                u64& x_lo) {
#pragma unroll
    for (int c = 0; c < 4; ++c) {
        const u64 h = ((u64)w[4 * c] | ((u64)w[4 * c + 1] << 32)) & m_hi;
        const u64 l = ((u64)w[4 * c + 2] | ((u64)w[4 * c + 3] << 32)) & m_lo;
        if (h < w_hi || (h == w_hi && l < w_lo)) {
            x_hi = h;
            x_lo = l;
            return true;
        }
    }
    return false;
}

// A finish's flooding and masks: exactly fastquery_backend::host::flood_mask_add (see
// host::Flooding). One thread per kept coefficient g of all ciphertexts: its ciphertext is the
// last ct with starts[ct] <= g (a binary search over cts + 1 offsets), k = g - starts[ct] its
// index there; its flooding from block k of stream 3 of the ciphertext's seed (blocks k 2^32 + i
// of stream 4 where all four candidates are rejected), its mask the k-th u64 of stream 1 (block
// k / 8), and flooding + round(q (-r mod t) / t) is added in every limb at its position.
//
// bound = bound_hi 2^64 + bound_lo < 2^127; floor_res[l] = floor(q / t) mod p_l; q_mod_t < t.
// Launch: any grid and block (grid-stride over count kept coefficients).
extern "C" __global__ void flood_mask_u32(u32* a, const u32* seeds, const u32* pos, const u32* starts,
                                          const u32* moduli, const u32* floor_res, u32 log_n, u32 limbs, u32 cts,
                                          u32 count, u64 bound_lo, u64 bound_hi, u64 q_mod_t, u32 plain_bits) {
    // width = 2 bound + 1 and the mask of its bit length.
    const u64 w_lo = (bound_lo << 1) | 1ull, w_hi = (bound_hi << 1) | (bound_lo >> 63);
    const u32 bits = w_hi ? 128u - (u32)__clzll((long long)w_hi) : 64u - (u32)__clzll((long long)w_lo);
    const u64 m_hi = bits >= 128 ? ~0ull : (bits > 64 ? (1ull << (bits - 64)) - 1 : 0ull);
    const u64 m_lo = bits >= 64 ? ~0ull : (1ull << bits) - 1;
    const u64 t_mask = plain_bits >= 64 ? ~0ull : (1ull << plain_bits) - 1;
    for (u32 g = blockIdx.x * blockDim.x + threadIdx.x; g < count; g += gridDim.x * blockDim.x) {
        u32 lo = 0, hi = cts;
        while (hi - lo > 1) {
            const u32 mid = (lo + hi) / 2;
            if (starts[mid] <= g) lo = mid; else hi = mid;
        }
        const u32 ct = lo, k = g - starts[ct];
        u32 key[8];
#pragma unroll
        for (int i = 0; i < 8; ++i) key[i] = seeds[(size_t)ct * 8 + i];
        u32 w[16];
        chacha20_block(key, k, 3, w);
        u64 x_hi = 0, x_lo = 0;
        for (u64 i = 0; !flood_candidate(w, m_hi, m_lo, w_hi, w_lo, x_hi, x_lo); ++i) {
            chacha20_block(key, ((u64)k << 32) + i, 4, w);
        }
        // flood = x - bound as a sign and a magnitude.
        const bool neg = x_hi < bound_hi || (x_hi == bound_hi && x_lo < bound_lo);
        u64 v_hi, v_lo;
        if (neg) {
            v_lo = bound_lo - x_lo;
            v_hi = bound_hi - x_hi - (bound_lo < x_lo);
        } else {
            v_lo = x_lo - bound_lo;
            v_hi = x_hi - bound_hi - (x_lo < bound_lo);
        }
        chacha20_block(key, k / 8, 1, w);
        const u64 r = (u64)w[2 * (k % 8)] | ((u64)w[2 * (k % 8) + 1] << 32);
        const u64 m = (0ull - r) & t_mask;
        // carry = (q_mod_t m + 2^(plain_bits - 1)) >> plain_bits, below 2^64.
        u64 p_lo = q_mod_t * m, p_hi = __umul64hi(q_mod_t, m);
        const u64 half = 1ull << (plain_bits - 1);
        p_lo += half;
        p_hi += p_lo < half ? 1ull : 0ull;
        const u64 carry = plain_bits >= 64 ? p_hi : (p_hi << (64 - plain_bits)) | (p_lo >> plain_bits);
        const u32 j = pos[g];
        for (u32 l = 0; l < limbs; ++l) {
            const u32 p = moduli[l];
            u32 f = reduce_u128_slow(v_hi, v_lo, p);
            if (neg) f = neg_mod(f, p);
            const u32 enc = add_mod((u32)(((u64)floor_res[l] * (m % p)) % p), (u32)(carry % p), p);
            const size_t at = (((size_t)ct * limbs + l) << log_n) + j;
            a[at] = add_mod(a[at], add_mod(f, enc, p), p);
        }
    }
}

// out[k] = a[idx[k]]: single words brought together for the host (a finish's kept coefficients);
// Ring checks every index is below the buffer's words. Launch: any grid and block (grid-stride).
extern "C" __global__ void gather_words_u32(u32* out, const u32* a, const u32* idx, u32 count) {
    for (u32 k = blockIdx.x * blockDim.x + threadIdx.x; k < count; k += gridDim.x * blockDim.x) {
        out[k] = a[idx[k]];
    }
}
