//! Reuse of the CPU backend's buffers.
//!
//! The server's evaluation allocates and frees ciphertext batches of megabytes to hundreds of
//! megabytes thousands of times per request (a key-switch chunk, a CMux level, an external
//! product's outputs), almost always of a few recurring sizes. Through the allocator each such
//! buffer came back as fresh pages: a page fault and a kernel `clear_page` per 4 KiB, then the
//! backend's own zeroing on top (`perf` of a llama-7b folded request: 9% `clear_page_erms`, 6%
//! `memset`). [`BufferPool`] keeps freed buffers of at least [`MIN_POOLED_WORDS`] words, keyed
//! by length, and hands them back to the next allocation of that length.
//!
//! It holds at most `limit` bytes of free buffers; past that the oldest are released to the
//! allocator, so a size that stops recurring does not pin memory for long. A buffer larger than
//! an eighth of the limit or [`MAX_POOLED_WORDS`] is not kept there. A buffer is zeroed when it
//! enters the pool, so nothing of a request (masks, flooding noise, intermediate ciphertexts)
//! outlives it in pooled memory, and an allocation served from the pool is already zero.
//!
//! Larger buffers (a request's expansion levels, first-dimension operand and product, hundreds
//! of MB each) have a tier of their own, bounded separately ([`BufferPool::with_large`]): they
//! are reused by capacity rather than length, since their sizes differ by a few percent, and
//! zeroed in parallel when given back. Through the allocator they came back as fresh pages,
//! which on a VM with free-page reporting the host had taken back as well.

use std::collections::VecDeque;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};

/// Buffers below this many words (256 KiB) go straight to the allocator, which handles them
/// well.
pub const MIN_POOLED_WORDS: usize = 1 << 16;

/// Buffers above this many words (64 MiB) go back to the allocator: the recurring sizes of a
/// request are a few MB (a chunk of 16 ciphertexts at N = 8192 and five limbs is 5 MB), and a
/// pool holding whole-level buffers of hundreds of MB measured slower, because the allocator
/// could no longer recycle that memory for other sizes.
pub const MAX_POOLED_WORDS: usize = 1 << 24;

/// Fresh allocations of at least this many words (4 MiB) are zeroed in parallel.
pub const PARALLEL_ZERO_WORDS: usize = 1 << 20;

/// Default bound on the bytes of free buffers a pool keeps.
pub const DEFAULT_POOL_BYTES: usize = 512 << 20;

/// Default bound on the bytes of free *large* buffers (above [`MAX_POOLED_WORDS`]) a pool keeps.
pub const DEFAULT_LARGE_POOL_BYTES: usize = 2 << 30;

/// Free buffers, oldest first, and their total size (by the tier's measure of a buffer).
#[derive(Debug, Default)]
struct Free {
    bufs: VecDeque<Vec<u32>>,
    words: usize,
}

impl Free {
    /// Removes buffer `at`, counted as `size(buf)` words.
    fn remove(&mut self, at: usize, size: fn(&Vec<u32>) -> usize) -> Option<Vec<u32>> {
        let buf = self.bufs.remove(at)?;
        self.words -= size(&buf);
        Some(buf)
    }

    /// Keeps `buf`, releasing the oldest buffers beyond `limit` words; returns those, to be
    /// freed outside the lock.
    fn keep(&mut self, buf: Vec<u32>, size: fn(&Vec<u32>) -> usize, limit: usize) -> Vec<Vec<u32>> {
        self.words += size(&buf);
        self.bufs.push_back(buf);
        let mut released = Vec::new();
        while self.words > limit {
            let Some(old) = self.remove(0, size) else { break };
            released.push(old);
        }
        released
    }
}

/// A bounded pool of free buffers, shared by the clones of one backend.
#[derive(Debug)]
pub struct BufferPool {
    limit_words: usize,
    free: Mutex<Free>,
    /// Buffers above [`MAX_POOLED_WORDS`] (a request's level buffers, first-dimension operands
    /// and products: hundreds of MB, a handful per request), by capacity.
    large_limit_words: usize,
    large: Mutex<Free>,
}

impl BufferPool {
    /// A pool keeping at most `limit_bytes` of free buffers (0 disables pooling) and no large
    /// ones.
    pub fn new(limit_bytes: usize) -> Self {
        Self::with_large(limit_bytes, 0)
    }

    /// A pool keeping at most `limit_bytes` of free buffers of up to [`MAX_POOLED_WORDS`]
    /// words, and at most `large_bytes` of larger ones. A large allocation takes the free large
    /// buffer of the least capacity that holds it, if that is at most a quarter more than it
    /// needs, whatever its length was: a request's large buffers differ in size by a few
    /// percent (the first dimension's operand can reuse a level buffer of the expansion).
    pub fn with_large(limit_bytes: usize, large_bytes: usize) -> Self {
        Self {
            limit_words: limit_bytes / 4,
            free: Mutex::new(Free::default()),
            large_limit_words: large_bytes / 4,
            large: Mutex::new(Free::default()),
        }
    }

