// Modular arithmetic on the engine's word: primes p < 2^31, every value fully reduced.
// These mirror fastquery_math::Modulus operation for operation, so results are bit-identical.
typedef unsigned int u32;
typedef unsigned long long u64;

// The conditional subtraction of s < 2p: min(s, s - p) as unsigned words is s - p when s >= p
// and s otherwise (s - p wraps above s). One VIADDMNMX on sm_90 (IADD and IMNMX on sm_80)
// instead of a compare, a select and a subtraction. FQ_SELECT_REDUCE (FASTQUERY_CUDA_MINMAX=0,
// for A/B runs) compiles the compare-and-select form used before 2026-12-01; both give the
// same words.
__device__ __forceinline__ u32 csub(u32 s, u32 p) {
#ifdef FQ_SELECT_REDUCE
    return s >= p ? s - p : s;
#else
    return min(s, s - p);
#endif
}

__device__ __forceinline__ u32 add_mod(u32 a, u32 b, u32 p) {
    return csub(a + b, p);
}

// a - b wraps above p exactly when a < b, and then a - b + p is the smaller one.
__device__ __forceinline__ u32 sub_mod(u32 a, u32 b, u32 p) {
#ifdef FQ_SELECT_REDUCE
    return a >= b ? a - b : a + p - b;
#else
    const u32 d = a - b;
    return min(d, d + p);
#endif
}

__device__ __forceinline__ u32 neg_mod(u32 a, u32 p) {
    return a == 0 ? 0 : p - a;
}

// a * w mod p for a fixed w with ws = floor(w * 2^32 / p) (Shoup); any a < 2^32.
__device__ __forceinline__ u32 mul_shoup(u32 a, u32 w, u32 ws, u32 p) {
    u32 q = __umulhi(a, ws);
    u32 r = a * w - q * p;  // in [0, 2p)
    return csub(r, p);
}

// x mod p for any 64-bit x, with barrett = floor(2^64 / p): the estimated quotient is at most
// one too small, so one correction suffices.
__device__ __forceinline__ u32 reduce_u64(u64 x, u32 p, u64 barrett) {
    u64 q = __umul64hi(x, barrett);
    u64 r = x - q * (u64)p;
    return (u32)(r >= (u64)p ? r - (u64)p : r);
}

__device__ __forceinline__ u32 mul_mod(u32 a, u32 b, u32 p, u64 barrett) {
    return reduce_u64((u64)a * (u64)b, p, barrett);
}
