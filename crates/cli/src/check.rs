//! The self-check: fast, randomised, and on the backend the user chose.

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    sync::Arc,
    time::Instant,
};

use fastquery_backend::{Backend, conformance};
use fastquery_math::{Modulus, RnsBasis, primes::ntt_primes, roots::primitive_2n_root};
use fastquery_ntt::{NttEngine, NttPlan, reference};
use num_bigint::BigUint;
use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::backend::AnyBackend;

/// Runs every check on random inputs drawn from `seed` (fresh if `None`), prints one line per
/// check, returns whether all passed.
pub fn run(backend: &AnyBackend, seed: Option<u64>) -> anyhow::Result<bool> {
    let info = backend.info();
    let seed = seed.unwrap_or_else(rand::random);
    conformance::set_seed(seed);
    println!("fastquery self-check on backend '{}' ({}), seed {seed}", info.name, info.device);
    Ok(crate::with_backend!(backend, b => run_on(b)))
}

type Check<'a> = (String, Box<dyn Fn() + 'a>);

fn run_on<B: Backend>(b: &Arc<B>) -> bool {
    let mut checks: Vec<Check<'_>> = vec![
        ("primes are prime, 1 mod 2N, largest of their size".to_string(), Box::new(check_primes)),
        ("psi has order 2N for N = 2^10..2^15".to_string(), Box::new(check_roots)),
        ("RNS compose/decompose round trip near q (up to 868 bits)".to_string(), Box::new(check_rns)),
        ("NTT equals its O(N^2) definition (N = 1024)".to_string(), Box::new(check_definition)),
        ("CPU NTT plan is tfhe-ntt, bit-identical to the reference".to_string(), Box::new(check_plan)),
    ];
    // The backend's whole conformance suite: every operation the servers use.
    for (_, what, check) in conformance::all::<B>() {
        checks.push((format!("backend: {what}"), Box::new(move || check(b))));
    }
    // Failed checks panic with their assertion message; report it instead of the default dump.
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut failed = 0;
    for (name, check) in &checks {
        let t = Instant::now();
        let res = catch_unwind(AssertUnwindSafe(check));
        let ms = t.elapsed().as_secs_f64() * 1e3;
        match res {
            Ok(()) => println!("  PASS  {name}  ({ms:.0} ms)"),
            Err(payload) => {
                failed += 1;
                println!("  FAIL  {name}: {}", fastquery_protocol::panic_message(payload.as_ref()));
            }
        }
    }
    std::panic::set_hook(previous);
    println!("{} passed, {failed} failed", checks.len() - failed);
    if failed > 0 {
        println!("replay with: fastquery check --seed {}", conformance::seed());
    }
    failed == 0
}

fn check_primes() {
    for (bits, n) in [(31u32, 4096usize), (30, 8192), (30, 16384), (27, 32768)] {
        let ps = ntt_primes(bits, n, 3).expect("primes exist");
        for p in ps {
            assert!(fastquery_math::primes::is_prime(u64::from(p)), "{p} prime");
            assert_eq!(u64::from(p) % (2 * n as u64), 1, "{p} = 1 mod 2N");
            assert_eq!(32 - p.leading_zeros(), bits);
        }
    }
}

fn check_roots() {
    for log_n in 10..=15 {
        let n = 1usize << log_n;
        let p = ntt_primes(31, n, 1).expect("prime")[0];
        let m = Modulus::new(u64::from(p)).expect("modulus");
        let psi = primitive_2n_root(m, n).expect("root");
        assert_eq!(m.pow(psi, n as u64), p - 1, "psi^N = -1 for N = {n}");
    }
}

fn check_rns() {
    let mut rng = StdRng::seed_from_u64(conformance::seed());
    let basis = RnsBasis::new(&ntt_primes(31, 1 << 15, 28).expect("primes")).expect("basis");
    let q = basis.modulus();
    for k in 0..200u32 {
        let x = if k % 2 == 0 {
            q - 1u32 - BigUint::from(rng.random_range(0u32..1 << 20))
        } else {
            BigUint::from_slice(&(0..30).map(|_| rng.random::<u32>()).collect::<Vec<_>>()) % q
        };
        assert_eq!(basis.compose(&basis.decompose(&x)).expect("residues"), x);
    }
}

fn check_definition() {
    let mut rng = StdRng::seed_from_u64(conformance::seed());
    let n = 1024;
    for p in ntt_primes(31, n, 2).expect("primes") {
        let plan = NttPlan::new(p, n).expect("plan");
        let a: Vec<u32> = (0..n).map(|_| rng.random_range(0..p)).collect();
        let mut fa = a.clone();
        plan.forward(&mut fa);
        assert_eq!(fa, reference::naive_forward(plan.tables(), &a), "p = {p}");
    }
}

fn check_plan() {
    let mut rng = StdRng::seed_from_u64(conformance::seed());
    for n in [2048usize, 4096, 8192, 16384] {
        for p in ntt_primes(30, n, 2).expect("primes") {
            let plan = NttPlan::new(p, n).expect("plan");
            assert_eq!(plan.engine(), NttEngine::TfheNtt, "tfhe-ntt disagrees with the canonical order");
            let a: Vec<u32> = (0..n).map(|_| rng.random_range(0..p)).collect();
            let (mut x, mut y) = (a.clone(), a);
            plan.forward(&mut x);
            reference::forward(plan.tables(), &mut y);
            assert_eq!(x, y, "n = {n}, p = {p}");
        }
    }
}
