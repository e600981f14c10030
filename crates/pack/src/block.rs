//! The interface every coefficient-encoded block layout offers the schemes, and the layouts of
//! Iron (3-D blocking over tokens) and Bumblebee (Cheetah's split with a power-of-two input
//! block, so that responses can be packed).

use crate::{CheetahLayout, PackError};

/// A layout of the lookup `Y = onehot(ids) E` as products of an encrypted query block and a
/// plaintext table block. Queries are sent per *group* of up to [`BlockLayout::group`] tokens:
/// `in_blocks` query ciphertexts per group, and the server's products give `out_blocks`
/// response ciphertexts per group, in which only the positions of
/// [`BlockLayout::output_positions`] hold requested entries.
pub trait BlockLayout: Send + Sync + std::fmt::Debug {
    /// Ring degree.
    fn n(&self) -> usize;
    /// Tokens per group.
    fn group(&self) -> usize;
    /// Query ciphertexts per group.
    fn in_blocks(&self) -> usize;
    /// Product ciphertexts per group.
    fn out_blocks(&self) -> usize;
    /// The query messages of one group of `1..=group` token ids, one per input block.
    fn query_messages(&self, ids: &[usize]) -> Result<Vec<Vec<(usize, i64)>>, PackError>;
    /// Fills `poly` with plaintext block `(i, j)`; `entry(k, ch)` reads `E[k][ch]`.
    fn weight_block(&self, i: usize, j: usize, entry: &dyn Fn(usize, usize) -> i64, poly: &mut [i64]);
    /// `(coefficient, token in group, channel)` of every requested entry of product block `j`
    /// for a group of `tokens` tokens.
    fn output_positions(&self, j: usize, tokens: usize) -> Vec<(usize, usize, usize)>;
    /// How many entries [`BlockLayout::output_positions`] lists, without listing them: a
    /// design search counts the response bytes of thousands of layouts.
    fn output_count(&self, j: usize, tokens: usize) -> usize {
        self.output_positions(j, tokens).len()
    }
    /// `(query error) x (table entry)` products summed into one output coefficient.
    fn noise_terms(&self) -> usize;
    /// Nonzero message coefficients per group (for the encoding rounding term).
    fn input_weight(&self) -> usize;
    /// The layout in words.
    fn describe(&self) -> String;
}

impl BlockLayout for CheetahLayout {
    fn n(&self) -> usize {
        self.n
    }
    fn group(&self) -> usize {
        1
    }
    fn in_blocks(&self) -> usize {
        CheetahLayout::in_blocks(self)
    }
    fn out_blocks(&self) -> usize {
        CheetahLayout::out_blocks(self)
    }
    fn query_messages(&self, ids: &[usize]) -> Result<Vec<Vec<(usize, i64)>>, PackError> {
        match ids {
            [k] => CheetahLayout::query_messages(self, *k),
            _ => Err(PackError::Group { tokens: ids.len(), group: 1 }),
        }
    }
    fn weight_block(&self, i: usize, j: usize, entry: &dyn Fn(usize, usize) -> i64, poly: &mut [i64]) {
        CheetahLayout::weight_block(self, i, j, entry, poly)
    }
    fn output_positions(&self, j: usize, _tokens: usize) -> Vec<(usize, usize, usize)> {
        CheetahLayout::output_positions(self, j).into_iter().map(|(p, ch)| (p, 0, ch)).collect()
    }
    fn output_count(&self, j: usize, _tokens: usize) -> usize {
        self.d0.min(self.d.saturating_sub(j * self.d0))
    }
    fn noise_terms(&self) -> usize {
        CheetahLayout::noise_terms(self)
    }
    fn input_weight(&self) -> usize {
        1
    }
    fn describe(&self) -> String {
        format!("cheetah split d0={} d1={}", self.d0, self.d1)
    }
}

/// Iron's 3-D blocking (Hao et al. 2022) of `onehot(ids)` (`T x m`) times `E` (`m x d`):
/// blocks of `nw` tokens, `kw` vocabulary entries and `mw` channels with `nw kw mw <= N`,
/// minimising the ciphertexts `ceil(T/nw) (ceil(m/kw) + ceil(d/mw))`.
///
/// * Query block `(group, i)`: `A[r][c]` (token `r` of the group, entry `i kw + c`) at
///   coefficient `r kw mw + (kw - 1 - c)`.
/// * Plaintext block `(i, j)`: `E[i kw + c][j mw + l]` at coefficient `l kw + c`.
/// * Product coefficient `r kw mw + l kw + kw - 1` is `sum_c A[r][c] E[i kw + c][j mw + l]`.
///   Other terms land at offsets `-(kw-1)..kw-1` from such positions, never on one (positions
///   differ by multiples of `kw`), and the terms that wrap past `X^N` land below `kw - 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IronLayout {
    /// Vocabulary size.
    pub m: usize,
    /// Channels.
    pub d: usize,
    /// Ring degree.
    pub n: usize,
    /// Tokens per block.
    pub nw: usize,
    /// Vocabulary entries per block.
    pub kw: usize,
    /// Channels per block.
    pub mw: usize,
}

