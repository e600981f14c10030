//! The engine end to end on the CPU backend: encrypt, multiply by plaintexts, finish, decrypt;
//! shares reconstruct the exact product coefficients, and the measured noise stays inside the
//! computed bounds at every stage.

use std::sync::Arc;

use fastquery_backend::{MacDims, Ntt, Polys, Ring, Shape};
use fastquery_cpu::CpuBackend;
use fastquery_he::{
    ParamSpec, Params,
    client::{Client, decode, noise_of},
    galois::Ciphertexts,
    noise::{Workload, analyse},
    server::{Outputs, encode_plaintexts, expand_queries, finish, finish_outputs, load_public_key},
};
use num_bigint::BigUint;
use num_traits::ToPrimitive;
use rand::{Rng, SeedableRng, rngs::StdRng};

fn params(plain_bits: u32) -> Arc<Params> {
    Arc::new(
        Params::new(ParamSpec {
            n: 4096,
            prime_bits: vec![30, 30, 27, 22],
            response_limbs: 2,
            plain_bits,
            flood_bits: 40,
            special_bits: 0,
        })
        .unwrap(),
    )
}

/// Negacyclic product of a sparse signed message and a dense plaintext, over the integers.
fn product(n: usize, msg: &[(usize, i64)], w: &[i64]) -> Vec<i128> {
    let mut out = vec![0i128; n];
    for &(i, v) in msg {
        for (j, &wj) in w.iter().enumerate() {
            let k = i + j;
            let term = i128::from(v) * i128::from(wj);
            if k < n { out[k] += term } else { out[k - n] -= term }
        }
    }
    out
}

