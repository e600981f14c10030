// The CUDA C++ that kernels/*.cu use, for a host C++ compiler: execution-space qualifiers
// vanish, the built-in indices read the emulator's current block and thread, __syncthreads
// yields to the block's other threads (fibers), and the integer intrinsics are written out.
// Only what the kernels use is here; anything else fails to compile, which is the point.
#pragma once

#include <cstddef>
#include <cstdint>

namespace fq_emu {
struct Dim3 {
    unsigned x, y, z;
};
extern Dim3 block_idx, block_dim, grid_dim;
const Dim3& thread_idx();
void sync_threads();
// One warp's mma.sync.aligned.m16n8k32.row.col.s32.u8.u8.s32 (fragment layout as in the PTX ISA):
// a collective of the warp's 32 threads, which exchange their fragments at two barriers. The
// whole block must reach it together, as it reaches __syncthreads.
void warp_mma_m16n8k32_u8(unsigned* d, const unsigned* a, const unsigned* b, const unsigned* c);
// __shfl_xor_sync with a full mask: every lane sends v and receives lane ^ lane_mask's; a
// collective like the one above (two barriers, the whole block reaches it together).
unsigned warp_shfl_xor(unsigned v, unsigned lane_mask);
}  // namespace fq_emu

// Kernels test this to use the emulator's warp collectives instead of inline PTX.
#define FQ_EMULATOR 1

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
// Dynamic shared memory is the emulator's one array `s` (kernels declare `extern __shared__
// u32 s[]`); blocks run one at a time, so one array serves every block.
#define __shared__
#define threadIdx (fq_emu::thread_idx())
#define blockIdx (fq_emu::block_idx)
#define blockDim (fq_emu::block_dim)
#define gridDim (fq_emu::grid_dim)
#define __syncthreads() fq_emu::sync_threads()

inline unsigned __umulhi(unsigned a, unsigned b) {
    return (unsigned)(((unsigned long long)a * b) >> 32);
}
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
    return (unsigned long long)(((unsigned __int128)a * b) >> 64);
}
struct uint4 {
    unsigned x, y, z, w;
};
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) {
    return uint4{x, y, z, w};
}
// Byte i of the result is byte (s >> 4i) & 7 of the eight bytes y:x (x the low four).
inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
    const unsigned long long v = ((unsigned long long)y << 32) | x;
    unsigned r = 0;
    for (int i = 0; i < 4; ++i) r |= (unsigned)((v >> (8 * ((s >> (4 * i)) & 7))) & 0xff) << (8 * i);
    return r;
}
// Only the full-warp form the kernels use; another mask is an emulator error at the launch.
inline unsigned __shfl_xor_sync(unsigned mask, unsigned v, int lane_mask) {
    return mask == 0xffffffffu ? fq_emu::warp_shfl_xor(v, (unsigned)lane_mask) : fq_emu::warp_shfl_xor(v, 64);
}
inline int __popcll(unsigned long long x) {
    return __builtin_popcountll(x);
}
inline int __clz(int x) {
    return x == 0 ? 32 : __builtin_clz((unsigned)x);
}
inline int __clzll(long long x) {
    return x == 0 ? 64 : __builtin_clzll((unsigned long long)x);
}
template <class T>
inline T min(T a, T b) {
    return b < a ? b : a;
}
template <class T>
inline T max(T a, T b) {
    return a < b ? b : a;
}
