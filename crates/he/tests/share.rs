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
    share::{ShareKeys, Sharing, can_halve, can_share, load_share_keys, share_c1, shared_bound},
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

/// Groups of three in one stage (an odd group: the key products pair up unevenly), five
/// ciphertexts: a full group and a partial one. Groups of eight in two stages (four secrets,
/// then eight), thirteen ciphertexts: a full group and one of five, whose first stage has a
/// group of one. Groups of six in two stages of three.
#[test]
fn every_member_decrypts_and_the_switch_stays_in_its_bound() {
    for (group, count, seed) in [(3usize, 5usize, 5u64), (8, 13, 6), (6, 9, 7)] {
        members_decrypt_within_the_bound(group, count, seed);
    }
}

fn members_decrypt_within_the_bound(group: usize, count: usize, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let params = params();
    assert!(can_share(&params));
    let (n, lr) = (params.n(), params.response_limbs());
    let ring = Ring::new(Arc::new(CpuBackend::new()), params.ring().clone()).unwrap();
    let mut client = Client::new(params.clone()).unwrap();
    let sharing = Sharing::new(group, false);
    let keys = client.share_keys(sharing).unwrap();
    let server_keys = load_share_keys(&ring, &params, &keys, sharing).unwrap();
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
    let bound = shared_bound(&params, sharing);
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
    let sharing = Sharing::new(group, false);
    let keys = load_share_keys(&ring, &params, &client.share_keys(sharing).unwrap(), sharing).unwrap();
    let msgs = messages(&mut rng, n, group);
    let cts = client.encrypt_sparse(&msgs).unwrap();
    let report = analyse(&params, Workload { terms: 1, w_max: 1, input_weight: 1, extra: 0.0 })
        .unwrap()
        .with_shared_c1(&params, sharing)
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
        assert_eq!(fin.responses[0].c1.residues(&params).unwrap().len(), params.response_limbs() * n);
        assert!(fin.responses[1..].iter().all(|r| r.c1.is_empty()));
        for (i, (resp, msg)) in fin.responses.iter().zip(&msgs).enumerate() {
            let got = client
                .decrypt_shared(
                    &resp.c0,
                    &fin.responses[0].c1.residues(&params).unwrap(),
                    i,
                    &positions[i],
                    report.drop_bits,
                )
                .unwrap();
            let mask = params.plain_mask();
            assert_eq!(got[0].wrapping_add(fin.shares[i][0]) & mask, (msg[0].1 as u64) & mask, "member {i}");
            assert_eq!(got[1].wrapping_add(fin.shares[i][1]) & mask, 0, "member {i}, an empty coefficient");
        }
    }
    // Same ciphertexts twice: the shared c1 agree on about 1/p of their words.
    let (cx, cy) =
        (x.responses[0].c1.residues(&params).unwrap(), y.responses[0].c1.residues(&params).unwrap());
    let same = cx.iter().zip(cy.iter()).filter(|(a, b)| a == b).count();
    assert!(same < 8, "{same} equal words in two re-randomised shared c1");
    assert_eq!(limbs, 4);
}

#[test]
fn bad_share_keys_are_refused() {
    let params = params();
    let ring = Ring::new(Arc::new(CpuBackend::new()), params.ring().clone()).unwrap();
    let mut client = Client::new(params.clone()).unwrap();
    let two = Sharing::new(2, false);
    let keys = client.share_keys(two).unwrap();
    assert_eq!(keys.stages.len(), 1);
    assert_eq!(keys.stages[0].b.len(), 4 * ShareKeys::key_words(&params));
    assert!(
        load_share_keys(&ring, &params, &keys, Sharing::new(3, false)).is_err(),
        "keys for another group size"
    );
    let mut short = keys.clone();
    short.stages[0].b.pop();
    assert!(load_share_keys(&ring, &params, &short, two).is_err(), "a short key");
    let mut seeds = keys.clone();
    seeds.stages[0].seeds.pop();
    assert!(load_share_keys(&ring, &params, &seeds, two).is_err(), "a missing seed");
    // Two stages: a missing stage, or stages swapped, are refused too.
    let four = Sharing::new(4, false);
    let staged = client.share_keys(four).unwrap();
    assert!(load_share_keys(&ring, &params, &staged, four).is_ok());
    let mut first_only = staged.clone();
    first_only.stages.pop();
    assert!(load_share_keys(&ring, &params, &first_only, four).is_err(), "a missing stage");
    let mut swapped = staged.clone();
    swapped.stages.reverse();
    assert!(load_share_keys(&ring, &params, &swapped, four).is_err(), "stages swapped");
    assert!(load_share_keys(&ring, &params, &staged, two).is_err(), "two stages for one");
    assert!(client.share_keys(Sharing::new(1, false)).is_err(), "a group of one shares nothing");
    assert_eq!(Sharing::new(1, false), Sharing::NONE);
    // N = 4096: keys over 87 bits are beyond the limit of dimension 2048 (54 bits), so no half
    // ring, and neither the client nor the server takes keys for one.
    assert!(can_share(&params) && !can_halve(&params));
    assert!(client.share_keys(Sharing::new(2, true)).is_err(), "a half ring beyond its limit");
    assert!(
        load_share_keys(&ring, &params, &keys, Sharing::new(2, true)).is_err(),
        "half-ring keys at N = 4096"
    );
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
    assert_eq!(shared_bound(&whole, Sharing::new(4, false)), 0.0);
}

