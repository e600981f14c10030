// A CPU emulator for the kernels of kernels/*.cu, so that the CUDA backend's own code (its
// launches, grids, argument lists and buffer handling) and every kernel's arithmetic are
// tested on machines without a GPU (CI). Built only with the crate's `emulator` feature.
//
// * Each launch runs its blocks one after another. Kernels without barriers run their threads
//   one after another; kernels with __syncthreads run every thread of a block as a fiber
//   (ucontext), and a barrier switches to the next thread, so a block passes a barrier only
//   when all its live threads reached it, as on the GPU.
// * The launch is checked as the driver would: the argument list against the kernel's C++
//   signature (count, pointer or scalar, constness, width), the block size, the grid and the
//   dynamic shared memory against an H100's limits.
// * Shared memory is filled with a poison word before every block, so a kernel that reads
//   shared memory it did not write gives wrong words instead of passing by luck.
#include "cuda_shim.h"

#include <ucontext.h>

#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

// Opt-in dynamic shared memory per block of an H100 (and H200): 227 KiB.
static constexpr size_t SMEM_BYTES = 232448;
static constexpr unsigned POISON = 0xDEADBEEFu;
unsigned int s[SMEM_BYTES / 4];

#include "../../../kernels/modarith.cuh"
#include "../../../kernels/ntt.cu"
#include "../../../kernels/elementwise.cu"
#include "../../../kernels/mac.cu"
#include "../../../kernels/modswitch.cu"
#include "../../../kernels/permute.cu"
#include "../../../kernels/sample.cu"
#include "../../../kernels/keyswitch.cu"
#include "../../../kernels/expand.cu"
#include "../../../kernels/mma.cu"

// A deliberately racy kernel for the emulator's own tests: every thread writes its index into
// word 0, so the result depends on which thread runs last.
extern "C" __global__ void emu_selftest_race_u32(u32* a) { a[0] = blockIdx.x * blockDim.x + threadIdx.x; }