    /// Bytes of free buffers held now (large ones by capacity).
    pub fn held_bytes(&self) -> usize {
        (self.lock().words + lock(&self.large).words) * 4
    }

    /// A free buffer of `words` zeros: of exactly that length up to [`MAX_POOLED_WORDS`], of
    /// the least fitting capacity above.
    fn take(&self, words: usize) -> Option<Vec<u32>> {
        if words > MAX_POOLED_WORDS { self.take_large(words) } else { self.take_exact(words) }
    }

    /// Keeps `buf`, zeroed, in its tier (by its capacity: a truncated buffer goes back
    /// whole), releasing the oldest free buffers beyond its limit.
    fn give(&self, buf: Vec<u32>) {
        if buf.capacity() > MAX_POOLED_WORDS { self.give_large(buf) } else { self.give_exact(buf) }
    }

    fn take_large(&self, words: usize) -> Option<Vec<u32>> {
        if words > self.large_limit_words {
            return None;
        }
        let mut free = lock(&self.large);
        let fits = |b: &Vec<u32>| (words..=words + words / 4).contains(&b.capacity());
        let at =
            (0..free.bufs.len()).filter(|&i| fits(&free.bufs[i])).min_by_key(|&i| free.bufs[i].capacity())?;
        let mut buf = free.remove(at, Vec::capacity)?;
        drop(free);
        // Zero up to its old length (zeroed when given back); `resize` writes the rest.
        buf.truncate(words);
        buf.resize(words, 0);
        Some(buf)
    }

    fn give_large(&self, mut buf: Vec<u32>) {
        if buf.capacity() > self.large_limit_words {
            return;
        }
        zero(&mut buf);
        let released = lock(&self.large).keep(buf, Vec::capacity, self.large_limit_words);
        drop(released);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Free> {
        lock(&self.free)
    }

    /// The largest buffer kept: an eighth of the limit, at most [`MAX_POOLED_WORDS`].
    fn max_words(&self) -> usize {
        (self.limit_words / 8).min(MAX_POOLED_WORDS)
    }

    fn poolable(&self, words: usize) -> bool {
        (MIN_POOLED_WORDS..=self.max_words()).contains(&words)
    }

    /// A free buffer of exactly `words` zeros, the most recently freed.
    fn take_exact(&self, words: usize) -> Option<Vec<u32>> {
        if !self.poolable(words) {
            return None;
        }
        let mut free = self.lock();
        let at = free.bufs.iter().rposition(|b| b.len() == words)?;
        free.remove(at, Vec::len)
    }

    fn give_exact(&self, mut buf: Vec<u32>) {
        if !self.poolable(buf.capacity()) {
            return;
        }
        zero(&mut buf);
        // Whole again: the words past its length (a truncated tail, zeroed when it was cut
        // off) written as zeros.
        buf.resize(buf.capacity(), 0);
        let released = self.lock().keep(buf, Vec::len, self.limit_words);
        // Freed outside the lock.
        drop(released);
    }
}

/// Zeroes `buf`, in parallel from [`PARALLEL_ZERO_WORDS`] words (on the rayon pool of the
/// thread that frees it: the backend's own where its work drops a buffer). A CMux level of a
/// one-token llama-7b fold frees four buffers of 10 MB; one thread zeroing them left the other
/// idle.
pub(crate) fn zero(buf: &mut [u32]) {
    use rayon::prelude::*;
    if buf.len() >= PARALLEL_ZERO_WORDS {
        buf.par_chunks_mut(PARALLEL_ZERO_WORDS / 4).for_each(|c| c.fill(0));
    } else {
        buf.fill(0);
    }
}

fn lock(free: &Mutex<Free>) -> std::sync::MutexGuard<'_, Free> {
    // A panic while the lock was held cannot leave `Free` inconsistent (every update is one
    // push or pop plus its count), so a poisoned lock is used as is.
    free.lock().unwrap_or_else(|e| e.into_inner())
}

/// A buffer of the CPU backend: a `Vec<u32>` that goes back to its pool when dropped.
#[derive(Debug)]
pub struct CpuBuffer {
    words: Vec<u32>,
    pool: Arc<BufferPool>,
}

impl CpuBuffer {
    /// `words` zeros from `pool` (or the allocator); `Err(words)` if they cannot be allocated.
    pub(crate) fn zeroed(pool: &Arc<BufferPool>, words: usize) -> Result<Self, usize> {
        let words = match pool.take(words) {
            Some(buf) => buf,
            None => {
                let mut v = Vec::new();
                v.try_reserve_exact(words).map_err(|_| words)?;
                if words >= PARALLEL_ZERO_WORDS {
                    // Fresh pages fault in and are zeroed by every thread of the current pool
                    // (a request's first level buffers are hundreds of MB).
                    use rayon::prelude::*;
                    v.par_extend(rayon::iter::repeat_n(0u32, words));
                } else {
                    v.resize(words, 0);
                }
                v
            }
        };
        Ok(Self { words, pool: Arc::clone(pool) })
    }

