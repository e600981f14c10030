//! The device counters of `fastquery_backend::work` (launches, allocations, waits, bus bytes),
//! as the CUDA backend keeps them, on the emulator. Alone in its test binary: the counters are
//! process-wide, so no other test may run beside this one.

use std::sync::Arc;

use fastquery_backend::{Backend, Coeff, Polys, Shape, conformance, work};
use fastquery_cuda::CudaBackend;

#[test]
fn the_backend_counts_its_device_work() {
    let b = Arc::new(CudaBackend::emulated().unwrap());
    let ring = conformance::ring(&b, 256, 2);
    let p = ring.context().moduli()[0].value().min(ring.context().moduli()[1].value());
    let words: Vec<u32> = (0..512u32).map(|i| (i * 40503 + 7) % p).collect();
    let before = work::snapshot();
    let buf = b.upload(&words).unwrap();
    let after_upload = work::snapshot() - before;
    assert_eq!((after_upload.allocations, after_upload.bus_bytes), (1, 2048), "{after_upload:?}");
    assert_eq!((after_upload.launches, after_upload.waits), (0, 0), "{after_upload:?}");
    let mut back = vec![0u32; 512];
    b.download(&buf, &mut back).unwrap();
    assert_eq!(back, words);
    let after_download = work::snapshot() - before;
    assert_eq!((after_download.waits, after_download.bus_bytes), (1, 4096), "{after_download:?}");
    // A transform (one polynomial of two limbs: two one-limb transforms) launches kernels,
    // waits for nothing and moves nothing over the bus; a synchronisation is one wait.
    let a: Polys<_, Coeff> = ring.upload(&words, Shape::new(1, 2)).unwrap();
    let mid = work::snapshot();
    let f = ring.forward(a).unwrap();
    let transform = work::snapshot() - mid;
    assert!(transform.launches >= 1, "{transform:?}");
    assert_eq!((transform.transforms, transform.waits, transform.bus_bytes), (2, 0, 0), "{transform:?}");
    b.synchronize().unwrap();
    assert_eq!((work::snapshot() - mid).waits, 1);
    drop(f);
}
