//! CPU kernel benchmarks. Names: `<backend>/<op>/<N>/<limbs>` (and `/<rows>x<inner>x<cols>` for
//! the multiply-accumulate). `tfhe-ntt/...` runs tfhe-ntt's plans directly on the same sizes in
//! the same run, so the per-limb ratio is measured, not assumed. `cpu-1t` and `cpu-2t` are private
//! pools of one and two threads, for the scaling ratio.
//!
//! Run: `cargo bench -p fastquery-benches --bench cpu`, then `python3 scripts/bench_table.py`.

use std::{sync::Arc, time::Duration};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use fastquery_backend::{Coeff, MacDims, Ntt, Polys, Shape};
use fastquery_benches::{DEGREES, primes, random_ntt, random_words, ring};
use fastquery_cpu::CpuBackend;

/// Polynomials per batch in the per-limb comparison.
const BATCH: usize = 4;
const LIMBS: [usize; 2] = [1, 4];

fn ntt(c: &mut Criterion) {
    let one = Arc::new(CpuBackend::with_threads(1).expect("one thread"));
    for n in DEGREES {
        for limbs in LIMBS {
            let ring = ring(one.clone(), n, limbs);
            let shape = Shape::new(BATCH, limbs);
            let plans: Vec<tfhe_ntt::prime32::Plan> = primes(n, limbs)
                .iter()
                .map(|&p| tfhe_ntt::prime32::Plan::try_new(n, p).expect("tfhe-ntt plan"))
                .collect();
            let words = random_words(ring.context(), shape, 1);
            // Throughput in transforms (one limb of one polynomial each).
            let mut g = c.benchmark_group("cpu");
            g.throughput(Throughput::Elements(shape.rows() as u64));
            // Both sides get a fresh copy of the same data per iteration (copy not timed).
            g.bench_function(format!("ntt_fwd/{n}/{limbs}"), |b| {
                b.iter_batched(
                    || ring.upload::<Coeff>(&words, shape).unwrap(),
                    |p| ring.forward(p).unwrap(),
                    BatchSize::SmallInput,
                )
            });
            g.finish();
            let mut t = c.benchmark_group("tfhe-ntt");
            t.throughput(Throughput::Elements(shape.rows() as u64));
            t.bench_function(format!("ntt_fwd/{n}/{limbs}"), |b| {
                b.iter_batched(
                    || words.clone(),
                    |mut w| {
                        for (row, chunk) in w.chunks_exact_mut(n).enumerate() {
                            plans[row % limbs].fwd(chunk);
                        }
                        w
                    },
                    BatchSize::SmallInput,
                )
            });
            t.finish();
            let mut g = c.benchmark_group("cpu");
            g.throughput(Throughput::Elements(shape.rows() as u64));
            g.bench_function(format!("ntt_inv/{n}/{limbs}"), |b| {
                b.iter_batched(
                    || ring.upload::<Ntt>(&words, shape).unwrap(),
                    |p| ring.inverse(p).unwrap(),
                    BatchSize::SmallInput,
                )
            });
            // tfhe-ntt's inverse omits the 1/N factor; `normalize` applies it.
            g.finish();
            let mut t = c.benchmark_group("tfhe-ntt");
            t.throughput(Throughput::Elements(shape.rows() as u64));
            t.bench_function(format!("ntt_inv/{n}/{limbs}"), |b| {
                b.iter_batched(
                    || words.clone(),
                    |mut w| {
                        for (row, chunk) in w.chunks_exact_mut(n).enumerate() {
                            let plan = &plans[row % limbs];
                            plan.inv(chunk);
                            plan.normalize(chunk);
                        }
                        w
                    },
                    BatchSize::SmallInput,
                )
            });
            t.finish();
        }
    }
}

fn scaling(c: &mut Criterion) {
    let (n, limbs, polys) = (4096, 2, 64);
    let shape = Shape::new(polys, limbs);
    let dims = MacDims { rows: 2, inner: 32, cols: 8 };
    for threads in [1usize, 2] {
        let backend = Arc::new(CpuBackend::with_threads(threads).expect("threads"));
        let ring = ring(backend, n, limbs);
        let words = random_words(ring.context(), shape, 2);
        let mut g = c.benchmark_group(format!("cpu-{threads}t"));
        // Two transforms per iteration: forward and back, in place on a resident batch (no host
        // copy in the loop, so both thread counts see the same cache state).
        g.throughput(Throughput::Elements(2 * shape.rows() as u64));
        let mut slot = Some(ring.upload::<Coeff>(&words, shape).unwrap());
        g.bench_function(format!("ntt_roundtrip_batch/{n}/{limbs}x{polys}"), |b| {
            b.iter(|| {
                let p = ring.forward(slot.take().unwrap()).unwrap();
                slot = Some(ring.inverse(p).unwrap());
            })
        });
        g.throughput(Throughput::Elements((dims.rows * dims.inner * dims.cols * limbs * n) as u64));
        mac_bench(&mut g, &ring, dims, limbs);
        g.finish();
    }
}

