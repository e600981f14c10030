//! The folded query (expansion, RGSW folding, packing) on designs of every shape: rows split
//! into pieces, many rows per record with partial packs, several query ciphertexts per
//! request, one-group and many-group folds. Exact shares at the edges, predicted bytes equal
//! to the wire, and bad input refused without a panic.

use std::sync::Arc;

use fastquery_cpu::CpuBackend;
use fastquery_he::share::Sharing;
use fastquery_protocol::{
    SchemeClient, SchemeServer,
    fold::{Allowed, FoldClient, FoldDesign, FoldServer, KeySwitching, candidates},
};
use fastquery_table::IntTable;
use rand::{Rng, SeedableRng, rngs::StdRng};

mod common;
use common::random_table;

/// Runs one request of `ids` through `design` and checks every share and the byte count.
fn check(design: &FoldDesign, table: &IntTable, ids: &[usize]) {
    check_batched(design, table, ids, None);
}

/// [`check`] with the first dimension's working memory bounded to `batch_bytes`.
fn check_batched(design: &FoldDesign, table: &IntTable, ids: &[usize], batch_bytes: Option<usize>) {
    check_on(CpuBackend::new(), design, table, ids, batch_bytes);
}

/// [`check_batched`] on `backend`.
fn check_on(
    backend: CpuBackend,
    design: &FoldDesign,
    table: &IntTable,
    ids: &[usize],
    batch_bytes: Option<usize>,
) {
    check_with(backend, design, table, ids, |server| match batch_bytes {
        Some(bytes) => server.with_batch_bytes(bytes),
        None => server,
    });
}

/// [`check_on`] with the server as `configure` leaves it.
fn check_with(
    backend: CpuBackend,
    design: &FoldDesign,
    table: &IntTable,
    ids: &[usize],
    configure: impl FnOnce(FoldServer<CpuBackend>) -> FoldServer<CpuBackend>,
) {
    let server = configure(FoldServer::new(Arc::new(backend), table, design.clone()).unwrap());
    let mut client = FoldClient::new(design.clone()).unwrap();
    let setup = client.setup().unwrap();
    let session = server.open_session(&setup).unwrap();
    let q = client.query(ids).unwrap();
    let (resp, s) = server.answer(session, &q).unwrap();
    let predicted = design.predicted_bytes(ids.len());
    assert_eq!((predicted.setup, predicted.query, predicted.response), (setup.len(), q.len(), resp.len()));
    let got = client.decode(&resp).unwrap().reconstruct(&s).unwrap();
    let (d, mask) = (table.d(), (1u64 << design.params.plain_bits()) - 1);
    for (t, &k) in ids.iter().enumerate() {
        for c in 0..d {
            assert_eq!(
                got[t * d + c],
                (i64::from(table.get(k, c)) as u64) & mask,
                "{}: token {k} channel {c}",
                design.summary().layout
            );
        }
    }
}

/// The first candidate (fewest bytes) satisfying `pick`.
fn design_where(
    shape: (usize, usize, u32),
    plain: u32,
    tokens: usize,
    pick: impl Fn(&FoldDesign) -> bool,
) -> FoldDesign {
    candidates(4, "fastquery", shape, plain, tokens, Allowed::default())
        .into_iter()
        .map(|c| c.0)
        .find(|d| pick(d))
        .expect("a candidate of that shape")
}

#[test]
fn rows_split_into_pieces_reconstruct() {
    // d > N: every row is two records, no packing.
    let table = random_table(12, 8200, 5, 1);
    let design = design_where((12, 8200, 5), 37, 3, |d| d.layout.pieces > 1);
    assert_eq!(design.layout.pack, 1);
    check(&design, &table, &[0, 11, 5]);
}

