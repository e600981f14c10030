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

/// Every check the suite defines (a `pub fn name<B: Backend>(b: &Arc<B>)` in its source) is
/// one of the tests of `conformance_tests!` and one of `conformance::all` (what `fastquery
/// check` runs), so a check added to one cannot be missing from the others.
#[test]
fn every_check_of_the_suite_is_listed_everywhere() {
    let src = include_str!("../../backend/src/conformance.rs");
    let defined: Vec<&str> = src
        .lines()
        .filter(|l| l.contains("(b: &Arc<B>)"))
        .filter_map(|l| l.strip_prefix("pub fn "))
        .filter_map(|l| l.split('<').next())
        .collect();
    let from = src.find("conformance_tests!(@tests").expect("the macro's list");
    let listed = &src[from..from + src[from..].find(");").expect("the list's end")];
    let all = fastquery_backend::conformance::all::<fastquery_cpu::CpuBackend>();
    assert!(defined.len() >= 17, "{defined:?}");
    assert_eq!(defined.len(), all.len(), "{defined:?}");
    for name in &defined {
        let word = |c: char| !(c.is_alphanumeric() || c == '_');
        assert!(listed.split(word).any(|w| w == *name), "{name} is not among the macro's tests");
        assert!(all.iter().any(|(f, _, _)| f == name), "{name} is not in conformance::all");
    }
}
