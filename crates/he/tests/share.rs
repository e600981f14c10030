//! Responses sharing one `c1` ([`fastquery_he::share`]): every member decrypts under its own
//! secret, the noise the switch adds stays inside `shared_bound` (and is not far below it), the
//! other members' secrets do not decrypt it, the shared `c1` is re-randomised, and bad keys are
//! refused.

use std::sync::Arc;

use fastquery_backend::{Ring, Shape};
use fastquery_cpu::CpuBackend;
use fastquery_he::{
    ParamSpec, Params,
    client::Client,
    galois::load_ciphertexts,
    noise::{Workload, analyse},
    server::{finish, load_public_key},
    share::{ShareKeys, can_share, load_share_keys, share_c1, shared_bound},
};
use num_bigint::{BigInt, BigUint};
use rand::{Rng, SeedableRng, rngs::StdRng};

fn params() -> Arc<Params> {
    Arc::new(
        Params::new(ParamSpec {
            n: 4096,
            prime_bits: vec![30, 30, 27, 22],
            response_limbs: 2,
            plain_bits: 37,
            flood_bits: 40,
            special_bits: 0,
        })
        .unwrap(),
    )
}

/// `count` random messages of one coefficient each, `(position, value)`.
fn messages(rng: &mut StdRng, n: usize, count: usize) -> Vec<Vec<(usize, i64)>> {
    (0..count).map(|_| vec![(rng.random_range(0..n), rng.random_range(-1000..1000))]).collect()
}

#[test]
fn every_member_decrypts_and_the_switch_stays_in_its_bound() {
    let mut rng = StdRng::seed_from_u64(5);
    let params = params();
    assert!(can_share(&params));
    let (n, lr) = (params.n(), params.response_limbs());
    let ring = Ring::new(Arc::new(CpuBackend::new()), params.ring().clone()).unwrap();
    let mut client = Client::new(params.clone()).unwrap();
    // Groups of three (an odd group: the key products pair up unevenly), five ciphertexts: a
    // full group and a partial one.
    let (group, count) = (3usize, 5usize);
    let keys = client.share_keys(group).unwrap();
    let server_keys = load_share_keys(&ring, &params, &keys, group).unwrap();
    let cts = client.encrypt_sparse(&messages(&mut rng, n, count)).unwrap();
    let cts = load_ciphertexts(&ring, &params, &cts).unwrap();
    let mut c0 = ring.mod_switch_down(&cts.c0, lr).unwrap();
    let c1 = ring.mod_switch_down(&cts.c1, lr).unwrap();
    let (w0, w1) = (ring.download(&c0).unwrap(), ring.download(&c1).unwrap());
    let poly = lr * n;
    let before: Vec<Vec<BigInt>> = (0..count)
        .map(|i| client.phase(&w0[i * poly..(i + 1) * poly], &w1[i * poly..(i + 1) * poly], lr).unwrap())
        .collect();
    let c = share_c1(&ring, &server_keys, &mut c0, c1).unwrap();
    assert_eq!(c.shape(), Shape::new(count.div_ceil(group), lr));
    let (b, c) = (ring.download(&c0).unwrap(), ring.download(&c).unwrap());
    let basis = params.basis().prefix(lr).unwrap();
    let q = params.response_modulus().unwrap();
    let qi = BigInt::from(q);
    let centred = |v: BigInt| {
        let v = ((v % &qi) + &qi) % &qi;
        if v > &qi / 2 { v - &qi } else { v }
    };
    let all: Vec<usize> = (0..n).collect();
    let bound = shared_bound(&params, group);
    let mut worst = BigUint::ZERO;
    for i in 0..count {
        let b_i: Vec<u128> = (0..n)
            .map(|j| {
                basis.compose_u128(&(0..lr).map(|l| b[i * poly + l * n + j]).collect::<Vec<_>>()).unwrap()
            })
            .collect();
        let g = i / group;
        let c_g = &c[g * poly..(g + 1) * poly];
        let after = client.shared_phases(&b_i, c_g, i % group, &all, 0).unwrap();
        for (j, (&a, p)) in after.iter().zip(&before[i]).enumerate() {
            let e = centred(BigInt::from(a) - p).magnitude().clone();
            assert!(e <= BigUint::from(bound as u128), "ct {i} coefficient {j}: switch noise {e} > {bound}");
            worst = worst.max(e);
        }
        // Another member's secret does not decrypt it: most phases are off by a large amount.
        let other = (i % group + 1) % count.min(group);
        let wrong = client.shared_phases(&b_i, c_g, other, &all, 0).unwrap();
        let far = wrong
            .iter()
            .zip(&before[i])
            .filter(|&(&a, p)| centred(BigInt::from(a) - p).magnitude() > &BigUint::from(q >> 8))
            .count();
        assert!(far > n / 2, "ct {i}: member {other}'s secret is off on only {far} of {n} coefficients");
    }
    // The bound is not vacuous.
    assert!(worst.bits() + 8 >= (bound as u128).ilog2() as u64, "worst {worst} vs bound {bound}");
    // A member beyond the secrets made is an error, not a panic.
    assert!(client.shared_phases(&[0], &c[..poly], group, &[0], 0).is_err());
}

