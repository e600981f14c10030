use crate::PackError;

/// Cheetah's fully-connected layout applied to `M = E^T` (`d x m`, input `x = onehot(k)`).
///
/// * Split `(d0, d1)` with `d0 * d1 <= N`, minimising the ciphertext count
///   `ceil(m / d1) + ceil(d / d0)` (ties: the smaller `d0 * d1`, then the larger `d1`).
/// * Input block `i` holds `x[i d1 .. (i+1) d1]` in reversed-negated order:
///   `x_hat(X) = x_0 - sum_{c >= 1} x_c X^(N - c)`.
/// * Weight block `(i, j)` holds `W[r][c] = M[j d0 + r][i d1 + c] = E[i d1 + c][j d0 + r]` at
///   coefficient `r d1 + c` (row-major).
/// * Then coefficient `r d1` of `x_hat * W` is `sum_c W[r][c] x_c`: output channel `j d0 + r` of
///   output block `j` sits at coefficient `r * d1`. Every other coefficient mixes other rows'
///   entries and must never be sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CheetahLayout {
    /// Vocabulary size.
    pub m: usize,
    /// Channels.
    pub d: usize,
    /// Ring degree.
    pub n: usize,
    /// Output rows per block.
    pub d0: usize,
    /// Input entries per block.
    pub d1: usize,
}

impl CheetahLayout {
    /// The cost-model split.
    pub fn choose(m: usize, d: usize, n: usize) -> Result<Self, PackError> {
        if m == 0 || d == 0 || n == 0 {
            return Err(PackError::NoLayout { m, d, n });
        }
        let mut best: Option<(usize, usize, usize, usize)> = None; // (cost, d0*d1, d1, d0)
        for d1 in 1..=m.min(n) {
            let d0 = (n / d1).min(d);
            if d0 == 0 {
                continue;
            }
            let cost = m.div_ceil(d1) + d.div_ceil(d0);
            let key = (cost, d0 * d1, usize::MAX - d1, d0);
            if best.is_none_or(|b| key < (b.0, b.1, usize::MAX - b.2, b.3)) {
                best = Some((cost, d0 * d1, d1, d0));
            }
        }
        let (_, _, d1, d0) = best.ok_or(PackError::NoLayout { m, d, n })?;
        Ok(Self { m, d, n, d0, d1 })
    }

    /// Input ciphertexts per token: `ceil(m / d1)`.
    pub fn in_blocks(&self) -> usize {
        self.m.div_ceil(self.d1)
    }

    /// Output ciphertexts per token: `ceil(d / d0)`.
    pub fn out_blocks(&self) -> usize {
        self.d.div_ceil(self.d0)
    }

    /// The one-hot of token `k` as sparse messages, one per input block:
    /// `(coefficient, value)` pairs (one nonzero in one block, none elsewhere).
    pub fn query_messages(&self, k: usize) -> Result<Vec<Vec<(usize, i64)>>, PackError> {
        if k >= self.m {
            return Err(PackError::TokenOutOfRange { id: k, m: self.m });
        }
        let (block, c) = (k / self.d1, k % self.d1);
        Ok((0..self.in_blocks())
            .map(|i| {
                if i != block {
                    vec![]
                } else if c == 0 {
                    vec![(0, 1)]
                } else {
                    vec![(self.n - c, -1)]
                }
            })
            .collect())
    }

    /// Fills `poly` (length `N`) with weight block `(i, j)`; `entry(k, ch)` reads `E[k][ch]`.
    pub fn weight_block(&self, i: usize, j: usize, entry: impl Fn(usize, usize) -> i64, poly: &mut [i64]) {
        poly.fill(0);
        for r in 0..self.d0 {
            let ch = j * self.d0 + r;
            if ch >= self.d {
                break;
            }
            for c in 0..self.d1 {
                let k = i * self.d1 + c;
                if k >= self.m {
                    break;
                }
                poly[r * self.d1 + c] = entry(k, ch);
            }
        }
    }

    /// The coefficients of output block `j` that carry channels, and the channel of each:
    /// `(r * d1, j * d0 + r)`.
    pub fn output_positions(&self, j: usize) -> Vec<(usize, usize)> {
        (0..self.d0).map(|r| (r * self.d1, j * self.d0 + r)).take_while(|&(_, ch)| ch < self.d).collect()
    }

    /// Nonzero plaintext entries that one output coefficient sums over, for the noise analysis:
    /// every input block times the block's `d0 d1` coefficients.
    pub fn noise_terms(&self) -> usize {
        self.in_blocks() * self.d0 * self.d1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn llama_splits_match_the_anchors() {
        let l = CheetahLayout::choose(32000, 4096, 4096).unwrap();
        assert_eq!((l.d0, l.d1, l.in_blocks(), l.out_blocks()), (23, 178, 180, 179));
        let l = CheetahLayout::choose(32000, 6656, 4096).unwrap();
        assert_eq!(l.in_blocks() + l.out_blocks(), 227 + 230);
    }

    fn negacyclic(n: usize, a: &[(usize, i64)], b: &[i64]) -> Vec<i64> {
        let mut out = vec![0i64; n];
        for &(i, v) in a {
            for (j, &w) in b.iter().enumerate() {
                if i + j < n { out[i + j] += v * w } else { out[i + j - n] -= v * w }
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// The layout computes the lookup: summing block products over the inputs puts
        /// E[k][ch] at each output position, for every token, including block edges.
        #[test]
        fn products_place_the_requested_row(m in 1usize..300, d in 1usize..80, logn in 4u32..9, pick in 0usize..1000) {
            let n = 1usize << logn;
            let l = CheetahLayout::choose(m, d, n).unwrap();
            prop_assert!(l.d0 * l.d1 <= n && l.d0 <= d && l.d1 <= m);
            let entry = |k: usize, ch: usize| (k * 1000 + ch) as i64 + 1;
            let ids = [0, m - 1, pick % m, (l.d1 - 1).min(m - 1), l.d1.min(m - 1)];
            for &k in &ids {
                let msgs = l.query_messages(k).unwrap();
                prop_assert_eq!(msgs.iter().filter(|m| !m.is_empty()).count(), 1);
                for j in 0..l.out_blocks() {
                    let mut acc = vec![0i64; n];
                    let mut w = vec![0i64; n];
                    for (i, msg) in msgs.iter().enumerate() {
                        l.weight_block(i, j, entry, &mut w);
                        for (a, b) in acc.iter_mut().zip(negacyclic(n, msg, &w)) { *a += b; }
                    }
                    for (pos, ch) in l.output_positions(j) {
                        prop_assert_eq!(acc[pos], entry(k, ch));
                    }
                }
            }
            prop_assert!(l.query_messages(m).is_err());
        }
    }
}
