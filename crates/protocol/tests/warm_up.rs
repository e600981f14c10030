//! The harness's warm-up requests are real requests: each one adds a whole request's counted
//! work (the same every time), and none of it lands in the measured report. One test in its own
//! binary: the work counters are process-wide.

use std::sync::Arc;

use fastquery_backend::work;
use fastquery_cpu::CpuBackend;
use fastquery_protocol::harness::{SchemeKind, run};
use fastquery_table::IntTable;

#[test]
fn each_warm_up_request_does_one_request_of_work_outside_the_report() {
    let (m, d, bits) = (400usize, 64usize, 5u32);
    let lim = (1i32 << (bits - 1)) - 1;
    let values = (0..m * d).map(|i| ((i * 7919 + 3) % (2 * lim as usize + 1)) as i32 - lim).collect();
    let table = IntTable::new(m, d, values, bits, vec![1.0; d], vec![0; d]).unwrap();
    let ids = [3usize, 150, 399];
    for kind in [SchemeKind::FastQuery, SchemeKind::Bumblebee] {
        let plain = kind.default_plain_bits();
        let total = |warm_up: usize| {
            let before = work::snapshot();
            let r = run(kind, Arc::new(CpuBackend::new()), &table, &ids, plain, 0, (warm_up, 1), &|_| {})
                .unwrap();
            (work::snapshot() - before, r)
        };
        let (w0, r0) = total(0);
        let (w1, r1) = total(1);
        let (w2, r2) = total(2);
        assert!(r0.verified && r1.verified && r2.verified, "{}", kind.name());
        assert_eq!((r0.warm_up_requests, r1.warm_up_requests, r2.warm_up_requests), (0, 1, 2));
        // The measured request's work is the same with or without warm-ups before it.
        assert_eq!(r0.server_work, r1.server_work, "{}", kind.name());
        assert_eq!(r1.server_work, r2.server_work, "{}", kind.name());
        assert_eq!(r1.server_ms_per_token_runs.len(), 1);
        // Each warm-up adds exactly one measured request's server work (the client's work is
        // not counted: it runs on the host, not through a backend).
        let (one, two) = (w1 - w0, w2 - w1);
        assert_eq!(one, r0.server_work, "{}: {w0:?} {w1:?} {w2:?}", kind.name());
        assert_eq!(two, r0.server_work, "{}", kind.name());
        assert!(one.mac_products > 0, "{}", kind.name());
        if kind == SchemeKind::Bumblebee {
            assert!(one.key_switches > 0, "bumblebee packs its products: {one:?}");
        }
    }
}