#[test]
fn many_rows_per_record_and_partial_packs_reconstruct() {
    // Small d: many interleaved rows per record; 5 tokens in packs of up to 8.
    let (m, d) = (3000, 30);
    let table = random_table(m, d, 6, 2);
    for m2_min in [1usize, 4] {
        let design =
            design_where((m, d, 6), 16, 5, |x| x.layout.rows_per_record > 4 && x.layout.m2 >= m2_min);
        let mut rng = StdRng::seed_from_u64(9);
        let ids: Vec<usize> = [0, m - 1].into_iter().chain((0..3).map(|_| rng.random_range(0..m))).collect();
        check(&design, &table, &ids);
        // One token, and the same design again on a batch of another size.
        check(&design, &table, &[m / 2]);
    }
}

#[test]
fn requests_spanning_several_query_ciphertexts_reconstruct() {
    let (m, d) = (2000, 16);
    let table = random_table(m, d, 5, 3);
    // A design built for 2 tokens per query ciphertext, asked for 5 tokens: three ciphertexts.
    let design = design_where((m, d, 5), 37, 2, |x| x.layout.tokens_per_ct == 2);
    assert_eq!(design.query_cts(5), 3);
    // The two full ciphertexts share one list of sent coefficients, the last (one token) its
    // own, shorter one.
    let sent = design.query_sent(5).unwrap();
    assert!(sent.len() == 3 && Arc::ptr_eq(&sent[0], &sent[1]) && sent[2].len() < sent[0].len());
    let ids = [0, 1999, 1000, 1023, 1024];
    // The three expanded together into one first-dimension product of 10 rows (the default),
    // in batches of two ciphertexts and one (the working memory bounded to 2 x 2 tokens, and
    // to less than one ciphertext's), and every share the same.
    let per_token =
        FoldServer::new(Arc::new(CpuBackend::new()), &table, design.clone()).unwrap().batch_bytes_per_token();
    for budget in [None, Some(4 * per_token), Some(1)] {
        check_batched(&design, &table, &ids, budget);
    }
}

/// A design that expands its query as deep as the ring allows sends `c0` only at its used
/// slots; its twin that differs only by a shallower expansion sends every coefficient of the
/// used classes, `2^(log2 N - k)` times as many. Both reconstruct. A query claiming another
/// token count, or cut or padded, is refused; the server keeps serving.
#[test]
fn a_query_sent_in_part_carries_only_the_used_classes() {
    let (m, d) = (300, 40);
    let table = random_table(m, d, 5, 41);
    let all: Vec<FoldDesign> =
        candidates(4, "fastquery", (m, d, 5), 37, 3, Allowed::default()).into_iter().map(|c| c.0).collect();
    let twins = |x: &FoldDesign, y: &FoldDesign| {
        let (a, b) = (&x.layout, &y.layout);
        x.params.id() == y.params.id()
            && (a.m2, a.ks_bits, a.rgsw_bits, a.pack) == (b.m2, b.ks_bits, b.rgsw_bits, b.pack)
            && a.k != b.k
    };
    let (deep, shallow) = all
        .iter()
        .filter(|x| 1usize << x.layout.k == x.params.n())
        .find_map(|x| all.iter().find(|y| twins(x, y)).map(|y| (x.clone(), y)))
        .expect("a design expanded into N slots, and its shallower twin");
    let (ids, used) = ([7usize, 299, 7], 3 * deep.slots_per_token());
    let sent =
        |x: &FoldDesign| x.query_sent(ids.len()).unwrap().iter().map(|l| l.to_vec()).collect::<Vec<_>>();
    assert_eq!(
        sent(&deep),
        vec![
            (0..used)
                .map(|s| fastquery_he::galois::SlotLayout::new(deep.layout.k, used).unwrap().position(s))
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>()
        ]
    );
    assert_eq!(sent(shallow)[0].len(), used << (deep.layout.k - shallow.layout.k));
    let coeff_bits: usize = deep
        .params
        .ring()
        .moduli()
        .iter()
        .take(deep.params.limbs())
        .map(|p| 32 - p.value().leading_zeros() as usize)
        .sum();
    let query = |x: &FoldDesign| x.predicted_bytes(ids.len()).query;
    let header = fastquery_protocol::wire::HEADER_BYTES + 4;
    assert_eq!(query(&deep) - header, (coeff_bits * used + 256).div_ceil(8));
    assert!(query(shallow) > query(&deep));
    check(&deep, &table, &ids);
    check(shallow, &table, &ids);

    let server = FoldServer::new(Arc::new(CpuBackend::new()), &table, deep.clone()).unwrap();
    let mut client = FoldClient::new(deep.clone()).unwrap();
    let session = server.open_session(&client.setup().unwrap()).unwrap();
    let q = client.query(&ids).unwrap();
    let at = fastquery_protocol::wire::HEADER_BYTES;
    for tokens in [1u32, 2, 4, 4096, u32::MAX] {
        let mut other = q.clone();
        other[at..at + 4].copy_from_slice(&tokens.to_le_bytes());
        assert!(server.answer(session, &other).is_err(), "{tokens} tokens claimed");
    }
    let mut longer = q.clone();
    longer.extend_from_slice(&[0; 8]);
    assert!(server.answer(session, &longer).is_err());
    assert!(server.answer(session, &q[..q.len() - 1]).is_err());
    for bit in (0..8 * q.len()).step_by(8 * q.len() / 16) {
        let mut flipped = q.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        let _ = server.answer(session, &flipped); // any result but a panic
    }
    let (resp, s) = server.answer(session, &q).unwrap();
    let got = client.decode(&resp).unwrap().reconstruct(&s).unwrap();
    assert_eq!(got[d], (i64::from(table.get(299, 0)) as u64) & ((1 << 37) - 1));
}

