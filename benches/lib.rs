//! Shared setup of the kernel benchmarks: rings and random batches on a backend. The benchmark
//! targets live beside this file (`cpu.rs`; the GPU backends add theirs).
#![forbid(unsafe_code)]

use std::sync::Arc;

use fastquery_backend::{Backend, Ntt, Polys, Repr, Ring, RingContext, Shape};
use fastquery_math::primes::ntt_primes;
use rand::{Rng, SeedableRng, rngs::StdRng};

/// The degrees every kernel benchmark covers.
pub const DEGREES: [usize; 4] = [2048, 4096, 8192, 16384];

/// `limbs` 30-bit primes for degree `n` (the engine's default prime size).
pub fn primes(n: usize, limbs: usize) -> Vec<u32> {
    ntt_primes(30, n, limbs).expect("enough 30-bit primes")
}

/// A ring on `backend`.
pub fn ring<B: Backend>(backend: Arc<B>, n: usize, limbs: usize) -> Ring<B> {
    let ctx = RingContext::new(n, &primes(n, limbs)).expect("valid ring");
    Ring::new(backend, Arc::new(ctx)).expect("ring loads")
}

/// Uniformly random reduced words for `shape` (never zeros).
pub fn random_words(ctx: &RingContext, shape: Shape, seed: u64) -> Vec<u32> {
    let mut rng = StdRng::seed_from_u64(seed);
    let n = ctx.n();
    (0..shape.rows())
        .flat_map(|row| {
            let p = ctx.moduli()[row % shape.limbs].value();
            (0..n).map(|_| rng.random_range(1..p)).collect::<Vec<_>>()
        })
        .collect()
}

/// A random batch on the device.
pub fn random_polys<B: Backend, R: Repr>(ring: &Ring<B>, shape: Shape, seed: u64) -> Polys<B, R> {
    ring.upload(&random_words(ring.context(), shape, seed), shape).expect("upload")
}

/// Wall time of `iters` multiply-accumulates `out = a x b`, the device synchronised before
/// and after (for criterion's `iter_custom`).
pub fn time_macs<B: Backend>(
    ring: &Ring<B>,
    out: &mut Polys<B, fastquery_backend::Ntt>,
    a: &Polys<B, fastquery_backend::Ntt>,
    b: &Polys<B, fastquery_backend::Ntt>,
    dims: fastquery_backend::MacDims,
    iters: u64,
) -> std::time::Duration {
    ring.backend().synchronize().unwrap();
    let t = std::time::Instant::now();
    for _ in 0..iters {
        ring.mac(out, a, b, dims, false).unwrap();
    }
    ring.backend().synchronize().unwrap();
    t.elapsed()
}

/// A random NTT-form batch.
pub fn random_ntt<B: Backend>(ring: &Ring<B>, shape: Shape, seed: u64) -> Polys<B, Ntt> {
    random_polys(ring, shape, seed)
}