/// Parameters at N = 8192 whose keys (three 31-bit primes, 93 bits) fit the 128-bit limit of
/// dimension 4096 (109 bits): `c` can travel in the half ring.
fn half_params() -> Arc<Params> {
    Arc::new(
        Params::new(ParamSpec {
            n: 8192,
            prime_bits: vec![31; 4],
            response_limbs: 2,
            plain_bits: 37,
            flood_bits: 40,
            special_bits: 0,
        })
        .unwrap(),
    )
}

/// `c` in the half ring: the targets are secrets of `Z[X^2]`, the even phases of a response
/// depend on the even coefficients of `c` alone (random words at its odd ones change none of
/// them; a changed even word changes some), every member of a group of one and of three
/// reconstructs its shares from half a `c` (four in two stages), and a response keeping an odd coefficient is
/// refused.
#[test]
fn a_c1_in_the_half_ring_decrypts_at_even_coefficients() {
    let mut rng = StdRng::seed_from_u64(21);
    let params = half_params();
    assert!(can_halve(&params));
    let (n, lr) = (params.n(), params.response_limbs());
    let ring = Ring::new(Arc::new(CpuBackend::new()), params.ring().clone()).unwrap();
    let mut client = Client::new(params.clone()).unwrap();
    let pk = load_public_key(&ring, &params, &client.public_key()).unwrap();
    let mask = params.plain_mask();
    // One, three (one stage) and four (two stages of two) members per c.
    for group in [1usize, 3, 4] {
        let sharing = Sharing::new(group, true);
        let keys = load_share_keys(&ring, &params, &client.share_keys(sharing).unwrap(), sharing).unwrap();
        assert!(keys.half());
        // Messages at even coefficients; every response keeps its message's and the next even one.
        let count = group + 1;
        let msgs: Vec<Vec<(usize, i64)>> = (0..count)
            .map(|_| vec![(2 * rng.random_range(0..n / 2), rng.random_range(-1000..1000))])
            .collect();
        let positions: Vec<Vec<usize>> = msgs.iter().map(|m| vec![m[0].0, (m[0].0 + 2) % n]).collect();
        let report = analyse(&params, Workload { terms: 1, w_max: 1, input_weight: 1, extra: 0.0 })
            .unwrap()
            .with_shared_c1(&params, sharing)
            .unwrap();
        let cts = client.encrypt_sparse(&msgs).unwrap();
        let load = || load_ciphertexts(&ring, &params, &cts).unwrap();
        let cts_in = load();
        let fin =
            finish(&ring, &params, &pk, &report, cts_in.c0, cts_in.c1, &positions, Some(&keys), &mut rng)
                .unwrap();
        for (i, (resp, msg)) in fin.responses.iter().zip(&msgs).enumerate() {
            let first = &fin.responses[i - i % group];
            assert_eq!(
                first.c1.residues(&params).unwrap().len(),
                lr * n / 2,
                "group of {group}: c travels at its even coefficients"
            );
            let got = client
                .decrypt_shared(
                    &resp.c0,
                    &first.c1.residues(&params).unwrap(),
                    i % group,
                    &positions[i],
                    report.drop_bits,
                )
                .unwrap();
            assert_eq!(got[0].wrapping_add(fin.shares[i][0]) & mask, (msg[0].1 as u64) & mask, "member {i}");
            assert_eq!(got[1].wrapping_add(fin.shares[i][1]) & mask, 0, "member {i}, an empty coefficient");
        }
        // An odd coefficient kept is refused, not answered wrong.
        let odd: Vec<Vec<usize>> = positions.iter().map(|p| vec![p[0] + 1]).collect();
        let c = load();
        assert!(finish(&ring, &params, &pk, &report, c.c0, c.c1, &odd, Some(&keys), &mut rng).is_err());
    }
    // The even phases under a subring secret ignore the odd words of a whole c: switch one
    // ciphertext (a group of one), then compare the phases of c, of c with random odd words,
    // and of c with one even word changed.
    let sharing = Sharing::new(1, true);
    let keys = load_share_keys(&ring, &params, &client.share_keys(sharing).unwrap(), sharing).unwrap();
    let cts =
        load_ciphertexts(&ring, &params, &client.encrypt_sparse(&messages(&mut rng, n, 1)).unwrap()).unwrap();
    let mut c0 = ring.mod_switch_down(&cts.c0, lr).unwrap();
    let c1 = ring.mod_switch_down(&cts.c1, lr).unwrap();
    let c = ring.download(&share_c1(&ring, &keys, &mut c0, c1).unwrap()).unwrap();
    let b = ring.download(&c0).unwrap();
    let basis = params.basis().prefix(lr).unwrap();
    let even: Vec<usize> = (0..n).step_by(2).collect();
    let b_even: Vec<u128> = even
        .iter()
        .map(|&j| basis.compose_u128(&(0..lr).map(|l| b[l * n + j]).collect::<Vec<_>>()).unwrap())
        .collect();
    let phases = |c: &[u32]| client.shared_phases(&b_even, c, 0, &even, 0).unwrap();
    let base = phases(&c);
    let moduli = params.moduli();
    let mut odd_random = c.clone();
    for (l, limb) in odd_random.chunks_exact_mut(n).enumerate() {
        for j in (1..n).step_by(2) {
            limb[j] = rng.random_range(0..moduli[l].value());
        }
    }
    assert_eq!(phases(&odd_random), base, "odd words of c changed an even phase");
    let mut even_changed = c.clone();
    even_changed[2 * rng.random_range(0..n / 2)] ^= 1;
    assert_ne!(phases(&even_changed), base, "a changed even word changed no phase");
    // The half c alone gives the same phases as the whole.
    let half = fastquery_he::share::even_coefficients(&c, n);
    assert_eq!(phases(&half), base);
}

