//! Whole sessions (`session::run_session`): the setup, the prompt in requests of the design's
//! size, the decode steps one token each, every share verified, on random tables and session
//! shapes for every scheme. The bytes that went over the wire are the designs' predictions,
//! request by request, and never more than the search's model of the session
//! (`WireBytes::session_total`), which they equal where the prompt fills its requests.

use std::sync::Arc;

use fastquery_cpu::CpuBackend;
use fastquery_protocol::{
    harness::{DesignInputs, SchemeKind},
    session::run_session,
};
use fastquery_table::IntTable;
use proptest::prelude::*;
use rand::{Rng, SeedableRng, rngs::StdRng};

mod common;
use common::random_table;

fn inputs(
    kind: SchemeKind,
    table: &IntTable,
    tokens: usize,
    session: Option<usize>,
    decode: usize,
) -> DesignInputs {
    let b = CpuBackend::new();
    DesignInputs {
        session_tokens: session,
        decode_tokens: decode,
        ..DesignInputs::for_backend(&b, table, kind.default_plain_bits(), tokens).unwrap()
    }
    .checked()
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn a_sessions_bytes_are_its_designs_predictions(
        m in 2usize..600, d in 1usize..40, bits in 4u32..8, seed in any::<u64>(),
        session in 1usize..11, decode_part in 0.0f64..=1.0, tokens in 1usize..5, warm in 0usize..3,
    ) {
        let table = random_table(m, d, bits, seed);
        let decode = (session as f64 * decode_part).round() as usize;
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5e55);
        let ids: Vec<usize> = (0..session).map(|_| rng.random_range(0..m)).collect();
        for kind in SchemeKind::ALL {
            let inputs = inputs(kind, &table, tokens, Some(session), decode);
            let backend = Arc::new(CpuBackend::new());
            let r = run_session(kind, backend, &table, &ids, decode, warm, &inputs, &|_| {}).unwrap();
            let name = kind.name();
            prop_assert!(r.verified, "{}", name);
            // Warm-up requests (verified in `verified`) are neither counted nor timed: the
            // requests, tokens and bytes below are the session's own.
            prop_assert_eq!(r.warm_up_rounds, warm);
            prop_assert!(r.declared);
            let prompt = session - decode;
            let size = if kind.batches_tokens() { tokens } else { 1 };
            prop_assert_eq!((r.prompt.tokens, r.decode.tokens), (prompt, decode));
            prop_assert_eq!((r.prompt.requests, r.decode.requests), (prompt.div_ceil(size), decode), "{}", name);
            prop_assert_eq!(r.total_bytes, r.setup_bytes + r.prompt.bytes() + r.decode.bytes());
            // Request by request, the design's prediction is what went over the wire.
            prop_assert_eq!(r.prompt.predicted_bytes, Some(r.prompt.bytes()), "{}", name);
            prop_assert_eq!(r.decode.predicted_bytes, Some(r.decode.bytes()), "{}", name);
            prop_assert_eq!(r.decode.query_bytes > 0, decode > 0);
            // The search's model counts a last, shorter prompt request as a full one.
            let model = r.model_bytes.unwrap() as usize;
            prop_assert!(model >= r.total_bytes, "{}: model {} < {}", name, model, r.total_bytes);
            if prompt.is_multiple_of(size) {
                prop_assert_eq!(model, r.total_bytes, "{}", name);
            }
            prop_assert!(r.lan_ms > 0.0 && r.wan_ms > r.lan_ms, "{}", name);
            for p in [&r.prompt, &r.decode] {
                prop_assert_eq!(p.server_ms_each.len(), p.requests);
                prop_assert!((p.server_ms_each.iter().sum::<f64>() - p.server_ms).abs() <= 1e-9 * p.server_ms.max(1.0));
                // Every scheme's server times its phases: each ran in at most every request,
                // one in every request, and together they took no more than the answers did
                // (the warm-up's phases are not among them).
                let phases = &p.server_phases;
                prop_assert_eq!(phases.is_empty(), p.requests == 0, "{}", name);
                prop_assert!(phases.iter().all(|ph| ph.ms_each.len() <= p.requests), "{}", name);
                prop_assert!(p.requests == 0 || phases.iter().any(|ph| ph.ms_each.len() == p.requests), "{}", name);
                let timed: f64 = phases.iter().flat_map(|ph| &ph.ms_each).sum();
                prop_assert!(timed <= p.server_ms + 1e-6, "{}: phases {} ms of {} ms", name, timed, p.server_ms);
            }
        }
    }
}

