// Galois automorphisms (a signed gather within every row) and the gadget decomposition of key
// switching, on the device, so that packing never round-trips through the host. Layouts are
// the backend's ([poly][limb][coefficient]); see Backend::gather_signed and Backend::decompose.
// Same arithmetic as the host reference (fastquery_backend::host), so the same words.

#define NEGATE 0x80000000u

// out[row][k] = +-a[row][idx[k] & ~NEGATE], negated mod the row's prime where bit 31 is set.
extern "C" __global__ void gather_signed_u32(u32* out, const u32* a, const u32* idx, const u32* moduli,
                                             u32 log_n, u32 limbs, u64 total) {
    const u32 n = 1u << log_n;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (u64)gridDim.x * blockDim.x) {
        const u64 row = i >> log_n;
        const u32 k = (u32)(i & (n - 1));
        const u32 g = idx[k];
        const u32 v = a[(row << log_n) + (g & ~NEGATE)];
        out[i] = (g & NEGATE) ? neg_mod(v, moduli[row % limbs]) : v;
    }
}

// Output word i is coefficient k of limb l of digit j of source row r, ordered [r][j][l][k]:
// the j-th digit_bits-bit digit of a[r][k], reduced mod p_l.
extern "C" __global__ void decompose_u32(u32* out, const u32* a, const u32* moduli, u32 log_n, u32 limbs,
                                         u32 digit_bits, u32 digits, u64 total) {
    const u32 n = 1u << log_n;
    const u32 mask = (1u << digit_bits) - 1;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (u64)gridDim.x * blockDim.x) {
        const u32 k = (u32)(i & (n - 1));
        u64 rest = i >> log_n;
        const u32 l = (u32)(rest % limbs);
        rest /= limbs;
        const u32 j = (u32)(rest % digits);
        const u64 r = rest / digits;
        const u32 v = a[(r << log_n) + k];
        const u32 shift = j * digit_bits;
        const u32 d = shift < 32 ? (v >> shift) & mask : 0;
        const u32 p = moduli[l];
        out[i] = d >= p ? d % p : d;
    }
}