/// The device benchmarks shared by every GPU backend, as `<group>/<op>/<N>/<limbs>`: batched
/// NTTs (`ntt` lists `(N, polynomials)` per size; each runs at 1 and 4 limbs) and the
/// multiply-accumulate over `mac = (inner, cols)` table polynomials at N = 4096, 4 limbs. The
/// device is synchronised inside every timed region (`iter_custom`).
pub fn device_benches<B: Backend>(
    c: &mut criterion::Criterion,
    group: &str,
    backend: std::sync::Arc<B>,
    ntt: &[(usize, usize)],
    mac: (usize, usize),
) {
    use criterion::Throughput;
    use fastquery_backend::{Coeff, MacDims, Ntt};
    use std::time::{Duration, Instant};
    let mut g = c.benchmark_group(group);
    for &(n, polys) in ntt {
        for limbs in [1usize, 4] {
            let polys = polys / limbs;
            let ring = ring(backend.clone(), n, limbs);
            let shape = Shape::new(polys, limbs);
            g.throughput(Throughput::Elements(shape.rows() as u64));
            // Filled on the first iteration, outside the timed region: a filtered-out id (a
            // GPU run picks a few) costs no 2 GiB of random words.
            let mut slot: Option<Polys<B, Coeff>> = None;
            let mut ntt_slot: Option<Polys<B, Ntt>> = None;
            g.bench_function(format!("ntt_fwd/{n}/{limbs}"), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let p = slot.take().unwrap_or_else(|| random_polys(&ring, shape, 2));
                        // The previous iteration's untimed transform must finish first.
                        backend.synchronize().unwrap();
                        let t = Instant::now();
                        let f = ring.forward(p).unwrap();
                        backend.synchronize().unwrap();
                        total += t.elapsed();
                        slot = Some(ring.inverse(f).unwrap());
                    }
                    total
                })
            });
            g.bench_function(format!("ntt_inv/{n}/{limbs}"), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let p = ntt_slot.take().unwrap_or_else(|| random_ntt(&ring, shape, 3));
                        backend.synchronize().unwrap();
                        let t = Instant::now();
                        let i = ring.inverse(p).unwrap();
                        backend.synchronize().unwrap();
                        total += t.elapsed();
                        ntt_slot = Some(ring.forward(i).unwrap());
                    }
                    total
                })
            });
        }
    }
    // The multiply-accumulate for 1 and 8 tokens (2 and 16 rows) over `inner x cols` table
    // polynomials (Cheetah's llama-7b shape is 180 x 179).
    let (n, limbs) = (4096usize, 4usize);
    let ring = ring(backend.clone(), n, limbs);
    let (inner, cols) = mac;
    let b_table = random_ntt(&ring, Shape::new(inner * cols, limbs), 4);
    for rows in [2usize, 16] {
        let dims = MacDims { rows, inner, cols };
        let a = random_ntt(&ring, Shape::new(rows * inner, limbs), 5);
        let mut out: Polys<B, Ntt> = ring.zeros(Shape::new(rows * cols, limbs)).unwrap();
        g.throughput(Throughput::Bytes((inner * cols * limbs * n * 4) as u64));
        g.bench_function(format!("mac/{n}/{rows}x{inner}x{cols}/{limbs}"), |b| {
            b.iter_custom(|iters| time_macs(&ring, &mut out, &a, &b_table, dims, iters))
        });
    }
    g.finish();
}

/// The two key switches of the folded designs at N = 8192 and five 31-bit limbs, coefficient
/// form in and out, as `<group>/keyswitch_gadget/8192/5` (16-bit digits: `decompose_mac`, then
/// the two inverse transforms) and `<group>/keyswitch_hybrid/8192/5` (a 31-bit special prime:
/// `keyswitch_hybrid`), `polys` ciphertexts per iteration (throughput in ciphertexts), the
/// device synchronised inside the timed region.
pub fn keyswitch_benches<B: Backend>(
    c: &mut criterion::Criterion,
    group: &str,
    backend: Arc<B>,
    polys: usize,
) {
    use criterion::Throughput;
    use fastquery_backend::Coeff;
    let (n, limbs) = (8192usize, 5usize);
    let ctx =
        Arc::new(RingContext::new(n, &ntt_primes(31, n, limbs + 1).expect("31-bit primes")).expect("ring"));
    let ring = Ring::new(backend.clone(), ctx).expect("ring loads");
    let shape = Shape::new(polys, limbs);
    let a: Polys<B, Coeff> = random_polys(&ring, shape, 21);
    let gadget = Shape::new(limbs * ring.digits(limbs, 16), limbs);
    let hybrid = Shape::new(limbs + 1, limbs + 1);
    let (g0, g1): (Polys<B, Ntt>, Polys<B, Ntt>) =
        (random_ntt(&ring, gadget, 22), random_ntt(&ring, gadget, 23));
    let (h0, h1): (Polys<B, Ntt>, Polys<B, Ntt>) =
        (random_ntt(&ring, hybrid, 24), random_ntt(&ring, hybrid, 25));
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(polys as u64));
    g.bench_function(format!("keyswitch_gadget/{n}/{limbs}"), |b| {
        b.iter(|| {
            let (mut o0, mut o1) = (ring.zeros::<Ntt>(shape).unwrap(), ring.zeros::<Ntt>(shape).unwrap());
            ring.decompose_mac(&a, 16, [&g0, &g1], [&mut o0, &mut o1], false).unwrap();
            let out = (ring.inverse(o0).unwrap(), ring.inverse(o1).unwrap());
            backend.synchronize().unwrap();
            out
        })
    });
    g.bench_function(format!("keyswitch_hybrid/{n}/{limbs}"), |b| {
        b.iter(|| {
            let out = ring.keyswitch_hybrid(&a, [&h0, &h1]).unwrap();
            backend.synchronize().unwrap();
            out
        })
    });
    // The products left in the NTT domain, with the input's NTT form beside it (the RGSW
    // conversion's key switch).
    let twin = ring.forward(ring.duplicate(&a).unwrap()).unwrap();
    g.bench_function(format!("keyswitch_hybrid_ntt/{n}/{limbs}"), |b| {
        b.iter(|| {
            let out = ring.keyswitch_hybrid_ntt(&a, &twin, [&h0, &h1]).unwrap();
            backend.synchronize().unwrap();
            out
        })
    });
    g.finish();
}