impl IronLayout {
    /// The cost-model blocking for batches of `tokens` tokens.
    pub fn choose(m: usize, d: usize, n: usize, tokens: usize) -> Result<Self, PackError> {
        if m == 0 || d == 0 || n == 0 || tokens == 0 {
            return Err(PackError::NoLayout { m, d, n });
        }
        let mut best: Option<((usize, usize, usize), Self)> = None;
        for nw in 1..=tokens.min(n) {
            for kw in 1..=m.min(n / nw) {
                let mw = (n / (nw * kw)).min(d);
                if mw == 0 {
                    continue;
                }
                let cost = tokens.div_ceil(nw) * (m.div_ceil(kw) + d.div_ceil(mw));
                let key = (cost, nw * kw * mw, nw);
                if best.as_ref().is_none_or(|b| key < b.0) {
                    best = Some((key, Self { m, d, n, nw, kw, mw }));
                }
            }
        }
        best.map(|b| b.1).ok_or(PackError::NoLayout { m, d, n })
    }
}

impl BlockLayout for IronLayout {
    fn n(&self) -> usize {
        self.n
    }
    fn group(&self) -> usize {
        self.nw
    }
    fn in_blocks(&self) -> usize {
        self.m.div_ceil(self.kw)
    }
    fn out_blocks(&self) -> usize {
        self.d.div_ceil(self.mw)
    }
    fn query_messages(&self, ids: &[usize]) -> Result<Vec<Vec<(usize, i64)>>, PackError> {
        if ids.is_empty() || ids.len() > self.nw {
            return Err(PackError::Group { tokens: ids.len(), group: self.nw });
        }
        let mut msgs = vec![Vec::new(); self.in_blocks()];
        for (r, &k) in ids.iter().enumerate() {
            if k >= self.m {
                return Err(PackError::TokenOutOfRange { id: k, m: self.m });
            }
            let (i, c) = (k / self.kw, k % self.kw);
            msgs[i].push((r * self.kw * self.mw + (self.kw - 1 - c), 1));
        }
        Ok(msgs)
    }
    fn weight_block(&self, i: usize, j: usize, entry: &dyn Fn(usize, usize) -> i64, poly: &mut [i64]) {
        poly.fill(0);
        for l in 0..self.mw {
            let ch = j * self.mw + l;
            if ch >= self.d {
                break;
            }
            for c in 0..self.kw {
                let k = i * self.kw + c;
                if k >= self.m {
                    break;
                }
                poly[l * self.kw + c] = entry(k, ch);
            }
        }
    }
    fn output_positions(&self, j: usize, tokens: usize) -> Vec<(usize, usize, usize)> {
        (0..tokens.min(self.nw))
            .flat_map(|r| {
                (0..self.mw)
                    .map(move |l| (r * self.kw * self.mw + l * self.kw + self.kw - 1, r, j * self.mw + l))
                    .take_while(|&(_, _, ch)| ch < self.d)
            })
            .collect()
    }
    fn output_count(&self, j: usize, tokens: usize) -> usize {
        tokens.min(self.nw) * self.mw.min(self.d.saturating_sub(j * self.mw))
    }
    fn noise_terms(&self) -> usize {
        self.in_blocks() * self.kw * self.mw
    }
    fn input_weight(&self) -> usize {
        self.nw
    }
    fn describe(&self) -> String {
        format!("iron blocks nw={} kw={} mw={}", self.nw, self.kw, self.mw)
    }
}

/// Bumblebee's layout: Cheetah's split with the input block `d1 = 2^s` and `d0 = N / d1`, so
/// that every product ciphertext carries its channels at multiples of `d1` and up to `d1` of
/// them pack into one ciphertext (`fastquery_he::galois::pack_strided`). The split minimises
/// the bytes of query plus packed response (ties: fewer automorphisms).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StridedLayout {
    /// Cheetah's split with a power-of-two `d1`.
    pub inner: CheetahLayout,
    /// Product ciphertexts packed per response ciphertext (a power of two, at most `d1`).
    pub pack: usize,
}