#[test]
fn shares_reconstruct_and_noise_stays_in_its_bounds() {
    let mut rng = StdRng::seed_from_u64(21);
    for plain_bits in [37u32, 16] {
        let params = params(plain_bits);
        let n = params.n();
        let ring = Ring::new(Arc::new(CpuBackend::new()), params.ring().clone()).unwrap();
        let client = Client::new(params.clone()).unwrap();
        let key = load_public_key(&ring, &params, &client.public_key()).unwrap();
        // Two tokens, three input ciphertexts each, two output ciphertexts: a 3 x 2 plaintext grid.
        let (tokens, inner, cols) = (2usize, 3usize, 2usize);
        let w_bits = 10;
        let w: Vec<i64> =
            (0..inner * cols * n).map(|_| rng.random_range(-(1i64 << w_bits)..(1 << w_bits))).collect();
        let pts: Polys<CpuBackend, Ntt> = encode_plaintexts(&ring, &params, &w, inner * cols).unwrap();
        // One-hot-like sparse messages: a single +-1 in one of the token's input ciphertexts.
        let mut msgs = Vec::new();
        for _ in 0..tokens {
            let hot = rng.random_range(0..inner);
            for i in 0..inner {
                let m = if i == hot {
                    vec![(rng.random_range(0..n), if rng.random() { 1 } else { -1 })]
                } else {
                    vec![]
                };
                msgs.push(m);
            }
        }
        let cts = client.encrypt_sparse(&msgs).unwrap();
        let a = expand_queries(&ring, &params, &cts, inner).unwrap();
        let mut out: Polys<CpuBackend, Ntt> =
            ring.zeros(Shape::new(2 * tokens * cols, params.limbs())).unwrap();
        ring.mac(&mut out, &a, &pts, MacDims { rows: 2 * tokens, inner, cols }, false).unwrap();
        let out = ring.download(&ring.inverse(out).unwrap()).unwrap();
        let report =
            analyse(&params, Workload { terms: inner * n, w_max: 1 << w_bits, input_weight: 1, extra: 0.0 })
                .unwrap();

        // Expected messages and the measured table noise before finishing.
        let poly = params.limbs() * n;
        let q = params.basis().modulus().clone();
        let mut expected = Vec::new();
        let (mut c0s, mut c1s) = (Vec::new(), Vec::new());
        for t in 0..tokens {
            for c in 0..cols {
                let mut y = vec![0i128; n];
                for i in 0..inner {
                    let p = product(n, &msgs[t * inner + i], &w[(i * cols + c) * n..][..n]);
                    y.iter_mut().zip(p).for_each(|(a, b)| *a += b);
                }
                let c0 = out[((2 * t) * cols + c) * poly..][..poly].to_vec();
                let c1 = out[((2 * t + 1) * cols + c) * poly..][..poly].to_vec();
                let phase = client.phase(&c0, &c1, params.limbs()).unwrap();
                for (j, v) in phase.iter().enumerate() {
                    let m = (y[j].rem_euclid(1i128 << plain_bits)) as u64;
                    let e = noise_of(v, m, &q, plain_bits);
                    assert!(
                        e < BigUint::from(report.table.ceil() as u128),
                        "table noise {e} > {}",
                        report.table
                    );
                }
                expected.push(y);
                c0s.extend(c0);
                c1s.extend(c1);
            }
        }
        // Finish twice: c1 sent whole, and c1 rounded to the width the analysis allows for
        // responses keeping every seventh coefficient (rounding must stay inside the same bound).
        let kept = n.div_ceil(7);
        let rounded = report.clone().with_rounded_c1(&params, kept, fastquery_he::share::Sharing::NONE);
        assert!(rounded.c1_bits > 0 && f64::from(rounded.c1_bits) < params.log2_q_response(), "{rounded:?}");
        for report in [report.clone(), rounded] {
            // Finish: every coefficient kept here (a plain product test, no layout).
            let cts_out = tokens * cols;
            let positions: Vec<Vec<usize>> = (0..cts_out).map(|_| (0..n).step_by(7).collect()).collect();
            let shape = Shape::new(cts_out, params.limbs());
            let c0 = ring.upload(&c0s, shape).unwrap();
            let c1 = ring.upload(&c1s, shape).unwrap();
            let fin =
                finish(&ring, &params, &key, &report, c0, c1, &positions, None, &mut rand::rng()).unwrap();
            let mask = params.plain_mask();
            let q_resp = BigUint::from(client.response_modulus().unwrap());
            let total = BigUint::from(report.total.ceil() as u128);
            let mut worst = BigUint::from(0u32);
            for (k, ((resp, pos), share_s)) in
                fin.responses.iter().zip(&positions).zip(&fin.shares).enumerate()
            {
                let share_c = client.decrypt_response(resp, pos, report.drop_bits).unwrap();
                let phases = client.response_phases(resp, pos, report.drop_bits).unwrap();
                for (((&j, &sc), &ss), &v) in pos.iter().zip(&share_c).zip(share_s).zip(&phases) {
                    let want = (expected[k][j].rem_euclid(1i128 << plain_bits)) as u64;
                    assert_eq!(sc.wrapping_add(ss) & mask, want, "ct {k} coefficient {j}, l = {plain_bits}");
                    // The noise the client decrypts, after flooding, switching and dropping bits.
                    let m = want.wrapping_sub(ss) & mask;
                    let e = noise_of(&num_bigint::BigInt::from(v), m, &q_resp, plain_bits);
                    assert!(e <= total, "final noise {e} above the bound {total}");
                    worst = worst.max(e);
                }
            }
            // The bound is not vacuous: flooding makes the measured noise a sizeable part of it.
            assert!(worst.bits() + 8 >= total.bits(), "worst {worst} vs bound {total}");
        }
    }
}