/// The parameter shape of the folded design that runs at llama-7b: `limbs` 31-bit primes at
/// degree `n`, a 31-bit special prime (hybrid key switching), shares mod 2^37.
fn llama7b_fold_params(n: usize, limbs: usize) -> Arc<fastquery_he::Params> {
    fold_params(n, limbs, 2)
}

/// [`llama7b_fold_params`] with `response_limbs` limbs of the chain kept in a response.
fn fold_params(n: usize, limbs: usize, response_limbs: usize) -> Arc<fastquery_he::Params> {
    let spec = fastquery_he::ParamSpec {
        n,
        prime_bits: vec![31; limbs],
        response_limbs,
        plain_bits: 37,
        flood_bits: 40,
        special_bits: 31,
    };
    Arc::new(fastquery_he::Params::new(spec).expect("a valid parameter set"))
}

/// The oblivious expansion of one llama-7b request's query ciphertext (`<group>/expand_*/8192/5/1320`:
/// 2^11 slots of which 1,320 are used, eight tokens' one-hots of 125 and 40 gadget rows each, as
/// the design that runs lays them out; five 31-bit limbs and a 31-bit special prime), into
/// NTT-form slots as the fold server takes them: in
/// coefficient form then transformed (`expand_coeff`), and through
/// `galois::expand_positioned_ntt` (`expand_ntt`: in the NTT domain where the backend fuses
/// it, the same as `expand_coeff` elsewhere). A random ciphertext stands in for the query.
pub fn expand_benches<B: Backend>(c: &mut criterion::Criterion, group: &str, backend: Arc<B>) {
    use fastquery_he::{
        client::Client,
        galois::{Ciphertexts, SlotLayout, expand_positioned, expand_positioned_ntt, load_galois_key},
    };
    let (n, limbs, k, used) = (8192usize, 5usize, 11u32, 1320usize);
    let params = llama7b_fold_params(n, limbs);
    let ring = Ring::new(backend.clone(), params.ring().clone()).expect("ring loads");
    let client = Client::new(params.clone()).expect("client");
    let elements: Vec<usize> = (0..k).map(|j| n / (1 << j) + 1).collect();
    let keys: Vec<_> = client
        .galois_keys(&elements, 31)
        .expect("Galois keys")
        .iter()
        .map(|key| load_galois_key(&ring, &params, key, 31).expect("key loads"))
        .collect();
    let layout = SlotLayout::new(k, used).expect("layout");
    let shape = Shape::new(1, limbs);
    let query: Ciphertexts<B> =
        Ciphertexts { c0: random_polys(&ring, shape, 41), c1: random_polys(&ring, shape, 42) };
    let mut g = c.benchmark_group(group);
    g.sample_size(10);
    g.bench_function(format!("expand_coeff/{n}/{limbs}/{used}"), |b| {
        b.iter_batched(
            || query.duplicate(&ring).expect("copy"),
            |ct| {
                let out = expand_positioned(&ring, &params, ct, layout, &keys).expect("expansion");
                let out = out.forward(&ring).expect("transform");
                backend.synchronize().expect("synchronize");
                out
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.bench_function(format!("expand_ntt/{n}/{limbs}/{used}"), |b| {
        b.iter_batched(
            || query.duplicate(&ring).expect("copy"),
            |ct| {
                let out = expand_positioned_ntt(&ring, &params, ct, layout, &keys).expect("expansion");
                backend.synchronize().expect("synchronize");
                out
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
}

/// One token's fold at llama-7b's shape (`<group>/fold/8192/5/128`): 128 NTT-form ciphertexts
/// of five 31-bit limbs through seven CMux levels, with RGSWs of one 31-bit digit per limb made
/// by the conversion key of a hybrid parameter set (a 31-bit special prime), as the fold
/// server runs it. Random ciphertexts stand in for the expanded slots and the group products:
/// the time does not depend on what they encrypt.
pub fn fold_benches<B: Backend>(c: &mut criterion::Criterion, group: &str, backend: Arc<B>) {
    use fastquery_he::{
        client::Client,
        fold::{cmux_halves, rgsw_from_rows},
        galois::{Ciphertexts, load_galois_key},
    };
    let (n, limbs, cts, levels) = (8192usize, 5usize, 128usize, 7usize);
    let params = llama7b_fold_params(n, limbs);
    let ring = Ring::new(backend.clone(), params.ring().clone()).expect("ring loads");
    let client = Client::new(params.clone()).expect("client");
    let square = load_galois_key(&ring, &params, &client.square_key(31), 31).expect("key for s^2");
    let rows = Shape::new(levels * limbs, limbs);
    let rows = Ciphertexts { c0: random_polys(&ring, rows, 31), c1: random_polys(&ring, rows, 32) };
    let rgsw = rgsw_from_rows(&ring, &params, rows, &square, 31).expect("RGSW");
    let shape = Shape::new(cts, limbs);
    let input: Ciphertexts<B, Ntt> =
        Ciphertexts { c0: random_ntt(&ring, shape, 33), c1: random_ntt(&ring, shape, 34) };
    let mut g = c.benchmark_group(group);
    g.sample_size(10);
    g.bench_function(format!("fold/{n}/{limbs}/{cts}"), |b| {
        b.iter_batched(
            || input.duplicate(&ring).expect("copy"),
            |mut cur| {
                for bit in &rgsw {
                    cur = cmux_halves(&ring, cur, bit).expect("CMux level");
                }
                backend.synchronize().expect("synchronize");
                cur
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
}

/// The two per-ciphertext phases of cheetah's one-token request at llama-7b's shape (N = 4096,
/// the chain 30/30/27/22 switched to two limbs; split d0 = 23, d1 = 178): `<group>/encrypt_query/4096/4x180`
/// is the client's encryption of a one-token query (180 seeded ciphertexts, on the host
/// whatever the backend), `<group>/expand_queries/4096/4x180`
/// turns the query's 180 seeded ciphertexts into NTT-form rows, `<group>/finish/4096/4x179`
/// re-randomises, floods, masks, switches and keeps 23 coefficients of each of 179 outputs
/// (`finish_ntt`: the same from the NTT domain, as the unpacked designs finish).
/// Every blocked design (cheetah, iron, fastquery-lan) runs both per request; random outputs
/// stand in for the products (the time does not depend on what they encrypt).
pub fn blocked_benches<B: Backend>(c: &mut criterion::Criterion, group: &str, backend: Arc<B>) {
    use fastquery_he::{
        client::Client,
        galois::Ciphertexts,
        server::{Outputs, expand_queries, finish, finish_outputs, load_public_key},
    };
    use fastquery_protocol::harness::FIXED_POINT_BITS;
    let (m, d) = (32000usize, 4096usize);
    let design = fastquery_protocol::cheetah::design(m, d, FIXED_POINT_BITS, 37).expect("cheetah's design");
    let params = design.params.clone();
    let (n, limbs) = (params.n(), params.limbs());
    let ring = Ring::new(backend.clone(), params.ring().clone()).expect("ring loads");
    let client = Client::new(params.clone()).expect("client");
    let key = load_public_key(&ring, &params, &client.public_key()).expect("key loads");
    let (ib, ob) = (design.layout.in_blocks(), design.layout.out_blocks());
    let hot = ib / 2;
    let msgs: Vec<Vec<(usize, i64)>> =
        (0..ib).map(|i| if i == hot { vec![(7, 1)] } else { Vec::new() }).collect();
    let cts = client.encrypt_sparse(&msgs).expect("query");
    let kept = design.kept(1);
    let positions: Vec<Vec<usize>> =
        kept.iter().map(|&k| (0..k).map(|i| i * (n / k.max(1))).collect()).collect();
    let shape = Shape::new(ob, limbs);
    let (c0, c1): (Polys<B, fastquery_backend::Coeff>, Polys<B, fastquery_backend::Coeff>) =
        (random_polys(&ring, shape, 51), random_polys(&ring, shape, 52));
    let mut g = c.benchmark_group(group);
    g.sample_size(10);
    g.bench_function(format!("encrypt_query/{n}/{limbs}x{ib}"), |b| {
        b.iter(|| client.encrypt_sparse(&msgs).expect("query"))
    });
    g.bench_function(format!("expand_queries/{n}/{limbs}x{ib}"), |b| {
        b.iter(|| {
            let a = expand_queries(&ring, &params, &cts, ib).expect("expansion");
            backend.synchronize().expect("synchronize");
            a
        })
    });
    g.bench_function(format!("finish/{n}/{limbs}x{ob}"), |b| {
        b.iter_batched(
            || (ring.duplicate(&c0).expect("copy"), ring.duplicate(&c1).expect("copy")),
            |(c0, c1)| {
                finish(&ring, &params, &key, &design.noise, c0, c1, &positions, None, &mut rand::rng())
                    .expect("finish")
            },
            criterion::BatchSize::LargeInput,
        )
    });
    // The same outputs in the NTT domain, as an unpacked blocked server hands them over.
    let (n0, n1) = (random_ntt(&ring, shape, 53), random_ntt(&ring, shape, 54));
    g.bench_function(format!("finish_ntt/{n}/{limbs}x{ob}"), |b| {
        b.iter_batched(
            || Ciphertexts { c0: ring.duplicate(&n0).expect("copy"), c1: ring.duplicate(&n1).expect("copy") },
            |cts| {
                let outputs = Outputs::Ntt(cts);
                finish_outputs(
                    &ring,
                    &params,
                    &key,
                    &design.noise,
                    outputs,
                    &positions,
                    None,
                    &mut rand::rng(),
                )
                .expect("finish")
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
}

/// A folded response's finish at llama-7b's shape (`<group>/finish_fold/8192/5to<r>x<c>`): `c`
/// output ciphertexts of five 31-bit limbs re-randomised, their kept coefficients of `c0`
/// flooded, masked, switched to `r` limbs and rounded, their `c1` switched and rounded (47
/// bits of a 62-bit `q'` at two limbs, 48 of a 93-bit one at three). One ciphertext of 4,096
/// kept coefficients is a decode step's answer, where its words are all the host has to do;
/// 64 of 8,192 (two tokens each) a 128-token request's. Random outputs stand in for the
/// fold's.
pub fn finish_benches<B: Backend>(c: &mut criterion::Criterion, group: &str, backend: Arc<B>) {
    use fastquery_he::{
        client::Client,
        server::{finish, load_public_key},
    };
    let (n, limbs, kept) = (8192usize, 5usize, 4096usize);
    let mut g = c.benchmark_group(group);
    g.sample_size(20);
    for (response_limbs, c1_bits, cts, kept) in
        [(2usize, 47u32, 1usize, kept), (3, 48, 1, kept), (2, 49, 64, 2 * kept)]
    {
        let params = fold_params(n, limbs, response_limbs);
        let ring = Ring::new(backend.clone(), params.ring().clone()).expect("ring loads");
        let client = Client::new(params.clone()).expect("client");
        let key = load_public_key(&ring, &params, &client.public_key()).expect("key loads");
        // The finish reads only the flooding's width, the dropped bits and c1's width.
        let mut noise = fastquery_protocol::cheetah::design(
            32000,
            4096,
            fastquery_protocol::harness::FIXED_POINT_BITS,
            37,
        )
        .expect("cheetah's design")
        .noise;
        (noise.drop_bits, noise.c1_bits) = (22, c1_bits);
        let positions = vec![(0..kept).map(|i| i * (n / kept)).collect::<Vec<usize>>(); cts];
        let shape = Shape::new(cts, limbs);
        let (c0, c1): (Polys<B, fastquery_backend::Coeff>, Polys<B, fastquery_backend::Coeff>) =
            (random_polys(&ring, shape, 61), random_polys(&ring, shape, 62));
        g.bench_function(format!("finish_fold/{n}/{limbs}to{response_limbs}x{cts}"), |b| {
            b.iter_batched(
                || (ring.duplicate(&c0).expect("copy"), ring.duplicate(&c1).expect("copy")),
                |(c0, c1)| {
                    finish(&ring, &params, &key, &noise, c0, c1, &positions, None, &mut rand::rng())
                        .expect("finish")
                },
                criterion::BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}