/// A key of the subring: no odd coefficient, a ternary weight near two thirds of `N/2`.
#[test]
fn subring_secrets_have_no_odd_coefficients() {
    let params = half_params();
    let plans: Vec<_> = params
        .ring()
        .moduli()
        .iter()
        .map(|m| fastquery_ntt::NttPlan::new(m.value(), params.n()).unwrap())
        .collect();
    let mut rng = rand::rng();
    let key = fastquery_he::SecretKey::generate_half(&params, &plans, &mut rng);
    assert!(key.is_half() && key.odd_weight() == 0);
    let w = key.weight() as f64 / (params.n() / 2) as f64;
    assert!((w - 2.0 / 3.0).abs() < 0.05, "weight {w}");
    let whole = fastquery_he::SecretKey::generate(&params, &plans, &mut rng);
    assert!(!whole.is_half() && whole.odd_weight() > params.n() / 4);
}

/// The stages of a group: one where no divisor saves keys, two (`m^2 + n^2 / m` keys) where
/// one does; the noise bound counts one switch per source of each stage, and the server's
/// calls pair the products of each source instance.
#[test]
fn groups_take_the_stages_with_the_fewest_keys() {
    type Stages = &'static [(usize, usize)];
    let cases: [(usize, Stages, usize); 7] = [
        (1, &[(1, 1)], 1),
        (2, &[(2, 2)], 4),
        (3, &[(3, 3)], 9),
        (4, &[(2, 2), (2, 4)], 12),
        (5, &[(5, 5)], 25),
        (8, &[(4, 4), (2, 8)], 32),
        (16, &[(4, 4), (4, 16)], 80),
    ];
    for (n, stages, keys) in cases {
        let sharing = Sharing::new(n, true);
        assert_eq!(sharing.stages(), stages.to_vec(), "n = {n}");
        assert_eq!(sharing.key_count(), keys, "n = {n}");
        assert!(keys <= n * n);
    }
    assert!(Sharing::NONE.stages().is_empty() && Sharing::NONE.key_count() == 0);
    let params = params();
    let one = shared_bound(&params, Sharing::new(1, true));
    assert!(one > 0.0);
    assert_eq!(shared_bound(&params, Sharing::new(16, false)), 8.0 * one);
    assert_eq!(shared_bound(&params, Sharing::new(3, false)), 3.0 * one);
    // Sixteen responses in groups of eight: 16 x 3 calls in the first stage (four targets),
    // then 4 groups x 5 calls (eight targets).
    assert_eq!(Sharing::new(8, false).switch_calls(16), 16 * 3 + 4 * 5);
    assert_eq!(Sharing::new(3, false).switch_calls(5), 5 * 2);
}

