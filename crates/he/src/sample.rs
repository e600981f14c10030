//! Randomness. Everything secret or public-random comes from ChaCha20: seeds from the operating
//! system's CSPRNG (through `rand::rng()`), and seeded streams where both sides must agree
//! (the uniform polynomial `a` of a seeded ciphertext, which the server expands from 32 bytes).

use fastquery_backend::RingContext;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use zeroize::Zeroizing;

/// A 32-byte seed.
pub type Seed = [u8; 32];

/// `eta` of the centred binomial error distribution: `e = sum of 21 bits - sum of 21 bits`,
/// standard deviation `sqrt(21/2) = 3.24` (the standard's 3.2), bounded by 21, sampled in
/// constant time.
pub const CBD_ETA: u32 = 21;

/// A fresh seed from the OS-seeded CSPRNG.
pub fn fresh_seed() -> Seed {
    let mut s = [0u8; 32];
    rand::rng().fill_bytes(&mut s);
    s
}

/// A ChaCha20 stream from a seed.
pub fn stream(seed: &Seed) -> ChaCha20Rng {
    ChaCha20Rng::from_seed(*seed)
}

/// The uniform polynomials of a seed, in the NTT domain (uniform there as well): `polys`
/// polynomials of `limbs` limbs, layout `[poly][limb][coefficient]`. Each word comes from the
/// stream by rejection: the next `u32` masked to the prime's bit length, kept if below it.
/// This is the expansion every backend reproduces.
pub fn expand_uniform(ctx: &RingContext, limbs: usize, polys: usize, seed: &Seed) -> Vec<u32> {
    fastquery_backend::host::expand_uniform(ctx, limbs, polys, seed)
}

/// `count` centred-binomial errors in `[-21, 21]`: error `i` from the `i`-th `u64` of the
/// stream (`next_u64`), read a chunk at a time. Zeroized on drop (errors of keys and
/// ciphertexts give away the secret with the public parts).
pub fn cbd<R: RngCore>(rng: &mut R, count: usize) -> Zeroizing<Vec<i32>> {
    let low = (1u64 << CBD_ETA) - 1;
    const CHUNK: usize = 128;
    let mut bytes = Zeroizing::new([0u8; CHUNK * 8]);
    let mut e = Zeroizing::new(vec![0i32; count]);
    for out in e.chunks_mut(CHUNK) {
        let bytes = &mut bytes[..out.len() * 8];
        rng.fill_bytes(bytes);
        for (x, b) in out.iter_mut().zip(bytes.chunks_exact(8)) {
            let y = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
            *x = (y & low).count_ones() as i32 - ((y >> CBD_ETA) & low).count_ones() as i32;
        }
    }
    e
}

/// `count` uniform ternary values in `{-1, 0, 1}`.
pub fn ternary<R: RngCore>(rng: &mut R, count: usize) -> Vec<i8> {
    (0..count).map(|_| rng.random_range(-1i8..=1)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fastquery_math::primes::ntt_primes;

    #[test]
    fn expansion_is_deterministic_uniform_and_reduced() {
        let ctx = RingContext::new(1024, &ntt_primes(30, 1024, 2).unwrap()).unwrap();
        let s = fresh_seed();
        let a = expand_uniform(&ctx, 2, 3, &s);
        assert_eq!(a, expand_uniform(&ctx, 2, 3, &s));
        assert_ne!(a, expand_uniform(&ctx, 2, 3, &fresh_seed()));
        assert_eq!(a.len(), 3 * 2 * 1024);
        for (row, c) in a.chunks(1024).enumerate() {
            let p = ctx.moduli()[row % 2].value();
            assert!(c.iter().all(|&x| x < p));
            // Mean of a uniform variable on [0, p): p/2 within a few standard errors.
            let mean = c.iter().map(|&x| f64::from(x)).sum::<f64>() / 1024.0;
            let se = f64::from(p) / (12f64.sqrt() * 32.0);
            assert!((mean - f64::from(p) / 2.0).abs() < 6.0 * se, "row {row}: mean {mean}");
        }
    }

    #[test]
    fn cbd_has_the_stated_bound_and_variance() {
        let mut rng = stream(&[7; 32]);
        let e = cbd(&mut rng, 200_000);
        // Error i is the i-th u64 of the stream, whatever the chunking (a count that ends
        // inside a chunk, then the stream goes on where it stopped).
        let mut words = stream(&[7; 32]);
        let low = (1u64 << CBD_ETA) - 1;
        let one = |y: u64| (y & low).count_ones() as i32 - ((y >> CBD_ETA) & low).count_ones() as i32;
        assert!(e.iter().all(|&x| x == one(words.next_u64())));
        let mut rng = stream(&[9; 32]);
        let (a, b) = (cbd(&mut rng, 131), cbd(&mut rng, 5));
        let mut words = stream(&[9; 32]);
        assert!(a.iter().chain(b.iter()).all(|&x| x == one(words.next_u64())));
        assert!(e.iter().all(|x| x.abs() <= CBD_ETA as i32));
        let var = e.iter().map(|&x| f64::from(x * x)).sum::<f64>() / e.len() as f64;
        assert!((var - 10.5).abs() < 0.2, "variance {var}");
        let mean = e.iter().map(|&x| f64::from(x)).sum::<f64>() / e.len() as f64;
        assert!(mean.abs() < 0.05);
    }

    #[test]
    fn ternary_is_uniform() {
        let mut rng = stream(&[8; 32]);
        let t = ternary(&mut rng, 30_000);
        for v in [-1i8, 0, 1] {
            let c = t.iter().filter(|&&x| x == v).count();
            assert!((9_000..11_000).contains(&c), "{v}: {c}");
        }
    }
}
