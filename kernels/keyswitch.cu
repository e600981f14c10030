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
// Launch: grid = polys x limbs, block = min(N/2, 1024) threads, dynamic shared memory
// 3 N * 4 bytes (the row and two accumulators: N <= 16384 on an H100).

extern "C" __global__ void decompose_mac_u32(u32* out0, u32* out1, const u32* a, const u32* key0, const u32* key1,
                                             const u32* tw, const u32* tw_shoup, const u32* moduli,
                                             const u64* barrett, u32 n, u32 log_n, u32 limbs, u32 digit_bits,
                                             u32 digits, u32 accumulate) {
    extern __shared__ u32 s[];
    u32* acc0 = s + n;
    u32* acc1 = s + 2 * n;
    const u32 row = blockIdx.x, r = row / limbs, l = row % limbs;
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
    const u32 g = limbs * digits;
    for (u32 e = 0; e < g; ++e) {
        const u32 i = e / digits, shift = (e % digits) * digit_bits;
        const u32* src = a + ((size_t)r * limbs + i) * n;
        for (u32 c = t; c < n; c += T) {
            const u32 d = shift < 32 ? (src[c] >> shift) & mask : 0u;
            s[c] = d >= p ? d % p : d;
        }
        __syncthreads();
        ntt_forward_shared(s, w, ws, p, n, log_n);
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
