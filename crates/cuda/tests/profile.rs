//! `FASTQUERY_CUDA_PROFILE=1`: every launch timed and summed per kernel
//! (`Backend::kernel_times`) and in a running total (`Backend::kernel_ms_so_far`), on the
//! emulator. In its own test binary: the test sets the
//! variable for the process and counts launches with the process-wide counters.

use std::sync::Arc;

use fastquery_backend::{Backend, Coeff, Polys, Shape, conformance, work};
use fastquery_cuda::CudaBackend;

#[test]
fn profiled_launches_are_summed_per_kernel() {
    // Off by default: no times kept.
    let plain = CudaBackend::emulated().unwrap();
    assert_eq!(plain.kernel_times().unwrap(), None);
    assert_eq!(plain.kernel_ms_so_far().unwrap(), None);
    // SAFETY: this binary's only test, and no other thread of it reads the environment now.
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var("FASTQUERY_CUDA_PROFILE", "1");
    }
    let b = Arc::new(CudaBackend::emulated().unwrap());
    let ring = conformance::ring(&b, 256, 2);
    let p = ring.context().moduli()[0].value().min(ring.context().moduli()[1].value());
    let words: Vec<u32> = (0..512u32).map(|i| i.wrapping_mul(2_654_435_761).wrapping_add(7) % p).collect();
    let a: Polys<_, Coeff> = ring.upload(&words, Shape::new(1, 2)).unwrap();
    b.kernel_times().unwrap(); // whatever the setup launched
    let total_before = b.kernel_ms_so_far().unwrap().expect("profiling is on");
    let before = work::snapshot();
    let f = ring.forward(a).unwrap();
    let back = ring.inverse(f).unwrap();
    let launched = (work::snapshot() - before).launches;
    let times = b.kernel_times().unwrap().expect("profiling is on");
    assert_eq!(ring.download(&back).unwrap(), words, "a profiled round trip still computes");
    assert_eq!(times.iter().map(|k| k.launches).sum::<u64>(), launched, "{times:?}");
    assert!(times.iter().any(|k| k.kernel.starts_with("ntt_forward")), "{times:?}");
    assert!(times.iter().any(|k| k.kernel.starts_with("ntt_inverse")), "{times:?}");
    assert!(times.windows(2).all(|w| w[0].ms >= w[1].ms), "most time first: {times:?}");
    assert!(times.iter().all(|k| k.ms >= 0.0 && k.launches > 0));
    // Drained: the next call starts from nothing.
    assert_eq!(b.kernel_times().unwrap(), Some(Vec::new()));
    // The running total (FASTQUERY_TRACE=sync's device column) is not drained: it grew by
    // exactly the round trip's launches.
    let total = b.kernel_ms_so_far().unwrap().expect("profiling is on");
    let summed: f64 = times.iter().map(|k| k.ms).sum();
    assert!(
        summed > 0.0 && (total - total_before - summed).abs() <= 1e-9 * total.max(1.0),
        "{total_before} + {summed} != {total}"
    );
    // SAFETY: as above.
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var("FASTQUERY_CUDA_PROFILE", "2");
    }
    assert!(CudaBackend::emulated().is_err(), "a value other than 0 or 1 is refused");
}