    /// `words` as a buffer of `pool` (it goes there when dropped).
    pub(crate) fn from_vec(pool: &Arc<BufferPool>, words: Vec<u32>) -> Self {
        Self { words, pool: Arc::clone(pool) }
    }

    /// A pooled copy of `src`.
    pub(crate) fn copy_of(pool: &Arc<BufferPool>, src: &[u32]) -> Result<Self, usize> {
        let words = match pool.take(src.len()) {
            Some(mut buf) => {
                buf.copy_from_slice(src);
                buf
            }
            None => {
                let mut v = Vec::new();
                v.try_reserve_exact(src.len()).map_err(|_| src.len())?;
                v.extend_from_slice(src);
                v
            }
        };
        Ok(Self { words, pool: Arc::clone(pool) })
    }
}

impl CpuBuffer {
    /// Keeps the first `words` words (`words <= len`): the dropped ones are zeroed first by
    /// `zero`, as a buffer entering the pool is. The allocation is kept, and goes back to the
    /// pool whole: a CMux level halves its input in place, and shrinking it (a move of the
    /// kept half where the allocator could not shrink in place) left the pool without the size
    /// the next fold's first level asks for (`perf` of a llama-7b folded request, 2026-12-03:
    /// two fresh 10 MB buffers per token, `clear_page_erms` a tenth of the fold).
    pub(crate) fn truncate(&mut self, words: usize, zero: impl FnOnce(&mut [u32])) {
        let words = words.min(self.words.len());
        zero(&mut self.words[words..]);
        self.words.truncate(words);
    }
}

impl Deref for CpuBuffer {
    type Target = [u32];
    fn deref(&self) -> &[u32] {
        &self.words
    }
}

impl DerefMut for CpuBuffer {
    fn deref_mut(&mut self) -> &mut [u32] {
        &mut self.words
    }
}

