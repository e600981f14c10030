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

// Block `counter` of the ChaCha20 stream of `key` (RFC 7539 rounds, 64-bit counter in words
// 12-13, zero stream id in words 14-15).
__device__ __forceinline__ void chacha20_block(const u32 key[8], u64 counter, u32 out[16]) {
    u32 x[16] = {0x61707865u, 0x3320646eu, 0x79622d32u, 0x6b206574u,
                 key[0], key[1], key[2], key[3], key[4], key[5], key[6], key[7],
                 (u32)counter, (u32)(counter >> 32), 0u, 0u};
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
        chacha20_block(key, round * T + t, w);
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