#[test]
fn bad_queries_and_setups_are_refused() {
    let (m, d) = (100, 8);
    let table = random_table(m, d, 5, 4);
    let design = design_where((m, d, 5), 37, 2, |_| true);
    let server = FoldServer::new(Arc::new(CpuBackend::new()), &table, design.clone()).unwrap();
    let mut client = FoldClient::new(design.clone()).unwrap();
    assert!(client.query(&[1]).is_err(), "query before setup");
    let setup = client.setup().unwrap();
    assert!(server.open_session(&setup[..setup.len() - 1]).is_err());
    let session = server.open_session(&setup).unwrap();
    assert!(client.query(&[m]).is_err(), "token id out of range");
    let q = client.query(&[3, 4]).unwrap();
    assert!(server.answer(session, &q[..q.len() - 7]).is_err());
    assert!(server.answer(session + 1, &q).is_err());
    let mut flipped = q.clone();
    flipped[20] ^= 0x40;
    let _ = server.answer(session, &flipped); // any result but a panic
    // The server still answers the good query afterwards.
    let (resp, s) = server.answer(session, &q).unwrap();
    let got = client.decode(&resp).unwrap().reconstruct(&s).unwrap();
    assert_eq!(got[0], (i64::from(table.get(3, 0)) as u64) & ((1 << 37) - 1));
    // A table of another shape is refused.
    assert!(FoldServer::new(Arc::new(CpuBackend::new()), &random_table(m + 1, d, 5, 4), design).is_err());
}

#[test]
fn rounded_c1_is_declared_and_a_changed_width_is_refused() {
    let (m, d) = (300, 64);
    let table = random_table(m, d, 5, 21);
    let design = design_where((m, d, 5), 37, 3, |x| x.noise.c1_bits > 0);
    let w = design.noise.c1_bits;
    assert!(f64::from(w) < design.params.log2_q_response() - 1.0, "{:?}", design.noise);
    check(&design, &table, &[0, m - 1, 17]);
    let server = FoldServer::new(Arc::new(CpuBackend::new()), &table, design.clone()).unwrap();
    let mut client = FoldClient::new(design.clone()).unwrap();
    let session = server.open_session(&client.setup().unwrap()).unwrap();
    let (resp, s) = server.answer(session, &client.query(&[5, 6]).unwrap()).unwrap();
    let at = fastquery_protocol::wire::HEADER_BYTES + 1;
    assert_eq!(u32::from(resp[at]), w);
    // Another width (0: residues; one more or less; more than q' holds) changes the record
    // sizes or is out of range: refused, never a panic, and the good response still decodes.
    for bad in [0, w - 1, w + 1, 64, 65, 255] {
        let mut r = resp.clone();
        r[at] = bad as u8;
        assert!(client.decode(&r).is_err(), "c1 width {bad} accepted");
    }
    let got = client.decode(&resp).unwrap().reconstruct(&s).unwrap();
    assert_eq!(got[d], (i64::from(table.get(6, 0)) as u64) & ((1 << 37) - 1));
}