/// A short session's design made for it sends fewer bytes over it than the design for sessions
/// without end, measured over the wire; both sessions' shares reconstruct.
#[test]
fn the_design_made_for_a_session_sends_no_more_over_it() {
    let table = random_table(4000, 96, 6, 5);
    let mut rng = StdRng::seed_from_u64(9);
    let ids: Vec<usize> = (0..12).map(|_| rng.random_range(0..table.m())).collect();
    let kind = SchemeKind::FastQuery;
    let run = |session, decode| {
        let inputs = inputs(kind, &table, 4, session, decode);
        run_session(kind, Arc::new(CpuBackend::new()), &table, &ids, 4, 0, &inputs, &|_| {}).unwrap()
    };
    // Two prompt requests of 4 tokens, then 4 decode steps.
    let (made, free) = (run(Some(12), 4), run(None, 0));
    assert!(made.verified && free.verified);
    assert!(made.declared && !free.declared);
    assert_eq!(made.model_bytes, Some(made.total_bytes as u64), "the prompt fills its requests");
    // Here the design without end takes a setup of 14 MB for the fewest bytes per token; over
    // twelve tokens the setup is most of the session, and the design made for it halves it.
    assert!(made.total_bytes < free.total_bytes, "{} vs {}", made.total_bytes, free.total_bytes);
    assert!(made.setup_bytes < free.setup_bytes, "{} vs {}", made.setup_bytes, free.setup_bytes);
}

/// Sessions that cannot run are refused with an error, not a panic: no tokens, more decode
/// steps than tokens, requests of no tokens, a token id past the table; one of decode steps
/// only runs.
#[test]
fn impossible_sessions_are_refused() {
    let table = random_table(50, 8, 5, 1);
    let kind = SchemeKind::FastQuery;
    let ok = inputs(kind, &table, 2, None, 0);
    let run = |ids: &[usize], decode, inputs: &DesignInputs| {
        run_session(kind, Arc::new(CpuBackend::new()), &table, ids, decode, 1, inputs, &|_| {})
    };
    assert!(run(&[], 0, &ok).is_err());
    assert!(run(&[1, 2], 3, &ok).is_err());
    assert!(run(&[1, 2], 1, &DesignInputs { tokens: 0, ..ok }).is_err());
    assert!(run(&[1, 50], 0, &ok).is_err());
    assert!(run(&[1, 49], 1, &ok).unwrap().verified);
    // Every token a decode step: no prompt request at all.
    let all = run(&[1, 49, 7], 3, &ok).unwrap();
    assert!(all.verified);
    assert_eq!((all.prompt.requests, all.prompt.bytes(), all.decode.requests), (0, 0, 3));
    assert_eq!(all.total_bytes, all.setup_bytes + all.decode.bytes());
}

/// The decode steps' quantiles are server times of requests that ran (nearest rank).
#[test]
fn quantiles_are_nearest_ranks() {
    let p = fastquery_protocol::session::PhaseReport {
        server_ms_each: vec![4.0, 1.0, 3.0, 2.0],
        ..Default::default()
    };
    let q = |q| p.server_ms_quantile(q).unwrap();
    assert_eq!((q(0.0), q(0.25), q(0.5), q(0.75), q(0.95), q(1.0)), (1.0, 1.0, 2.0, 3.0, 4.0, 4.0));
    assert_eq!(fastquery_protocol::session::PhaseReport::default().server_ms_quantile(0.5), None);
    // The helper `query --decode-steps` shares: the middle of an odd count, ranks clamped.
    let rank = |v: &[f64], q| fastquery_protocol::session::nearest_rank(v, q);
    assert_eq!((rank(&[5.0, 1.0, 3.0], 0.5), rank(&[5.0, 1.0, 3.0], 7.0)), (Some(3.0), Some(5.0)));
    assert_eq!(rank(&[], 0.5), None);
}
