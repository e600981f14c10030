//! The canonical NTT checked three ways on random data: against its O(N^2) definition, the fast
//! plan against the portable reference, and products against schoolbook negacyclic products and
//! against fhe-math.

use std::sync::Arc;

use fastquery_math::{Modulus, primes::ntt_primes};
use fastquery_ntt::{NttEngine, NttPlan, NttTables, reference};
use rand::{Rng, SeedableRng, rngs::StdRng};

fn random_poly(rng: &mut StdRng, p: u32, n: usize) -> Vec<u32> {
    // Include the extreme residues 0 and p-1 alongside uniform ones.
    (0..n)
        .map(|i| match i % 17 {
            0 => p - 1,
            1 => 1,
            _ => rng.random_range(0..p),
        })
        .collect()
}

/// Primes of several sizes that support degree `n`: the largest 31- and 30-bit ones, and a
/// smaller one.
fn primes_for(n: usize) -> Vec<u32> {
    let mut v = ntt_primes(31, n, 2).unwrap();
    v.extend(ntt_primes(30, n, 1).unwrap());
    v.extend(ntt_primes(25.max(n.trailing_zeros() + 2), n, 1).unwrap());
    v
}

#[test]
fn reference_matches_the_definition() {
    let mut rng = StdRng::seed_from_u64(11);
    for log_n in 1..=11 {
        let n = 1usize << log_n;
        for p in primes_for(n) {
            let t = NttTables::new(p, n).unwrap();
            let a = random_poly(&mut rng, p, n);
            let mut fast = a.clone();
            reference::forward(&t, &mut fast);
            assert_eq!(fast, reference::naive_forward(&t, &a), "forward n={n} p={p}");
            assert_eq!(reference::naive_inverse(&t, &fast), a, "naive inverse n={n} p={p}");
            reference::inverse(&t, &mut fast);
            assert_eq!(fast, a, "inverse n={n} p={p}");
        }
    }
}

#[test]
fn fast_plan_is_tfhe_ntt_and_bit_identical_to_the_reference() {
    let mut rng = StdRng::seed_from_u64(12);
    for log_n in 4..=15 {
        let n = 1usize << log_n;
        for p in primes_for(n) {
            let plan = NttPlan::new(p, n).unwrap();
            let expected = if n >= 32 { NttEngine::TfheNtt } else { NttEngine::Reference };
            assert_eq!(plan.engine(), expected, "n={n} p={p}: tfhe-ntt disagrees with the canonical order");
            for _ in 0..3 {
                let a = random_poly(&mut rng, p, n);
                let (mut x, mut y) = (a.clone(), a.clone());
                plan.forward(&mut x);
                reference::forward(plan.tables(), &mut y);
                assert_eq!(x, y, "forward n={n} p={p}");
                assert!(x.iter().all(|&v| v < p));
                // Inverse on an arbitrary NTT-domain vector, not only on our own output.
                let b = random_poly(&mut rng, p, n);
                let (mut x, mut y) = (b.clone(), b.clone());
                plan.inverse(&mut x);
                reference::inverse(plan.tables(), &mut y);
                assert_eq!(x, y, "inverse n={n} p={p}");
                plan.forward(&mut x);
                assert_eq!(x, b, "round trip n={n} p={p}");
            }
        }
    }
}

#[test]
fn ntt_products_match_schoolbook() {
    let mut rng = StdRng::seed_from_u64(13);
    for log_n in 4..=14 {
        let n = 1usize << log_n;
        // Fewer primes at the largest sizes: schoolbook is O(N^2).
        let primes = primes_for(n);
        let take = if n >= 8192 {
            1
        } else if n >= 2048 {
            2
        } else {
            primes.len()
        };
        for &p in primes.iter().take(take) {
            let m = Modulus::new(u64::from(p)).unwrap();
            let plan = NttPlan::new(p, n).unwrap();
            let a = random_poly(&mut rng, p, n);
            let b = random_poly(&mut rng, p, n);
            let (mut fa, mut fb) = (a.clone(), b.clone());
            plan.forward(&mut fa);
            plan.forward(&mut fb);
            let mut c: Vec<u32> = fa.iter().zip(&fb).map(|(&x, &y)| m.mul(x, y)).collect();
            plan.inverse(&mut c);
            assert_eq!(c, reference::negacyclic_mul(m, &a, &b), "n={n} p={p}");
        }
    }
}

#[test]
fn schoolbook_and_monomial_references_agree() {
    // X^k as a dense polynomial times a equals the negacyclic rotation of a.
    let mut rng = StdRng::seed_from_u64(14);
    let n = 64;
    let p = ntt_primes(31, n, 1).unwrap()[0];
    let m = Modulus::new(u64::from(p)).unwrap();
    let a = random_poly(&mut rng, p, n);
    for k in [0usize, 1, 5, 63, 64, 65, 127] {
        let mut xk = vec![0u32; n];
        if k < n {
            xk[k] = 1
        } else {
            xk[k - n] = p - 1
        }
        assert_eq!(reference::monomial_mul(m, &a, k), reference::negacyclic_mul(m, &a, &xk), "k={k}");
    }
}

#[test]
fn products_match_fhe_math() {
    use fhe_math::rq::{Context, Poly, Representation, traits::TryConvertFrom};
    let mut rng = StdRng::seed_from_u64(15);
    for log_n in [5u32, 10, 12, 13] {
        let n = 1usize << log_n;
        let primes = ntt_primes(31, n, 2).unwrap();
        let ctx =
            Arc::new(Context::new(&primes.iter().map(|&p| u64::from(p)).collect::<Vec<_>>(), n).unwrap());
        let a: Vec<Vec<u32>> = primes.iter().map(|&p| random_poly(&mut rng, p, n)).collect();
        let b: Vec<Vec<u32>> = primes.iter().map(|&p| random_poly(&mut rng, p, n)).collect();
        let flat = |v: &[Vec<u32>]| v.iter().flatten().map(|&x| u64::from(x)).collect::<Vec<u64>>();
        let mut pa = Poly::try_convert_from(flat(&a), &ctx, false, Representation::PowerBasis).unwrap();
        let mut pb = Poly::try_convert_from(flat(&b), &ctx, false, Representation::PowerBasis).unwrap();
        pa.change_representation(Representation::Ntt);
        pb.change_representation(Representation::Ntt);
        let mut pc = &pa * &pb;
        pc.change_representation(Representation::PowerBasis);
        let theirs = pc.coefficients();
        for (limb, &p) in primes.iter().enumerate() {
            let m = Modulus::new(u64::from(p)).unwrap();
            let plan = NttPlan::new(p, n).unwrap();
            let (mut fa, mut fb) = (a[limb].clone(), b[limb].clone());
            plan.forward(&mut fa);
            plan.forward(&mut fb);
            let mut c: Vec<u32> = fa.iter().zip(&fb).map(|(&x, &y)| m.mul(x, y)).collect();
            plan.inverse(&mut c);
            let theirs: Vec<u32> = theirs.row(limb).iter().map(|&x| x as u32).collect();
            assert_eq!(c, theirs, "n={n} p={p}");
        }
    }
}

#[test]
fn bad_parameters_are_errors() {
    assert!(NttPlan::new(1_000_001, 1024).is_err()); // not prime
    assert!(NttPlan::new(65537, 1 << 16).is_err()); // not 1 mod 2N
    assert!(NttPlan::new(ntt_primes(31, 1024, 1).unwrap()[0], 1000).is_err()); // degree
    assert!(NttPlan::new(u32::MAX - 4, 1024).is_err()); // above the word bound
}