#[test]
fn gadget_and_hybrid_key_switching_both_reconstruct() {
    // The same table through the fewest-bytes design of each kind: the RNS gadget (no special
    // prime) and hybrid key switching (a 31-bit special prime, one digit per limb).
    let (m, d) = (700, 24);
    let table = random_table(m, d, 5, 6);
    let gadget = design_where((m, d, 5), 37, 3, |x| x.params.special_prime().is_none());
    let hybrid = design_where((m, d, 5), 37, 3, |x| x.params.special_prime().is_some());
    for design in [&gadget, &hybrid] {
        check(design, &table, &[0, m - 1, 333]);
    }
    // Hybrid keys are a polynomial per limb over the chain and the special prime; the special
    // prime counts in the security check, never in a ciphertext.
    let p = &hybrid.params;
    assert_eq!(p.key_limbs(), p.limbs() + 1);
    assert!(p.log2_key_modulus() > p.log2_q() + 30.0);
    assert!(p.log2_key_modulus() <= f64::from(fastquery_he::security_limit(p.n()).unwrap()));
    // Its key-switching noise is far below the gadget's, so its expanded slots are too.
    assert!(hybrid.fold.expanded * 1000.0 < gadget.fold.expanded, "{:?} vs {:?}", hybrid.fold, gadget.fold);
}

#[test]
fn responses_share_c1_in_groups_and_send_it_once_per_group() {
    // d = 3000: one or two rows per record (N = 4096 or 8192), so four or eight responses for
    // eight tokens, all of them in one group sharing c1, its keys in two stages.
    let (m, d) = (64, 3000);
    let table = random_table(m, d, 5, 31);
    let design = design_where((m, d, 5), 37, 8, |x| x.layout.pieces == 1);
    let cts = design.response_cts(8);
    let group = design.layout.share;
    assert!(
        cts >= 4
            && group == cts.min(fastquery_he::share::MAX_SHARED)
            && design.layout.sharing().stages().len() == 2,
        "{cts} responses: {}",
        design.summary().layout
    );
    assert!(design.noise.shared > 0.0 && design.noise.total < design.noise.budget, "{:?}", design.noise);
    check(&design, &table, &[0, 63, 5, 5, 17, 40, 2, 9]);
    // Partial groups, and a single response.
    check(&design, &table, &[1, 2, 3, 4, 5]);
    check(&design, &table, &[60]);
    // The response pays c1 once per group.
    let p = &design.params;
    let kept = vec![design.layout.pack * d; cts];
    let sharing = design.layout.sharing();
    let shared = fastquery_protocol::messages::response_bytes(p, &design.noise, &kept, sharing);
    let whole = fastquery_protocol::messages::response_bytes(p, &design.noise, &kept, Sharing::NONE);
    assert_eq!(shared, design.predicted_bytes(8).response);
    // Every response's c1 whole, against one c per group (of N/2 coefficients in the half ring).
    let sent = cts.div_ceil(group) * sharing.c1_coeffs(p.n());
    assert_eq!(whole - shared, (cts * p.n() - sent) * design.noise.c1_bits as usize / 8);
    // A setup cut short in its sharing keys, or with another group size, is refused.
    let server = FoldServer::new(Arc::new(CpuBackend::new()), &table, design.clone()).unwrap();
    let mut client = FoldClient::new(design.clone()).unwrap();
    let setup = client.setup().unwrap();
    assert!(server.open_session(&setup[..setup.len() - 100]).is_err());
    let other = design_where((m, d, 5), 37, 1, |x| x.params.n() == p.n());
    assert_eq!(other.layout.share, 1);
    let mut other_client = FoldClient::new(other).unwrap();
    assert!(server.open_session(&other_client.setup().unwrap()).is_err(), "a setup without sharing keys");
    // And the server still serves the good client.
    let session = server.open_session(&setup).unwrap();
    let (resp, s) = server.answer(session, &client.query(&[7, 8, 9, 10]).unwrap()).unwrap();
    let got = client.decode(&resp).unwrap().reconstruct(&s).unwrap();
    assert_eq!(got[d], (i64::from(table.get(8, 0)) as u64) & ((1 << 37) - 1));
    // A shared response cut short, or read as one without sharing, is refused; flipped bits
    // decode to something or are refused, never a panic.
    use fastquery_protocol::messages::{Limits, decode_response};
    let positions = 4usize.div_ceil(design.layout.pack);
    let kept = vec![design.layout.pack * d; positions];
    assert!(decode_response(p, design.id, &resp, (&kept, sharing), Limits::default()).is_ok());
    assert!(decode_response(p, design.id, &resp, (&kept, Sharing::NONE), Limits::default()).is_err());
    cut_and_flipped_responses_never_panic(&design, &resp, &kept, (997, 4099));
}

