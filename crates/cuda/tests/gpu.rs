//! Every CUDA check in one test binary (copied to a GPU machine and run there):
//!
//! * the kernels compile with NVRTC for sm_80 and sm_90: needs NVRTC only, no GPU. CI installs
//!   NVRTC and sets `FASTQUERY_REQUIRE_NVRTC=1`, so there a missing NVRTC fails instead of
//!   skipping;
//! * the shared backend conformance suite on the GPU (each operation against the scalar host
//!   reference, so the words equal the CPU backend's);
//! * scheme `cheetah` end to end with the server on the GPU.
//!
//! Without a GPU, the device tests print why they were skipped; the same suite and the same
//! end-to-end run then still exercise every kernel and every launch of the backend on the CPU
//! emulator (`CudaBackend::emulated`, module `emulated`), which needs no GPU and never skips.

use std::sync::Arc;

use fastquery_cuda::{CudaBackend, compile, nvrtc_present};

/// Whether NVRTC is here; without it, prints why the test skips (and fails where CI requires
/// NVRTC with `FASTQUERY_REQUIRE_NVRTC=1`).
fn nvrtc_or_skip() -> bool {
    if nvrtc_present() {
        return true;
    }
    assert!(
        std::env::var_os("FASTQUERY_REQUIRE_NVRTC").is_none(),
        "FASTQUERY_REQUIRE_NVRTC is set but libnvrtc cannot be loaded (LD_LIBRARY_PATH?)"
    );
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED: NVRTC not found (scripts/setup.sh installs it for CI)");
    false
}

#[test]
fn kernels_compile_with_nvrtc_for_sm80_and_sm90() {
    if !nvrtc_or_skip() {
        return;
    }
    for arch in ["sm_80", "sm_90"] {
        let ptx = compile(arch).unwrap_or_else(|e| panic!("{arch}: {e}"));
        let text = ptx.to_src();
        for (k, _) in fastquery_cuda::KERNELS {
            assert!(text.contains(&format!(".entry {k}")), "{arch}: kernel {k} missing from the PTX");
        }
    }
    // The compare-and-select reductions of FASTQUERY_CUDA_MINMAX=0 (the emulator runs the
    // default form only).
    fastquery_cuda::compile_with("sm_90", false).unwrap();
}

/// Every kernel, compiled to machine code for sm_80 and sm_90 by NVRTC's ptxas: a block of the
/// most threads the backend launches it with fits the register file, and nothing spills (the
/// emulator cannot see either; a GPU would refuse the launch or run it slowly).
#[test]
fn every_kernel_fits_the_register_file_without_spills() {
    if !nvrtc_or_skip() {
        return;
    }
    for arch in ["sm_80", "sm_90"] {
        let usage = match fastquery_cuda::resource_usage(arch) {
            Ok(u) => u,
            // An NVRTC that prints no ptxas report (the CUDA 13.0 toolkit's, on an H200): where a
            // GPU is at hand, the driver's view of the loaded kernels stands in for it
            // (`loaded_kernels_launch_at_their_block_sizes`); without one, it is a failure.
            Err(e) if CudaBackend::new(0).is_ok() => {
                eprintln!("{arch}: {e}; the loaded kernels are checked on the GPU instead");
                continue;
            }
            Err(e) => panic!("{arch}: {e}"),
        };
        for (k, threads) in fastquery_cuda::KERNELS {
            let r = usage.iter().find(|r| r.name == k).unwrap_or_else(|| {
                panic!("{arch}: no ptxas report for {k} ({} kernels reported)", usage.len())
            });
            assert!(r.registers > 0, "{arch} {k}: no register count read");
            // The table of docs/BENCHMARKS.md (`-- --nocapture` shows it).
            eprintln!("{arch} {k}: {} registers x {threads} threads", r.registers);
            assert!(
                r.block_registers(threads) <= fastquery_cuda::REGISTERS_PER_SM,
                "{arch} {k}: {} registers x {threads} threads exceed the register file",
                r.registers
            );
            assert_eq!((r.spill_store_bytes, r.spill_load_bytes), (0, 0), "{arch} {k} spills");
        }
    }
}

