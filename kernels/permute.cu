// Galois automorphisms (a signed gather within every row) and the gadget decomposition of key
// switching, on the device, so that packing never round-trips through the host. Layouts are
// the backend's ([poly][limb][coefficient]); see Backend::gather_signed and Backend::decompose.
// Same arithmetic as the host reference (fastquery_backend::host), so the same words.

#define NEGATE 0x80000000u

// Word k of a gathered row: +-row[g & ~NEGATE], negated mod p where bit 31 of g is set.
__device__ __forceinline__ u32 gather_word(const u32* row, u32 g, u32 p) {
    const u32 v = row[g & ~NEGATE];
    return (g & NEGATE) ? neg_mod(v, p) : v;
}

// out[row][k] = +-a[at_row + row][idx[k] & ~NEGATE] for `total` = rows x N words: the whole
// buffer (at_row = 0), or the rows of a chunk of the expansion (kernels/expand.cu).
extern "C" __global__ void gather_signed_u32(u32* out, const u32* a, const u32* idx, const u32* moduli,
                                             u32 log_n, u32 limbs, u64 at_row, u64 total) {
    const u32 n = 1u << log_n;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (u64)gridDim.x * blockDim.x) {
        const u64 row = i >> log_n;
        const u32 k = (u32)(i & (n - 1));
        out[i] = gather_word(a + ((at_row + row) << log_n), idx[k], moduli[(at_row + row) % limbs]);
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