/// A response of `design` keeping `kept` coefficients per ciphertext, cut short every `cut`
/// bytes, is refused; with a bit flipped every `flip` bits it decodes to something or is
/// refused, never a panic.
fn cut_and_flipped_responses_never_panic(
    design: &FoldDesign,
    resp: &[u8],
    kept: &[usize],
    (cut, flip): (usize, usize),
) {
    use fastquery_protocol::messages::{Limits, decode_response};
    let (p, sharing) = (&design.params, design.layout.sharing());
    for end in (0..resp.len()).step_by(cut) {
        assert!(decode_response(p, design.id, &resp[..end], (kept, sharing), Limits::default()).is_err());
    }
    for bit in (0..resp.len() * 8).step_by(flip) {
        let mut bad = resp.to_vec();
        bad[bit / 8] ^= 1 << (bit % 8);
        let _ = decode_response(p, design.id, &bad, (kept, sharing), Limits::default());
    }
}

/// One token per response on a layout of two rows per record keeps only even coefficients, so
/// its `c` travels in the half ring: the first design at one token does so, every share
/// reconstructs for groups of one and of three, the response is exactly `c`'s `N/2` words per
/// group lighter than the same design with a whole-ring `c`, it is the fewest bytes of the
/// candidates without it, and a server refuses a setup whose keys are for another sharing.
#[test]
fn one_token_per_response_sends_c_in_the_half_ring() {
    // d = 3000 at N = 8192: two rows per record.
    let (m, d) = (64, 3000);
    let table = random_table(m, d, 5, 41);
    let one = design_where((m, d, 5), 37, 1, |x| x.params.n() == 8192);
    assert!(one.layout.half && one.layout.pack == 1 && one.layout.share == 1, "{}", one.summary().layout);
    assert!(one.summary().layout.contains("half ring"));
    assert!(one.noise.shared > 0.0, "the switch to the subring secret counts in the noise");
    check(&one, &table, &[5]);
    check(&one, &table, &[63]);
    let three = design_where((m, d, 5), 37, 3, |x| x.layout.half);
    assert_eq!(three.layout.share, 3);
    check(&three, &table, &[0, 63, 0]);
    check(&three, &table, &[17, 40]);
    for (design, tokens) in [(&one, 1usize), (&three, 3)] {
        let p = &design.params;
        let kept = vec![d; tokens];
        let l = design.layout;
        let whole = Sharing::new(l.share, false);
        let full = fastquery_protocol::messages::response_bytes(p, &design.noise, &kept, whole);
        let half = design.predicted_bytes(tokens).response;
        assert_eq!(full - half, tokens.div_ceil(l.share) * p.n() / 2 * design.noise.c1_bits as usize / 8);
        let best_whole = candidates(4, "fastquery", (m, d, 5), 37, tokens, Allowed::default())
            .into_iter()
            .filter(|c| !c.0.layout.half)
            .map(|c| c.1.query + c.1.response)
            .min()
            .unwrap();
        let bytes = design.predicted_bytes(tokens);
        assert!(bytes.query + bytes.response < best_whole, "{tokens} tokens: {bytes:?} vs {best_whole}");
    }
    // The three-token server refuses the one-token client's setup (keys for one subring
    // secret, not three), and still serves its own client.
    let server = FoldServer::new(Arc::new(CpuBackend::new()), &table, three.clone()).unwrap();
    let mut stranger = FoldClient::new(one.clone()).unwrap();
    assert!(server.open_session(&stranger.setup().unwrap()).is_err());
    let mut client = FoldClient::new(three.clone()).unwrap();
    let session = server.open_session(&client.setup().unwrap()).unwrap();
    let (resp, s) = server.answer(session, &client.query(&[9, 10, 11]).unwrap()).unwrap();
    let got = client.decode(&resp).unwrap().reconstruct(&s).unwrap();
    assert_eq!(got[2 * d + 7], (i64::from(table.get(11, 7)) as u64) & ((1 << 37) - 1));
}

