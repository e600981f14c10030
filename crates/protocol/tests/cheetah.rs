//! Scheme `cheetah` end to end on the CPU backend: correctness as a property test, server
//! privacy, re-randomisation, and the client's state machine.

use std::sync::Arc;

use fastquery_cpu::CpuBackend;
use fastquery_he::{Params, share::Sharing};
use fastquery_pack::CheetahLayout;
use fastquery_protocol::{
    ProtocolError, SchemeClient, SchemeServer,
    cheetah::{self, SCHEME_ID},
    messages::{Limits, c0_width, decode_response},
    wire::HEADER_BYTES,
};
use fastquery_table::IntTable;
use proptest::prelude::*;
use rand::{Rng, SeedableRng, rngs::StdRng, seq::SliceRandom};

mod common;
use common::random_table;

fn backend() -> Arc<CpuBackend> {
    Arc::new(CpuBackend::new())
}

/// A table whose entries are pairwise distinct, so a leaked entry is recognisable.
fn distinct_table(m: usize, d: usize, seed: u64) -> IntTable {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut values: Vec<i32> = (0..(m * d) as i32).map(|i| i - (m * d / 2) as i32).collect();
    values.shuffle(&mut rng);
    IntTable::new(m, d, values, 20, vec![1.0; d], vec![0; d]).unwrap()
}

fn run(server: &dyn SchemeServer, client: &mut dyn SchemeClient, session: u64, ids: &[usize]) -> Vec<u64> {
    let q = client.query(ids).unwrap();
    let (resp, s_shares) = server.answer(session, &q).unwrap();
    let c_shares = client.decode(&resp).unwrap();
    c_shares.reconstruct(&s_shares).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, failure_persistence: None, ..ProptestConfig::default() })]
    /// Every share pair reconstructs the exact entry, for random tables, share rings and batches
    /// of 1 to 9 tokens including 0, m-1 and the edges of the layout's blocks.
    #[test]
    fn shares_reconstruct_exactly(m in 1usize..400, d in 1usize..48, bits in 4u32..17, plain in prop::sample::select(vec![16u32, 24, 37]), seed in any::<u64>(), tokens in 1usize..10) {
        let table = random_table(m, d, bits, seed);
        let server = cheetah::server(backend(), &table, plain).unwrap();
        let mut client = cheetah::client(m, d, bits, plain).unwrap();
        let session = server.open_session(&client.setup().unwrap()).unwrap();
        let layout = CheetahLayout::choose(m, d, 4096).unwrap();
        let mut rng = StdRng::seed_from_u64(seed ^ 1);
        let edges = [0, m - 1, (layout.d1 - 1).min(m - 1), layout.d1.min(m - 1)];
        let ids: Vec<usize> = (0..tokens).map(|i| if i < edges.len() { edges[i] } else { rng.random_range(0..m) }).collect();
        let got = run(&server, &mut client, session, &ids);
        let mask = if plain == 64 { u64::MAX } else { (1u64 << plain) - 1 };
        for (row, &k) in ids.iter().enumerate() {
            for c in 0..d {
                prop_assert_eq!(got[row * d + c], (i64::from(table.get(k, c)) as u64) & mask, "token {} channel {}", k, c);
            }
        }
    }
}

