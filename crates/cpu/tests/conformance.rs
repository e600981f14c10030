//! The shared backend suite on the CPU backend, with the global pool and with one thread (the
//! single-threaded path must give the same words), and with the portable multiply-accumulate
//! (where the CPU has AVX-512 the other two run the AVX-512 kernel).

mod global_pool {
    fastquery_backend::conformance_tests!(Ok::<_, fastquery_backend::BackendError>(
        fastquery_cpu::CpuBackend::new()
    ));
}

mod one_thread {
    fastquery_backend::conformance_tests!(fastquery_cpu::CpuBackend::with_threads(1));
}

mod portable_mac {
    fastquery_backend::conformance_tests!(fastquery_cpu::CpuBackend::with_threads(2).map(|b| b.portable()));
}
