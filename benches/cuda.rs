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
        backend,
        &[(4096, 65536), (8192, 32768), (16384, 16384)],
        (180, 179),
    );
}
criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2)).sample_size(20);
    targets = cuda
}
criterion_main!(benches);