/// On a GPU: every kernel, as the driver loaded it, takes a block of the most threads the
/// backend launches it with, and the registers it uses fit that block in the register file.
#[test]
fn loaded_kernels_launch_at_their_block_sizes() {
    let backend = match CudaBackend::new(0) {
        Ok(b) => b,
        Err(e) => {
            fastquery_backend::conformance::report_skip(&e);
            return;
        }
    };
    let loaded = backend.loaded_kernels().unwrap().expect("a GPU backend has loaded kernels");
    assert_eq!(loaded.len(), fastquery_cuda::KERNELS.len());
    for (k, threads) in fastquery_cuda::KERNELS {
        let l = loaded.iter().find(|l| l.name == k).unwrap_or_else(|| panic!("{k} not loaded"));
        eprintln!(
            "{k}: {} registers, {} local bytes, blocks of at most {}",
            l.registers, l.local_bytes, l.max_threads
        );
        assert!(l.registers > 0, "{k}: no register count");
        assert!(
            l.max_threads >= threads,
            "{k}: blocks of {threads} threads launched, {} allowed",
            l.max_threads
        );
        assert!(
            fastquery_cuda::block_registers(l.registers, threads) <= fastquery_cuda::REGISTERS_PER_SM,
            "{k}: register file"
        );
    }
}

mod conformance {
    fastquery_backend::conformance_tests!(fastquery_cuda::CudaBackend::new(0));
}

#[test]
fn every_scheme_end_to_end_on_the_gpu() {
    let backend = match CudaBackend::new(0) {
        Ok(b) => Arc::new(b),
        Err(e) => {
            fastquery_backend::conformance::report_skip(&e);
            return;
        }
    };
    // Each scheme queried, answered, decoded and every share checked against the table.
    fastquery_protocol::harness::verify_every_scheme(backend).unwrap();
}

/// A folded design whose table product takes the tensor-core kernel (at least 8 rows and
/// 8 columns: 5 tokens, 8+ groups), answered on `backend`, every share exact. The tiny
/// workload of the every-scheme tests stays on the integer kernel.
fn fold_on_the_tensor_core_product(backend: Arc<CudaBackend>) {
    use fastquery_protocol::{
        SchemeClient, SchemeServer,
        fold::{Allowed, FoldClient, FoldServer, candidates},
    };
    let (m, d, bits) = (500usize, 2048usize, 5u32);
    let lim = (1i32 << (bits - 1)) - 1;
    let values = (0..m * d).map(|i| ((i * 7919 + 3) % (2 * lim as usize + 1)) as i32 - lim).collect();
    let table = fastquery_table::IntTable::new(m, d, values, bits, vec![1.0; d], vec![0; d]).unwrap();
    let ids = [0usize, 499, 250, 255, 7];
    let design = candidates(4, "fastquery", (m, d, bits), 37, ids.len(), Allowed::default())
        .into_iter()
        .map(|c| c.0)
        .filter(|x| x.layout.m2 * x.layout.pieces >= 8 && x.layout.m1 >= 2 && x.layout.tokens_per_ct >= 4)
        .min_by_key(|x| (x.index_bits(), x.params.n(), x.layout.m1))
        .expect("a design with 8+ columns");
    let server = FoldServer::new(backend, &table, design.clone()).unwrap();
    let mut client = FoldClient::new(design.clone()).unwrap();
    let session = server.open_session(&client.setup().unwrap()).unwrap();
    let (resp, shares) = server.answer(session, &client.query(&ids).unwrap()).unwrap();
    let got = client.decode(&resp).unwrap().reconstruct(&shares).unwrap();
    let mask = (1u64 << design.params.plain_bits()) - 1;
    for (t, &k) in ids.iter().enumerate() {
        for c in 0..d {
            assert_eq!(got[t * d + c], (i64::from(table.get(k, c)) as u64) & mask, "token {k} channel {c}");
        }
    }
}

/// Every NTT kernel version (`FASTQUERY_CUDA_NTT`) against the reference at the suite's degrees,
/// with the fused key switches built on them, so that the older kernels stay exact for A/B runs
/// (the suite itself runs the newest).
fn every_ntt_version(backend: Arc<CudaBackend>) {
    for v in fastquery_cuda::NTT_VERSIONS {
        backend.set_ntt_version(v).unwrap();
        fastquery_backend::conformance::ntt_matches_reference(&backend);
        fastquery_backend::conformance::decompose_mac_matches_its_steps(&backend);
    }
    assert!(backend.set_ntt_version(0).is_err() && backend.set_ntt_version(4).is_err());
}

#[test]
fn every_ntt_version_on_the_gpu() {
    match CudaBackend::new(0) {
        Ok(b) => every_ntt_version(Arc::new(b)),
        Err(e) => fastquery_backend::conformance::report_skip(&e),
    }
}

/// The two-row product with its grid over the coefficients first (`FASTQUERY_CUDA_COLS_FIRST=0`,
/// the order before 2026-12-05): the suite's products exact in that order too.
fn two_row_product_coefficients_first(b: Arc<CudaBackend>) {
    b.set_columns_first(false);
    fastquery_backend::conformance::mac_matches_scalar(&b);
    b.set_columns_first(true);
}

