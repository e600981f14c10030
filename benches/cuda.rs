//! CUDA kernel benchmarks, `cuda/<op>/<N>/<limbs>`: batched NTTs at batches that fill the GPU
//! and the multiply-accumulate, each timed with the device synchronised inside the timed
//! region (`iter_custom`). Needs an NVIDIA GPU: `cargo bench -p fastquery-benches --features cuda
//! --bench cuda` (or build with `--no-run` and copy the binary to a GPU machine).

use std::{sync::Arc, time::Duration};

use criterion::{Criterion, criterion_group, criterion_main};
use fastquery_cuda::CudaBackend;

fn cuda(c: &mut Criterion) {
    let backend = match CudaBackend::new(0) {
        Ok(b) => Arc::new(b),
        Err(e) => {
            eprintln!("SKIPPED: {e}");
            return;
        }
    };
    // Batches that fill an H100; the multiply-accumulate at Cheetah's llama-7b shape.
    fastquery_benches::device_benches(
        c,
        "cuda",
        backend.clone(),
        &[(4096, 65536), (8192, 32768), (16384, 16384)],
        (180, 179),
    );
    table_products(c, &backend);
    // Both key switches on a chunk of the backend's key-switching size.
    fastquery_benches::keyswitch_benches(c, "cuda", backend.clone(), 256);
}

/// FastQuery's llama-7b first dimension (125 x 128 table polynomials; 16 rows for 8 tokens,
/// 256 for 128 tokens in one product) at N = 4096, 2 limbs, on the integer pipes
/// (`cuda/mac_int/...`) and on the tensor cores (`cuda/mac_tc/...`).
fn table_products(c: &mut Criterion, backend: &Arc<CudaBackend>) {
    use fastquery_backend::{MacDims, Ntt, Polys, Shape};
    let (n, limbs, inner, cols) = (4096usize, 2usize, 125usize, 128usize);
    let ring = fastquery_benches::ring(backend.clone(), n, limbs);
    let table = fastquery_benches::random_ntt(&ring, Shape::new(inner * cols, limbs), 4);
    let allowed = backend.tensor_cores();
    let mut g = c.benchmark_group("cuda");
    for rows in [16usize, 256] {
        let dims = MacDims { rows, inner, cols };
        let a = fastquery_benches::random_ntt(&ring, Shape::new(rows * inner, limbs), 5);
        let mut out: Polys<_, Ntt> = ring.zeros(Shape::new(rows * cols, limbs)).unwrap();
        for (name, tensor) in [("mac_int", false), ("mac_tc", true)] {
            if backend.set_tensor_cores(tensor) != tensor {
                continue; // no tensor cores on this device
            }
            g.bench_function(format!("{name}/{n}/{rows}x{inner}x{cols}/{limbs}"), |b| {
                b.iter_custom(|iters| fastquery_benches::time_macs(&ring, &mut out, &a, &table, dims, iters))
            });
        }
    }
    backend.set_tensor_cores(allowed);
    g.finish();
}
criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2)).sample_size(20);
    targets = cuda
}
criterion_main!(benches);