/// Responses finished whole (shared `c1`, so the flooding and masks are added where the
/// ciphertexts are, `Ring::flood_mask_add`) are flooded at every kept coefficient: each
/// member's decrypted noise stays inside the bound, and in every 512 coefficients its mean
/// magnitude is above a quarter of the flooding's half-width (uniform flooding gives a half;
/// the other noise is bounded below a quarter, so an unflooded run fails).
#[test]
fn a_shared_response_is_flooded_at_every_kept_coefficient() {
    // Three response limbs of four: the switch divides by the last prime alone, so the
    // flooding (2^40 times the table's noise) still dominates what the client decrypts.
    let params = Arc::new(
        Params::new(ParamSpec {
            n: 4096,
            prime_bits: vec![30, 30, 27, 22],
            response_limbs: 3,
            plain_bits: 37,
            flood_bits: 40,
            special_bits: 0,
        })
        .unwrap(),
    );
    let n = params.n();
    let ring = Ring::new(Arc::new(CpuBackend::new()), params.ring().clone()).unwrap();
    let mut client = Client::new(params.clone()).unwrap();
    let pk = load_public_key(&ring, &params, &client.public_key()).unwrap();
    let group = 2;
    let sharing = Sharing::new(group, false);
    let keys = load_share_keys(&ring, &params, &client.share_keys(sharing).unwrap(), sharing).unwrap();
    let cts = client.encrypt_sparse(&vec![Vec::new(); group]).unwrap();
    let mut report = analyse(&params, Workload { terms: 1, w_max: 1, input_weight: 1, extra: 0.0 })
        .unwrap()
        .with_shared_c1(&params, sharing)
        .unwrap();
    (report.drop_bits, report.c1_bits) = (0, 0);
    let positions: Vec<Vec<usize>> = (0..group).map(|_| (0..n).collect()).collect();
    let cts = load_ciphertexts(&ring, &params, &cts).unwrap();
    let fin = finish(&ring, &params, &pk, &report, cts.c0, cts.c1, &positions, Some(&keys), &mut rand::rng())
        .unwrap();
    let q_resp = BigUint::from(client.response_modulus().unwrap());
    let flood = report.flood as f64 * client.response_modulus().unwrap() as f64 / params.log2_q().exp2();
    // The other terms of the noise are below a quarter of the flooding (else this test shows
    // nothing).
    assert!(report.shared + report.switch_round + 1.0 < flood / 4.0, "{report:?}");
    let total = BigUint::from(report.total.ceil() as u128);
    let mask = params.plain_mask();
    for (i, resp) in fin.responses.iter().enumerate() {
        let phases = client
            .shared_phases(&resp.c0, &fin.responses[0].c1.residues(&params).unwrap(), i, &positions[i], 0)
            .unwrap();
        let noise: Vec<f64> = phases
            .iter()
            .zip(&fin.shares[i])
            .map(|(&v, &s)| {
                let e = fastquery_he::client::noise_of(
                    &BigInt::from(v),
                    0u64.wrapping_sub(s) & mask,
                    &q_resp,
                    37,
                );
                assert!(e <= total, "member {i}: noise {e} above {total}");
                e.to_string().parse::<f64>().unwrap()
            })
            .collect();
        for (c, chunk) in noise.chunks(512).enumerate() {
            let mean = chunk.iter().sum::<f64>() / chunk.len() as f64;
            assert!(mean > flood / 4.0, "member {i}, chunk {c}: mean noise {mean:e}, flooding {flood:e}");
        }
    }
}