#[test]
fn two_row_product_coefficients_first_on_the_gpu() {
    match CudaBackend::new(0) {
        Ok(b) => two_row_product_coefficients_first(Arc::new(b)),
        Err(e) => fastquery_backend::conformance::report_skip(&e),
    }
}

#[test]
fn fold_on_the_tensor_core_product_on_the_gpu() {
    match CudaBackend::new(0) {
        Ok(b) => fold_on_the_tensor_core_product(Arc::new(b)),
        Err(e) => fastquery_backend::conformance::report_skip(&e),
    }
}

/// The CUDA backend's own code on the kernels compiled for the host: the whole conformance
/// suite (each kernel bit-exact against the scalar reference, launches checked against the
/// kernels' signatures and the device limits) and every scheme end to end.
mod emulated {
    use std::sync::Arc;

    use fastquery_backend::Backend;
    use fastquery_cuda::CudaBackend;

    /// With the race check: every launch also runs with threads and blocks in reverse order
    /// and must give the same words.
    mod conformance {
        fastquery_backend::conformance_tests!(fastquery_cuda::CudaBackend::emulated_checking_races());
    }

    /// More distinct automorphisms than the backend keeps index tables for (64), twice over:
    /// every result equals the host's, whether its table was cached, evicted or new.
    #[test]
    fn automorphisms_beyond_the_index_table_cache() {
        use fastquery_backend::{Coeff, Polys, Shape, conformance};
        let b = Arc::new(CudaBackend::emulated().unwrap());
        let ring = conformance::ring(&b, 256, 2);
        let ctx = ring.context().clone();
        let shape = Shape::new(1, 2);
        let words: Vec<u32> = (0..512u32)
            .map(|i| (i * 7919 + 13) % ctx.moduli()[0].value().min(ctx.moduli()[1].value()))
            .collect();
        let a: Polys<_, Coeff> = ring.upload(&words, shape).unwrap();
        for round in 0..2 {
            for g in (1..2 * 256).step_by(2).take(80) {
                let got = ring.download(&ring.automorphism(&a, g).unwrap()).unwrap();
                let idx = fastquery_backend::automorphism_index(256, g, false).unwrap();
                let mut want = vec![0u32; words.len()];
                fastquery_backend::host::gather_signed(&ctx, &words, &mut want, &idx, shape);
                assert_eq!(got, want, "round {round} g={g}");
            }
        }
    }

    /// [`super::every_ntt_version`] on the emulator, with the race check.
    #[test]
    fn every_ntt_version() {
        super::every_ntt_version(Arc::new(CudaBackend::emulated_checking_races().unwrap()));
    }

    /// [`super::two_row_product_coefficients_first`] on the emulator, with the race check.
    #[test]
    fn two_row_product_coefficients_first() {
        super::two_row_product_coefficients_first(Arc::new(CudaBackend::emulated_checking_races().unwrap()));
    }

    /// [`super::fold_on_the_tensor_core_product`] on the emulator.
    #[test]
    fn fold_on_the_tensor_core_product() {
        super::fold_on_the_tensor_core_product(Arc::new(CudaBackend::emulated().unwrap()));
    }

    /// Key-switch products split by digit (`FASTQUERY_CUDA_SPLIT_KS`, here forced for every
    /// batch), with the race check: the suite's key-switching checks (the fused product against
    /// its steps, key sets, hybrid switching, expansion and packing steps) and a folded request
    /// end to end, every share exact.
    #[test]
    fn key_switching_split_by_digit() {
        use fastquery_backend::conformance as c;
        let b = Arc::new(CudaBackend::emulated_checking_races().unwrap());
        b.set_split_rows(usize::MAX);
        c::decompose_mac_matches_its_steps(&b);
        c::key_sets_match_one_set_at_a_time(&b);
        c::hybrid_keyswitch_matches_its_steps(&b);
        c::expand_step_matches_its_steps(&b);
        c::pack_step_matches_its_steps(&b);
        let b = Arc::new(CudaBackend::emulated().unwrap());
        b.set_split_rows(usize::MAX);
        fastquery_protocol::harness::verify_schemes(b, &[fastquery_protocol::harness::SchemeKind::FastQuery])
            .unwrap();
    }

    #[test]
    fn every_scheme_end_to_end_on_the_emulator() {
        let backend = Arc::new(CudaBackend::emulated().unwrap());
        assert!(!backend.info().accelerator);
        fastquery_protocol::harness::verify_every_scheme(backend).unwrap();
    }
}