/// A response that keeps odd coefficients too (one row per record, or a long row's pieces) is
/// split into two members, the response and `X^-1` times it, each keeping even coefficients
/// only, so that its `c` travels in the half ring: every share reconstructs (one token, a
/// partial group, two tokens in one group of four members, pieces of a long row), the bytes are
/// the predicted ones and fewer than any unsplit design's at one token.
#[test]
fn responses_split_by_parity_reconstruct_and_send_c_in_the_half_ring() {
    // d = 5000 at N = 8192: one row per record, both parities.
    let (m, d) = (16, 5000);
    let table = random_table(m, d, 5, 43);
    let one = design_where((m, d, 5), 37, 1, |x| x.params.n() == 8192);
    let l = one.layout;
    assert!(l.split && l.half && l.share == 2 && l.rows_per_record == 1, "{}", one.summary().layout);
    assert!(one.summary().layout.contains("split in two by parity"));
    check(&one, &table, &[3]);
    check(&one, &table, &[15]);
    let unsplit = |tokens: usize| {
        candidates(4, "fastquery", (m, d, 5), 37, tokens, Allowed::default())
            .into_iter()
            .filter(|c| !c.0.layout.split)
            .map(|c| c.1.query + c.1.response)
            .min()
            .unwrap()
    };
    let bytes = one.predicted_bytes(1);
    assert!(bytes.query + bytes.response < unsplit(1), "{bytes:?}");
    let two = design_where((m, d, 5), 37, 2, |x| x.layout.split);
    assert_eq!(two.layout.share, 4);
    check(&two, &table, &[0, 15]);
    check(&two, &table, &[7]);
    // A long row in pieces (d = 8200 > N: a piece of 8,192 and one of 8 coefficients).
    let long = random_table(4, 8200, 5, 44);
    let pieces = design_where((4, 8200, 5), 37, 2, |x| x.layout.pieces > 1 && x.layout.split);
    check(&pieces, &long, &[2, 1]);
    check(&pieces, &long, &[3]);
    // A response with c in the half ring, cut short, read as whole-ring, or with flipped bits:
    // an error or some decoding, never a panic; the client then decodes the intact one.
    use fastquery_protocol::messages::{Limits, decode_response};
    let server = FoldServer::new(Arc::new(CpuBackend::new()), &table, two.clone()).unwrap();
    let mut client = FoldClient::new(two.clone()).unwrap();
    let session = server.open_session(&client.setup().unwrap()).unwrap();
    let (resp, s) = server.answer(session, &client.query(&[4, 9]).unwrap()).unwrap();
    let (p, sharing) = (&two.params, two.layout.sharing());
    let kept = [d.div_ceil(2), d / 2, d.div_ceil(2), d / 2];
    let decoded = decode_response(p, two.id, &resp, (&kept, sharing), Limits::default()).unwrap();
    assert_eq!(
        decoded.1[0].c1.residues(p).unwrap().len(),
        p.response_limbs() * p.n() / 2,
        "c at its even coefficients"
    );
    assert!(decoded.1[1..].iter().all(|ct| ct.c1.is_empty()));
    let whole = fastquery_he::share::Sharing::new(4, false);
    assert!(decode_response(p, two.id, &resp, (&kept, whole), Limits::default()).is_err());
    cut_and_flipped_responses_never_panic(&two, &resp, &kept, (1009, 3001));
    let got = client.decode(&resp).unwrap().reconstruct(&s).unwrap();
    assert_eq!(got[d + 11], (i64::from(table.get(9, 11)) as u64) & ((1 << 37) - 1));
}

