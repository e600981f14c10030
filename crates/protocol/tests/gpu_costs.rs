//! The GPU cost profile ([`fastquery_protocol::cost`]) against what an H200 measured
//! (docs/BENCHMARKS.md, "CUDA backend on an NVIDIA H200", 2026-12-04): the llama-7b requests
//! it was fitted to, and the llama-30b ones it was not. The designs are those the H200 ran:
//! derived for a CPU's ranking (the only one there was then) on its 16 host threads, their
//! tokens folded one at a time (the fold of that day).

use fastquery_protocol::{
    cost::{Device, FoldRun, GPU_LEVEL_US, Server, gpu_phases},
    fastquery::estimated_server_ms,
    fold::KeySwitching,
    harness::{DesignInputs, FIXED_POINT_BITS, SchemeDesign, SchemeKind},
};

const LLAMA_7B: (usize, usize) = (32000, 4096);
const LLAMA_30B: (usize, usize) = (32000, 6656);
/// How the H200 ran a folded request on 2026-12-04: each token's chain alone, each index bit
/// converted alone.
const THEN: FoldRun = FoldRun { group: 1, merge_rows: 0 };

fn inputs(kind: SchemeKind, (m, d): (usize, usize), tokens: usize, device: Device) -> DesignInputs {
    DesignInputs {
        m,
        d,
        // The quantized table's codes at these shapes (`fastquery plan`: 6-bit codes).
        bits: if kind.is_fastquery() { 6 } else { FIXED_POINT_BITS },
        plain_bits: kind.default_plain_bits(),
        tokens,
        server_threads: 16,
        device,
        keyswitch: KeySwitching::Any,
        max_shared: fastquery_he::share::MAX_SHARED,
        session_tokens: None,
        decode_tokens: 0,
    }
}

/// The design the H200 ran.
fn measured_design(kind: SchemeKind, shape: (usize, usize), tokens: usize) -> SchemeDesign {
    kind.design(&inputs(kind, shape, tokens, Device::Cpu)).unwrap()
}

/// Served milliseconds per token on the H200 (`gpu_run.sh quick` and `more`, medians).
const SERVED: [(SchemeKind, (usize, usize), usize, f64); 12] = [
    (SchemeKind::FastQuery, LLAMA_7B, 1, 6.0),
    (SchemeKind::FastQuery, LLAMA_7B, 8, 4.3),
    (SchemeKind::FastQuery, LLAMA_7B, 128, 4.2),
    (SchemeKind::Cheetah, LLAMA_7B, 1, 10.1),
    (SchemeKind::Cheetah, LLAMA_7B, 8, 7.8),
    (SchemeKind::Cheetah, LLAMA_7B, 128, 7.8),
    // Held out of the fit.
    (SchemeKind::FastQuery, LLAMA_30B, 1, 8.6),
    (SchemeKind::FastQuery, LLAMA_30B, 8, 5.8),
    (SchemeKind::FastQuery, LLAMA_30B, 128, 5.5),
    (SchemeKind::Cheetah, LLAMA_30B, 1, 8.8),
    (SchemeKind::Cheetah, LLAMA_30B, 8, 8.8),
    (SchemeKind::Cheetah, LLAMA_30B, 128, 9.2),
];

/// Every request the H200 served, fitted or held out, within 0.75-1.35 of its measured time
/// per token, and nearer to it than the CPU model's estimate for the H200's 16 host threads.
#[test]
fn the_profile_reproduces_the_h200s_requests() {
    for (kind, shape, tokens, measured) in SERVED {
        let design = measured_design(kind, shape, tokens);
        let est = gpu_phases(&design, tokens, THEN).served_ms() / tokens as f64;
        let ratio = est / measured;
        assert!(
            (0.75..=1.35).contains(&ratio),
            "{kind:?} {shape:?} x{tokens}: {est:.2} against {measured} ms"
        );
        let cpu = estimated_server_ms(&design, tokens, Server::cpu(16)) / tokens as f64;
        assert!(
            (cpu / measured).ln().abs() > ratio.ln().abs(),
            "{kind:?} {shape:?} x{tokens}: the CPU model {cpu:.1} ms, the GPU's {est:.2}, measured {measured}"
        );
    }
}

/// Served milliseconds per token on the H200 of 2026-12-04's thirty-fourth session (`gpu_run.sh
/// first`, medians of three), the designs a GPU server ranks (the CUDA backend's default since
/// fb9e74c) run the CUDA backend's way (tokens folded together, a small group's bits in one key
/// switch). The profile predicted them before they were measured: none of them was fitted.
const SERVED_TODAY: [(SchemeKind, usize, f64); 6] = [
    (SchemeKind::FastQuery, 1, 6.2),
    (SchemeKind::FastQuery, 8, 3.3),
    (SchemeKind::FastQuery, 128, 2.4),
    (SchemeKind::FastQueryLan, 1, 6.4),
    (SchemeKind::FastQueryLan, 8, 2.9),
    (SchemeKind::FastQueryLan, 128, 2.4),
];

