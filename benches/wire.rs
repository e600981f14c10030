//! Wire format benchmarks on messages of real size: Cheetah's llama-7b query (180 seeded
//! ciphertexts of 4 limbs, 10 MB), decoded as a server does, and its response (179 ciphertexts,
//! `c1` rounded as the noise analysis chose, the kept `c0` coefficients), encoded. Random residues
//! below each prime: the coders' work does not depend on the values.
//!
//! Run: `cargo bench -p fastquery-benches --bench wire`.

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fastquery_he::{
    client::{ResponseCiphertext, SeededCiphertext},
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
            c1: residues(p.response_limbs(), &mut rng),
            c0: (0..k).map(|_| rng.random::<u128>() >> (128 - width)).collect(),
        })
        .collect();
    let bits = (design.noise.drop_bits, design.noise.c1_bits);
    let response = messages::encode_response(&p, 1, bits, &responses, Sharing::NONE);
    assert_eq!(response.len(), design.predicted_bytes(1).response);
    g.throughput(Throughput::Bytes(response.len() as u64));
    g.bench_function("response_encode/cheetah-llama-7b", |b| {
        b.iter(|| messages::encode_response(&p, 1, bits, &responses, Sharing::NONE))
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
