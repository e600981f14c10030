//! The shared backend suite on the CPU backend, with the global pool and with one thread (the
//! single-threaded path must give the same words), and with each narrower multiply-accumulate
//! kernel: the first two run the widest the CPU has (AVX-512 or AVX2), `avx2_mac` the AVX2 one
//! where the CPU has AVX2, `portable_mac` the portable one.

mod global_pool {
    fastquery_backend::conformance_tests!(Ok::<_, fastquery_backend::BackendError>(
        fastquery_cpu::CpuBackend::new()
    ));
}

mod one_thread {
    fastquery_backend::conformance_tests!(fastquery_cpu::CpuBackend::with_threads(1));
}

mod avx2_mac {
    fastquery_backend::conformance_tests!(
        fastquery_cpu::CpuBackend::with_threads(2).map(|b| b.with_mac_kernel(fastquery_cpu::MacKernel::Avx2))
    );
}

mod portable_mac {
    fastquery_backend::conformance_tests!(fastquery_cpu::CpuBackend::with_threads(2).map(|b| b.portable()));
}