#[test]
fn a_shared_c1_is_rerandomised_and_the_shares_reconstruct() {
    let mut rng = StdRng::seed_from_u64(9);
    let params = params();
    let (n, limbs) = (params.n(), params.limbs());
    let ring = Ring::new(Arc::new(CpuBackend::new()), params.ring().clone()).unwrap();
    let mut client = Client::new(params.clone()).unwrap();
    let pk = load_public_key(&ring, &params, &client.public_key()).unwrap();
    let group = 4;
    let keys = load_share_keys(&ring, &params, &client.share_keys(group).unwrap(), group).unwrap();
    let msgs = messages(&mut rng, n, group);
    let cts = client.encrypt_sparse(&msgs).unwrap();
    let report = analyse(&params, Workload { terms: 1, w_max: 1, input_weight: 1, extra: 0.0 })
        .unwrap()
        .with_shared_c1(&params, group)
        .unwrap();
    assert!(report.shared > 0.0 && report.total < report.budget, "{report:?}");
    // Each response keeps its message's coefficient and one more.
    let positions: Vec<Vec<usize>> = msgs.iter().map(|m| vec![m[0].0, (m[0].0 + 1) % n]).collect();
    let answer = || {
        let cts = load_ciphertexts(&ring, &params, &cts).unwrap();
        finish(&ring, &params, &pk, &report, cts.c0, cts.c1, &positions, Some(&keys), &mut rand::rng())
            .unwrap()
    };
    let (x, y) = (answer(), answer());
    for fin in [&x, &y] {
        // Only the group's first response carries c1.
        assert_eq!(fin.responses[0].c1.len(), params.response_limbs() * n);
        assert!(fin.responses[1..].iter().all(|r| r.c1.is_empty()));
        for (i, (resp, msg)) in fin.responses.iter().zip(&msgs).enumerate() {
            let got = client
                .decrypt_shared(&resp.c0, &fin.responses[0].c1, i, &positions[i], report.drop_bits)
                .unwrap();
            let mask = params.plain_mask();
            assert_eq!(got[0].wrapping_add(fin.shares[i][0]) & mask, (msg[0].1 as u64) & mask, "member {i}");
            assert_eq!(got[1].wrapping_add(fin.shares[i][1]) & mask, 0, "member {i}, an empty coefficient");
        }
    }
    // Same ciphertexts twice: the shared c1 agree on about 1/p of their words.
    let same = x.responses[0].c1.iter().zip(&y.responses[0].c1).filter(|(a, b)| a == b).count();
    assert!(same < 8, "{same} equal words in two re-randomised shared c1");
    assert_eq!(limbs, 4);
}

#[test]
fn bad_share_keys_are_refused() {
    let params = params();
    let ring = Ring::new(Arc::new(CpuBackend::new()), params.ring().clone()).unwrap();
    let mut client = Client::new(params.clone()).unwrap();
    let keys = client.share_keys(2).unwrap();
    assert_eq!(keys.b.len(), 4 * ShareKeys::key_words(&params));
    assert!(load_share_keys(&ring, &params, &keys, 3).is_err(), "keys for another group size");
    let mut short = keys.clone();
    short.b.pop();
    assert!(load_share_keys(&ring, &params, &short, 2).is_err(), "a short key");
    let mut seeds = keys.clone();
    seeds.seeds.pop();
    assert!(load_share_keys(&ring, &params, &seeds, 2).is_err(), "a missing seed");
    assert!(client.share_keys(1).is_err(), "a group of one shares nothing");
    // Parameters without a prime past the response limbs cannot share.
    let whole = Params::new(ParamSpec {
        n: 4096,
        prime_bits: vec![30, 30],
        response_limbs: 2,
        plain_bits: 16,
        flood_bits: 40,
        special_bits: 0,
    })
    .unwrap();
    assert!(!can_share(&whole));
    assert_eq!(shared_bound(&whole, 4), 0.0);
}
