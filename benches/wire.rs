//! Wire format benchmarks on messages of real size: Cheetah's llama-7b query (180 seeded
//! ciphertexts of 4 limbs, 10 MB), decoded as a server does, and its response (179 ciphertexts,
//! `c1` whole as its design sends it, the kept `c0` coefficients), encoded; the same with `c1`
//! rounded to the width the noise analysis allows, from residues (the encoder rounds `c1`) and
//! from the values a server's finish rounded (written as they are); and the rounding and
//! lifting of those `c1` alone (the finish rounded, lifted and the
//! encoder rounded again until 2026-12-04). Random residues below each prime: the coders' work
//! does not depend on the values.
//!
//! Run: `cargo bench -p fastquery-benches --bench wire`.

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fastquery_he::{
    client::{ResponseC1, ResponseCiphertext, SeededCiphertext},
    rounding::response_rounding,
    share::Sharing,
};
use fastquery_protocol::{cheetah, messages};
use rand::{Rng, SeedableRng, rngs::StdRng};

fn wire(c: &mut Criterion) {
    let design = cheetah::design(32000, 4096, 16, 37).expect("the llama-7b design");
    let p = design.params.clone();
    let (n, limbs) = (p.n(), p.limbs());
    let moduli: Vec<u32> = p.ring().moduli().iter().map(|m| m.value()).collect();
    let mut rng = StdRng::seed_from_u64(1);
    let residues = |rows: usize, rng: &mut StdRng| -> Vec<u32> {
        (0..rows * n).map(|i| rng.random_range(0..moduli[i / n])).collect()
    };
    let query_cts = (design.predicted_bytes(1).query - fastquery_protocol::wire::HEADER_BYTES - 4)
        / messages::query_record_bytes(&p);
    let cts: Vec<SeededCiphertext> = (0..query_cts)
        .map(|_| SeededCiphertext { c0: residues(limbs, &mut rng), seed: rng.random() })
        .collect();
    let query = messages::encode_query(&p, 1, 1, &cts);
    assert_eq!(query.len(), design.predicted_bytes(1).query);
    let mut g = c.benchmark_group("wire");
    g.throughput(Throughput::Bytes(query.len() as u64));
    g.bench_function("query_decode/cheetah-llama-7b", |b| {
        b.iter(|| messages::decode_query(&p, 1, &query, &|_| query_cts, messages::Limits::default()).unwrap())
    });
    let kept = design.kept(1);
    let width = messages::c0_width(&p, design.noise.drop_bits);
    let responses: Vec<ResponseCiphertext> = kept
        .iter()
        .map(|&k| ResponseCiphertext {
            c1: ResponseC1::Residues(residues(p.response_limbs(), &mut rng)),
            c0: (0..k).map(|_| rng.random::<u128>() >> (128 - width)).collect(),
        })
        .collect();
    let bits = (design.noise.drop_bits, design.noise.c1_bits);
    let response = messages::encode_response(&p, 1, bits, &responses, Sharing::NONE).unwrap();
    assert_eq!(response.len(), design.predicted_bytes(1).response);
    g.throughput(Throughput::Bytes(response.len() as u64));
    g.bench_function("response_encode/cheetah-llama-7b", |b| {
        b.iter(|| messages::encode_response(&p, 1, bits, &responses, Sharing::NONE).unwrap())
    });
    // The same responses with c1 rounded to the width the noise analysis allows (cheetah's
    // design sends it whole; folded and other blocked designs round it).
    let bits = (bits.0, design.noise.clone().with_rounded_c1(&p, kept[0], Sharing::NONE).c1_bits);
    assert!(bits.1 > 0, "the noise analysis leaves room to round c1");
    let by_encoder = messages::encode_response(&p, 1, bits, &responses, Sharing::NONE).unwrap();
    g.throughput(Throughput::Bytes(by_encoder.len() as u64));
    g.bench_function("response_encode_round_c1/cheetah-llama-7b", |b| {
        b.iter(|| messages::encode_response(&p, 1, bits, &responses, Sharing::NONE).unwrap())
    });
    let (basis, rounding) = response_rounding(&p, bits.1).unwrap();
    let c1s: Vec<Vec<u32>> = responses.iter().map(|r| r.c1.residues(&p).unwrap().into_owned()).collect();
    let rounded: Vec<ResponseCiphertext> = responses
        .iter()
        .zip(&c1s)
        .map(|(r, c1)| ResponseCiphertext {
            c1: ResponseC1::Rounded { bits: bits.1, values: rounding.round_residues(&basis, c1) },
            c0: r.c0.clone(),
        })
        .collect();
    assert_eq!(messages::encode_response(&p, 1, bits, &rounded, Sharing::NONE).unwrap(), by_encoder);
    g.bench_function("response_encode_rounded/cheetah-llama-7b", |b| {
        b.iter(|| messages::encode_response(&p, 1, bits, &rounded, Sharing::NONE).unwrap())
    });
    // The c1 coefficients of the whole response, rounded, then lifted back.
    g.throughput(Throughput::Elements((c1s.len() * n) as u64));
    g.bench_function("c1_round/cheetah-llama-7b", |b| {
        b.iter(|| c1s.iter().map(|c1| rounding.round_residues(&basis, c1)).collect::<Vec<_>>())
    });
    let values: Vec<Vec<u64>> = c1s.iter().map(|c1| rounding.round_residues(&basis, c1)).collect();
    g.bench_function("c1_lift/cheetah-llama-7b", |b| {
        b.iter(|| values.iter().map(|h| rounding.lift_residues(&basis, h)).collect::<Vec<_>>())
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20);
    targets = wire
}
criterion_main!(benches);
