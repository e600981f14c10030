//! What several of this crate's test files share.

use fastquery_table::IntTable;
use rand::{Rng, SeedableRng, rngs::StdRng};

/// A table of `m` rows of `d` signed entries of `bits` bits, uniform in the symmetric range,
/// drawn from `seed`.
pub fn random_table(m: usize, d: usize, bits: u32, seed: u64) -> IntTable {
    let mut rng = StdRng::seed_from_u64(seed);
    let lim = (1i32 << (bits - 1)) - 1;
    let values = (0..m * d).map(|_| rng.random_range(-lim..=lim)).collect();
    IntTable::new(m, d, values, bits, vec![1.0; d], vec![0; d]).unwrap()
}