/// A packed response split by parity (two rows per record, two tokens per response): token 0
/// of a response goes to the even member, token 1 to the odd one; a request of an odd number
/// of tokens leaves the last response's odd member empty (it keeps nothing, and still shares
/// `c`). Every share reconstructs and the bytes are the predicted ones for three, one and two
/// tokens.
#[test]
fn packed_responses_split_by_parity_reconstruct_with_an_empty_member() {
    let (m, d) = (64, 3000);
    let table = random_table(m, d, 5, 45);
    let design = design_where((m, d, 5), 37, 3, |x| x.layout.split && x.layout.pack == 2);
    assert!(design.layout.half && design.params.n() == 8192, "{}", design.summary().layout);
    check(&design, &table, &[1, 2, 3]);
    check(&design, &table, &[9]);
    check(&design, &table, &[4, 5]);
}

/// A server's cap on the responses that share one `c` (a design input): the groups stay within
/// it, the setup carries fewer keys and the responses more bytes, and the shares reconstruct.
#[test]
fn a_cap_on_shared_responses_trades_setup_for_response_bytes() {
    let (m, d) = (64, 3000);
    let table = random_table(m, d, 5, 29);
    let under = |max_shared| {
        candidates(
            4,
            "fastquery",
            (m, d, 5),
            37,
            8,
            Allowed { keyswitch: KeySwitching::Any, max_shared, session_tokens: None, ..Allowed::default() },
        )
    };
    let fewest = |all: &[(FoldDesign, fastquery_protocol::blocked::WireBytes, f64)]| {
        all.iter().map(|c| c.1.query + c.1.response).min().unwrap()
    };
    let (wide, narrow, single) = (under(16), under(2), under(1));
    assert!(wide[0].0.layout.share > 2, "{}", wide[0].0.summary().layout);
    assert!(narrow.iter().all(|c| c.0.layout.share <= 2) && single.iter().all(|c| c.0.layout.share == 1));
    assert!(fewest(&wide) < fewest(&narrow) && fewest(&narrow) < fewest(&single));
    assert!(narrow[0].1.setup < wide[0].1.setup, "{:?} vs {:?}", narrow[0].1, wide[0].1);
    check(&narrow[0].0, &table, &[3, 60, 7, 7, 12, 0, 63, 31]);
    check(&single[0].0, &table, &[5, 6, 61]);
}

