//! The allocator's one setting: freed memory is never returned to the operating system.
//!
//! The server allocates and frees buffers of hundreds of MB per request (an expansion level of
//! 1,024 ciphertexts at N = 8192 and six limbs is 400 MB). mimalloc purges freed memory after
//! 10 ms by default, so every such buffer came back as fresh pages that the kernel faulted in and
//! zeroed (`clear_page_erms`, a fifth of a llama-7b fastquery request in `perf`). With purging
//! off the pages are reused: 11-12 s -> 8.4-9.3 s per 8-token request in A/B runs of
//! `fastquery bench --workload llama-7b --schemes fastquery --tokens 8` (docs/BENCHMARKS.md); a
//! 1 s delay measured no gain. The cost is that the process keeps its peak memory (8.0 GB
//! against 7.2 GB peak RSS in that run): a server's peak is its working set anyway.

/// mimalloc's `mi_option_purge_delay` (its place in `mi_option_e` of `mimalloc.h`, the same in
/// the v2 and v3 sources of the libmimalloc-sys version in Cargo.lock; the Rust bindings do not
/// name it).
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Turns purging off. Call first in `main`, before any other thread exists.
pub fn keep_freed_memory() {
    // SAFETY: `mi_option_set` only stores an integer option (mimalloc documents it as not
    // thread safe: this runs before any thread is spawned); -1 means "never purge".
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, -1) };
}