#[test]
fn responses_are_rerandomised() {
    let params = params(37);
    let n = params.n();
    let ring = Ring::new(Arc::new(CpuBackend::new()), params.ring().clone()).unwrap();
    let client = Client::new(params.clone()).unwrap();
    let key = load_public_key(&ring, &params, &client.public_key()).unwrap();
    let w: Vec<i64> = (0..n as i64).map(|j| j % 1000 - 500).collect();
    let pts = encode_plaintexts(&ring, &params, &w, 1).unwrap();
    let cts = client.encrypt_sparse(&[vec![(3, 1)]]).unwrap();
    let report = analyse(&params, Workload { terms: n, w_max: 500, input_weight: 1, extra: 0.0 }).unwrap();
    let answer = || {
        let a = expand_queries(&ring, &params, &cts, 1).unwrap();
        let mut out = ring.zeros(Shape::new(2, params.limbs())).unwrap();
        ring.mac(&mut out, &a, &pts, MacDims { rows: 2, inner: 1, cols: 1 }, false).unwrap();
        let words = ring.download(&ring.inverse(out).unwrap()).unwrap();
        let poly = params.limbs() * n;
        let shape = Shape::new(1, params.limbs());
        let c0 = ring.upload(&words[..poly], shape).unwrap();
        let c1 = ring.upload(&words[poly..], shape).unwrap();
        finish(&ring, &params, &key, &report, c0, c1, &[vec![3, 4]], None, &mut rand::rng()).unwrap()
    };
    let (x, y) = (answer(), answer());
    // Same query, same table: the c1 of two answers agree on about 1/p of their words.
    let (cx, cy) =
        (x.responses[0].c1.residues(&params).unwrap(), y.responses[0].c1.residues(&params).unwrap());
    let same = cx.iter().zip(cy.iter()).filter(|(a, b)| a == b).count();
    assert!(same < 8, "{same} equal words in two re-randomised c1");
    // And both decrypt to the same value once the shares are added.
    let mask = params.plain_mask();
    for fin in [&x, &y] {
        let sc = client.decrypt_response(&fin.responses[0], &[3, 4], report.drop_bits).unwrap();
        assert_eq!(sc[0].wrapping_add(fin.shares[0][0]) & mask, (w[0] as u64) & mask);
        assert_eq!(sc[1].wrapping_add(fin.shares[0][1]) & mask, (w[1] as u64) & mask);
    }
}

/// Finishing outputs in the NTT domain (the encryption of zero added before the one inverse
/// transform) gives the same responses and shares, word for word, as finishing them in
/// coefficient form, for the same randomness: random outputs, random kept positions, a
/// response modulus below the chain's and `c1` sent whole and rounded.
#[test]
fn finishing_in_the_ntt_domain_changes_no_word() {
    let params = params(37);
    let (n, limbs) = (params.n(), params.limbs());
    let ring = Ring::new(Arc::new(CpuBackend::new()), params.ring().clone()).unwrap();
    let client = Client::new(params.clone()).unwrap();
    let key = load_public_key(&ring, &params, &client.public_key()).unwrap();
    let report = analyse(&params, Workload { terms: n, w_max: 500, input_weight: 1, extra: 0.0 }).unwrap();
    let mut rng = StdRng::seed_from_u64(77);
    let cts = 5;
    let shape = Shape::new(cts, limbs);
    let random_ntt = |rng: &mut StdRng| -> Polys<CpuBackend, Ntt> {
        let mut words = Vec::with_capacity(cts * limbs * n);
        for _ in 0..cts {
            for m in params.moduli() {
                words.extend((0..n).map(|_| rng.random_range(0..m.value())));
            }
        }
        ring.upload(&words, shape).unwrap()
    };
    let positions: Vec<Vec<usize>> = (0..cts)
        .map(|_| {
            let mut p: Vec<usize> = (0..rng.random_range(1..40)).map(|_| rng.random_range(0..n)).collect();
            p.sort_unstable();
            p.dedup();
            p
        })
        .collect();
    let rounded = report.clone().with_rounded_c1(&params, 40, fastquery_he::share::Sharing::NONE);
    for report in [report, rounded] {
        let (c0, c1) = (random_ntt(&mut rng), random_ntt(&mut rng));
        let seed: u64 = rng.random();
        let fin = |outputs, seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            finish_outputs(&ring, &params, &key, &report, outputs, &positions, None, &mut rng).unwrap()
        };
        let coeff = Outputs::Coeff(Ciphertexts {
            c0: ring.inverse(ring.duplicate(&c0).unwrap()).unwrap(),
            c1: ring.inverse(ring.duplicate(&c1).unwrap()).unwrap(),
        });
        let a = fin(coeff, seed);
        let b = fin(Outputs::Ntt(Ciphertexts { c0, c1 }), seed);
        assert_eq!(a.shares, b.shares);
        assert_eq!(a.responses.len(), cts);
        for (x, y) in a.responses.iter().zip(&b.responses) {
            assert_eq!((&x.c0, &x.c1), (&y.c0, &y.c1));
        }
        // And another seed gives other responses (the comparison can fail).
        let coeff = Outputs::Coeff(Ciphertexts {
            c0: ring.inverse(random_ntt(&mut rng)).unwrap(),
            c1: ring.inverse(random_ntt(&mut rng)).unwrap(),
        });
        let c = fin(coeff, seed ^ 1);
        assert_ne!(a.responses[0].c1, c.responses[0].c1);
    }
}