namespace fq_emu {

Dim3 block_idx, block_dim, grid_dim;

// One launch argument, as the Rust side passes it (repr(C) there).
struct Arg {
    uint64_t value;  // a host address, or a scalar's bits
    uint32_t kind;   // 1: mutable pointer, 2: const pointer, 3: scalar
    uint32_t size;   // bytes of the pointee, or of the scalar
};
enum : uint32_t { PTR_MUT = 1, PTR_CONST = 2, SCALAR = 3 };

template <class P>
bool arg_matches(const Arg& a) {
    if constexpr (std::is_pointer_v<P>) {
        using T = std::remove_pointer_t<P>;
        const uint32_t kind = std::is_const_v<T> ? PTR_CONST : PTR_MUT;
        return a.kind == kind && a.size == sizeof(T);
    } else {
        return a.kind == SCALAR && a.size == sizeof(P);
    }
}

template <class P>
P convert(const Arg& a) {
    if constexpr (std::is_pointer_v<P>) {
        return reinterpret_cast<P>(static_cast<uintptr_t>(a.value));
    } else {
        return static_cast<P>(a.value);
    }
}

template <class... P, size_t... I>
bool check_with(const Arg* args, std::string& err, std::index_sequence<I...>) {
    const bool ok[] = {true, arg_matches<P>(args[I])...};
    for (size_t i = 0; i < sizeof...(P); ++i) {
        if (!ok[i + 1]) {
            err = "argument " + std::to_string(i) + " is not of the parameter's kind (pointer, const, width)";
            return false;
        }
    }
    return true;
}

template <class... P>
bool check(void (*)(P...), const Arg* args, uint32_t n, std::string& err) {
    if (n != sizeof...(P)) {
        err = "takes " + std::to_string(sizeof...(P)) + " arguments, launched with " + std::to_string(n);
        return false;
    }
    return check_with<P...>(args, err, std::index_sequence_for<P...>{});
}

template <class... P, size_t... I>
void call_with(void (*f)(P...), const Arg* args, std::index_sequence<I...>) {
    f(convert<P>(args[I])...);
}

template <class... P>
void call(void (*f)(P...), const Arg* args) {
    call_with(f, args, std::index_sequence_for<P...>{});
}

struct Kernel {
    const char* name;
    bool barriers;
    bool (*check)(const Arg*, uint32_t, std::string&);
    void (*run)(const Arg*);
};

#define FQ_KERNEL(k, barriers)                                                                  \
    Kernel {                                                                                    \
        #k, barriers, [](const Arg* a, uint32_t n, std::string& e) { return check(&k, a, n, e); }, \
            [](const Arg* a) { call(&k, a); }                                                   \
    }

static const Kernel KERNELS[] = {
    FQ_KERNEL(ntt_forward_u32, true),
    FQ_KERNEL(ntt_inverse_u32, true),
    FQ_KERNEL(ntt_forward_reg16_u32, true),
    FQ_KERNEL(ntt_inverse_reg16_u32, true),
    FQ_KERNEL(ntt_forward_4096_u32, true),
    FQ_KERNEL(ntt_inverse_4096_u32, true),
    FQ_KERNEL(ntt_forward_8192_u32, true),
    FQ_KERNEL(ntt_inverse_8192_u32, true),
    FQ_KERNEL(add_u32, false),
    FQ_KERNEL(sub_u32, false),
    FQ_KERNEL(difference_u32, false),
    FQ_KERNEL(copy_polys_u32, false),
    FQ_KERNEL(neg_u32, false),
    FQ_KERNEL(mul_u32, false),
    FQ_KERNEL(scalar_mul_u32, false),
    FQ_KERNEL(monomial_mul_u32, false),
    FQ_KERNEL(mac_ntt_u32, false),
    FQ_KERNEL(mac_ntt_r8c4_u32, false),
    FQ_KERNEL(mac_ntt_r2c8_u32, false),
    FQ_KERNEL(mac_ntt_r2c8_cols_u32, false),
    FQ_KERNEL(mac_ntt_mma_u32, true),
    FQ_KERNEL(mod_switch_down_u32, false),
    FQ_KERNEL(gather_signed_u32, false),
    FQ_KERNEL(decompose_u32, false),
    FQ_KERNEL(expand_seeds_u32, true),
    FQ_KERNEL(zero_noise_u32, false),
    FQ_KERNEL(flood_mask_u32, false),
    FQ_KERNEL(gather_words_u32, false),
    FQ_KERNEL(decompose_mac_u32, true),
    FQ_KERNEL(decompose_mac_4096_u32, true),
    FQ_KERNEL(decompose_mac_8192_u32, true),
    FQ_KERNEL(decompose_mac_split_u32, true),
    FQ_KERNEL(decompose_mac_split_4096_u32, true),
    FQ_KERNEL(decompose_mac_split_8192_u32, true),
    FQ_KERNEL(sum_digits_u32, false),
    FQ_KERNEL(expand_combine_u32, false),
    FQ_KERNEL(emu_selftest_race_u32, false),
};

// ---- threads
// A barrier is a switch between stacks. On x86-64 the switch saves the callee-saved registers
// and the stack pointer (fq_switch below): a few nanoseconds, where swapcontext also makes a
// signal-mask system call per switch (it made the emulated NTT five times slower). Elsewhere
// ucontext does it.
static constexpr size_t STACK_BYTES = 64 * 1024;
static bool fiber_mode = false;
static bool stray_barrier = false;
static Dim3 direct_tid;
static std::vector<std::unique_ptr<char[]>> stacks;
static std::vector<Dim3> tids;
static std::vector<char> finished;
static size_t current = 0;
static const Kernel* running = nullptr;
// Run threads and blocks last to first (the race check runs every launch both ways).
static bool reverse_order = false;
static const Arg* running_args = nullptr;

const Dim3& thread_idx() { return fiber_mode ? tids[current] : direct_tid; }

#if defined(__x86_64__)
extern "C" void fq_switch(void** save_sp, void* load_sp);
asm(R"(
    .text
    .globl fq_switch
    .type fq_switch, @function
fq_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size fq_switch, .-fq_switch
)");

static void* scheduler_sp = nullptr;
static std::vector<void*> fiber_sp;

static void to_scheduler() { fq_switch(&fiber_sp[current], scheduler_sp); }
static void to_fiber(size_t t) { fq_switch(&scheduler_sp, fiber_sp[t]); }

[[noreturn]] static void fiber_entry() {
    running->run(running_args);
    finished[current] = 1;
    to_scheduler();
    __builtin_unreachable();
}

static void start_fiber(size_t t) {
    // The stack as fq_switch leaves it: six callee-saved registers, then the return address
    // (fiber_entry), then a pad word so that fiber_entry starts with the ABI's alignment.
    // Tops staggered by a cache line per thread: equally aligned tops would all fall into the
    // same cache sets and evict each other at every switch.
    uintptr_t top = reinterpret_cast<uintptr_t>(stacks[t].get() + STACK_BYTES - (t % 64) * 64) & ~uintptr_t(15);
    void** sp = reinterpret_cast<void**>(top) - 8;
    for (int i = 0; i < 6; ++i) sp[i] = nullptr;
    sp[6] = reinterpret_cast<void*>(&fiber_entry);
    sp[7] = nullptr;
    fiber_sp[t] = sp;
}
#else
static ucontext_t scheduler;
static std::vector<ucontext_t> fibers;

static void to_scheduler() { swapcontext(&fibers[current], &scheduler); }
static void to_fiber(size_t t) { swapcontext(&scheduler, &fibers[t]); }

static void fiber_main() {
    running->run(running_args);
    finished[current] = 1;
}

static void start_fiber(size_t t) {
    getcontext(&fibers[t]);
    fibers[t].uc_stack.ss_sp = stacks[t].get();
    fibers[t].uc_stack.ss_size = STACK_BYTES;
    fibers[t].uc_link = &scheduler;
    makecontext(&fibers[t], fiber_main, 0);
}
#endif

void sync_threads() {
    if (!fiber_mode) {
        // A kernel registered without barriers used one: its threads ran one by one, so the
        // result is wrong. Reported as a launch error after the launch.
        stray_barrier = true;
        return;
    }
    to_scheduler();
}

static Dim3 unflatten(size_t i, const Dim3& d) {
    return Dim3{(unsigned)(i % d.x), (unsigned)(i / d.x % d.y), (unsigned)(i / d.x / d.y)};
}

// ---- warp matrix instructions
// Each thread leaves its fragments (a: 4 words, b: 2, c: 4) at a barrier; after it, the first
// thread of the warp to run computes the warp's 16 x 8 result for all 32 lanes, and each thread
// takes its four words; a second barrier keeps the next instruction's fragments from
// overwriting these before every lane has read them.
static constexpr size_t MMA_IN = 10;
static std::vector<uint32_t> mma_in, mma_out;
static std::vector<char> mma_computed;
static bool bad_mma = false;

static void mma_warp(size_t base) {
    // Rows of a and columns of b as contiguous k runs: the sums are dot products of 32 bytes.
    uint32_t a[16][32], bt[8][32];
    for (size_t lane = 0; lane < 32; ++lane) {
        const uint32_t* f = &mma_in[(base + lane) * MMA_IN];
        const size_t g = lane / 4, t = lane % 4;
        for (size_t byte = 0; byte < 4; ++byte) {
            const size_t k = 4 * t + byte;
            a[g][k] = (f[0] >> (8 * byte)) & 0xff;
            a[g + 8][k] = (f[1] >> (8 * byte)) & 0xff;
            a[g][k + 16] = (f[2] >> (8 * byte)) & 0xff;
            a[g + 8][k + 16] = (f[3] >> (8 * byte)) & 0xff;
            bt[g][k] = (f[4] >> (8 * byte)) & 0xff;
            bt[g][k + 16] = (f[5] >> (8 * byte)) & 0xff;
        }
    }
    for (size_t lane = 0; lane < 32; ++lane) {
        const uint32_t* c = &mma_in[(base + lane) * MMA_IN + 6];
        const size_t g = lane / 4, t = lane % 4;
        for (size_t e = 0; e < 4; ++e) {
            const uint32_t* x = a[g + 8 * (e / 2)];
            const uint32_t* y = bt[2 * t + e % 2];
            uint32_t sum = c[e];  // s32 arithmetic wraps as u32 does
            for (size_t k = 0; k < 32; ++k) sum += x[k] * y[k];
            mma_out[(base + lane) * 4 + e] = sum;
        }
    }
}

void warp_mma_m16n8k32_u8(unsigned* d, const unsigned* a, const unsigned* b, const unsigned* c) {
    const size_t threads = (size_t)block_dim.x * block_dim.y * block_dim.z;
    if (!fiber_mode || threads % 32 != 0) {
        bad_mma = true;
        return;
    }
    const size_t t = current, warp = t / 32;
    uint32_t* in = &mma_in[t * MMA_IN];
    std::memcpy(in, a, 16);
    std::memcpy(in + 4, b, 8);
    std::memcpy(in + 6, c, 16);
    mma_computed[warp] = 0;
    sync_threads();
    if (!mma_computed[warp]) {
        mma_warp(warp * 32);
        mma_computed[warp] = 1;
    }
    std::memcpy(d, &mma_out[t * 4], 16);
    sync_threads();
}

// ---- warp shuffles
// Each thread leaves its word at a barrier and reads its partner's after it; the second
// barrier keeps the next shuffle from overwriting a word before its partner has read it.
static std::vector<uint32_t> shfl_slot;
static bool bad_shfl = false;

unsigned warp_shfl_xor(unsigned v, unsigned lane_mask) {
    const size_t threads = (size_t)block_dim.x * block_dim.y * block_dim.z;
    if (!fiber_mode || threads % 32 != 0 || lane_mask >= 32) {
        bad_shfl = true;
        return 0;
    }
    const size_t t = current;
    shfl_slot[t] = v;
    sync_threads();
    const unsigned got = shfl_slot[(t & ~size_t(31)) | ((t & 31) ^ lane_mask)];
    sync_threads();
    return got;
}

static void run_block(size_t threads, size_t smem_words) {
    for (size_t i = 0; i < smem_words; ++i) s[i] = POISON;
    if (!running->barriers) {
        for (size_t i = 0; i < threads; ++i) {
            const size_t t = reverse_order ? threads - 1 - i : i;
            direct_tid = unflatten(t, block_dim);
            running->run(running_args);
        }
        return;
    }
    fiber_mode = true;
    if (tids.size() < threads) {
        tids.resize(threads);
        finished.resize(threads);
#if defined(__x86_64__)
        fiber_sp.resize(threads);
#else
        fibers.resize(threads);
#endif
        while (stacks.size() < threads) stacks.emplace_back(new char[STACK_BYTES]);
        mma_in.resize(threads * MMA_IN);
        mma_out.resize(threads * 4);
        mma_computed.resize(threads / 32 + 1);
        shfl_slot.resize(threads);
    }
    for (size_t t = 0; t < threads; ++t) {
        start_fiber(t);
        tids[t] = unflatten(t, block_dim);
        finished[t] = 0;
    }
    size_t live = threads;
    while (live > 0) {
        // One pass runs every live thread to its next barrier (or its end).
        for (size_t i = 0; i < threads; ++i) {
            const size_t t = reverse_order ? threads - 1 - i : i;
            if (finished[t]) continue;
            current = t;
            to_fiber(t);
            if (finished[t]) --live;
        }
    }
    fiber_mode = false;
}

static std::mutex launch_lock;

}  // namespace fq_emu

