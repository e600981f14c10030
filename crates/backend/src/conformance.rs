//! The shared backend test suite: every operation of [`Backend`] against a scalar host
//! reference, on random data (never zeros), for several degrees, limb counts and batch shapes.
//!
//! A backend crate instantiates it with [`crate::conformance_tests!`]; a backend whose device is
//! absent prints why each test was skipped instead of passing silently.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use fastquery_math::{Modulus, primes::ntt_prime_iter};
use fastquery_ntt::reference;
use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::{Backend, BackendError, Coeff, MacDims, Ntt, Polys, Repr, Ring, RingContext, Shape, host};

/// Instantiates the suite as `#[test]` functions. `$make` is an expression of type
/// `Result<B, BackendError>` evaluated once per test.
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        fn __backend() -> ::std::option::Option<::std::sync::Arc<impl $crate::Backend>> {
            match $make {
                ::std::result::Result::Ok(b) => ::std::option::Option::Some(::std::sync::Arc::new(b)),
                ::std::result::Result::Err(e) => {
                    $crate::conformance::report_skip(&e);
                    ::std::option::Option::None
                }
            }
        }
        $crate::conformance_tests!(@tests
            upload_download_and_validation, ntt_matches_reference, ntt_products_match_schoolbook,
            elementwise_ops_match_scalar, monomial_mul_matches_reference, mac_matches_scalar,
            mod_switch_matches_big_integers, mismatched_operands_are_errors,
            automorphisms_match_the_definition, decomposition_recomposes, decompose_mac_matches_its_steps,
            expand_step_matches_its_steps, pack_step_matches_its_steps, hybrid_keyswitch_matches_its_steps,
            expand_seeds_match_the_stream,
            zero_noise_matches_the_spec, gather_words_read_the_words, flood_mask_matches_the_host,
            ranges_match_their_copies,
            key_sets_match_one_set_at_a_time, polys_move_where_they_are_sent);
    };
    (@tests $($name:ident),*) => {
        $(
            #[test]
            fn $name() {
                if let ::std::option::Option::Some(b) = __backend() {
                    $crate::conformance::$name(&b);
                }
            }
        )*
    };
}

/// A check of the suite: its name (the function's), what it shows, and the check.
pub type Check<B> = (&'static str, &'static str, fn(&Arc<B>));

/// Every check of the suite, each with a line saying what it shows: what `fastquery check`
/// runs on the backend it is given (the same functions [`conformance_tests!`] makes tests of).
pub fn all<B: Backend>() -> Vec<Check<B>> {
    macro_rules! checks {
        ($($f:ident: $what:literal,)*) => { vec![$((stringify!($f), $what, $f::<B> as fn(&Arc<B>))),*] };
    }
    checks! {
        upload_download_and_validation: "upload/download and input validation",
        ntt_matches_reference: "batched NTT equals the reference",
        ntt_products_match_schoolbook: "NTT products equal schoolbook products",
        elementwise_ops_match_scalar: "add/sub/neg/scalar/mul equal scalar code",
        monomial_mul_matches_reference: "monomial multiply equals rotation",
        mac_matches_scalar: "multiply-accumulate equals scalar code",
        mod_switch_matches_big_integers: "modulus switching equals its big-integer definition",
        mismatched_operands_are_errors: "malformed calls are errors",
        automorphisms_match_the_definition: "automorphisms equal their definition",
        decomposition_recomposes: "gadget decomposition recomposes",
        decompose_mac_matches_its_steps: "key-switch products equal their steps",
        expand_step_matches_its_steps: "expansion steps equal their steps",
        pack_step_matches_its_steps: "packing steps equal their steps",
        hybrid_keyswitch_matches_its_steps: "hybrid key switching equals its steps",
        expand_seeds_match_the_stream: "seed expansion equals the stream",
        zero_noise_matches_the_spec: "finishing noise follows the spec",
        gather_words_read_the_words: "gathered words are the words at their indices",
        flood_mask_matches_the_host: "a finish's flooding and masks equal the host's draws",
        ranges_match_their_copies: "truncation, range differences and inverse copies",
        key_sets_match_one_set_at_a_time: "key-switch products with a key per token equal one token at a time",
        polys_move_where_they_are_sent: "whole polynomials move to where they are sent",
    }
}

static SEED: AtomicU64 = AtomicU64::new(0x5eed_f00d);

/// Sets the base seed of every random input of the suite (default fixed; `fastquery check`
/// draws a fresh one and prints it, so a failure can be replayed with `--seed`).
pub fn set_seed(seed: u64) {
    SEED.store(seed, Ordering::Relaxed);
}

/// The base seed in use.
pub fn seed() -> u64 {
    SEED.load(Ordering::Relaxed)
}

