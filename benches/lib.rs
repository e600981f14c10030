//! Shared setup of the kernel benchmarks: rings and random batches on a backend. The benchmark
//! targets live beside this file (`cpu.rs`; the GPU backends add theirs).
#![forbid(unsafe_code)]

use std::sync::Arc;

use fastquery_backend::{Backend, Ntt, Polys, Repr, Ring, RingContext, Shape};
use fastquery_math::primes::ntt_primes;
use rand::{Rng, SeedableRng, rngs::StdRng};

/// The degrees every kernel benchmark covers.
pub const DEGREES: [usize; 4] = [2048, 4096, 8192, 16384];

/// `limbs` 30-bit primes for degree `n` (the engine's default prime size).
pub fn primes(n: usize, limbs: usize) -> Vec<u32> {
    ntt_primes(30, n, limbs).expect("enough 30-bit primes")
}

/// A ring on `backend`.
pub fn ring<B: Backend>(backend: Arc<B>, n: usize, limbs: usize) -> Ring<B> {
    let ctx = RingContext::new(n, &primes(n, limbs)).expect("valid ring");
    Ring::new(backend, Arc::new(ctx)).expect("ring loads")
}

/// Uniformly random reduced words for `shape` (never zeros).
pub fn random_words(ctx: &RingContext, shape: Shape, seed: u64) -> Vec<u32> {
    let mut rng = StdRng::seed_from_u64(seed);
    let n = ctx.n();
    (0..shape.rows())
        .flat_map(|row| {
            let p = ctx.moduli()[row % shape.limbs].value();
            (0..n).map(|_| rng.random_range(1..p)).collect::<Vec<_>>()
        })
        .collect()
}

/// A random batch on the device.
pub fn random_polys<B: Backend, R: Repr>(ring: &Ring<B>, shape: Shape, seed: u64) -> Polys<B, R> {
    ring.upload(&random_words(ring.context(), shape, seed), shape).expect("upload")
}

/// A random NTT-form batch.
pub fn random_ntt<B: Backend>(ring: &Ring<B>, shape: Shape, seed: u64) -> Polys<B, Ntt> {
    random_polys(ring, shape, seed)
}
