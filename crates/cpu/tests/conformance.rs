//! The shared backend suite on the CPU backend, with the global pool and with one thread (the
//! single-threaded path must give the same words).

mod global_pool {
    fastquery_backend::conformance_tests!(Ok::<_, fastquery_backend::BackendError>(
        fastquery_cpu::CpuBackend::new()
    ));
}

mod one_thread {
    fastquery_backend::conformance_tests!(fastquery_cpu::CpuBackend::with_threads(1));
}