/// A server that knows how many tokens its sessions carry ranks by each request's part of the
/// setup too, over every group of shared `c` up to its cap: a session of one request takes a
/// design with a smaller setup than sessions without end, and fewer bytes over that session; a
/// long session takes the fewest bytes per request again; each list's first is within
/// `BYTES_TIE` of the fewest bytes over its session; the short session's design reconstructs.
#[test]
fn a_known_session_counts_each_requests_part_of_the_setup() {
    let (m, d, tokens) = (64, 3000, 8);
    let table = random_table(m, d, 5, 31);
    let over = |session_tokens| {
        let allowed =
            Allowed { keyswitch: KeySwitching::Any, max_shared: 16, session_tokens, ..Allowed::default() };
        candidates(4, "fastquery", (m, d, 5), 37, tokens, allowed)
    };
    let (free, short, long) = (over(None), over(Some(tokens)), over(Some(1 << 30)));
    let cost = |c: &(FoldDesign, fastquery_protocol::blocked::WireBytes, f64), s| c.1.per_request(tokens, s);
    for (list, session) in [(&free, None), (&short, Some(tokens)), (&long, Some(1 << 30))] {
        let fewest = list.iter().map(|c| cost(c, session)).min().unwrap();
        let first = cost(&list[0], session);
        assert!(first as f64 <= fewest as f64 * (1.0 + fastquery_protocol::fold::BYTES_TIE), "{session:?}");
    }
    assert!(short[0].1.setup < free[0].1.setup, "{:?} vs {:?}", short[0].1, free[0].1);
    assert!(cost(&short[0], Some(tokens)) < cost(&free[0], Some(tokens)));
    // The short session's list holds smaller groups than the cap; the long one's first sends
    // what the first without a session sends, within the tie.
    assert!(short[0].0.layout.share < free[0].0.layout.share, "{}", short[0].0.summary().layout);
    let own =
        |c: &(FoldDesign, fastquery_protocol::blocked::WireBytes, f64)| (c.1.query + c.1.response) as f64;
    assert!(own(&long[0]) <= own(&free[0]) * (1.0 + fastquery_protocol::fold::BYTES_TIE));
    check(&short[0].0, &table, &[3, 60, 7, 7, 12, 0, 63, 31]);
}

/// Tokens fold in groups of the backend's host threads (all of a batch at once where it does
/// not bound them): with 1, 2 and 3 threads, five tokens fold in groups that split a query
/// ciphertext's tokens between them (several tokens per query ciphertext) and whose pieces go
/// back to their tokens' places (rows split into pieces); every share is exact.
#[test]
fn tokens_fold_in_groups_of_the_backends_threads() {
    let ids = [3usize, 1999, 11, 1024, 3];
    // Two tokens per query ciphertext: with three threads the second ciphertext's tokens fall
    // in both groups.
    let shared = design_where((2000, 16, 5), 37, 2, |d| d.layout.tokens_per_ct == 2);
    let pieces = design_where((12, 8200, 5), 37, 5, |d| d.layout.pieces > 1);
    for (design, table) in
        [(&shared, random_table(2000, 16, 5, 21)), (&pieces, random_table(12, 8200, 5, 22))]
    {
        let ids: Vec<usize> = ids.iter().map(|&k| k % table.m()).collect();
        for threads in [1, 2, 3] {
            check_on(CpuBackend::with_threads(threads).unwrap(), design, &table, &ids, None);
        }
    }
}

/// A group's index bits converted in one key switch (the default on a GPU for small groups,
/// forced here on the CPU) and sliced back into one RGSW per bit fold as each bit's own: every
/// share is exact, for groups of one, two and three tokens, a query ciphertext's tokens split
/// between groups, and rows in pieces.
#[test]
fn bits_converted_in_one_key_switch_fold_as_each_alone() {
    let ids = [3usize, 1999, 11, 1024, 3];
    let shared = design_where((2000, 16, 5), 37, 2, |d| d.layout.tokens_per_ct == 2 && d.index_bits() > 1);
    let pieces = design_where((12, 8200, 5), 37, 5, |d| d.layout.pieces > 1 && d.index_bits() > 1);
    for (design, table) in
        [(&shared, random_table(2000, 16, 5, 23)), (&pieces, random_table(12, 8200, 5, 24))]
    {
        let ids: Vec<usize> = ids.iter().map(|&k| k % table.m()).collect();
        for threads in [1, 3] {
            let backend = CpuBackend::with_threads(threads).unwrap();
            check_with(backend, design, &table, &ids, |s| s.with_merge_rows(usize::MAX));
        }
    }
}
