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
}  // namespace fq_emu

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
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
inline int __clz(int x) {
    return x == 0 ? 32 : __builtin_clz((unsigned)x);
}
template <class T>
inline T min(T a, T b) {
    return b < a ? b : a;
}
template <class T>
inline T max(T a, T b) {
    return a < b ? b : a;
}
