//! The server work counted by `fastquery_backend::work` against what a folded design states
//! about itself (`FoldDesign::operations`, the basis of its cost model): key switches, external
//! products, coefficient products, on designs with one and several query ciphertexts, pieces and
//! packing. One test in its own binary: the counters are process-wide.

use std::sync::Arc;

use fastquery_backend::work;
use fastquery_cpu::CpuBackend;
use fastquery_protocol::{
    SchemeClient, SchemeServer,
    fold::{Allowed, FoldClient, FoldServer, candidates},
};
use fastquery_table::IntTable;

fn table(m: usize, d: usize, bits: u32) -> IntTable {
    let lim = (1i32 << (bits - 1)) - 1;
    let values = (0..m * d).map(|i| ((i * 7919 + 5) % (2 * lim as usize + 1)) as i32 - lim).collect();
    IntTable::new(m, d, values, bits, vec![1.0; d], vec![0; d]).unwrap()
}

#[test]
fn counted_work_equals_the_designs_operation_counts() {
    // (table shape, tokens the design is built for, tokens asked)
    let cases = [((2000usize, 16usize, 5u32), 2usize, 5usize), ((300, 64, 5), 4, 4), ((12, 8200, 5), 3, 3)];
    let mut any_shared = false;
    for ((m, d, bits), built, asked) in cases {
        let t = table(m, d, bits);
        let design = candidates(4, "fastquery", (m, d, bits), 37, built, Allowed::default())
            .into_iter()
            .next()
            .expect("a design")
            .0;
        let server = FoldServer::new(Arc::new(CpuBackend::new()), &t, design.clone()).unwrap();
        let mut client = FoldClient::new(design.clone()).unwrap();
        let session = server.open_session(&client.setup().unwrap()).unwrap();
        let ids: Vec<usize> = (0..asked).map(|i| (i * 7 + 1) % m).collect();
        let q = client.query(&ids).unwrap();
        let before = work::snapshot();
        let (resp, shares) = server.answer(session, &q).unwrap();
        let got = work::snapshot() - before;
        let ops = server.predicted_operations(asked).expect("a folded design states its operations");
        let layout = design.summary().layout;
        assert_eq!(
            got.key_switches as usize,
            ops.key_switches + 2 * ops.external_products,
            "{layout}: key switches counted vs stated ({ops:?})"
        );
        // The table product, and the re-randomisation's two products (u times each half of the
        // public key) per response ciphertext, at the full chain.
        let (limbs, n) = (design.params.limbs(), design.params.n());
        let finish = 2 * design.response_cts(asked) * limbs * n;
        assert_eq!(got.mac_products as usize, ops.mac_products + finish, "{layout}: coefficient products");
        // Every key switch transforms each of its limbs x digits rows mod every prime: at least
        // limbs^2 rows each (digits >= 1); those of a shared c1 run over the response limbs
        // and their special prime, lr (lr + 1) rows each.
        let l = design.layout;
        let shared =
            if l.sharing().keyed() { design.response_cts(asked) * (l.share + 1).div_ceil(2) } else { 0 };
        let lr = design.params.response_limbs();
        let rows = (got.key_switches as usize - shared) * limbs * limbs + shared * lr * (lr + 1);
        assert!(got.key_switch_transforms as usize >= rows, "{layout}: {got:?}");
        any_shared |= l.share > 1 && design.response_cts(asked) > 1;
        assert!(got.transforms > 0, "{layout}: {got:?}");
        // The request was answered correctly, too.
        let shares = client.decode(&resp).unwrap().reconstruct(&shares).unwrap();
        assert_eq!(shares[0], (i64::from(t.get(ids[0], 0)) as u64) & ((1 << 37) - 1), "{layout}");
    }
    // The pieces case (several responses per request) shares c1: its switch is counted too.
    assert!(any_shared, "no case shares c1");
}
