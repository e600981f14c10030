//! CUDA kernel benchmarks, `cuda/<op>/<N>/<limbs>`: batched NTTs at batches that fill the GPU
//! and the multiply-accumulate, each timed with the device synchronised inside the timed
//! region (`iter_custom`). Needs an NVIDIA GPU: `cargo bench -p fastquery-benches --features cuda
//! --bench cuda` (or build with `--no-run` and copy the binary to a GPU machine).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fastquery_backend::{Backend, Coeff, MacDims, Ntt, Polys, Shape};
use fastquery_benches::{random_ntt, random_polys, ring};
use fastquery_cuda::CudaBackend;

fn cuda(c: &mut Criterion) {
    let backend = match CudaBackend::new(0) {
        Ok(b) => Arc::new(b),
        Err(e) => {
            eprintln!("SKIPPED: {e}");
            return;
        }
    };
    let mut g = c.benchmark_group("cuda");
    for (n, polys) in [(4096usize, 65536usize), (8192, 32768), (16384, 16384)] {
        for limbs in [1usize, 4] {
            let polys = polys / limbs;
            let ring = ring(backend.clone(), n, limbs);
            let shape = Shape::new(polys, limbs);
            g.throughput(Throughput::Elements(shape.rows() as u64));
            let mut slot: Option<Polys<CudaBackend, Coeff>> = Some(random_polys(&ring, shape, 1));
            let mut ntt_slot: Option<Polys<CudaBackend, Ntt>> = None;
            g.bench_function(format!("ntt_fwd/{n}/{limbs}"), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let p = slot.take().unwrap_or_else(|| random_polys(&ring, shape, 2));
                        // The previous iteration's untimed transform must finish first.
                        backend.synchronize().unwrap();
                        let t = Instant::now();
                        let f = ring.forward(p).unwrap();
                        backend.synchronize().unwrap();
                        total += t.elapsed();
                        slot = Some(ring.inverse(f).unwrap());
                    }
                    total
                })
            });
            g.bench_function(format!("ntt_inv/{n}/{limbs}"), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let p = ntt_slot.take().unwrap_or_else(|| random_ntt(&ring, shape, 3));
                        backend.synchronize().unwrap();
                        let t = Instant::now();
                        let i = ring.inverse(p).unwrap();
                        backend.synchronize().unwrap();
                        total += t.elapsed();
                        ntt_slot = Some(ring.forward(i).unwrap());
                    }
                    total
                })
            });
        }
    }
    // The multiply-accumulate at Cheetah's llama-7b shape for 1 and 8 tokens (2 and 16 rows).
    let (n, limbs) = (4096usize, 4usize);
    let ring = ring(backend.clone(), n, limbs);
    let (inner, cols) = (180usize, 179usize);
    let b_table = random_ntt(&ring, Shape::new(inner * cols, limbs), 4);
    for rows in [2usize, 16] {
        let dims = MacDims { rows, inner, cols };
        let a = random_ntt(&ring, Shape::new(rows * inner, limbs), 5);
        let mut out: Polys<CudaBackend, Ntt> = ring.zeros(Shape::new(rows * cols, limbs)).unwrap();
        g.throughput(Throughput::Bytes((inner * cols * limbs * n * 4) as u64));
        g.bench_function(format!("mac/{n}/{rows}x{inner}x{cols}/{limbs}"), |b| {
            b.iter_custom(|iters| {
                backend.synchronize().unwrap();
                let t = Instant::now();
                for _ in 0..iters {
                    ring.mac(&mut out, &a, &b_table, dims, false).unwrap();
                }
                backend.synchronize().unwrap();
                t.elapsed()
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2)).sample_size(20);
    targets = cuda
}
criterion_main!(benches);