#[test]
fn decode_rounds_to_nearest() {
    for q in [(1u128 << 60) - 93, (1u128 << 100) - 15] {
        for bits in [1u32, 16, 37, 64] {
            let t = 1u128 << bits;
            if t.saturating_mul(4) > q {
                continue; // t must be well below q to encode anything
            }
            for m in [0u128, 1, t / 2, t - 1] {
                let v = ((BigUint::from(q) * m + t / 2) / t).to_u128().unwrap(); // round(q m / t)
                assert_eq!(u128::from(decode(v % q, q, bits)), m % t, "q {q} bits {bits} m {m}");
            }
        }
    }
}

/// Every kept coefficient of a response is flooded afresh (kept only: the host draws its
/// words): zero outputs finished with all 4,096 coefficients kept (no low bits dropped, `c1`
/// whole, so the flooding dominates what the client decrypts) decrypt to noise within the
/// bound, few far below the flooding's width, every 512 reaching a sixteenth of it, and no two
/// runs of 512 repeating each other's noise.
#[test]
fn every_kept_coefficient_is_flooded_afresh() {
    let params = params(37);
    let (n, limbs) = (params.n(), params.limbs());
    let ring = Ring::new(Arc::new(CpuBackend::new()), params.ring().clone()).unwrap();
    let client = Client::new(params.clone()).unwrap();
    let key = load_public_key(&ring, &params, &client.public_key()).unwrap();
    let mut report =
        analyse(&params, Workload { terms: n, w_max: 500, input_weight: 1, extra: 0.0 }).unwrap();
    (report.drop_bits, report.c1_bits) = (0, 0);
    let zeros = vec![0u32; limbs * n];
    let shape = Shape::new(1, limbs);
    let positions = vec![(0..n).collect::<Vec<usize>>()];
    let fin = finish(
        &ring,
        &params,
        &key,
        &report,
        ring.upload(&zeros, shape).unwrap(),
        ring.upload(&zeros, shape).unwrap(),
        &positions,
        None,
        &mut rand::rng(),
    )
    .unwrap();
    let mask = params.plain_mask();
    let q_resp = BigUint::from(client.response_modulus().unwrap());
    let total = BigUint::from(report.total.ceil() as u128);
    let phases = client.response_phases(&fin.responses[0], &positions[0], report.drop_bits).unwrap();
    let noise: Vec<BigUint> = phases
        .iter()
        .zip(&fin.shares[0])
        .map(|(&v, &ss)| noise_of(&num_bigint::BigInt::from(v), 0u64.wrapping_sub(ss) & mask, &q_resp, 37))
        .collect();
    let chunks: Vec<&[BigUint]> = noise.chunks(512).collect();
    assert_eq!(chunks.len(), n / 512);
    let flood = report.flood as f64 * client.response_modulus().unwrap() as f64 / params.log2_q().exp2();
    for (c, chunk) in chunks.iter().enumerate() {
        let worst = chunk.iter().max().unwrap();
        assert!(worst <= &total, "chunk {c}: worst {worst}, bound {total}");
        assert!(worst.to_f64().unwrap() >= flood / 16.0, "chunk {c}: worst {worst}, flooding {flood:e}");
    }
    // Uniform flooding leaves a thousandth of the coefficients below a thousandth of its width.
    let small = noise.iter().filter(|e| e.to_f64().unwrap() < flood / 1000.0).count();
    assert!(small < n / 100, "{small} of {n} coefficients barely flooded");
    // Magnitudes within a millionth of the flooding's width of each other count as repeats.
    let near = |x: &BigUint, y: &BigUint| (x.to_f64().unwrap() - y.to_f64().unwrap()).abs() < flood * 1e-6;
    for (a, b) in chunks.iter().zip(&chunks[1..]) {
        let same = a.iter().zip(b.iter()).filter(|(x, y)| near(x, y)).count();
        assert!(same < 8, "{same} nearly equal noise magnitudes in neighbouring chunks");
    }
}
