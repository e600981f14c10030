//! wgpu kernel benchmarks, `wgpu/<op>/<N>/<limbs>`, the same operations as the CUDA ones
//! (`fastquery_benches::device_benches`). `cargo bench -p fastquery-benches --features wgpu
//! --bench wgpu`. On lavapipe (a CPU rasteriser) the batches are small and the numbers say how
//! a software adapter does, not a GPU; set `FASTQUERY_BENCH_LARGE=1` on a real GPU for the
//! batches of the CUDA benches (same card, same sizes: the wgpu/CUDA comparison).

use std::{sync::Arc, time::Duration};

use criterion::{Criterion, criterion_group, criterion_main};
use fastquery_wgpu::WgpuBackend;

fn wgpu(c: &mut Criterion) {
    let backend = match WgpuBackend::new() {
        Ok(b) => Arc::new(b),
        Err(e) => {
            eprintln!("SKIPPED: {e}");
            return;
        }
    };
    eprintln!("wgpu adapter: {}", backend.describe());
    if std::env::var_os("FASTQUERY_BENCH_LARGE").is_some() {
        fastquery_benches::device_benches(
            c,
            "wgpu",
            backend,
            &[(4096, 65536), (8192, 32768), (16384, 16384)],
            (180, 179),
        );
    } else {
        fastquery_benches::device_benches(
            c,
            "wgpu",
            backend,
            &[(4096, 256), (8192, 128), (16384, 64)],
            (16, 16),
        );
    }
}
criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2)).sample_size(20);
    targets = wgpu
}
criterion_main!(benches);