fn mac_bench(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    ring: &fastquery_backend::Ring<CpuBackend>,
    dims: MacDims,
    limbs: usize,
) {
    let n = ring.n();
    let a = random_ntt(ring, Shape::new(dims.rows * dims.inner, limbs), 3);
    let b = random_ntt(ring, Shape::new(dims.inner * dims.cols, limbs), 4);
    let mut out: Polys<CpuBackend, Ntt> = ring.zeros(Shape::new(dims.rows * dims.cols, limbs)).unwrap();
    let MacDims { rows, inner, cols } = dims;
    g.bench_function(format!("mac/{n}/{rows}x{inner}x{cols}/{limbs}"), |bch| {
        bch.iter(|| ring.mac(&mut out, &a, &b, dims, false).unwrap())
    });
    // The same product on the operand laid out once, as the servers keep their tables.
    let laid = ring.mac_operand(b, inner, cols).unwrap();
    g.bench_function(format!("mac_laid_out/{n}/{rows}x{inner}x{cols}/{limbs}"), |bch| {
        bch.iter(|| ring.mac_laid_out(&mut out, &a, &laid, rows, false).unwrap())
    });
}

fn mac(c: &mut Criterion) {
    let backend = Arc::new(CpuBackend::new());
    // llama-7b's folded product at 8 tokens (16 x 125 inner), cut to 8 columns and two limbs:
    // its 64 MB operand is larger than the L3 caches, as a table is.
    {
        let (n, limbs) = (8192, 2);
        let ring = ring(backend.clone(), n, limbs);
        let dims = MacDims { rows: 16, inner: 125, cols: 8 };
        let mut g = c.benchmark_group("cpu");
        g.throughput(Throughput::Elements((dims.rows * dims.inner * dims.cols * limbs * n) as u64));
        mac_bench(&mut g, &ring, dims, limbs);
        g.finish();
    }
    // One llama-7b token, a decode step (2 x 125 inner at five limbs), cut to 32 of its 128
    // columns: 0.66 GB of operand streamed for two products per word.
    {
        let (n, limbs) = (8192, 5);
        let ring = ring(backend.clone(), n, limbs);
        let dims = MacDims { rows: 2, inner: 125, cols: 32 };
        let mut g = c.benchmark_group("cpu");
        g.throughput(Throughput::Bytes((dims.inner * dims.cols * limbs * n * 4) as u64));
        mac_bench(&mut g, &ring, dims, limbs);
        g.finish();
    }
    // The same decode step at its whole size (all 128 columns, 2.62 GB laid out: the product a
    // llama-7b decode step runs), the laid-out product only. The 32-column cut above overstated
    // how a prefetch change moved it (docs/BENCHMARKS.md, twenty-fifth session).
    {
        let (n, limbs) = (8192, 5);
        let ring = ring(backend.clone(), n, limbs);
        let dims = MacDims { rows: 2, inner: 125, cols: 128 };
        let mut g = c.benchmark_group("cpu");
        g.throughput(Throughput::Bytes((dims.inner * dims.cols * limbs * n * 4) as u64));
        g.sample_size(10);
        let a = random_ntt(&ring, Shape::new(dims.rows * dims.inner, limbs), 3);
        let laid = ring
            .mac_operand(random_ntt(&ring, Shape::new(dims.inner * dims.cols, limbs), 4), 125, 128)
            .unwrap();
        let mut out: Polys<CpuBackend, Ntt> = ring.zeros(Shape::new(dims.rows * dims.cols, limbs)).unwrap();
        g.bench_function(format!("mac_laid_out/{n}/2x125x128/{limbs}"), |bch| {
            bch.iter(|| ring.mac_laid_out(&mut out, &a, &laid, dims.rows, false).unwrap())
        });
        g.finish();
    }
    for n in DEGREES {
        let limbs = 2;
        let ring = ring(backend.clone(), n, limbs);
        for dims in [MacDims { rows: 2, inner: 32, cols: 8 }, MacDims { rows: 16, inner: 32, cols: 8 }] {
            let mut g = c.benchmark_group("cpu");
            // Throughput in coefficient multiply-accumulates.
            g.throughput(Throughput::Elements((dims.rows * dims.inner * dims.cols * limbs * n) as u64));
            mac_bench(&mut g, &ring, dims, limbs);
            g.finish();
        }
    }
}

/// Both key switches at N = 8192, five limbs, 64 ciphertexts per batch, on all threads.
fn keyswitch(c: &mut Criterion) {
    fastquery_benches::keyswitch_benches(c, "cpu", Arc::new(CpuBackend::new()), 64);
}

/// One token's fold at llama-7b's shape, on all threads.
fn fold(c: &mut Criterion) {
    fastquery_benches::fold_benches(c, "cpu", Arc::new(CpuBackend::new()));
}

/// One llama-7b request's expansion, both forms, on all threads.
fn expand(c: &mut Criterion) {
    fastquery_benches::expand_benches(c, "cpu", Arc::new(CpuBackend::new()));
}

/// Cheetah's one-token expansion of its query and finish of its outputs, on all threads.
fn blocked(c: &mut Criterion) {
    fastquery_benches::blocked_benches(c, "cpu", Arc::new(CpuBackend::new()));
}

/// A one-token folded response's finish, on all threads.
fn finish(c: &mut Criterion) {
    fastquery_benches::finish_benches(c, "cpu", Arc::new(CpuBackend::new()));
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = ntt, scaling, mac, keyswitch, fold, expand, blocked, finish
}
criterion_main!(benches);