/// The profile's predictions for the code and designs of the thirty-fourth session's H200 run
/// fall within 0.75-1.35 of what it measured, and nearer than the CPU model's.
#[test]
fn the_profile_predicted_the_folded_tokens_requests() {
    for (kind, tokens, measured) in SERVED_TODAY {
        let design = kind.design(&inputs(kind, LLAMA_7B, tokens, Device::Gpu)).unwrap();
        let est = gpu_phases(&design, tokens, FoldRun::cuda(tokens)).served_ms() / tokens as f64;
        let ratio = est / measured;
        assert!((0.75..=1.35).contains(&ratio), "{kind:?} x{tokens}: {est:.2} against {measured} ms");
        let cpu = estimated_server_ms(&design, tokens, Server::cpu(16)) / tokens as f64;
        assert!(
            (cpu / measured).ln().abs() > ratio.ln().abs(),
            "{kind:?} x{tokens}: the CPU model {cpu:.1} ms, the GPU's {est:.2}, measured {measured}"
        );
    }
}

/// The synchronised phases of fastquery's llama-7b requests (`FASTQUERY_TRACE=sync`) fall in
/// the ranges the H200 measured, widened by a tenth, and so does cheetah's finish.
#[test]
fn the_profile_reproduces_the_h200s_phases() {
    type Range = (f64, f64);
    // (tokens, expand + RGSW, table product, fold, finish + encode), ms per request.
    let measured: [(usize, Range, Range, Range, Range); 2] = [
        (1, (2.7, 3.5), (1.2, 1.2), (1.4, 1.5), (2.1, 5.1)),
        (8, (15.5, 17.3), (5.2, 5.2), (12.0, 12.4), (6.0, 9.6)),
    ];
    for (tokens, expand, product, fold, finish) in measured {
        let p = gpu_phases(&measured_design(SchemeKind::FastQuery, LLAMA_7B, tokens), tokens, THEN);
        for (name, est, (lo, hi)) in [
            ("expand", p.expand, expand),
            ("product", p.product, product),
            ("fold", p.fold, fold),
            ("finish", p.finish, finish),
        ] {
            assert!(
                (0.9 * lo..=1.1 * hi).contains(&est),
                "{tokens} tokens, {name}: {est:.2} ms against {lo}-{hi}"
            );
        }
    } // Cheetah's finish and encoding: 2.8 ms per llama-7b token (179 responses).
    let finish = gpu_phases(&measured_design(SchemeKind::Cheetah, LLAMA_7B, 8), 8, THEN).finish / 8.0;
    assert!((0.9 * 2.8..=1.1 * 2.8).contains(&finish), "cheetah's finish {finish:.2} ms per token");
}

/// Folding a request's tokens together (the CUDA backend's way since 2026-12-04) is predicted
/// to shorten the fold's chain, never to lengthen it, and to leave a one-token request alone;
/// converting a small group's bits in one key switch shortens the expansion's.
#[test]
fn folding_tokens_together_shortens_the_chain() {
    let together = |group| FoldRun { group, merge_rows: 0 };
    let one = measured_design(SchemeKind::FastQuery, LLAMA_7B, 1);
    assert_eq!(gpu_phases(&one, 1, THEN), gpu_phases(&one, 1, together(8)));
    for tokens in [2, 8, 128] {
        let design = measured_design(SchemeKind::FastQuery, LLAMA_7B, tokens);
        let (alone, all) = (gpu_phases(&design, tokens, THEN), gpu_phases(&design, tokens, together(tokens)));
        assert!(all.fold < alone.fold, "{tokens} tokens: {all:?} against {alone:?}");
        // The RGSW conversion becomes one batch per bit; the table product is the same.
        assert!(all.expand <= alone.expand * (1.0 + 1e-12) && all.product == alone.product);
    }
    // One token's eight bits in one key switch: seven levels fewer.
    let merged = gpu_phases(&one, 1, FoldRun::cuda(1));
    let saved = gpu_phases(&one, 1, THEN).expand - merged.expand;
    assert!((6.0 * GPU_LEVEL_US / 1e3..=8.0 * GPU_LEVEL_US / 1e3).contains(&saved), "saved {saved:.2} ms");
}

/// A GPU server's designs rank by the GPU's estimates: `fastquery-lan`'s choice is the design
/// the profile estimates fastest on the LAN among those the CPU model would rank, and at one
/// token it is not the CPU's choice (whose estimate on the GPU is no better).
#[test]
fn a_gpu_server_ranks_by_the_gpu_profile() {
    let kind = SchemeKind::FastQueryLan;
    let on = |device| kind.design(&inputs(kind, LLAMA_7B, 1, device)).unwrap();
    let (cpu, gpu) = (on(Device::Cpu), on(Device::Gpu));
    let gpu_server = Server { threads: 16, device: Device::Gpu };
    assert_ne!(cpu.predicted_bytes(1), gpu.predicted_bytes(1));
    let latency = |d: &SchemeDesign| {
        let b = d.predicted_bytes(1);
        fastquery_protocol::harness::LAN.latency_ms(
            estimated_server_ms(d, 1, gpu_server),
            (b.query + b.response) as f64,
            1.0,
        )
    };
    assert!(latency(&gpu) <= latency(&cpu), "{} against {}", latency(&gpu), latency(&cpu));
}