#[test]
fn responses_hold_nothing_but_the_requested_entries() {
    let (m, d) = (700, 40);
    let table = distinct_table(m, d, 3);
    let server = cheetah::server(backend(), &table, 37).unwrap();
    let mut client = cheetah::client(m, d, 20, 37).unwrap();
    let session = server.open_session(&client.setup().unwrap()).unwrap();
    let ids = [5usize, 699, 350];
    let q = client.query(&ids).unwrap();
    let (resp, s_shares) = server.answer(session, &q).unwrap();
    // The response has exactly one c0 coefficient per requested channel and nothing else: its
    // size is the header, the two width bytes (dropped c0 bits; c1 width, 0 for Cheetah's whole
    // c1), and per ciphertext c1 plus the kept c0 values.
    let params = Params::clone(&cheetah::params(37).unwrap());
    let layout = CheetahLayout::choose(m, d, 4096).unwrap();
    let kept: Vec<usize> = (0..ids.len())
        .flat_map(|_| (0..layout.out_blocks()).map(|j| layout.output_positions(j).len()))
        .collect();
    assert_eq!(kept.iter().sum::<usize>(), ids.len() * d);
    let (drop_bits, _) =
        decode_response(&params, SCHEME_ID, &resp, (&kept, Sharing::NONE), Limits::default()).unwrap();
    let c1_bits: usize =
        params.moduli()[..2].iter().map(|p| 32 - p.value().leading_zeros() as usize).sum::<usize>() * 4096;
    let width = c0_width(&params, drop_bits) as usize;
    let body_bytes: usize = 2 + kept.iter().map(|&k| (c1_bits + k * width).div_ceil(8)).sum::<usize>();
    assert_eq!(resp.len(), HEADER_BYTES + body_bytes);
    // What the client decrypts, unmasked by the server's shares, is exactly the requested rows,
    // and no entry of any other row appears anywhere in it.
    let c_shares = client.decode(&resp).unwrap();
    let got = c_shares.reconstruct(&s_shares).unwrap();
    let mask = (1u64 << 37) - 1;
    let requested: std::collections::HashSet<u64> =
        ids.iter().flat_map(|&k| table.row(k).iter().map(move |&v| (i64::from(v) as u64) & mask)).collect();
    for v in &got {
        assert!(requested.contains(v), "decrypted value {v} is not an entry of a requested row");
    }
    // And the client's own shares (what it sees without the server) are uniform-looking masks:
    // none of them equals its entry.
    let equal = c_shares.values.iter().zip(&got).filter(|(a, b)| a == b).count();
    assert!(equal <= 1, "{equal} client shares equal the plain entry");
}

#[test]
fn the_same_query_gets_unrelated_c1() {
    let table = random_table(300, 20, 12, 9);
    let server = cheetah::server(backend(), &table, 37).unwrap();
    let mut client = cheetah::client(300, 20, 12, 37).unwrap();
    let session = server.open_session(&client.setup().unwrap()).unwrap();
    let q = client.query(&[17]).unwrap();
    let (r1, _) = server.answer(session, &q).unwrap();
    let (r2, _) = server.answer(session, &q).unwrap();
    let params = cheetah::params(37).unwrap();
    let kept = vec![20];
    let (_, a) = decode_response(&params, SCHEME_ID, &r1, (&kept, Sharing::NONE), Limits::default()).unwrap();
    let (_, b) = decode_response(&params, SCHEME_ID, &r2, (&kept, Sharing::NONE), Limits::default()).unwrap();
    let (ca, cb) = (a[0].c1.residues(&params).unwrap(), b[0].c1.residues(&params).unwrap());
    let same = ca.iter().zip(cb.iter()).filter(|(x, y)| x == y).count();
    assert!(same < 8, "{same} equal c1 words across two answers");
}

#[test]
fn state_machine_and_sessions() {
    let table = random_table(64, 8, 8, 1);
    let server = cheetah::server(backend(), &table, 37).unwrap();
    let mut client = cheetah::client(64, 8, 8, 37).unwrap();
    assert!(matches!(client.query(&[1]), Err(ProtocolError::State(_))));
    assert!(matches!(client.decode(&[]), Err(ProtocolError::State(_))));
    let setup = client.setup().unwrap();
    assert!(client.setup().is_err());
    let session = server.open_session(&setup).unwrap();
    assert!(matches!(client.query(&[64]), Err(ProtocolError::Pack(_))));
    assert!(client.query(&[]).is_err());
    let q = client.query(&[3]).unwrap();
    assert!(client.query(&[4]).is_err()); // a response is pending
    assert!(matches!(server.answer(session + 99, &q), Err(ProtocolError::State(_))));
    let (resp, _) = server.answer(session, &q).unwrap();
    assert!(client.decode(&resp).is_ok());
    assert!(client.decode(&resp).is_err()); // nothing pending any more
    // A client of another table shape cannot talk to this server (different layout, so the
    // query has the wrong size) and gets an error, not a panic.
    let mut other = cheetah::client(5000, 8, 8, 37).unwrap();
    let s2 = server.open_session(&other.setup().unwrap()).unwrap();
    assert!(server.answer(s2, &other.query(&[4000]).unwrap()).is_err());
    // A different share ring is a different parameter set: refused at setup.
    let mut wrong_ring = cheetah::client(64, 8, 8, 36).unwrap();
    assert!(matches!(server.open_session(&wrong_ring.setup().unwrap()), Err(ProtocolError::Wire(_))));
}