/// The random stream of test `k` under the current base seed.
fn rng(k: u64) -> StdRng {
    StdRng::seed_from_u64(seed() ^ k.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// Says on the real stderr (which the test harness does not capture, so it shows even when the
/// test passes) that a backend's tests were skipped, and why.
pub fn report_skip(e: &BackendError) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED (backend unavailable): {e}");
}

/// Distinct primes for degree `n`, alternating 31 and 30 bits so that both lazy-reduction
/// depths of the multiply-accumulate are exercised.
pub fn test_primes(n: usize, limbs: usize) -> Vec<u32> {
    let mut big = ntt_prime_iter(31, n).expect("31-bit primes exist for supported degrees");
    let mut small = ntt_prime_iter(30, n).expect("30-bit primes exist for supported degrees");
    (0..limbs)
        .map(|i| if i % 2 == 0 { big.next() } else { small.next() })
        .map(|p| p.expect("enough primes"))
        .collect()
}

/// A ring of degree `n` with `limbs` test primes on `backend`.
pub fn ring<B: Backend>(backend: &Arc<B>, n: usize, limbs: usize) -> Ring<B> {
    let ctx = RingContext::new(n, &test_primes(n, limbs)).expect("valid test ring");
    Ring::new(backend.clone(), Arc::new(ctx)).expect("ring loads")
}

/// Random reduced words for `shape`, including the extremes `0`, `1` and `p - 1`.
pub fn random_words(rng: &mut StdRng, ctx: &RingContext, shape: Shape) -> Vec<u32> {
    let n = ctx.n();
    let mut v = Vec::with_capacity(shape.words(n));
    for row in 0..shape.rows() {
        let p = ctx.moduli()[row % shape.limbs].value();
        v.extend((0..n).map(|j| match (j * 7 + row) % 23 {
            0 => p - 1,
            1 => 1,
            2 => 0,
            _ => rng.random_range(0..p),
        }));
    }
    v
}

fn upload<B: Backend, R: Repr>(ring: &Ring<B>, words: &[u32], shape: Shape) -> Polys<B, R> {
    ring.upload(words, shape).expect("upload of valid words")
}

fn rows_map(
    ctx: &RingContext,
    words: &[u32],
    limbs: usize,
    mut f: impl FnMut(Modulus, &[u32]) -> Vec<u32>,
) -> Vec<u32> {
    words.chunks_exact(ctx.n()).enumerate().flat_map(|(row, c)| f(ctx.moduli()[row % limbs], c)).collect()
}

/// Upload then download returns the same words; bad uploads are errors; device-side copies of
/// polynomial ranges move exactly those words.
pub fn upload_download_and_validation<B: Backend>(b: &Arc<B>) {
    let mut rng = rng(1);
    let ring = ring(b, 256, 3);
    for shape in [Shape::new(1, 1), Shape::new(3, 2), Shape::new(5, 3)] {
        let w = random_words(&mut rng, ring.context(), shape);
        let p: Polys<B, Coeff> = upload(&ring, &w, shape);
        assert_eq!(ring.download(&p).unwrap(), w);
        let d = ring.duplicate(&p).unwrap();
        assert_eq!(ring.download(&d).unwrap(), w);
        let owned: Polys<B, Ntt> = ring.upload_vec(w.clone(), shape).unwrap();
        assert_eq!(ring.download(&owned).unwrap(), w);
        let z: Polys<B, Ntt> = ring.zeros(shape).unwrap();
        assert!(ring.download(&z).unwrap().iter().all(|&x| x == 0));
        // Copy polynomials [1, polys) of p to [0, polys - 1) of a fresh buffer.
        let mut dst: Polys<B, Coeff> = upload(&ring, &random_words(&mut rng, ring.context(), shape), shape);
        let before = ring.download(&dst).unwrap();
        let poly = shape.limbs * 256;
        ring.copy_polys(&p, 1, &mut dst, 0, shape.polys - 1).unwrap();
        let after = ring.download(&dst).unwrap();
        let split = (shape.polys - 1) * poly;
        assert_eq!(&after[..split], &w[poly..]);
        assert_eq!(&after[split..], &before[split..]);
    }
    // A large upload (checked on several threads) still finds a bad word at its very end.
    let big = Shape::new(600, 3);
    let mut w = random_words(&mut rng, ring.context(), big);
    let last = w.len() - 1;
    w[last] = u32::MAX;
    assert!(matches!(ring.upload::<Coeff>(&w, big), Err(BackendError::InvalidInput(_))));
    // An owned upload takes the same checks: the bad word, and a length off by one.
    assert!(matches!(ring.upload_vec::<Coeff>(w.clone(), big), Err(BackendError::InvalidInput(_))));
    w.pop();
    assert!(matches!(ring.upload_vec::<Coeff>(w, big), Err(BackendError::Shape(_))));
}

/// Batched forward and inverse NTT equal the portable reference row by row.
pub fn ntt_matches_reference<B: Backend>(b: &Arc<B>) {
    let mut rng = rng(2);
    for (n, limbs, polys) in
        [(16, 2, 3), (256, 3, 4), (1024, 2, 3), (4096, 2, 3), (8192, 1, 2), (16384, 3, 1), (32768, 2, 1)]
    {
        let ring = ring(b, n, limbs);
        let ctx = ring.context().clone();
        for used in [limbs, 1] {
            let shape = Shape::new(polys, used);
            let w = random_words(&mut rng, &ctx, shape);
            let fwd = ring.forward(upload(&ring, &w, shape)).unwrap();
            let got = ring.download(&fwd).unwrap();
            let want = rows_map(&ctx, &w, used, |m, c| {
                let t = ctx.tables().iter().find(|t| t.modulus() == m).unwrap();
                let mut c = c.to_vec();
                reference::forward(t, &mut c);
                c
            });
            assert_eq!(got, want, "forward n={n} limbs={used}");
            // Inverse of arbitrary NTT-domain data.
            let w2 = random_words(&mut rng, &ctx, shape);
            let inv = ring.inverse(upload::<B, Ntt>(&ring, &w2, shape)).unwrap();
            let got = ring.download(&inv).unwrap();
            let want = rows_map(&ctx, &w2, used, |m, c| {
                let t = ctx.tables().iter().find(|t| t.modulus() == m).unwrap();
                let mut c = c.to_vec();
                reference::inverse(t, &mut c);
                c
            });
            assert_eq!(got, want, "inverse n={n} limbs={used}");
        }
    }
}

/// forward, pointwise multiply, inverse on the device equals the schoolbook product.
pub fn ntt_products_match_schoolbook<B: Backend>(b: &Arc<B>) {
    let mut rng = rng(3);
    for (n, limbs) in [(64, 3), (2048, 2)] {
        let ring = ring(b, n, limbs);
        let ctx = ring.context().clone();
        let shape = Shape::new(2, limbs);
        let (x, y) = (random_words(&mut rng, &ctx, shape), random_words(&mut rng, &ctx, shape));
        let mut fx = ring.forward(upload(&ring, &x, shape)).unwrap();
        let fy = ring.forward(upload(&ring, &y, shape)).unwrap();
        ring.mul_assign(&mut fx, &fy).unwrap();
        let got = ring.download(&ring.inverse(fx).unwrap()).unwrap();
        let want: Vec<u32> = x
            .chunks_exact(n)
            .zip(y.chunks_exact(n))
            .enumerate()
            .flat_map(|(row, (a, c))| reference::negacyclic_mul(ctx.moduli()[row % limbs], a, c))
            .collect();
        assert_eq!(got, want, "n={n}");
    }
}

fn elementwise<B: Backend, R: Repr>(ring: &Ring<B>, rng: &mut StdRng, shape: Shape) {
    let ctx = ring.context().clone();
    let x = random_words(rng, &ctx, shape);
    let y = random_words(rng, &ctx, shape);
    let zip = |f: &dyn Fn(Modulus, u32, u32) -> u32| -> Vec<u32> {
        x.chunks_exact(ctx.n())
            .zip(y.chunks_exact(ctx.n()))
            .enumerate()
            .flat_map(|(row, (a, c))| {
                let m = ctx.moduli()[row % shape.limbs];
                a.iter().zip(c).map(move |(&u, &v)| f(m, u, v)).collect::<Vec<_>>()
            })
            .collect()
    };
    let yp: Polys<B, R> = upload(ring, &y, shape);

    let mut a: Polys<B, R> = upload(ring, &x, shape);
    ring.add_assign(&mut a, &yp).unwrap();
    assert_eq!(ring.download(&a).unwrap(), zip(&|m, u, v| m.add(u, v)), "add {}", R::NAME);

    let mut a: Polys<B, R> = upload(ring, &x, shape);
    ring.sub_assign(&mut a, &yp).unwrap();
    assert_eq!(ring.download(&a).unwrap(), zip(&|m, u, v| m.sub(u, v)), "sub {}", R::NAME);

    let mut a: Polys<B, R> = upload(ring, &x, shape);
    ring.neg_assign(&mut a).unwrap();
    assert_eq!(ring.download(&a).unwrap(), zip(&|m, u, _| m.neg(u)), "neg {}", R::NAME);

    let c: u64 = rng.random();
    let mut a: Polys<B, R> = upload(ring, &x, shape);
    ring.scalar_mul_assign(&mut a, c).unwrap();
    assert_eq!(ring.download(&a).unwrap(), zip(&|m, u, _| m.mul(u, m.reduce_u64(c))), "scalar {}", R::NAME);
}

/// add, sub, neg, scalar multiply (both representations) and pointwise multiply.
pub fn elementwise_ops_match_scalar<B: Backend>(b: &Arc<B>) {
    let mut rng = rng(4);
    for (n, limbs, shape) in
        [(32, 2, Shape::new(3, 2)), (4096, 3, Shape::new(2, 3)), (4096, 3, Shape::new(5, 1))]
    {
        let ring = ring(b, n, limbs);
        elementwise::<B, Coeff>(&ring, &mut rng, shape);
        elementwise::<B, Ntt>(&ring, &mut rng, shape);
        let ctx = ring.context().clone();
        let (x, y) = (random_words(&mut rng, &ctx, shape), random_words(&mut rng, &ctx, shape));
        let mut a: Polys<B, Ntt> = upload(&ring, &x, shape);
        ring.mul_assign(&mut a, &upload(&ring, &y, shape)).unwrap();
        let want: Vec<u32> = x
            .chunks_exact(n)
            .zip(y.chunks_exact(n))
            .enumerate()
            .flat_map(|(row, (u, v))| {
                let m = ctx.moduli()[row % shape.limbs];
                u.iter().zip(v).map(move |(&s, &t)| m.mul(s, t)).collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(ring.download(&a).unwrap(), want, "mul n={n}");
    }
}

/// Multiplication by `X^k` for `k` across `[0, 2N)`.
pub fn monomial_mul_matches_reference<B: Backend>(b: &Arc<B>) {
    let mut rng = rng(5);
    let n = 1024;
    let ring = ring(b, n, 2);
    let ctx = ring.context().clone();
    let shape = Shape::new(3, 2);
    let x = random_words(&mut rng, &ctx, shape);
    let mut ks = vec![0, 1, n - 1, n, n + 1, 2 * n - 1];
    ks.extend((0..6).map(|_| rng.random_range(0..2 * n)));
    for k in ks {
        let mut a: Polys<B, Coeff> = upload(&ring, &x, shape);
        ring.monomial_mul_assign(&mut a, k).unwrap();
        let want = rows_map(&ctx, &x, shape.limbs, |m, c| reference::monomial_mul(m, c, k));
        assert_eq!(ring.download(&a).unwrap(), want, "k={k}");
    }
}

/// Host reference of [`Backend::mac`].
pub fn mac_reference(
    ctx: &RingContext,
    out: &[u32],
    a: &[u32],
    b: &[u32],
    dims: MacDims,
    limbs: usize,
    accumulate: bool,
) -> Vec<u32> {
    let n = ctx.n();
    let poly = limbs * n;
    let mut res = vec![0u32; dims.rows * dims.cols * poly];
    for r in 0..dims.rows {
        for c in 0..dims.cols {
            for l in 0..limbs {
                let m = ctx.moduli()[l];
                for j in 0..n {
                    let idx = (r * dims.cols + c) * poly + l * n + j;
                    let mut s = if accumulate { out[idx] } else { 0 };
                    for i in 0..dims.inner {
                        let x = a[(r * dims.inner + i) * poly + l * n + j];
                        let y = b[(i * dims.cols + c) * poly + l * n + j];
                        s = m.add(s, m.mul(x, y));
                    }
                    res[idx] = s;
                }
            }
        }
    }
    res
}

/// The multiply-accumulate over shapes that cross the lazy-reduction depths (4 and 16) and the
/// CPU's register blocks (8, 4 and 1 rows of 16 coefficients).
pub fn mac_matches_scalar<B: Backend>(b: &Arc<B>) {
    let mut rng = rng(6);
    for (n, ring_limbs, limbs) in [(64, 3, 3), (4096, 2, 2), (2048, 3, 1)] {
        let ring = ring(b, n, ring_limbs);
        let ctx = ring.context().clone();
        for (rows, inner, cols) in [
            (1, 1, 1),
            (1, 5, 3),
            (2, 17, 2),
            (3, 33, 1),
            (4, 4, 5),
            (1, 40, 1),
            (8, 9, 2),
            (13, 12, 3),
            (16, 37, 1),
            // Column tiles (a GPU kernel may hold several columns per thread): partial tiles
            // in both directions.
            (9, 7, 6),
            (2, 11, 9),
            (17, 5, 4),
            // One-token products (at most two rows, eight or more columns).
            (1, 19, 17),
            (2, 40, 8),
        ] {
            let dims = MacDims { rows, inner, cols };
            let a = random_words(&mut rng, &ctx, Shape::new(rows * inner, limbs));
            let bw = random_words(&mut rng, &ctx, Shape::new(inner * cols, limbs));
            let o = random_words(&mut rng, &ctx, Shape::new(rows * cols, limbs));
            let ap: Polys<B, Ntt> = upload(&ring, &a, Shape::new(rows * inner, limbs));
            let bp: Polys<B, Ntt> = upload(&ring, &bw, Shape::new(inner * cols, limbs));
            // The same operand in the backend's layout for repeated products.
            let laid =
                ring.mac_operand(upload(&ring, &bw, Shape::new(inner * cols, limbs)), inner, cols).unwrap();
            assert_eq!(laid.shape(), Shape::new(inner * cols, limbs));
            // And laid out part by part (parts of 1, 2, 3, ... polynomials, the last one short).
            let poly = limbs * n;
            let part = 1 + (rows + inner + cols) % 4;
            let from_parts = ring
                .mac_operand_from_parts((inner, cols, limbs), part, |first, count| {
                    Ok::<_, BackendError>(upload(
                        &ring,
                        &bw[first * poly..][..count * poly],
                        Shape::new(count, limbs),
                    ))
                })
                .unwrap();
            for accumulate in [false, true] {
                let want = mac_reference(&ctx, &o, &a, &bw, dims, limbs, accumulate);
                let mut op: Polys<B, Ntt> = upload(&ring, &o, Shape::new(rows * cols, limbs));
                ring.mac(&mut op, &ap, &bp, dims, accumulate).unwrap();
                assert_eq!(
                    ring.download(&op).unwrap(),
                    want,
                    "n={n} limbs={limbs} {dims:?} accumulate={accumulate}"
                );
                let mut op: Polys<B, Ntt> = upload(&ring, &o, Shape::new(rows * cols, limbs));
                ring.mac_laid_out(&mut op, &ap, &laid, rows, accumulate).unwrap();
                assert_eq!(
                    ring.download(&op).unwrap(),
                    want,
                    "laid out: n={n} limbs={limbs} {dims:?} accumulate={accumulate}"
                );
                let mut op: Polys<B, Ntt> = upload(&ring, &o, Shape::new(rows * cols, limbs));
                ring.mac_laid_out(&mut op, &ap, &from_parts, rows, accumulate).unwrap();
                assert_eq!(
                    ring.download(&op).unwrap(),
                    want,
                    "laid out in parts of {part}: n={n} limbs={limbs} {dims:?} accumulate={accumulate}"
                );
            }
            // A part of one polynomial more than asked for is an error.
            if part < inner * cols {
                let long = ring.mac_operand_from_parts((inner, cols, limbs), part, |_, count| {
                    Ok::<_, BackendError>(upload::<B, Ntt>(
                        &ring,
                        &bw[..(count + 1) * poly],
                        Shape::new(count + 1, limbs),
                    ))
                });
                assert!(long.is_err(), "a part of the wrong size was taken");
            }
            // A laid-out operand of other dimensions, or rows that do not match `a`, are errors.
            let mut op: Polys<B, Ntt> = upload(&ring, &o, Shape::new(rows * cols, limbs));
            assert!(ring.mac_laid_out(&mut op, &ap, &laid, rows + 1, false).is_err());
            let wrong = upload::<B, Ntt>(&ring, &bw, Shape::new(inner * cols, limbs));
            assert!(ring.mac_operand(wrong, inner + 1, cols).is_err());
        }
    }
    // The longest inner sum a tensor-core kernel takes (2048 terms of 8-bit pieces in 32-bit
    // accumulators), every word p - 1, one limb.
    {
        let dims = MacDims { rows: 8, inner: 2048, cols: 8 };
        let ring = ring(b, 64, 2);
        let ctx = ring.context().clone();
        let top = |polys: usize| vec![ctx.moduli()[0].value() - 1; polys * 64];
        let (a, bw, o) = (top(8 * 2048), top(2048 * 8), top(8 * 8));
        let ap: Polys<B, Ntt> = upload(&ring, &a, Shape::new(8 * 2048, 1));
        let bp: Polys<B, Ntt> = upload(&ring, &bw, Shape::new(2048 * 8, 1));
        let mut op: Polys<B, Ntt> = upload(&ring, &o, Shape::new(8 * 8, 1));
        ring.mac(&mut op, &ap, &bp, dims, true).unwrap();
        assert_eq!(
            ring.download(&op).unwrap(),
            mac_reference(&ctx, &o, &a, &bw, dims, 1, true),
            "inner 2048"
        );
    }
    // Matrix tiles (a GPU kernel may compute 16 x 32 tiles over steps of 8 inner terms, on
    // blocks of 8 coefficients): several tiles with partial ones in every direction, and inner
    // lengths on both sides of the steps.
    let ring8 = ring(b, 64, 2);
    let ctx8 = ring8.context().clone();
    for (rows, inner, cols) in [(8, 8, 8), (16, 9, 32), (33, 19, 41), (20, 1, 70), (40, 64, 12)] {
        let dims = MacDims { rows, inner, cols };
        let a = random_words(&mut rng, &ctx8, Shape::new(rows * inner, 2));
        let bw = random_words(&mut rng, &ctx8, Shape::new(inner * cols, 2));
        let o = random_words(&mut rng, &ctx8, Shape::new(rows * cols, 2));
        let ap: Polys<B, Ntt> = upload(&ring8, &a, Shape::new(rows * inner, 2));
        let bp: Polys<B, Ntt> = upload(&ring8, &bw, Shape::new(inner * cols, 2));
        for accumulate in [false, true] {
            let mut op: Polys<B, Ntt> = upload(&ring8, &o, Shape::new(rows * cols, 2));
            ring8.mac(&mut op, &ap, &bp, dims, accumulate).unwrap();
            assert_eq!(
                ring8.download(&op).unwrap(),
                mac_reference(&ctx8, &o, &a, &bw, dims, 2, accumulate),
                "tiles: {dims:?} accumulate={accumulate}"
            );
        }
    }
    // The largest sums a lazy reduction must hold: every word p - 1 (31- and 30-bit primes),
    // odd and even inner lengths up to the fold's first dimension.
    let ring = ring(b, 256, 2);
    let ctx = ring.context().clone();
    for (rows, inner, cols) in [(1, 2, 1), (9, 3, 2), (16, 125, 2), (2, 250, 1), (10, 125, 5), (17, 125, 9)] {
        let dims = MacDims { rows, inner, cols };
        let top = |polys: usize| -> Vec<u32> {
            let shape = Shape::new(polys, 2);
            (0..shape.rows()).flat_map(|row| vec![ctx.moduli()[row % 2].value() - 1; 256]).collect()
        };
        let (a, bw, o) = (top(rows * inner), top(inner * cols), top(rows * cols));
        let ap: Polys<B, Ntt> = upload(&ring, &a, Shape::new(rows * inner, 2));
        let bp: Polys<B, Ntt> = upload(&ring, &bw, Shape::new(inner * cols, 2));
        for accumulate in [false, true] {
            let mut op: Polys<B, Ntt> = upload(&ring, &o, Shape::new(rows * cols, 2));
            ring.mac(&mut op, &ap, &bp, dims, accumulate).unwrap();
            assert_eq!(
                ring.download(&op).unwrap(),
                mac_reference(&ctx, &o, &a, &bw, dims, 2, accumulate),
                "all p - 1: {dims:?} accumulate={accumulate}"
            );
        }
    }
    broadcast_pair_matches_mac(b, &mut rng);
}

/// [`Ring::mul_broadcast_pair`] equals two multiply-accumulates of one inner term (random
/// words and every word `p - 1`, both modes, one to many polynomials); keys of the wrong shape
/// and outputs of another shape are errors.
fn broadcast_pair_matches_mac<B: Backend>(b: &Arc<B>, rng: &mut StdRng) {
    for (n, limbs, polys) in [(64, 3, 1), (4096, 2, 5), (256, 4, 33)] {
        let ring = ring(b, n, limbs);
        let ctx = ring.context().clone();
        let shape = Shape::new(polys, limbs);
        let key_shape = Shape::new(1, limbs);
        let top = |shape: Shape| -> Vec<u32> {
            (0..shape.rows()).flat_map(|row| vec![ctx.moduli()[row % limbs].value() - 1; n]).collect()
        };
        let random = [
            random_words(rng, &ctx, shape),
            random_words(rng, &ctx, key_shape),
            random_words(rng, &ctx, key_shape),
            random_words(rng, &ctx, shape),
            random_words(rng, &ctx, shape),
        ];
        let extreme = [top(shape), top(key_shape), top(key_shape), top(shape), top(shape)];
        let dims = MacDims { rows: polys, inner: 1, cols: 1 };
        for ([a, k0, k1, o0, o1], what) in [(random, "random"), (extreme, "all p - 1")] {
            let ap: Polys<B, Ntt> = upload(&ring, &a, shape);
            let keys: [Polys<B, Ntt>; 2] = [upload(&ring, &k0, key_shape), upload(&ring, &k1, key_shape)];
            for accumulate in [false, true] {
                let mut outs: [Polys<B, Ntt>; 2] = [upload(&ring, &o0, shape), upload(&ring, &o1, shape)];
                let [x0, x1] = &mut outs;
                ring.mul_broadcast_pair(&ap, [&keys[0], &keys[1]], [x0, x1], accumulate).unwrap();
                for ((out, o), k) in outs.iter().zip([&o0, &o1]).zip([&k0, &k1]) {
                    assert_eq!(
                        ring.download(out).unwrap(),
                        mac_reference(&ctx, o, &a, k, dims, limbs, accumulate),
                        "broadcast pair ({what}): n={n} limbs={limbs} polys={polys} accumulate={accumulate}"
                    );
                }
            }
            // A key of two polynomials, or of other limbs, and an output of another shape.
            let long: Polys<B, Ntt> = upload(&ring, &[k0.clone(), k1.clone()].concat(), Shape::new(2, limbs));
            let mut outs: [Polys<B, Ntt>; 2] = [upload(&ring, &o0, shape), upload(&ring, &o1, shape)];
            let [x0, x1] = &mut outs;
            assert!(ring.mul_broadcast_pair(&ap, [&keys[0], &long], [x0, x1], true).is_err(), "a long key");
            if limbs > 1 {
                let fewer: Polys<B, Ntt> = upload(&ring, &k0[..(limbs - 1) * n], Shape::new(1, limbs - 1));
                assert!(
                    ring.mul_broadcast_pair(&ap, [&fewer, &keys[1]], [x0, x1], true).is_err(),
                    "key limbs"
                );
            }
            if polys > 1 {
                let mut short: Polys<B, Ntt> =
                    upload(&ring, &o0[..(polys - 1) * limbs * n], Shape::new(polys - 1, limbs));
                assert!(
                    ring.mul_broadcast_pair(&ap, [&keys[0], &keys[1]], [&mut short, x1], true).is_err(),
                    "an output of another shape"
                );
            }
        }
    }
}

/// Modulus switching equals its definition on big integers: for each dropped prime `p`, last
/// first, `x <- (x - r) / p` with `r = x mod p` centred into `(-p/2, p/2]`. That is `round(x / p)`
/// once per prime (within one unit of a single rounding by the product; the noise analysis
/// counts it), and it is the exact specification every backend reproduces, as does
/// [`host::ResidueSwitch`](crate::host::ResidueSwitch) one coefficient at a time.
pub fn mod_switch_matches_big_integers<B: Backend>(b: &Arc<B>) {
    use num_bigint::BigInt;
    let mut rng = rng(8);
    let (n, limbs) = (256, 4);
    let ring = ring(b, n, limbs);
    let ctx = ring.context().clone();
    let shape = Shape::new(3, limbs);
    let w = random_words(&mut rng, &ctx, shape);
    let a: Polys<B, Coeff> = upload(&ring, &w, shape);
    let full = ctx.basis();
    for keep in 1..limbs {
        let got = ring.download(&ring.mod_switch_down(&a, keep).unwrap()).unwrap();
        let small = full.prefix(keep).unwrap();
        for poly in 0..shape.polys {
            for j in 0..n {
                let residues: Vec<u32> = (0..limbs).map(|l| w[(poly * limbs + l) * n + j]).collect();
                let mut x = BigInt::from(full.compose(&residues).unwrap());
                for last in (keep..limbs).rev() {
                    let p = BigInt::from(ctx.moduli()[last].value());
                    let mut r = ((&x % &p) + &p) % &p;
                    if r > &p / 2 {
                        r -= &p;
                    }
                    x = (x - r) / p;
                }
                let want = small.decompose_signed(&x);
                let have: Vec<u32> = (0..keep).map(|l| got[(poly * keep + l) * n + j]).collect();
                assert_eq!(have, want, "keep={keep} poly={poly} j={j}");
                // The host's switch of one coefficient (a finish's kept ones) is the same.
                let mut one = residues.clone();
                crate::host::ResidueSwitch::new(ctx.moduli(), keep).apply(&mut one);
                assert_eq!(one[..keep], want[..], "host, keep={keep} poly={poly} j={j}");
            }
        }
    }
    assert!(ring.mod_switch_down(&a, limbs).is_err());
    assert!(ring.mod_switch_down(&a, 0).is_err());
}

/// Every malformed call is an error, never a panic or a silent wrong answer.
pub fn mismatched_operands_are_errors<B: Backend>(b: &Arc<B>) {
    let mut rng = rng(7);
    let r1 = ring(b, 64, 2);
    let r2 = ring(b, 64, 2);
    let ctx = r1.context().clone();
    let s = Shape::new(2, 2);
    let w = random_words(&mut rng, &ctx, s);
    // Uploads: wrong length, unreduced word, too many limbs, no limbs.
    assert!(matches!(r1.upload::<Coeff>(&w[1..], s), Err(BackendError::Shape(_))));
    let mut bad = w.clone();
    bad[70] = ctx.moduli()[0].value();
    assert!(matches!(r1.upload::<Coeff>(&bad, s), Err(BackendError::InvalidInput(_))));
    assert!(matches!(r1.zeros::<Coeff>(Shape::new(1, 3)), Err(BackendError::Shape(_))));
    assert!(matches!(r1.zeros::<Coeff>(Shape::new(1, 0)), Err(BackendError::Shape(_))));
    assert!(matches!(r1.zeros::<Coeff>(Shape::new(usize::MAX / 2, 2)), Err(BackendError::Shape(_))));
    // Operands of another ring or shape.
    let mut a: Polys<B, Coeff> = upload(&r1, &w, s);
    let other: Polys<B, Coeff> = upload(&r2, &w, s);
    assert_eq!(r1.add_assign(&mut a, &other).unwrap_err(), BackendError::RingMismatch);
    assert_eq!(r1.download(&other).unwrap_err(), BackendError::RingMismatch);
    let small: Polys<B, Coeff> = r1.zeros(Shape::new(2, 1)).unwrap();
    assert!(matches!(r1.sub_assign(&mut a, &small), Err(BackendError::Shape(_))));
    assert!(matches!(r1.monomial_mul_assign(&mut a, 128), Err(BackendError::InvalidInput(_))));
    assert!(matches!(r1.scalar_mul_assign_rns(&mut a, &[1]), Err(BackendError::Shape(_))));
    assert!(matches!(r1.scalar_mul_assign_rns(&mut a, &[u32::MAX, 1]), Err(BackendError::InvalidInput(_))));
    // The failed calls left `a` untouched.
    assert_eq!(r1.download(&a).unwrap(), w);
    // Copies out of range or between different limb counts.
    let mut dst: Polys<B, Coeff> = r1.zeros(Shape::new(3, 2)).unwrap();
    assert!(matches!(r1.copy_polys(&a, 1, &mut dst, 2, 2), Err(BackendError::Shape(_))));
    assert!(matches!(r1.copy_polys(&a, 0, &mut dst, 0, usize::MAX), Err(BackendError::Shape(_))));
    let narrow: Polys<B, Coeff> = r1.zeros(Shape::new(2, 1)).unwrap();
    assert!(matches!(r1.copy_polys(&narrow, 0, &mut dst, 0, 1), Err(BackendError::Shape(_))));
    // mac with inconsistent dimensions.
    let x: Polys<B, Ntt> = r1.zeros(Shape::new(6, 2)).unwrap();
    let mut o: Polys<B, Ntt> = r1.zeros(Shape::new(2, 2)).unwrap();
    let dims = MacDims { rows: 2, inner: 3, cols: 1 };
    assert!(r1.mac(&mut o, &x, &x, dims, false).is_err()); // b must hold 3 polys
    let y: Polys<B, Ntt> = r1.zeros(Shape::new(3, 1)).unwrap();
    assert!(r1.mac(&mut o, &x, &y, dims, false).is_err()); // limbs differ
    let y: Polys<B, Ntt> = r1.zeros(Shape::new(3, 2)).unwrap();
    assert!(r1.mac(&mut o, &x, &y, dims, false).is_ok());
    // Empty products are no-ops or zeros, not panics.
    let none: Polys<B, Ntt> = r1.zeros(Shape::new(0, 2)).unwrap();
    let mut empty: Polys<B, Ntt> = r1.zeros(Shape::new(0, 2)).unwrap();
    assert!(r1.mac(&mut empty, &none, &y, MacDims { rows: 0, inner: 3, cols: 1 }, true).is_ok());
    let mut o2: Polys<B, Ntt> =
        upload(&r1, &random_words(&mut rng, &ctx, Shape::new(2, 2)), Shape::new(2, 2));
    r1.mac(&mut o2, &none, &none, MacDims { rows: 2, inner: 0, cols: 1 }, false).unwrap();
    assert!(r1.download(&o2).unwrap().iter().all(|&w| w == 0));
}

/// `a(X) -> a(X^g)` by its definition (sum of signed monomials), in coefficient form; the NTT
/// form agrees with transforming the coefficient result; `g` and `g^-1` undo each other; and a
/// product maps to the product of the images (a ring automorphism).
pub fn automorphisms_match_the_definition<B: Backend>(b: &Arc<B>) {
    let mut rng = rng(9);
    for (n, limbs) in [(256usize, 2usize), (1024, 3)] {
        let ring = ring(b, n, limbs);
        let ctx = ring.context().clone();
        let shape = Shape::new(2, limbs);
        let x = random_words(&mut rng, &ctx, shape);
        let y = random_words(&mut rng, &ctx, shape);
        let mut gs = vec![1, 3, 5, 2 * n - 1, n + 1];
        gs.extend((0..4).map(|_| 2 * rng.random_range(0..n) + 1));
        for g in gs {
            let want = rows_map(&ctx, &x, limbs, |m, c| {
                let mut out = vec![0u32; n];
                for (j, &v) in c.iter().enumerate() {
                    let e = j * g % (2 * n);
                    let (k, v) = if e < n { (e, v) } else { (e - n, m.neg(v)) };
                    out[k] = m.add(out[k], v);
                }
                out
            });
            let a: Polys<B, Coeff> = upload(&ring, &x, shape);
            let got = ring.automorphism(&a, g).unwrap();
            assert_eq!(ring.download(&got).unwrap(), want, "coefficient form, n={n} g={g}");
            let an = ring.forward(ring.duplicate(&a).unwrap()).unwrap();
            let gn = ring.automorphism(&an, g).unwrap();
            assert_eq!(ring.download(&ring.inverse(gn).unwrap()).unwrap(), want, "NTT form, n={n} g={g}");
            // The inverse exponent undoes it.
            let g_inv = (1..2 * n).step_by(2).find(|h| h * g % (2 * n) == 1).unwrap();
            let back = ring.automorphism(&got, g_inv).unwrap();
            assert_eq!(ring.download(&back).unwrap(), x, "n={n} g={g} then {g_inv}");
            // tau(x y) = tau(x) tau(y), in the NTT domain.
            let yn = ring.forward(upload::<B, Coeff>(&ring, &y, shape)).unwrap();
            let mut xy = ring.duplicate(&an).unwrap();
            ring.mul_assign(&mut xy, &yn).unwrap();
            let lhs = ring.automorphism(&xy, g).unwrap();
            let mut rhs = ring.automorphism(&an, g).unwrap();
            ring.mul_assign(&mut rhs, &ring.automorphism(&yn, g).unwrap()).unwrap();
            assert_eq!(ring.download(&lhs).unwrap(), ring.download(&rhs).unwrap(), "n={n} g={g}");
        }
        let a: Polys<B, Coeff> = upload(&ring, &x, shape);
        assert!(ring.automorphism(&a, 4).is_err());
    }
}

/// Digits are below `2^w`, reduced in every limb, and recompose limb `i` exactly:
/// `sum_j D[i][j] 2^(j w) = a[i] (mod p_i)` (the CRT gadget is 1 in limb `i`, 0 elsewhere).
pub fn decomposition_recomposes<B: Backend>(b: &Arc<B>) {
    let mut rng = rng(10);
    let (n, limbs) = (256usize, 3usize);
    let ring = ring(b, n, limbs);
    let ctx = ring.context().clone();
    let shape = Shape::new(2, limbs);
    let x = random_words(&mut rng, &ctx, shape);
    let a: Polys<B, Coeff> = upload(&ring, &x, shape);
    for w in [31u32, 16, 11, 7] {
        let digits = ring.digits(limbs, w);
        let d = ring.download(&ring.decompose(&a, w).unwrap()).unwrap();
        assert_eq!(d.len(), 2 * limbs * digits * limbs * n, "w={w}");
        for p in 0..2 {
            for i in 0..limbs {
                let m = ctx.moduli()[i];
                for k in 0..n {
                    let mut acc = 0u64;
                    for j in 0..digits {
                        let base = ((p * limbs + i) * digits + j) * limbs * n;
                        let v = d[base + k]; // limb 0 of the digit polynomial
                        assert!(u64::from(v) < 1 << w, "digit {v} of width {w}");
                        for l in 0..limbs {
                            assert_eq!(d[base + l * n + k], ctx.moduli()[l].reduce_u64(u64::from(v)));
                        }
                        acc += u64::from(v) << (j as u32 * w);
                    }
                    assert_eq!(m.reduce_u64(acc), x[(p * limbs + i) * n + k], "w={w}");
                }
            }
        }
    }
    assert!(ring.decompose(&a, 0).is_err() && ring.decompose(&a, 32).is_err());
}

/// The fused product of key switching ([`Backend::decompose_mac`]) equals its steps (decompose,
/// forward, two multiply-accumulates: each checked against a reference above), for batches of 1
/// to 17 polynomials, digit widths below and above the smallest prime, and both modes. For a
/// backend that keeps the default (the steps themselves) this checks the wiring and the shape
/// validation; for the CPU's fused kernel it is the oracle. With one digit per limb, the
/// product from the twin ([`Ring::decompose_mac_twin`]) is the same.
pub fn decompose_mac_matches_its_steps<B: Backend>(b: &Arc<B>) {
    let mut rng = rng(11);
    // 4096 and 8192: the degrees of the CUDA backend's three-pass fused kernels; 8192 and 16384:
    // the fastquery designs' degrees, where a fused kernel holds 8 and 16 words per thread.
    // The last ring mixes 31-bit primes with a 24-bit one: a 31-bit residue (or a wide digit
    // of it) exceeds the small prime many times over, and must be reduced, not just
    // conditionally subtracted.
    let mixed = {
        let (mut big, mut small) =
            (ntt_prime_iter(31, 512).expect("31-bit"), ntt_prime_iter(24, 512).expect("24-bit"));
        let primes: Vec<u32> =
            [big.next(), small.next(), big.next()].map(|p| p.expect("enough primes")).to_vec();
        Ring::new(b.clone(), Arc::new(RingContext::new(512, &primes).expect("mixed ring")))
            .expect("ring loads")
    };
    let shapes = [(256usize, 3usize), (2048, 2), (64, 1), (4096, 1), (8192, 2), (16384, 1)];
    for ring in shapes.map(|(n, limbs)| ring(b, n, limbs)).into_iter().chain([mixed]) {
        let (n, limbs) = (ring.n(), ring.context().limbs());
        let ctx = ring.context().clone();
        for (polys, w) in [(1usize, 16u32), (3, 31), (17, 7), (2, 12), (2, 26)] {
            let g = limbs * ring.digits(limbs, w);
            let shape = Shape::new(polys, limbs);
            let a: Polys<B, Coeff> = upload(&ring, &random_words(&mut rng, &ctx, shape), shape);
            let keys: Vec<Polys<B, Ntt>> = (0..2)
                .map(|_| {
                    upload(&ring, &random_words(&mut rng, &ctx, Shape::new(g, limbs)), Shape::new(g, limbs))
                })
                .collect();
            let start = random_words(&mut rng, &ctx, shape);
            let digits = ring.forward(ring.decompose(&a, w).unwrap()).unwrap();
            let dims = MacDims { rows: polys, inner: g, cols: 1 };
            for accumulate in [false, true] {
                let mut want: Vec<Polys<B, Ntt>> = (0..2).map(|_| upload(&ring, &start, shape)).collect();
                for (o, k) in want.iter_mut().zip(&keys) {
                    ring.mac(o, &digits, k, dims, accumulate).unwrap();
                }
                let mut got: Vec<Polys<B, Ntt>> = (0..2).map(|_| upload(&ring, &start, shape)).collect();
                let [g0, g1] = &mut got[..] else { unreachable!("two outputs") };
                ring.decompose_mac(&a, w, [&keys[0], &keys[1]], [g0, g1], accumulate).unwrap();
                for (x, y) in got.iter().zip(&want) {
                    assert_eq!(
                        ring.download(x).unwrap(),
                        ring.download(y).unwrap(),
                        "n={n} limbs={limbs} polys={polys} w={w} accumulate={accumulate}"
                    );
                }
                // One digit per limb: the same product from the twin (a's transform).
                if g == limbs {
                    let twin = ring.forward(ring.duplicate(&a).unwrap()).unwrap();
                    let mut got: Vec<Polys<B, Ntt>> = (0..2).map(|_| upload(&ring, &start, shape)).collect();
                    let [g0, g1] = &mut got[..] else { unreachable!("two outputs") };
                    ring.decompose_mac_twin(&a, &twin, w, [&keys[0], &keys[1]], [g0, g1], accumulate)
                        .unwrap();
                    for (x, y) in got.iter().zip(&want) {
                        assert_eq!(
                            ring.download(x).unwrap(),
                            ring.download(y).unwrap(),
                            "twin: n={n} limbs={limbs} polys={polys} w={w} accumulate={accumulate}"
                        );
                    }
                }
            }
        }
        // A key of the wrong size is refused.
        let shape = Shape::new(1, limbs);
        let a: Polys<B, Coeff> = upload(&ring, &random_words(&mut rng, &ctx, shape), shape);
        let bad: Polys<B, Ntt> = upload(&ring, &random_words(&mut rng, &ctx, shape), shape);
        let (mut o0, mut o1): (Polys<B, Ntt>, Polys<B, Ntt>) =
            (ring.zeros(shape).unwrap(), ring.zeros(shape).unwrap());
        assert!(ring.decompose_mac(&a, 16, [&bad, &bad], [&mut o0, &mut o1], false).is_err());
        // The twin: a digit width that splits a residue (with keys of its size), and a twin of
        // another shape.
        let key = |rng: &mut StdRng, w: u32| -> Polys<B, Ntt> {
            let shape = Shape::new(limbs * ring.digits(limbs, w), limbs);
            upload(&ring, &random_words(rng, &ctx, shape), shape)
        };
        let (k31, k16) = ([key(&mut rng, 31), key(&mut rng, 31)], [key(&mut rng, 16), key(&mut rng, 16)]);
        assert!(ring.digits(limbs, 16) > 1, "16-bit digits split the suite's primes");
        let twin = ring.forward(ring.duplicate(&a).unwrap()).unwrap();
        assert!(
            ring.decompose_mac_twin(&a, &twin, 31, [&k31[0], &k31[1]], [&mut o0, &mut o1], false).is_ok()
        );
        assert!(ring.decompose_mac(&a, 16, [&k16[0], &k16[1]], [&mut o0, &mut o1], false).is_ok());
        assert!(
            ring.decompose_mac_twin(&a, &twin, 16, [&k16[0], &k16[1]], [&mut o0, &mut o1], false).is_err()
        );
        let wide = Shape::new(2, limbs);
        let other: Polys<B, Ntt> = upload(&ring, &random_words(&mut rng, &ctx, wide), wide);
        assert!(
            ring.decompose_mac_twin(&a, &other, 31, [&k31[0], &k31[1]], [&mut o0, &mut o1], false).is_err()
        );
    }
}

/// [`Ring::pack_step_hybrid`] against the same steps done one by one (copies, monomial
/// product, sum and difference, automorphism, [`Ring::keyswitch_hybrid`], sums): random pairs
/// and keys at several offsets of a larger batch (the two halves of a range, interleaved
/// ranges, a pair with itself), shifts below and above `N`. What `dst` holds outside the
/// written range must stay; bad ranges, exponents and shifts are refused.
pub fn pack_step_matches_its_steps<B: Backend>(b: &Arc<B>) {
    let mut rng = rng(13);
    for (n, limbs) in [(256usize, 3usize), (2048, 2), (64, 1)] {
        let ring = ring(b, n, limbs + 1);
        let ctx = ring.context().clone();
        let total = 12;
        let shape = Shape::new(total, limbs);
        let key_shape = Shape::new(limbs + 1, limbs + 1);
        for (a_at, b_at, out_at, count, g, shift) in [
            (0usize, 1usize, 0usize, 1usize, 2 * n - 1, 2 * n - 1),
            (0, 4, 2, 4, 5, n / 2),
            (3, 7, 8, 4, 2 * n / 4 + 1, n + 3),
            (5, 5, 11, 1, 3, 0),
        ] {
            let src: Vec<Polys<B, Coeff>> =
                (0..2).map(|_| upload(&ring, &random_words(&mut rng, &ctx, shape), shape)).collect();
            let keys: Vec<Polys<B, Ntt>> =
                (0..2).map(|_| upload(&ring, &random_words(&mut rng, &ctx, key_shape), key_shape)).collect();
            let start = random_words(&mut rng, &ctx, shape);
            // The steps.
            let part = Shape::new(count, limbs);
            let take = |p: &Polys<B, Coeff>, at: usize| {
                let mut c = ring.zeros(part).unwrap();
                ring.copy_polys(p, at, &mut c, 0, count).unwrap();
                c
            };
            let (mut sum, mut diff) = (Vec::new(), Vec::new());
            for p in &src {
                let mut xb = take(p, b_at);
                ring.monomial_mul_assign(&mut xb, shift).unwrap();
                let (mut s, mut d) = (take(p, a_at), take(p, a_at));
                ring.add_assign(&mut s, &xb).unwrap();
                ring.sub_assign(&mut d, &xb).unwrap();
                sum.push(s);
                diff.push(d);
            }
            let t: Vec<Polys<B, Coeff>> = diff.iter().map(|x| ring.automorphism(x, g).unwrap()).collect();
            let [kb, ka] = ring.keyswitch_hybrid(&t[1], [&keys[0], &keys[1]]).unwrap();
            ring.add_assign(&mut sum[0], &t[0]).unwrap();
            ring.add_assign(&mut sum[0], &kb).unwrap();
            ring.add_assign(&mut sum[1], &ka).unwrap();
            let mut want: Vec<Polys<B, Coeff>> = (0..2).map(|_| upload(&ring, &start, shape)).collect();
            for (w, s) in want.iter_mut().zip(&sum) {
                ring.copy_polys(s, 0, w, out_at, count).unwrap();
            }
            // The fused step.
            let mut got: Vec<Polys<B, Coeff>> = (0..2).map(|_| upload(&ring, &start, shape)).collect();
            let [g0, g1] = &mut got[..] else { unreachable!("two outputs") };
            ring.pack_step_hybrid(
                [&src[0], &src[1]],
                [g0, g1],
                (a_at, b_at, out_at, count),
                g,
                [&keys[0], &keys[1]],
                shift,
            )
            .unwrap();
            for (x, y) in got.iter().zip(&want) {
                assert_eq!(
                    ring.download(x).unwrap(),
                    ring.download(y).unwrap(),
                    "n={n} limbs={limbs} pairs at {a_at}, {b_at} -> {out_at} count={count} g={g} shift={shift}"
                );
            }
        }
        // Ranges past the end, an even exponent, a shift of 2N, and keys without the special
        // prime are refused.
        let src: Vec<Polys<B, Coeff>> = (0..2).map(|_| ring.zeros(shape).unwrap()).collect();
        let key: Polys<B, Ntt> = ring.zeros(key_shape).unwrap();
        let small: Polys<B, Ntt> = ring.zeros(Shape::new(limbs, limbs)).unwrap();
        let mut dst: Vec<Polys<B, Coeff>> = (0..2).map(|_| ring.zeros(shape).unwrap()).collect();
        for (range, g, shift, k) in [
            ((0, 9, 0, 4), 3, 1, &key),
            ((0, 4, 10, 4), 3, 1, &key),
            ((usize::MAX, 0, 0, 2), 3, 1, &key),
            ((0, 4, 0, 4), 4, 1, &key),
            ((0, 4, 0, 4), 3, 2 * n, &key),
            ((0, 4, 0, 4), 3, 1, &small),
        ] {
            let [d0, d1] = &mut dst[..] else { unreachable!("two outputs") };
            assert!(ring.pack_step_hybrid([&src[0], &src[1]], [d0, d1], range, g, [k, k], shift).is_err());
        }
    }
}

/// [`Ring::expand_step`] against the same steps done one by one (gather, `decompose_mac`,
/// inverse transforms, sums, monomial product, copies): random source ciphertexts and keys,
/// chunks at several offsets of a larger batch, shifts below and above `N`, digit widths below
/// and above the smallest prime; and [`Ring::expand_step_hybrid`] the same way with
/// [`Ring::keyswitch_hybrid`] as its key switch. What `dst` holds outside the two written
/// ranges must stay.
pub fn expand_step_matches_its_steps<B: Backend>(b: &Arc<B>) {
    let mut rng = rng(12);
    for ((n, limbs), hybrid) in
        [(256usize, 3usize), (2048, 2), (64, 1)].into_iter().flat_map(|s| [(s, false), (s, true)])
    {
        // One more prime than the ciphertexts use: the special prime of the hybrid switch.
        let ring = ring(b, n, limbs + 1);
        let ctx = ring.context().clone();
        let total = 12;
        let shape = Shape::new(total, limbs);
        for (at, count, odd, g, w, shift) in [
            (0usize, 1usize, 1usize, 2 * n - 1, 16u32, 2 * n - 1),
            (2, 3, 6, 5, 31, 3),
            (1, 4, 7, 2 * n / 4 + 1, 7, n + 2),
        ] {
            let key_shape = if hybrid {
                Shape::new(limbs + 1, limbs + 1)
            } else {
                Shape::new(limbs * ring.digits(limbs, w), limbs)
            };
            let src: Vec<Polys<B, Coeff>> =
                (0..2).map(|_| upload(&ring, &random_words(&mut rng, &ctx, shape), shape)).collect();
            let keys: Vec<Polys<B, Ntt>> =
                (0..2).map(|_| upload(&ring, &random_words(&mut rng, &ctx, key_shape), key_shape)).collect();
            let start = random_words(&mut rng, &ctx, shape);
            // The steps.
            let part = Shape::new(count, limbs);
            let c: Vec<Polys<B, Coeff>> = src
                .iter()
                .map(|p| {
                    let mut c = ring.zeros(part).unwrap();
                    ring.copy_polys(p, at, &mut c, 0, count).unwrap();
                    c
                })
                .collect();
            let mut t: Vec<Polys<B, Coeff>> = c.iter().map(|x| ring.automorphism(x, g).unwrap()).collect();
            let [kb, ka] = if hybrid {
                ring.keyswitch_hybrid(&t[1], [&keys[0], &keys[1]]).unwrap()
            } else {
                let (mut kb, mut ka): (Polys<B, Ntt>, Polys<B, Ntt>) =
                    (ring.zeros(part).unwrap(), ring.zeros(part).unwrap());
                ring.decompose_mac(&t[1], w, [&keys[0], &keys[1]], [&mut kb, &mut ka], false).unwrap();
                [ring.inverse(kb).unwrap(), ring.inverse(ka).unwrap()]
            };
            ring.add_assign(&mut t[0], &kb).unwrap();
            t[1] = ka;
            let mut want: Vec<Polys<B, Coeff>> = (0..2).map(|_| upload(&ring, &start, shape)).collect();
            // The NTT-domain step's: the children transformed, the rest as it was.
            let mut want_ntt: Vec<Polys<B, Ntt>> = (0..2).map(|_| upload(&ring, &start, shape)).collect();
            for k in 0..2 {
                let mut even = ring.duplicate(&c[k]).unwrap();
                ring.add_assign(&mut even, &t[k]).unwrap();
                let mut diff = ring.duplicate(&c[k]).unwrap();
                ring.sub_assign(&mut diff, &t[k]).unwrap();
                ring.monomial_mul_assign(&mut diff, shift).unwrap();
                ring.copy_polys(&even, 0, &mut want[k], at, count).unwrap();
                ring.copy_polys(&diff, 0, &mut want[k], at + odd, count).unwrap();
                let (even, diff) = (ring.forward(even).unwrap(), ring.forward(diff).unwrap());
                ring.copy_polys(&even, 0, &mut want_ntt[k], at, count).unwrap();
                ring.copy_polys(&diff, 0, &mut want_ntt[k], at + odd, count).unwrap();
            }
            // The fused step.
            let mut got: Vec<Polys<B, Coeff>> = (0..2).map(|_| upload(&ring, &start, shape)).collect();
            let [g0, g1] = &mut got[..] else { unreachable!("two outputs") };
            let (src, keys) = ([&src[0], &src[1]], [&keys[0], &keys[1]]);
            if hybrid {
                ring.expand_step_hybrid(src, [g0, g1], (at, count, odd), g, keys, shift).unwrap();
            } else {
                ring.expand_step(src, [g0, g1], (at, count, odd), g, w, keys, shift).unwrap();
            }
            for (x, y) in got.iter().zip(&want) {
                assert_eq!(
                    ring.download(x).unwrap(),
                    ring.download(y).unwrap(),
                    "n={n} limbs={limbs} hybrid={hybrid} at={at} count={count} odd={odd} g={g} w={w} shift={shift}"
                );
            }
            if hybrid {
                // The same step on the sources' transforms, into NTT-form children.
                let src_ntt: Vec<Polys<B, Ntt>> =
                    src.iter().map(|p| ring.forward(ring.duplicate(p).unwrap()).unwrap()).collect();
                let mut got: Vec<Polys<B, Ntt>> = (0..2).map(|_| upload(&ring, &start, shape)).collect();
                let [g0, g1] = &mut got[..] else { unreachable!("two outputs") };
                ring.expand_step_hybrid_ntt(
                    [&src_ntt[0], &src_ntt[1]],
                    [g0, g1],
                    (at, count, odd),
                    g,
                    keys,
                    shift,
                )
                .unwrap();
                for (x, y) in got.iter().zip(&want_ntt) {
                    assert_eq!(
                        ring.download(x).unwrap(),
                        ring.download(y).unwrap(),
                        "NTT step: n={n} limbs={limbs} at={at} count={count} odd={odd} g={g} shift={shift}"
                    );
                }
            }
        }
        // Overlapping children, an even exponent and an out-of-range shift are refused.
        let src: Vec<Polys<B, Coeff>> = (0..2).map(|_| ring.zeros(shape).unwrap()).collect();
        let gad = limbs * ring.digits(limbs, 16);
        let key: Polys<B, Ntt> = ring.zeros(Shape::new(gad, limbs)).unwrap();
        let mut dst: Vec<Polys<B, Coeff>> = (0..2).map(|_| ring.zeros(shape).unwrap()).collect();
        for (range, g, shift) in
            [((0, 4, 3), 3, 1), ((0, 2, 2), 4, 1), ((0, 2, 2), 3, 2 * n), ((8, 4, 4), 3, 1)]
        {
            let [d0, d1] = &mut dst[..] else { unreachable!("two outputs") };
            assert!(
                ring.expand_step([&src[0], &src[1]], [d0, d1], range, g, 16, [&key, &key], shift).is_err()
            );
        }
    }
}

/// [`Ring::keyswitch_hybrid`] against its definition from the other operations: the
/// polynomials lifted to `q P` on the host (a zero `P` residue), [`Ring::decompose_mac`] with
/// one 31-bit digit per limb, the inverse transform and [`Ring::mod_switch_down`] to `q`; for
/// batches of 1 to 9 polynomials, special primes below and above the chain's (the digits of a
/// 31-bit residue then need reducing), a special prime inside a longer ring (the switch of a
/// shared `c1` over the response limbs), and the shapes it must refuse.
pub fn hybrid_keyswitch_matches_its_steps<B: Backend>(b: &Arc<B>) {
    let mut rng = rng(19);
    for (n, limbs, ring_limbs) in
        [(256usize, 2usize, 3usize), (2048, 1, 2), (64, 3, 4), (4096, 2, 3), (256, 2, 5)]
    {
        let ring = ring(b, n, ring_limbs);
        let ctx = ring.context().clone();
        let wide = limbs + 1;
        let key_shape = Shape::new(wide, wide);
        for polys in [1usize, 4, 9] {
            let shape = Shape::new(polys, limbs);
            let words = random_words(&mut rng, &ctx, shape);
            let a: Polys<B, Coeff> = upload(&ring, &words, shape);
            let keys: Vec<Polys<B, Ntt>> =
                (0..2).map(|_| upload(&ring, &random_words(&mut rng, &ctx, key_shape), key_shape)).collect();
            let lifted: Vec<u32> = words
                .chunks_exact(limbs * n)
                .flat_map(|p| p.iter().copied().chain(std::iter::repeat_n(0, n)))
                .collect();
            let lifted: Polys<B, Coeff> = upload(&ring, &lifted, Shape::new(polys, wide));
            let wide_shape = Shape::new(polys, wide);
            let (mut kb, mut ka): (Polys<B, Ntt>, Polys<B, Ntt>) =
                (ring.zeros(wide_shape).unwrap(), ring.zeros(wide_shape).unwrap());
            ring.decompose_mac(
                &lifted,
                crate::HYBRID_DIGIT_BITS,
                [&keys[0], &keys[1]],
                [&mut kb, &mut ka],
                false,
            )
            .unwrap();
            let want: Vec<Vec<u32>> = [kb, ka]
                .into_iter()
                .map(|k| {
                    ring.download(&ring.mod_switch_down(&ring.inverse(k).unwrap(), limbs).unwrap()).unwrap()
                })
                .collect();
            let got = ring.keyswitch_hybrid(&a, [&keys[0], &keys[1]]).unwrap();
            for (x, y) in got.iter().zip(&want) {
                assert_eq!(&ring.download(x).unwrap(), y, "n={n} limbs={limbs} polys={polys}");
            }
            // In the NTT domain, with the twin: the transforms of the same products.
            let twin = ring.forward(ring.duplicate(&a).unwrap()).unwrap();
            let got = ring.keyswitch_hybrid_ntt(&a, &twin, [&keys[0], &keys[1]]).unwrap();
            for (x, y) in got.iter().zip(&want) {
                let y = ring.download(&ring.forward(upload::<B, Coeff>(&ring, y, shape)).unwrap()).unwrap();
                assert_eq!(ring.download(x).unwrap(), y, "NTT: n={n} limbs={limbs} polys={polys}");
            }
        }
        // Keys of the wrong shape, and polynomials with no limb left for the special prime.
        let a: Polys<B, Coeff> = ring.zeros(Shape::new(1, limbs)).unwrap();
        let short: Polys<B, Ntt> = ring.zeros(Shape::new(limbs, wide)).unwrap();
        assert!(ring.keyswitch_hybrid(&a, [&short, &short]).is_err());
        let full: Polys<B, Coeff> = ring.zeros(Shape::new(1, ring_limbs)).unwrap();
        let key: Polys<B, Ntt> = ring.zeros(key_shape).unwrap();
        assert!(ring.keyswitch_hybrid(&full, [&key, &key]).is_err());
        let twin: Polys<B, Ntt> = ring.zeros(Shape::new(2, limbs)).unwrap();
        assert!(ring.keyswitch_hybrid_ntt(&a, &twin, [&key, &key]).is_err(), "a twin of another shape");
    }
}

/// The seeded expansion ([`Backend::expand_seeds`]) gives the words of the host definition
/// ([`crate::host::expand_uniform`]: ChaCha20, rejection per prime, limb after limb) for every
/// seed, for one and several polynomials per seed, all limbs or a prefix, and degrees where a
/// limb ends inside a block of the stream; and the definition itself is the masked-rejection
/// stream of `ChaCha20Rng` (checked here against its first words).
pub fn expand_seeds_match_the_stream<B: Backend>(b: &Arc<B>) {
    use rand_chacha::rand_core::{RngCore, SeedableRng};
    let mut rng = rng(12);
    for (n, limbs) in [(64usize, 3usize), (1024, 4), (4096, 2)] {
        let ring = ring(b, n, limbs);
        let ctx = ring.context().clone();
        for (seeds, polys, used) in [(1usize, 1usize, limbs), (5, 1, limbs), (3, 3, 1), (2, 2, limbs - 1)] {
            let s: Vec<[u8; 32]> = (0..seeds).map(|_| rng.random()).collect();
            let got = ring.download(&ring.expand_seeds::<Ntt>(&s, polys, used).unwrap()).unwrap();
            let want: Vec<u32> =
                s.iter().flat_map(|seed| crate::host::expand_uniform(&ctx, used, polys, seed)).collect();
            assert_eq!(got.len(), want.len());
            assert!(got == want, "N={n} seeds={seeds} polys={polys} limbs={used}");
        }
        // The definition, on every word of two polynomials of all limbs: one stream, row after
        // row (a row may end inside the stream's blocks), each word masked to its row's
        // prime and kept if below it.
        let seed: [u8; 32] = rng.random();
        let w = crate::host::expand_uniform(&ctx, limbs, 2, &seed);
        let mut s = rand_chacha::ChaCha20Rng::from_seed(seed);
        let mut want = Vec::with_capacity(w.len());
        for row in 0..2 * limbs {
            let p = ctx.moduli()[row % limbs].value();
            let mask = u32::MAX >> p.leading_zeros();
            want.extend(std::iter::from_fn(|| Some(s.next_u32() & mask)).filter(|&x| x < p).take(n));
        }
        assert!(w == want, "N={n} limbs={limbs}: the expansion is not the stream's");
        // Into place: two groups of three seeds, five polynomials apart from polynomial 2, into
        // polynomials of random words; each seed's expansion where the layout puts it, every
        // other word as it was.
        let (first, group, stride) = (2usize, 3usize, 5usize);
        let s: Vec<[u8; 32]> = (0..2 * group).map(|_| rng.random()).collect();
        let shape = Shape::new(first + stride + group, limbs);
        let before = random_words(&mut rng, &ctx, shape);
        let mut out: Polys<B, Ntt> = upload(&ring, &before, shape);
        ring.expand_seeds_into(&s, &mut out, (first, group, stride)).unwrap();
        let got = ring.download(&out).unwrap();
        let poly = limbs * n;
        let mut want = before.clone();
        for (i, seed) in s.iter().enumerate() {
            let at = (first + i / group * stride + i % group) * poly;
            want[at..at + poly].copy_from_slice(&crate::host::expand_uniform(&ctx, limbs, 1, seed));
        }
        assert!(got == want, "N={n} limbs={limbs}: expand_seeds_into");
        // Layouts that leave the buffer, overlap or do not divide are errors.
        for layout in
            [(first, group, stride + 1), (first, group, group - 1), (first, 4, stride), (first, 0, stride)]
        {
            assert!(ring.expand_seeds_into(&s, &mut out, layout).is_err(), "{layout:?}");
        }
    }
    assert!(ring(b, 64, 2).expand_seeds::<Ntt>(&[[0u8; 32]], 1, 3).is_err());
}

/// [`Ring::zero_noise`] equals [`host::zero_noise_into`](crate::host::zero_noise_into) for
/// several seeds and limb counts, and the definition holds: coefficient `j` from words `8j..8j+8`
/// of the seed's stream (ternary from the first four, the errors from the next two pairs), all
/// values in range, every limb the same small integer.
pub fn zero_noise_matches_the_spec<B: Backend>(b: &Arc<B>) {
    use rand_chacha::rand_core::{RngCore, SeedableRng};
    let mut rng = rng(13);
    for (n, limbs) in [(64usize, 3usize), (1024, 4), (4096, 2)] {
        let ring = ring(b, n, limbs);
        let ctx = ring.context().clone();
        for (seeds, used) in [(1usize, limbs), (5, limbs), (3, 1)] {
            let s: Vec<[u8; 32]> = (0..seeds).map(|_| rng.random()).collect();
            let got = ring.zero_noise(&s, used, 21).unwrap().map(|p| ring.download(&p).unwrap());
            let per = used * n;
            let mut want = [vec![0u32; seeds * per], vec![0u32; seeds * per], vec![0u32; seeds * per]];
            for (k, seed) in s.iter().enumerate() {
                let [u, e0, e1] = &mut want;
                let r = k * per..(k + 1) * per;
                crate::host::zero_noise_into(
                    &ctx,
                    used,
                    seed,
                    21,
                    &mut u[r.clone()],
                    Some(&mut e0[r.clone()]),
                    &mut e1[r],
                );
            }
            assert!(got == want, "N={n} seeds={seeds} limbs={used}");
            // Without e0: the same u and e1.
            let [u, e1] = ring.zero_noise_c1(&s, used, 21).unwrap().map(|p| ring.download(&p).unwrap());
            assert!(u == want[0] && e1 == want[2], "zero_noise_c1: N={n} seeds={seeds} limbs={used}");
        }
        // The definition, on every coefficient of one seed (across the host's 64-coefficient
        // chunks of the stream).
        let seed: [u8; 32] = rng.random();
        let [u, e0, e1] = ring.zero_noise(&[seed], limbs, 21).unwrap().map(|p| ring.download(&p).unwrap());
        let mut st = rand_chacha::ChaCha20Rng::from_seed(seed);
        let signed = |m: fastquery_math::Modulus, w: u32| {
            if w > m.value() / 2 { i64::from(w) - i64::from(m.value()) } else { i64::from(w) }
        };
        let m = ctx.moduli()[0];
        for j in 0..n {
            let w: Vec<u64> = (0..8).map(|_| u64::from(st.next_u32())).collect();
            // The 128-bit integer of words 0-3 (word 0 lowest), reduced as such.
            let x =
                (u128::from(w[3]) << 96 | u128::from(w[2]) << 64 | u128::from(w[1]) << 32 | u128::from(w[0]))
                    % 3;
            assert_eq!(signed(m, u[j]), x as i64 - 1, "u[{j}]");
            let cbd = |y: u64| {
                i64::from((y & 0x1f_ffff).count_ones()) - i64::from((y >> 21 & 0x1f_ffff).count_ones())
            };
            assert_eq!(signed(m, e0[j]), cbd(w[4] | w[5] << 32), "e0[{j}]");
            assert_eq!(signed(m, e1[j]), cbd(w[6] | w[7] << 32), "e1[{j}]");
            for (l, ml) in ctx.moduli().iter().enumerate() {
                assert_eq!(signed(*ml, u[l * n + j]), signed(m, u[j]));
                assert_eq!(signed(*ml, e0[l * n + j]), signed(m, e0[j]));
            }
        }
    }
    let r = ring(b, 64, 2);
    assert!(r.zero_noise(&[[0u8; 32]], 3, 21).is_err(), "more limbs than the ring");
    assert!(r.zero_noise(&[[0u8; 32]], 2, 33).is_err(), "eta above 32");
    assert!(r.zero_noise_c1(&[[0u8; 32]], 3, 21).is_err(), "more limbs than the ring");
    assert!(r.zero_noise_c1(&[[0u8; 32]], 2, 0).is_err(), "eta 0");
}

/// [`Ring::flood_mask_add`] adds exactly [`host::flood_mask_add`]'s words at the kept
/// coefficients of every ciphertext (of any count, none included) and nothing elsewhere, for a
/// flooding that often needs its retry stream, one of 100 bits and one of 127; repeated or
/// out-of-range positions and mismatched counts are refused and change nothing.
pub fn flood_mask_matches_the_host<B: Backend>(b: &Arc<B>) {
    let mut rng = rng(21);
    let n = 256;
    let ring = ring(b, n, 3);
    let ctx = ring.context().clone();
    let cts = 5;
    let shape = Shape::new(cts, 2);
    let base = random_words(&mut rng, &ctx, shape);
    let seeds: Vec<[u8; 32]> = (0..cts).map(|_| rng.random()).collect();
    let positions: Vec<Vec<usize>> = (0..cts)
        .map(|ct| match ct {
            1 => Vec::new(),
            3 => (0..n).rev().collect(),
            _ => (0..n).filter(|_| rng.random_bool(0.3)).collect(),
        })
        .collect();
    let flat: Vec<u32> = positions.iter().flatten().map(|&j| j as u32).collect();
    let starts: Vec<u32> = std::iter::once(0)
        .chain(positions.iter().scan(0u32, |at, p| {
            *at += p.len() as u32;
            Some(*at)
        }))
        .collect();
    for (bound, bits) in [(1u128 << 40, 37), ((1u128 << 100) + 7, 64), ((1u128 << 126) + 5, 20), (0, 1)] {
        let floor_res: Vec<u32> = ctx.moduli().iter().map(|m| rng.random_range(0..m.value())).collect();
        let q_mod_t = rng.random::<u64>() >> (64 - bits);
        let spec = host::Flooding::new(bound, bits, floor_res, q_mod_t).unwrap();
        let mut a: Polys<B, Coeff> = upload(&ring, &base, shape);
        ring.flood_mask_add(&mut a, &spec, &seeds, &positions).unwrap();
        let mut want = base.clone();
        host::flood_mask_add(&ctx.moduli()[..2], n, &spec, &seeds, &flat, &starts, &mut want);
        assert_eq!(ring.download(&a).unwrap(), want, "bound {bound}, t = 2^{bits}");
        let changed = base.iter().zip(&want).filter(|(x, y)| x != y).count();
        assert!(
            bound == 0 || changed > flat.len(),
            "{changed} words changed for {} kept coefficients",
            flat.len()
        );
        let mut bad = positions.clone();
        let first = bad[2][0];
        bad[2].push(first);
        assert!(ring.flood_mask_add(&mut a, &spec, &seeds, &bad).is_err(), "a repeated position");
        bad[2].pop();
        bad[4].push(n);
        assert!(ring.flood_mask_add(&mut a, &spec, &seeds, &bad).is_err(), "a position out of range");
        assert!(
            ring.flood_mask_add(&mut a, &spec, &seeds[1..], &positions[1..]).is_err(),
            "seeds and ciphertexts"
        );
        assert!(ring.flood_mask_add(&mut a, &spec, &seeds, &positions[1..]).is_err(), "seeds and positions");
        assert_eq!(ring.download(&a).unwrap(), want, "refused calls change nothing");
    }
}

/// [`Ring::gather_words`] reads the words at its indices, in any order and with repeats;
/// an index out of range is refused.
pub fn gather_words_read_the_words<B: Backend>(b: &Arc<B>) {
    let mut rng = rng(14);
    let ring = ring(b, 256, 3);
    let ctx = ring.context().clone();
    let shape = Shape::new(4, 3);
    let words = shape.words(256);
    let want = random_words(&mut rng, &ctx, shape);
    let a: Polys<B, Coeff> = upload(&ring, &want, shape);
    let idx: Vec<u32> =
        (0..words as u32).filter(|_| rng.random_bool(0.05)).chain([words as u32 - 1]).collect();
    // Gathering words back, in any order and with repeats, reads what is there.
    let mut asked: Vec<u32> = (0..64).map(|_| rng.random_range(0..words as u32)).collect();
    asked.extend_from_slice(&idx);
    asked.push(asked[0]);
    let got = ring.gather_words(&a, &asked).unwrap();
    assert!(asked.iter().zip(&got).all(|(&i, &w)| want[i as usize] == w), "gathered words");
    assert!(ring.gather_words(&a, &[]).unwrap().is_empty());
    assert!(ring.gather_words(&a, &[words as u32]).is_err(), "gather out of range");
}

/// [`Ring::truncate`] keeps the first polynomials, [`Ring::difference`] of two ranges of one
/// batch (apart, overlapping, equal) equals the subtraction of their copies, and
/// [`Ring::inverse_of`] equals the inverse of a duplicate and leaves its source as it was; at
/// sizes a host backend takes its parallel paths for, and the malformed calls are errors.
pub fn ranges_match_their_copies<B: Backend>(b: &Arc<B>) {
    let mut rng = rng(18);
    for (n, limbs, polys) in [(32, 2, 7), (4096, 3, 9), (16384, 4, 80)] {
        let ring = ring(b, n, limbs);
        let ctx = ring.context().clone();
        let shape = Shape::new(polys, limbs);
        let w = random_words(&mut rng, &ctx, shape);
        let poly = limbs * n;
        let p: Polys<B, Ntt> = upload(&ring, &w, shape);
        for (minuend, subtrahend, count) in
            [(polys / 2, 0, polys / 2), (1, 0, polys - 1), (0, polys - 2, 2), (3, 3, 2), (polys, 0, 0)]
        {
            let got = ring.download(&ring.difference(&p, minuend, subtrahend, count).unwrap()).unwrap();
            let want: Vec<u32> = (0..count * poly)
                .map(|j| {
                    let m = ctx.moduli()[(j / n) % limbs];
                    m.sub(w[minuend * poly + j], w[subtrahend * poly + j])
                })
                .collect();
            assert_eq!(got, want, "difference n={n} {minuend} - {subtrahend} x {count}");
        }
        assert!(ring.difference(&p, polys - 1, 0, 2).is_err(), "a range past the end");
        assert!(ring.difference(&p, 0, usize::MAX, 2).is_err(), "an overflowing range");
        let coeff = ring.inverse_of(&p).unwrap();
        let want = ring.download(&ring.inverse(ring.duplicate(&p).unwrap()).unwrap()).unwrap();
        assert_eq!(ring.download(&coeff).unwrap(), want, "inverse of a copy n={n}");
        assert_eq!(ring.download(&p).unwrap(), w, "the source of an inverse copy changed");
        for keep in [polys, polys / 8, 1, 0] {
            let kept = ring.truncate(ring.duplicate(&p).unwrap(), keep).unwrap();
            assert_eq!(ring.download(&kept).unwrap(), w[..keep * poly], "truncate to {keep} n={n}");
        }
        assert!(ring.truncate(ring.duplicate(&p).unwrap(), polys + 1).is_err(), "truncating to more");
    }
}

/// [`Ring::decompose_mac`] and [`Ring::decompose_mac_twin`] with keys of several sets side by
/// side ([`Backend::decompose_mac_sets`]: polynomial `r` meets set `r % sets`) equal the same
/// products made one set at a time with one set's keys, the polynomials moved on the host (so
/// the oracle depends on no new operation): at the degrees of the CUDA backend's three-pass
/// kernels and a small one, digit widths with one and several digits per limb, both modes,
/// batches of one to several polynomials per set. Keys whose sets do not divide the batch, and
/// keys that are no whole number of sets, are refused.
pub fn key_sets_match_one_set_at_a_time<B: Backend>(b: &Arc<B>) {
    let mut rng = rng(19);
    for (n, limbs) in [(64usize, 3usize), (4096, 2), (8192, 1)] {
        let ring = ring(b, n, limbs);
        let ctx = ring.context().clone();
        let poly = limbs * n;
        for (sets, per, w) in [(3usize, 2usize, 31u32), (2, 1, 12), (4, 3, 31), (1, 2, 16)] {
            let g = limbs * ring.digits(limbs, w);
            let (polys, key_shape) = (sets * per, Shape::new(sets * g, limbs));
            let shape = Shape::new(polys, limbs);
            let a_words = random_words(&mut rng, &ctx, shape);
            let a: Polys<B, Coeff> = upload(&ring, &a_words, shape);
            let twin = ring.forward(ring.duplicate(&a).unwrap()).unwrap();
            let twin_words = ring.download(&twin).unwrap();
            let key_words: Vec<Vec<u32>> = (0..2).map(|_| random_words(&mut rng, &ctx, key_shape)).collect();
            let keys: Vec<Polys<B, Ntt>> = key_words.iter().map(|k| upload(&ring, k, key_shape)).collect();
            let start = random_words(&mut rng, &ctx, shape);
            // Polynomials r = set + sets i of a batch, as one set's own batch.
            let pick = |words: &[u32], set: usize, width: usize| -> Vec<u32> {
                (0..width).flat_map(|i| words[(set + sets * i) * poly..][..poly].to_vec()).collect()
            };
            for accumulate in [false, true] {
                for with_twin in [false, true] {
                    if with_twin && g != limbs {
                        continue;
                    }
                    let mut got: Vec<Polys<B, Ntt>> = (0..2).map(|_| upload(&ring, &start, shape)).collect();
                    let [g0, g1] = &mut got[..] else { unreachable!("two outputs") };
                    let ks = [&keys[0], &keys[1]];
                    if with_twin {
                        ring.decompose_mac_twin(&a, &twin, w, ks, [g0, g1], accumulate).unwrap();
                    } else {
                        ring.decompose_mac(&a, w, ks, [g0, g1], accumulate).unwrap();
                    }
                    let got: Vec<Vec<u32>> = got.iter().map(|x| ring.download(x).unwrap()).collect();
                    let one = Shape::new(per, limbs);
                    for set in 0..sets {
                        let part: Polys<B, Coeff> = upload(&ring, &pick(&a_words, set, per), one);
                        let set_keys: Vec<Polys<B, Ntt>> = key_words
                            .iter()
                            .map(|k| upload(&ring, &k[set * g * poly..][..g * poly], Shape::new(g, limbs)))
                            .collect();
                        let mut want: Vec<Polys<B, Ntt>> =
                            (0..2).map(|_| upload(&ring, &pick(&start, set, per), one)).collect();
                        let [w0, w1] = &mut want[..] else { unreachable!("two outputs") };
                        let ks = [&set_keys[0], &set_keys[1]];
                        if with_twin {
                            let t: Polys<B, Ntt> = upload(&ring, &pick(&twin_words, set, per), one);
                            ring.decompose_mac_twin(&part, &t, w, ks, [w0, w1], accumulate).unwrap();
                        } else {
                            ring.decompose_mac(&part, w, ks, [w0, w1], accumulate).unwrap();
                        }
                        for (k, y) in want.iter().enumerate() {
                            assert_eq!(
                                pick(&got[k], set, per),
                                ring.download(y).unwrap(),
                                "n={n} limbs={limbs} sets={sets} per={per} w={w} accumulate={accumulate} \
                                 twin={with_twin} set={set} half={k}"
                            );
                        }
                    }
                }
            }
        }
        // Three sets for a batch of four, and keys of a set and a half, are refused.
        let g = limbs * ring.digits(limbs, 31);
        let make = |rng: &mut StdRng, shape: Shape| -> Polys<B, Ntt> {
            upload(&ring, &random_words(rng, &ctx, shape), shape)
        };
        let a: Polys<B, Coeff> =
            upload(&ring, &random_words(&mut rng, &ctx, Shape::new(4, limbs)), Shape::new(4, limbs));
        let mut outs = [ring.zeros(Shape::new(4, limbs)).unwrap(), ring.zeros(Shape::new(4, limbs)).unwrap()];
        // (With one polynomial per set every count is whole sets.)
        for key_polys in [3 * g, g + 1].into_iter().filter(|&k| k == 3 * g || g > 1) {
            let k =
                [make(&mut rng, Shape::new(key_polys, limbs)), make(&mut rng, Shape::new(key_polys, limbs))];
            let [o0, o1] = &mut outs;
            assert!(
                ring.decompose_mac(&a, 31, [&k[0], &k[1]], [o0, o1], false).is_err(),
                "{key_polys} key polys"
            );
        }
    }
}

/// [`Ring::copy_polys_at`] moves each listed polynomial to its place and leaves the others of
/// the destination as they were, for runs of consecutive moves, a transposition and a reversal;
/// a destination written twice, an index out of range and another limb count are refused.
pub fn polys_move_where_they_are_sent<B: Backend>(b: &Arc<B>) {
    let mut rng = rng(20);
    for (n, limbs) in [(32usize, 2usize), (8192, 3)] {
        let ring = ring(b, n, limbs);
        let ctx = ring.context().clone();
        let poly = limbs * n;
        let (rows, cols) = (3usize, 5usize);
        let total = rows * cols;
        let src_words = random_words(&mut rng, &ctx, Shape::new(total, limbs));
        let dst_words = random_words(&mut rng, &ctx, Shape::new(total + 2, limbs));
        let src: Polys<B, Ntt> = upload(&ring, &src_words, Shape::new(total, limbs));
        let transpose: Vec<(usize, usize)> =
            (0..rows).flat_map(|r| (0..cols).map(move |c| (r * cols + c, c * rows + r))).collect();
        let runs: Vec<(usize, usize)> =
            (0..4).map(|i| (i + 2, i + 7)).chain([(0, 0), (14, 16), (13, 15)]).collect();
        let reversal: Vec<(usize, usize)> = (0..total).map(|i| (i, total + 1 - i)).collect();
        for moves in [transpose, runs, reversal, Vec::new()] {
            let mut dst: Polys<B, Ntt> = upload(&ring, &dst_words, Shape::new(total + 2, limbs));
            ring.copy_polys_at(&src, &mut dst, &moves).unwrap();
            let mut want = dst_words.clone();
            for &(from, to) in &moves {
                want[to * poly..][..poly].copy_from_slice(&src_words[from * poly..][..poly]);
            }
            assert_eq!(ring.download(&dst).unwrap(), want, "n={n} moves {moves:?}");
        }
        let mut dst: Polys<B, Ntt> = upload(&ring, &dst_words, Shape::new(total + 2, limbs));
        assert!(ring.copy_polys_at(&src, &mut dst, &[(0, 1), (2, 1)]).is_err(), "a destination twice");
        assert!(ring.copy_polys_at(&src, &mut dst, &[(total, 0)]).is_err(), "a source past the end");
        assert!(ring.copy_polys_at(&src, &mut dst, &[(0, total + 2)]).is_err(), "a destination past the end");
        let other: Polys<B, Ntt> = ring.zeros(Shape::new(total, limbs - 1)).unwrap();
        assert!(ring.copy_polys_at(&other, &mut dst, &[(0, 0)]).is_err(), "another limb count");
        assert_eq!(ring.download(&dst).unwrap(), dst_words, "a refused move wrote");
    }
}