impl Drop for CpuBuffer {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.words));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_by_length_zeroed() {
        let pool = Arc::new(BufferPool::new(64 << 20));
        let words = MIN_POOLED_WORDS;
        let mut a = CpuBuffer::zeroed(&pool, words).unwrap();
        a.fill(7);
        let ptr = a.as_ptr();
        drop(a);
        assert_eq!(pool.held_bytes(), words * 4);
        // Another length does not take it.
        let b = CpuBuffer::zeroed(&pool, words + 1).unwrap();
        assert_ne!(b.as_ptr(), ptr);
        // The same length does, zeroed when it was given back.
        let c = CpuBuffer::zeroed(&pool, words).unwrap();
        assert_eq!(c.as_ptr(), ptr);
        assert!(c.iter().all(|&w| w == 0));
        assert_eq!(pool.held_bytes(), 0);
    }

    #[test]
    fn stays_within_its_limit() {
        let words = MIN_POOLED_WORDS;
        let pool = Arc::new(BufferPool::new(16 * words * 4));
        let bufs: Vec<_> = (0..20).map(|_| CpuBuffer::zeroed(&pool, words).unwrap()).collect();
        drop(bufs);
        assert_eq!(pool.held_bytes(), 16 * words * 4);
        // Small buffers and buffers over an eighth of the limit are never kept.
        drop(CpuBuffer::zeroed(&pool, MIN_POOLED_WORDS - 1).unwrap());
        drop(CpuBuffer::zeroed(&pool, 2 * words + 1).unwrap());
        assert_eq!(pool.held_bytes(), 16 * words * 4);
        // A buffer of an eighth is kept, releasing the oldest beyond the limit.
        drop(CpuBuffer::zeroed(&pool, 2 * words).unwrap());
        assert_eq!(pool.held_bytes(), 16 * words * 4);
        // A disabled pool keeps nothing.
        let none = Arc::new(BufferPool::new(0));
        drop(CpuBuffer::zeroed(&none, words).unwrap());
        assert_eq!(none.held_bytes(), 0);
    }

    #[test]
    fn large_buffers_are_reused_by_capacity_zeroed_and_bounded() {
        let big = MAX_POOLED_WORDS + 1000;
        let pool = Arc::new(BufferPool::with_large(0, 3 * big * 4));
        let mut a = CpuBuffer::zeroed(&pool, big).unwrap();
        a.fill(9);
        let ptr = a.as_ptr();
        drop(a);
        assert_eq!(pool.held_bytes(), big * 4);
        // A request a quarter larger does not fit; a slightly smaller one takes it, zeroed.
        drop(CpuBuffer::zeroed(&pool, big + big / 4 + 1).unwrap_or_else(|_| unreachable!()));
        let b = CpuBuffer::zeroed(&pool, big - 500).unwrap();
        assert_eq!((b.as_ptr(), b.len()), (ptr, big - 500));
        assert!(b.iter().all(|&w| w == 0));
        drop(b);
        // Given back shorter, it serves its full capacity again, every word zero.
        let c = CpuBuffer::copy_of(&pool, &vec![3u32; big]).unwrap();
        assert_eq!(c.as_ptr(), ptr);
        assert!(c.iter().all(|&w| w == 3));
        drop(c);
        assert!(CpuBuffer::zeroed(&pool, big).unwrap().iter().all(|&w| w == 0));
        // Never more than the bound: the oldest go.
        let many: Vec<_> = (0..5).map(|_| CpuBuffer::zeroed(&pool, big).unwrap()).collect();
        drop(many);
        assert!(pool.held_bytes() <= 3 * big * 4 + 4 * 1000, "{}", pool.held_bytes());
        // A pool without a large bound keeps none.
        let none = Arc::new(BufferPool::new(64 << 20));
        drop(CpuBuffer::zeroed(&none, big).unwrap());
        assert_eq!(none.held_bytes(), 0);
    }

    #[test]
    fn the_backend_returns_its_buffers_to_its_own_pool() {
        use fastquery_backend::Backend;
        let b = crate::CpuBackend::new().with_buffer_pool(64 << 20);
        let buf = b.upload(&vec![5u32; MIN_POOLED_WORDS]).unwrap();
        assert_eq!(b.pooled_bytes(), 0);
        drop(buf);
        assert_eq!(b.pooled_bytes(), MIN_POOLED_WORDS * 4);
        assert!(b.alloc_zeroed(MIN_POOLED_WORDS).unwrap().iter().all(|&w| w == 0));
        let off = crate::CpuBackend::new().with_buffer_pool(0);
        drop(off.alloc_zeroed(MIN_POOLED_WORDS).unwrap());
        assert_eq!(off.pooled_bytes(), 0);
    }

    #[test]
    fn large_fresh_buffers_are_zero_and_large_copies_exact() {
        use fastquery_backend::Backend;
        let b = crate::CpuBackend::with_threads(2).unwrap().with_buffer_pool(0);
        let words = PARALLEL_ZERO_WORDS + 37;
        assert!(b.alloc_zeroed(words).unwrap().iter().all(|&w| w == 0));
        // A copy of a size above it, at uneven offsets, into such a buffer.
        let src: Vec<u32> = (0..words as u32).map(|i| i.wrapping_mul(2_654_435_761)).collect();
        let src = b.upload(&src).unwrap();
        let mut dst = b.alloc_zeroed(words + 5).unwrap();
        let len = PARALLEL_ZERO_WORDS + 11;
        b.copy_words(&src, 13, &mut dst, 3, len).unwrap();
        assert_eq!(&dst[3..3 + len], &src[13..13 + len]);
        assert!(dst[..3].iter().chain(&dst[3 + len..]).all(|&w| w == 0));
        assert_eq!(&b.duplicate(&src).unwrap()[..], &src[..], "a large duplicate");
    }

    /// A truncated buffer keeps its first words and its allocation, hands every dropped word to
    /// the zeroing (large tails on the backend's threads), and goes back to the pool whole and
    /// zeroed, where the next allocation of its full size takes it.
    #[test]
    fn truncation_keeps_the_head_and_zeroes_the_tail() {
        use fastquery_backend::Backend;
        let b = crate::CpuBackend::with_threads(2).unwrap();
        for (words, keep) in [(2 * PARALLEL_ZERO_WORDS + 6, PARALLEL_ZERO_WORDS + 3), (1000, 999), (64, 0)] {
            let src: Vec<u32> = (0..words as u32).map(|i| i | 1).collect();
            let kept = b.truncate(b.upload(&src).unwrap(), keep).unwrap();
            assert_eq!(&kept[..], &src[..keep]);
            assert_eq!(kept.words.capacity(), words, "the allocation is kept");
            let ptr = kept.as_ptr();
            drop(kept);
            if words >= MIN_POOLED_WORDS {
                let again = b.alloc_zeroed(words).unwrap();
                assert_eq!(again.as_ptr(), ptr, "the truncated buffer is taken at its full size");
                assert!(again.iter().all(|&w| w == 0), "and zeroed");
            }
        }
        let mut buf = CpuBuffer::from_vec(&Arc::new(BufferPool::new(0)), vec![7; 100]);
        let mut seen = Vec::new();
        buf.truncate(40, |tail| {
            seen = tail.to_vec();
            tail.fill(0);
        });
        assert_eq!((buf.len(), seen), (40, vec![7; 60]));
    }
}