impl StridedLayout {
    /// The split for an `m x d` table at degree `n`, with the cost of one query ciphertext and
    /// of one response ciphertext in bytes.
    pub fn choose(m: usize, d: usize, n: usize, query_ct: f64, response_ct: f64) -> Result<Self, PackError> {
        if m == 0 || d == 0 || !n.is_power_of_two() {
            return Err(PackError::NoLayout { m, d, n });
        }
        let mut best: Option<((u64, usize), Self)> = None;
        let mut d1 = 1;
        while d1 <= n {
            let d0 = (n / d1).min(d);
            let inner = CheetahLayout { m, d, n, d0, d1 };
            let out = inner.out_blocks();
            let pack = out.next_power_of_two().min(d1);
            let responses = out.div_ceil(pack);
            let bytes = inner.in_blocks() as f64 * query_ct + responses as f64 * response_ct;
            let key = (bytes.ceil() as u64, responses * (pack - 1));
            if best.as_ref().is_none_or(|b| key < b.0) {
                best = Some((key, Self { inner, pack }));
            }
            d1 *= 2;
        }
        best.map(|b| b.1).ok_or(PackError::NoLayout { m, d, n })
    }

    /// Response ciphertexts per token after packing.
    pub fn responses(&self) -> usize {
        self.inner.out_blocks().div_ceil(self.pack)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn negacyclic(n: usize, a: &[(usize, i64)], b: &[i64]) -> Vec<i64> {
        let mut out = vec![0i64; n];
        for &(i, v) in a {
            for (j, &w) in b.iter().enumerate() {
                if i + j < n { out[i + j] += v * w } else { out[i + j - n] -= v * w }
            }
        }
        out
    }

    #[test]
    fn iron_blocking_matches_the_anchor() {
        // anchors.md: about 1,012 ciphertexts for 8 LLaMA-7B tokens (Cheetah: 2,872).
        let l = IronLayout::choose(32000, 4096, 4096, 8).unwrap();
        let total = 8usize.div_ceil(l.nw) * (l.in_blocks() + l.out_blocks());
        assert!((950..=1100).contains(&total), "{l:?}: {total}");
        // One token: Cheetah's count.
        let one = IronLayout::choose(32000, 4096, 4096, 1).unwrap();
        assert_eq!(one.in_blocks() + one.out_blocks(), 180 + 179);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Summing the block products over the inputs puts E[k][ch] at every output position of
        /// every token of a group, and every other position of those blocks holds no requested
        /// entry by accident of the layout (only products of other rows or zero).
        #[test]
        fn iron_products_place_the_requested_rows(m in 1usize..200, d in 1usize..40, logn in 4u32..9, tokens in 1usize..6, seed in 0usize..1000) {
            let n = 1usize << logn;
            let l = IronLayout::choose(m, d, n, tokens).unwrap();
            prop_assert!(l.nw * l.kw * l.mw <= n && l.nw <= tokens);
            let entry = |k: usize, ch: usize| (k * 1000 + ch) as i64 + 1;
            let ids: Vec<usize> = (0..l.nw).map(|r| (seed * 31 + r * 17) % m).collect();
            let msgs = l.query_messages(&ids).unwrap();
            for j in 0..l.out_blocks() {
                let mut acc = vec![0i64; n];
                let mut w = vec![0i64; n];
                for (i, msg) in msgs.iter().enumerate() {
                    l.weight_block(i, j, &entry, &mut w);
                    for (a, b) in acc.iter_mut().zip(negacyclic(n, msg, &w)) { *a += b; }
                }
                for (pos, r, ch) in l.output_positions(j, ids.len()) {
                    prop_assert_eq!(acc[pos], entry(ids[r], ch));
                }
            }
            prop_assert!(l.query_messages(&[m]).is_err());
            prop_assert!(l.query_messages(&vec![0; l.nw + 1]).is_err());
        }

        /// The counts a design search uses are the lengths of the lists the server keeps,
        /// for every block (and one past the last) and every group size, partial ones included.
        #[test]
        fn output_counts_are_the_lengths_of_the_positions(m in 1usize..3000, d in 1usize..300, logn in 4u32..11, tokens in 1usize..9) {
            let n = 1usize << logn;
            let cheetah = CheetahLayout::choose(m, d, n).unwrap();
            let iron = IronLayout::choose(m, d, n, tokens).unwrap();
            for l in [&cheetah as &dyn BlockLayout, &iron] {
                for j in 0..=l.out_blocks() {
                    for size in 1..=tokens + 1 {
                        prop_assert_eq!(l.output_count(j, size), l.output_positions(j, size).len(), "{:?} block {} of {} tokens", l, j, size);
                    }
                }
            }
        }

        #[test]
        fn strided_split_keeps_outputs_on_the_stride(m in 1usize..5000, d in 1usize..600, logn in 8u32..14) {
            let n = 1usize << logn;
            let s = StridedLayout::choose(m, d, n, 100.0, 200.0).unwrap();
            prop_assert!(s.inner.d1.is_power_of_two() && s.inner.d0 * s.inner.d1 <= n);
            prop_assert!(s.pack.is_power_of_two() && s.pack <= s.inner.d1);
            for j in 0..s.inner.out_blocks() {
                for (pos, _) in s.inner.output_positions(j) {
                    prop_assert_eq!(pos % s.inner.d1, 0);
                }
            }
        }
    }
}