using namespace fq_emu;

static int fail(char* err, size_t err_len, const std::string& msg) {
    if (err_len > 0) {
        std::snprintf(err, err_len, "%s", msg.c_str());
    }
    return 1;
}

// Runs kernel `name` to completion (blocks and threads last to first with `reverse`). Returns 0,
// or 1 with a message in `err`.
extern "C" int fq_emu_launch(const char* name, const uint32_t grid[3], const uint32_t block[3], uint32_t smem,
                             const Arg* args, uint32_t nargs, int reverse, char* err, size_t err_len) {
    std::lock_guard<std::mutex> guard(launch_lock);
    const Kernel* k = nullptr;
    for (const Kernel& c : KERNELS) {
        if (std::strcmp(c.name, name) == 0) k = &c;
    }
    const std::string kn = std::string("kernel ") + name;
    if (!k) return fail(err, err_len, kn + ": no such kernel");
    std::string why;
    if (!k->check(args, nargs, why)) return fail(err, err_len, kn + ": " + why);
    const size_t threads = (size_t)block[0] * block[1] * block[2];
    if (threads == 0 || threads > 1024 || block[0] > 1024 || block[1] > 1024 || block[2] > 64)
        return fail(err, err_len, kn + ": invalid block " + std::to_string(block[0]) + "x" +
                                      std::to_string(block[1]) + "x" + std::to_string(block[2]));
    if (grid[0] == 0 || grid[1] == 0 || grid[2] == 0 || grid[0] > 0x7fffffffu || grid[1] > 65535 || grid[2] > 65535)
        return fail(err, err_len, kn + ": invalid grid");
    if (smem > SMEM_BYTES)
        return fail(err, err_len, kn + ": " + std::to_string(smem) + " bytes of shared memory exceed the device's");
    running = k;
    running_args = args;
    stray_barrier = false;
    bad_mma = false;
    bad_shfl = false;
    block_dim = Dim3{block[0], block[1], block[2]};
    grid_dim = Dim3{grid[0], grid[1], grid[2]};
    reverse_order = reverse != 0;
    const size_t blocks = (size_t)grid[0] * grid[1] * grid[2];
    for (size_t i = 0; i < blocks; ++i) {
        block_idx = unflatten(reverse_order ? blocks - 1 - i : i, grid_dim);
        run_block(threads, (smem + 3) / 4);
    }
    reverse_order = false;
    if (stray_barrier) return fail(err, err_len, kn + ": __syncthreads in a kernel registered without barriers");
    if (bad_mma)
        return fail(err, err_len, kn + ": a warp matrix instruction outside a barrier kernel or in a partial warp");
    if (bad_shfl)
        return fail(err, err_len, kn + ": a warp shuffle outside a barrier kernel, in a partial warp or with a partial mask");
    return 0;
}
