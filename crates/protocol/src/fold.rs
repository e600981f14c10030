//! FastQuery's compressed query: a two-level lookup whose query is one ciphertext for many
//! tokens (oblivious expansion, RGSW folding; the mechanics are in [`fastquery_he::fold`]).
//!
//! ## Layout
//! * A **record** is one plaintext polynomial holding `R = 2^r` rows (`R d <= N`), interleaved:
//!   channel `c` of row `h` at coefficient `c R + h`; when `d > N` a row is split into
//!   `pieces = ceil(d / N)` records.
//! * Records are arranged as `m1` (first dimension) times `m2 = 2^b` (groups): record
//!   `a = g m1 + i`.
//! * The query of a token is `m1` one-hot slots (entry `i`) and `b + r` RGSW bits: the group
//!   `g`, most significant bit first, then the row `h` inside the record, least significant
//!   first; `G = limbs * digits` gadget slots per bit. As many tokens as fit share one query
//!   ciphertext of `N` slots.
//!
//! ## Server
//! Expand each query ciphertext (`2^k - 1` automorphisms); one multiply-accumulate
//! `(2 tokens x m1) x (m1 x m2 pieces)` over the preprocessed records (the table is read once
//! per request); per token `m2 - 1` CMuxes over the groups and `r` CMux rotations (by `X^-1`,
//! `X^-2`, ...) bring the requested row to the multiples of `R`; PackLWEs then packs up to `R`
//! tokens into one ciphertext (token `i` at `c R + i`), cancelling the other rows exactly; then
//! the usual finish: re-randomisation, flooding, masks, modulus switching, and only the
//! requested rows' coefficients of `c0` are sent.
//!
//! ## Why it is lean
//! The query costs `N log2 q` bits for up to `N / (m1 + (b + r) G)` tokens instead of
//! `m log2 q` per token, and the response is one ciphertext per token whose kept
//! coefficients are exactly the row.

use std::sync::Arc;

use fastquery_backend::{Backend, Coeff, MacOperand, Ntt, Polys, Ring, Shape};
use fastquery_he::{
    ParamSpec, Params,
    client::Client,
    fold::{
        FoldNoise, FoldShape, Rgsw, SQUARE_KEY, cmux_halves, cmux_pair, cmux_rotate, fold_noise, gadget_slot,
        one_hot_slot, rgsw_bits_from_rows_ntt, rgsw_sets_from_rows_ntt,
    },
    galois::{
        Ciphertexts, HYBRID_DIGIT_BITS, ServerGaloisKey, SlotLayout, expand_positioned_ntt, gadget,
        key_shape, keyswitch_bound, load_ciphertexts, load_galois_key, pack_strided, packing_elements,
    },
    noise::{NoiseReport, Workload, analyse},
    security_limit,
    server::{ServerKey, encode_mac_operand, finish, load_public_key},
    share::{ServerShareKeys, Sharing, can_halve, group_size, load_share_keys},
};
use fastquery_table::IntTable;

use crate::{
    ProtocolError,
    blocked::WireBytes,
    cost::{Device, Server},
    messages::{Limits, decode_query_sent, decode_setup, encode_query_sent, encode_response, encode_setup},
    scheme::{
        ClientState, ParamSummary, Positions, SchemeClient, SchemeServer, Sessions, Shares, check_query,
        decode_shares, place_shares,
    },
    trace::StepClock,
};

/// Response ciphertexts of a `tokens`-token request: one per token and piece of a long row,
/// else `pack` tokens per ciphertext; two members of each where responses are `split`.
fn response_cts(pieces: usize, pack: usize, tokens: usize, split: bool) -> usize {
    let responses = if pieces > 1 { tokens * pieces } else { tokens.div_ceil(pack) };
    if split { 2 * responses } else { responses }
}

/// How a folded design's responses are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum ResponseForm {
    /// Up to `rows_per_record` tokens packed per response (one where a record holds one row).
    Packed,
    /// One token per response of a layout with two or more rows per record: every kept
    /// coefficient is even, so `c` travels in the half ring.
    Single,
    /// Packed responses, each split into two members that keep only even coefficients: the
    /// response itself (its even coefficients) and the response times `X^-1` (its odd ones,
    /// moved to the even positions below them), so that `c` travels in the half ring.
    Split,
}

/// The choices of a folded design besides the parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FoldLayout {
    /// Rows per record (`R`, a power of two).
    pub rows_per_record: usize,
    /// Records per row (`ceil(d / N)` when a row does not fit one polynomial, else 1).
    pub pieces: usize,
    /// First-dimension size.
    pub m1: usize,
    /// Groups folded by RGSW bits (a power of two).
    pub m2: usize,
    /// Digit width of the Galois keys and of the key for `s^2`.
    pub ks_bits: u32,
    /// Digit width of the RGSW gadget.
    pub rgsw_bits: u32,
    /// Tokens per query ciphertext.
    pub tokens_per_ct: usize,
    /// Expansion levels (`2^k >= tokens_per_ct * slots per token`, at most `log2 N`). Each
    /// level above the fewest that hold the slots halves the coefficients of the query sent
    /// ([`SlotLayout::sent`]) for a doubled expansion noise.
    pub k: u32,
    /// Tokens packed per response ciphertext (a power of two, at most `rows_per_record`).
    pub pack: usize,
    /// Response ciphertexts sharing one `c1` ([`fastquery_he::share`]; 1: none).
    pub share: usize,
    /// Whether the responses' `c` travels in the half ring (one token per response of a
    /// layout with two or more rows per record: every kept coefficient is even).
    pub half: bool,
    /// Whether each response is split into two members that keep only even coefficients
    /// ([`ResponseForm::Split`]; `share` then counts members).
    pub split: bool,
}

impl FoldLayout {
    /// How the responses are keyed ([`fastquery_he::share::Sharing`]).
    pub fn sharing(&self) -> Sharing {
        Sharing::new(self.share, self.half)
    }
}

/// What both parties derive from the public shape and parameters.
#[derive(Clone, Debug)]
pub struct FoldDesign {
    /// Wire id of the scheme.
    pub id: u8,
    /// Name in reports.
    pub name: &'static str,
    /// Parameters.
    pub params: Arc<Params>,
    /// Table rows.
    pub m: usize,
    /// Table channels.
    pub d: usize,
    /// The layout.
    pub layout: FoldLayout,
    /// Bounds of the folding.
    pub fold: FoldNoise,
    /// The bounds of the finish (the folded noise is its table-dependent part).
    pub noise: NoiseReport,
}

impl FoldDesign {
    /// A design for an `m x d` table of `table_bits` signed bits with `m2` groups, for
    /// requests of up to `tokens` tokens per query ciphertext, expanding each query
    /// `extra_levels` levels further than its slots need, its responses laid out as `form`
    /// says and shared in groups of at most `max_shared` (an error where that form is the
    /// packed layout itself, or where the parameters cannot send `c` in the half ring that it
    /// is for); an error if it does not fit the ring or the noise budget.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: u8,
        name: &'static str,
        params: Arc<Params>,
        (m, d, table_bits): (usize, usize, u32),
        m2: usize,
        ks_bits: u32,
        rgsw_bits: u32,
        tokens: usize,
        extra_levels: u32,
        (form, max_shared): (ResponseForm, usize),
    ) -> Result<Self, ProtocolError> {
        let n = params.n();
        if m == 0 || d == 0 || tokens == 0 || !m2.is_power_of_two() || table_bits == 0 {
            return Err(ProtocolError::State(format!("no fold of a {m} x {d} table into {m2} groups")));
        }
        let (rows_per_record, pieces) =
            if d <= n { (1usize << (n / d).ilog2(), 1) } else { (1, d.div_ceil(n)) };
        let records = m.div_ceil(rows_per_record);
        let m1 = records.div_ceil(m2);
        if m2 > records {
            return Err(ProtocolError::State(format!("{m2} groups for {records} records")));
        }
        let bits = m2.ilog2() as usize + rows_per_record.ilog2() as usize;
        let g = params.limbs() * gadget(&params, rgsw_bits).1;
        let slots = m1 + bits * g;
        if slots > n {
            return Err(ProtocolError::State(format!("{slots} query slots per token, N = {n}")));
        }
        let tokens_per_ct = (n / slots).min(tokens);
        let k = (tokens_per_ct * slots).next_power_of_two().ilog2() + extra_levels;
        if k > n.ilog2() {
            return Err(ProtocolError::State(format!("an expansion into 2^{k} slots, N = {n}")));
        }
        let pack = rows_per_record.min(tokens.next_power_of_two());
        // One token per response keeps coefficients `c R` of its record's row 0: all even.
        let even = |pack: usize| pack == 1 && pieces == 1 && rows_per_record >= 2;
        let (pack, split) = match form {
            ResponseForm::Packed => (pack, false),
            ResponseForm::Single if pack > 1 => (1, false),
            // A split needs odd coefficients in every member's response and a last piece of
            // two or more coefficients (else a member would keep nothing).
            ResponseForm::Split if !even(pack) && (pieces == 1 || d - (pieces - 1) * n >= 2) => (pack, true),
            _ => {
                return Err(ProtocolError::State(format!("responses {form:?} are the packed layout itself")));
            }
        };
        let half = (even(pack) || split) && can_halve(&params);
        if split && !half {
            return Err(ProtocolError::State("split responses without a half ring save nothing".into()));
        }
        let members = response_cts(pieces, pack, tokens, split);
        let want = Sharing::new(group_size(&params, members, max_shared), half);
        let w_max = 1u64 << (table_bits - 1);
        let fold = fold_noise(&params, FoldShape { k, m1, w_max, ks_bits, rgsw_bits, levels: bits });
        // Packing adds its key switches (doubled by the levels after them: at most pack - 1).
        let extra = fold.total + (pack - 1) as f64 * keyswitch_bound(&params, ks_bits);
        // Communication-aware: the slack is spent where it saves the most bytes, on c1 as well
        // as on c0 (a response keeps pack rows of d coefficients, a piece of a long row N).
        // Groups of responses share one c1: its bits are paid once per group, where the noise
        // of the switch fits (else each response keeps its own).
        let base = analyse(&params, Workload { terms: 0, w_max: 0, input_weight: 0, extra })?;
        let (sharing, noise) = match base.clone().with_shared_c1(&params, want) {
            Ok(shared) => (want, shared),
            Err(_) => (Sharing::NONE, base),
        };
        let kept = (pack * d).min(n);
        let noise = noise.with_rounded_c1(&params, if split { kept.div_ceil(2) } else { kept }, sharing);
        let layout = FoldLayout {
            rows_per_record,
            pieces,
            m1,
            m2,
            ks_bits,
            rgsw_bits,
            tokens_per_ct,
            k,
            pack,
            share: sharing.group(),
            half: sharing.half(),
            split,
        };
        Ok(Self { id, name, params, m, d, layout, fold, noise })
    }

    /// RGSW bits per token.
    pub fn index_bits(&self) -> usize {
        (self.layout.m2.ilog2() + self.layout.rows_per_record.ilog2()) as usize
    }

    pub(crate) fn gadget_len(&self) -> usize {
        self.params.limbs() * gadget(&self.params, self.layout.rgsw_bits).1
    }

    /// Query slots per token.
    pub fn slots_per_token(&self) -> usize {
        self.layout.m1 + self.index_bits() * self.gadget_len()
    }

    /// Response ciphertexts of a `tokens`-token request (members, where responses are split).
    pub fn response_cts(&self, tokens: usize) -> usize {
        response_cts(self.layout.pieces, self.layout.pack, tokens, self.layout.split)
    }

    /// How many `c0` coefficients each response ciphertext keeps: the lengths of
    /// [`FoldDesign::positions`], counted without listing them (the design search asks this of
    /// thousands of designs).
    fn kept(&self, tokens: usize) -> Vec<usize> {
        let (n, l) = (self.params.n(), &self.layout);
        // A split response's members keep its even and its odd coefficients.
        let halves = |k: usize| if l.split { vec![k.div_ceil(2), k / 2] } else { vec![k] };
        if l.pieces > 1 {
            let widths = (0..l.pieces).map(|p| (self.d - p * n).min(n));
            return (0..tokens).flat_map(|_| widths.clone()).flat_map(halves).collect();
        }
        let r = l.rows_per_record;
        (0..tokens.div_ceil(l.pack))
            .flat_map(|g| {
                let here = l.pack.min(tokens - g * l.pack);
                match (l.split, r) {
                    (false, _) => vec![here * self.d],
                    // One row per record: channel c at coefficient c.
                    (true, 1) => halves(self.d),
                    // Token i at c R + i, R even: its parity is i's.
                    (true, _) => vec![here.div_ceil(2) * self.d, here / 2 * self.d],
                }
            })
            .collect()
    }

    /// Query ciphertexts of a `tokens`-token request.
    pub fn query_cts(&self, tokens: usize) -> usize {
        tokens.div_ceil(self.layout.tokens_per_ct)
    }

    /// The slot layout of each query ciphertext of a `tokens`-token request (the last may hold
    /// fewer tokens).
    pub(crate) fn slot_layouts(&self, tokens: usize) -> Result<Vec<SlotLayout>, ProtocolError> {
        let (per, slots) = (self.layout.tokens_per_ct, self.slots_per_token());
        (0..tokens)
            .step_by(per)
            .map(|t| Ok(SlotLayout::new(self.layout.k, per.min(tokens - t) * slots)?))
            .collect()
    }

    /// The coefficients of each query ciphertext's `c0` the client sends
    /// ([`SlotLayout::sent`]: those of the classes mod `2^k` that hold its slots; the server's
    /// expansion reads no other). The full ciphertexts share one list, the last its own.
    pub fn query_sent(&self, tokens: usize) -> Result<Vec<Arc<[usize]>>, ProtocolError> {
        let n = self.params.n();
        let layouts = self.slot_layouts(tokens)?;
        let Some(first) = layouts.first() else { return Ok(Vec::new()) };
        let full: Arc<[usize]> = first.sent(n).into();
        Ok(layouts.iter().map(|l| if l == first { full.clone() } else { l.sent(n).into() }).collect())
    }

    /// The Galois exponents of the expansion and of the packing, then the key for `s^2`.
    pub fn key_elements(&self) -> Vec<usize> {
        let n = self.params.n();
        let mut out: Vec<usize> = (0..self.layout.k).map(|j| n / (1 << j) + 1).collect();
        for g in packing_elements(n, self.layout.pack) {
            if !out.contains(&g) {
                out.push(g);
            }
        }
        out.push(SQUARE_KEY);
        out
    }

    /// `(coefficient, token, channel)` of each response ciphertext. A folded row sits at the
    /// multiples of `R` (channel `c` at `c R`); token `i` of a packed group moves to `c R + i`.
    /// Without packing: one ciphertext per token and piece.
    fn positions(&self, tokens: usize) -> Positions {
        let whole = self.response_positions(tokens);
        if !self.layout.split {
            return whole;
        }
        // Member 2i keeps response i's even coefficients, member 2i + 1 its odd ones, at the
        // even coefficient below each (it is the response times X^-1).
        whole
            .into_iter()
            .flat_map(|v| {
                let (even, odd): (Vec<_>, Vec<_>) = v.into_iter().partition(|p| p.0 % 2 == 0);
                [even, odd.into_iter().map(|(j, t, c)| (j - 1, t, c)).collect()]
            })
            .collect()
    }

    /// [`FoldDesign::positions`] of the responses before any split.
    fn response_positions(&self, tokens: usize) -> Positions {
        let (n, l) = (self.params.n(), self.layout);
        if l.pieces > 1 {
            return (0..tokens)
                .flat_map(|t| {
                    (0..l.pieces).map(move |p| {
                        let width = (self.d - p * n).min(n);
                        (0..width).map(|j| (j, t, p * n + j)).collect()
                    })
                })
                .collect();
        }
        let r = l.rows_per_record;
        // Coordinate c of the group's token i is at c r + i: with i < pack <= r, coordinate by
        // coordinate and token by token is already in position order (no sort; a 128-token
        // request's half million positions took 28 ms to sort on a 2-core VM).
        (0..tokens.div_ceil(l.pack))
            .map(|group| {
                let here = l.pack.min(tokens - group * l.pack);
                debug_assert!(l.pack <= r, "a layout packs at most rows_per_record tokens");
                (0..self.d).flat_map(|c| (0..here).map(move |i| (c * r + i, group * l.pack + i, c))).collect()
            })
            .collect()
    }

    /// Where row `r` lives: `(first-dimension entry, group, row within the record)`.
    fn locate(&self, r: usize) -> (usize, usize, usize) {
        let l = &self.layout;
        let (a, h) = (r / l.rows_per_record, r % l.rows_per_record);
        (a % l.m1, a / l.m1, h)
    }

    /// The exact bytes of a `tokens`-token request.
    pub fn predicted_bytes(&self, tokens: usize) -> WireBytes {
        use crate::{messages, wire::HEADER_BYTES};
        let p = &self.params;
        let setup =
            messages::setup_bytes(p, self.key_elements().len(), self.layout.ks_bits, self.layout.sharing());
        let query = HEADER_BYTES
            + 4
            + self.slot_layouts(tokens).map_or(0, |ls| {
                ls.iter().map(|l| messages::query_record_bytes_sent(p, l.sent_len(p.n()))).sum()
            });
        let response = messages::response_bytes(p, &self.noise, &self.kept(tokens), self.layout.sharing());
        WireBytes { setup, query, response }
    }

    /// Operation counts of a `tokens`-token request: `(key switches, external products,
    /// multiply-accumulate coefficient products)`.
    pub fn operations(&self, tokens: usize) -> (usize, usize, usize) {
        let l = &self.layout;
        // Each query ciphertext expands only the subtrees holding its tokens' slots.
        let expansion =
            self.slot_layouts(tokens).map_or(0, |ls| ls.iter().map(SlotLayout::key_switches).sum());
        let conversion = tokens * self.index_bits() * self.gadget_len();
        let external = tokens * l.pieces * (l.m2 - 1 + l.rows_per_record.ilog2() as usize);
        let packing = tokens.div_ceil(l.pack) * (l.pack - 1);
        // Sharing c1 (or switching it to a subring secret): per stage, each source's c1 against
        // the a half and every target's b half, two products per backend call
        // (`fastquery_he::share::share_c1`).
        let sharing = l.sharing().switch_calls(self.response_cts(tokens));
        let mac = 2 * tokens * l.m1 * l.m2 * l.pieces * self.params.limbs() * self.params.n();
        (expansion + conversion + packing + sharing, external, mac)
    }

    /// A summary for reports.
    pub fn summary(&self) -> ParamSummary {
        let p = &self.params;
        let l = &self.layout;
        ParamSummary {
            n: p.n(),
            log2_q: p.log2_q(),
            limbs: p.limbs(),
            log2_q_response: p.log2_q_response(),
            t: p.plain_bits(),
            sigma: p.flood_bits(),
            drop_bits: self.noise.drop_bits,
            c1_bits: self.noise.c1_bits,
            noise_slack_bits: self.noise.slack_bits(),
            layout: format!(
                "folded query: {} rows per record x {} piece(s), one-hot over m1 = {}, {} groups folded by \
                 {} RGSW bits ({}-bit gadget, {} digits), {} token(s) per query ciphertext (2^{} slots, {} of \
                 {} coefficients sent), \
                 {} token(s) per response{}, {} response(s) per c1{}{}, keys of {}-bit digits",
                l.rows_per_record,
                l.pieces,
                l.m1,
                l.m2,
                self.index_bits(),
                l.rgsw_bits,
                self.gadget_len(),
                l.tokens_per_ct,
                l.k,
                self.slot_layouts(l.tokens_per_ct).map_or(0, |ls| ls[0].sent_len(p.n())),
                p.n(),
                l.pack,
                if l.split { " split in two by parity" } else { "" },
                l.share,
                if l.half { " (in the half ring)" } else { "" },
                match l.sharing().stages()[..] {
                    [(m, _), _] => format!(" switched in two stages (groups of {m} first)"),
                    _ => String::new(),
                },
                l.ks_bits
            ),
        }
    }
}

/// Per-operation costs measured on this engine's CPU backend (the 2-core machine of
/// docs/BENCHMARKS.md, both threads; calibrated 2026-11-30 after the fused key switch, the
/// AVX-512 multiply-accumulate, the fused expansion step and the pruned expansion), for ranking
/// candidates: one key switch at N = 8192 and 16-bit digits (1.6 ms in the expansion of a
/// llama-7b request then), scaled by its transform work; an external product 1.4 key switches
/// of the RGSW's digits (two fused digit products, but one pair of inverse transforms and no
/// automorphism: 2.1 ms then per external product of the llama-7b fold); a coefficient product
/// of the multiply-accumulate 0.13 ns (12.6 G products in 1.6 s); and per expansion slot 0.1 ms
/// for its two level buffers, written whatever subtrees are skipped (an in-process probe: 2.8 s
/// for 1,666 key switches over 2^11 slots, 4.4 s for 2,562 over 2^12). Every one of them times
/// [`RECALIBRATED`] since.
const KEYSWITCH_MS: f64 = 1.6;
const KEYSWITCH_WORK: f64 = 10.0 * 5.0 * 8192.0 * 13.0;
const EXTERNAL_KEYSWITCHES: f64 = 1.4;
const MAC_NS: f64 = 0.13;
const EXPAND_SLOT_MS: f64 = 0.1;
/// The whole estimate against measured requests, 2026-12-02 (the NTT-domain expansion, fold
/// and conversion of the sessions since, on the 2-vCPU AVX2 VM): llama-7b at 8 tokens measured
/// 3.3-3.6 s per request against 5.13 s estimated (0.65-0.71), llama-30b 5.6-6.6 s against
/// 7.63 s (0.74-0.86). One factor for every term, so the ranking among near-equal bytes (the
/// designs `fastquery` runs) does not change; what it changes is the comparison with the
/// blocked designs' own estimate under a latency objective. Times 0.75 since 2026-12-03, on
/// the 2-vCPU AVX-512 VM (the machine of docs/design's anchors), where nine folded requests
/// measured 0.63-0.87 of the estimate (median 0.77): llama-7b at 8 tokens 433.8 / 326.3 /
/// 295.9 ms per token against 497.5 / 462.7 / 469.7, llama-30b 637.8 / 511.7 / 601.5 against
/// 826.3 / 691.4 / 696.9, and one llama-7b token 346 / 446 / 420 ms against 543. Without it,
/// `fastquery-wan` would take cheetah's split for one token (estimated 520 ms on the WAN
/// against 586), which measured 556-626 ms against the folded design's 392-492. Times 0.7 since
/// the twenty-sixth session (2026-12-03, the same VM, after the table product's spread
/// prefetch and the fold's in-place difference): four eight-token requests at llama-7b and
/// llama-30b (`fastquery bench`'s new "estimated / measured" lines) measured 1/1.29 to 1/1.46
/// of the estimate, the phases alike (llama-7b: 2,733 ms estimated, 736 of them the product,
/// against 1,904 measured, 495 the product).
const RECALIBRATED: f64 = 0.72 * 0.75 * 0.7;
/// The threads the constants above were measured with.
const REFERENCE_THREADS: f64 = 2.0;
/// Bytes per second a server reads the preprocessed records at, at most: the table product's
/// floor where many threads share it. 26 GB/s since the twenty-sixth session (2026-12-03,
/// after the product's spread prefetch): cheetah's one-token product read its 2.11 GB in
/// 62-84 ms and its 3.42 GB (llama-30b) in 125-130 ms, the fold's decode-step product 2.62 GB
/// in 92-101 ms. 19 GB/s from the twenty-third session: a
/// one-token llama-7b product read its 2.62 GB in 132-142 ms end to end after the kernel's
/// two-row block, pairs and L2 prefetch, and cheetah's one-token product (2.1 GB with its
/// split) took 121-130 ms; a plain two-thread read of this VM streams about 30 GB/s. It was
/// 13 GB/s (the copy bandwidth, 26.4 GB/s read plus write, halved), which overestimated a
/// decode step by 60 ms; no design at the LLaMA shapes changed with it
/// (`fastquery plan`, docs/BENCHMARKS.md).
pub(crate) const RECORD_STREAM_BYTES_PER_S: f64 = 26e9;
/// Time per digit row of a hybrid key switch against the gadget's: at N = 8192 and five limbs
/// its 30 digit rows took 0.89x (expansion step) and 0.98x (key switch alone) of the gadget's
/// 50 on one thread of the 2-core VM (2026-12-01), where the rows alone would give 0.6x: the
/// two extra inverse transforms and the division by `P` cost about half the rows' time again.
const HYBRID_WEIGHT: f64 = 1.5;

/// The estimated server time of a `tokens`-token request on `design`, in ms, for `server`: a
/// CPU's (the reference machine's time scaled by its threads, the table product no faster than
/// the records stream), or a GPU's ([`crate::cost::gpu_fold_phases`]).
pub fn estimate_ms(design: &FoldDesign, tokens: usize, server: Server) -> f64 {
    match server.device {
        Device::Cpu => cpu_estimate_ms(design, tokens, server.threads),
        Device::Gpu => {
            crate::cost::gpu_fold_phases(design, tokens, crate::cost::FoldRun::cuda(tokens)).served_ms()
        }
    }
}

fn cpu_estimate_ms(design: &FoldDesign, tokens: usize, threads: usize) -> f64 {
    let p = &design.params;
    let (n, limbs) = (p.n() as f64, p.limbs() as f64);
    let work = |bits: u32| limbs * gadget(p, bits).1 as f64 * limbs * n * n.log2() / KEYSWITCH_WORK;
    // A hybrid key switch transforms the digits of the chain's limbs into every limb of `q P`,
    // then pays two more inverse transforms and the division by `P` (HYBRID_WEIGHT).
    let (key_polys, key_limbs) = key_shape(p, design.layout.ks_bits);
    let weight = if p.special_prime().is_some() { HYBRID_WEIGHT } else { 1.0 };
    let ks_work = weight * (key_polys * key_limbs) as f64 * n * n.log2() / KEYSWITCH_WORK;
    let (ks, ext, mac) = design.operations(tokens);
    // The expansion's two level buffers (the classes it splits, SlotLayout::expanded) are
    // written (and faulted in) per query ciphertext.
    let slots =
        design.slot_layouts(tokens).map_or(0, |ls| ls.iter().map(SlotLayout::expanded).sum::<usize>()) as f64;
    let scale = RECALIBRATED * REFERENCE_THREADS / threads.max(1) as f64;
    let l = &design.layout;
    let records = (l.m1 * l.m2 * l.pieces) as f64 * limbs * n * 4.0;
    let mac_ms = (mac as f64 * MAC_NS / 1e6 * scale).max(records / RECORD_STREAM_BYTES_PER_S * 1e3);
    scale
        * (ks as f64 * KEYSWITCH_MS * ks_work
            + ext as f64 * EXTERNAL_KEYSWITCHES * KEYSWITCH_MS * work(design.layout.rgsw_bits)
            + slots * EXPAND_SLOT_MS * limbs * n / (5.0 * 8192.0))
        + mac_ms
}

/// Relative byte difference under which two folded designs rank by estimated time. At 15%,
/// llama-7b at 8 tokens takes a five-limb chain (12% more bytes than the fewest, a 62-bit
/// response prime) with 19 MB of keys instead of 26; in one A/B pair (2026-11-30, with an
/// allocator setting since reverted, docs/BENCHMARKS.md) it took 0.91 s per token against 1.09 s
/// for the fewest-bytes six-limb chain.
pub const BYTES_TIE: f64 = 0.15;

/// Relative difference of estimated server time under which two designs among the
/// [`BYTES_TIE`] ties rank by bytes: the estimate's resolution. At llama-30b the expansion into
/// `2^13` slots is estimated 1.2% slower than into `2^12` and sends 3.2 KB per token less; it
/// leads.
pub const TIME_TIE: f64 = 0.05;

/// Bit size of the special prime of hybrid key switching: a word, like every other prime.
pub const SPECIAL_PRIME_BITS: u32 = 31;

/// The most responses that may share one `c` ([`fastquery_he::share::MAX_SHARED`]).
pub use fastquery_he::share::MAX_SHARED;

/// What a server allows its folded designs and expects of its sessions, design inputs that both
/// parties know ([`crate::harness::DesignInputs`]): the key switching, the most responses that
/// share one `c` (the setup carries `m^2 + n^2 / m` keys for groups of `n`,
/// [`Sharing::stages`]), and the tokens a session carries, where the server knows them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Allowed {
    /// The key switching.
    pub keyswitch: KeySwitching,
    /// The most responses per shared `c`, 1 to [`fastquery_he::share::MAX_SHARED`].
    pub max_shared: usize,
    /// Tokens per session (1 to [`MAX_SESSION_TOKENS`]), where known: the designs then rank by
    /// query and response plus each request's part of the setup
    /// ([`crate::blocked::WireBytes::per_request`]), and every group of shared `c` up to
    /// `max_shared` is a candidate, so that a short session takes fewer keys. `None`: sessions
    /// without end, the setup paid once (the fewest bytes per request).
    pub session_tokens: Option<usize>,
    /// Of the session's tokens, how many arrive one per request (decode steps; 0 to
    /// `session_tokens`): the designs then rank by the bytes of the whole session
    /// ([`crate::blocked::WireBytes::over_session`]), one-token requests included (and
    /// `fastquery-wan` / `-lan` by its estimated latency,
    /// [`crate::fastquery::session_latency_ms`]).
    pub decode_tokens: usize,
    /// Where the server computes: the designs of near-equal bytes rank by its estimated time
    /// ([`crate::cost`]).
    pub device: Device,
}

/// The most tokens a session may be declared to carry (`Info` sends a `u32`).
pub const MAX_SESSION_TOKENS: usize = u32::MAX as usize;

impl Default for Allowed {
    fn default() -> Self {
        Self {
            keyswitch: KeySwitching::Any,
            max_shared: fastquery_he::share::MAX_SHARED,
            session_tokens: None,
            decode_tokens: 0,
            device: Device::Cpu,
        }
    }
}

impl From<KeySwitching> for Allowed {
    fn from(keyswitch: KeySwitching) -> Self {
        Self { keyswitch, ..Self::default() }
    }
}

impl Allowed {
    /// `FASTQUERY_MAX_SHARED`: 1 to [`fastquery_he::share::MAX_SHARED`] responses per shared
    /// `c` ([`fastquery_he::share::MAX_SHARED`] where it is unset); any other value is an error
    /// that names the variable.
    pub fn max_shared_from_env() -> Result<usize, ProtocolError> {
        let max = fastquery_he::share::MAX_SHARED;
        Ok(env_number("FASTQUERY_MAX_SHARED", 1..=max)?.unwrap_or(max))
    }

    /// `FASTQUERY_SESSION_TOKENS`: 1 to [`MAX_SESSION_TOKENS`] tokens per session (`None` where
    /// it is unset); any other value is an error that names the variable.
    pub fn session_tokens_from_env() -> Result<Option<usize>, ProtocolError> {
        env_number("FASTQUERY_SESSION_TOKENS", 1..=MAX_SESSION_TOKENS)
    }

    /// `FASTQUERY_DECODE_TOKENS`: how many of a session's tokens arrive one per request (0
    /// where it is unset); anything but a number of at most [`MAX_SESSION_TOKENS`] is an error
    /// that names the variable (that it fits the session is checked where both are known).
    pub fn decode_tokens_from_env() -> Result<usize, ProtocolError> {
        Ok(env_number("FASTQUERY_DECODE_TOKENS", 0..=MAX_SESSION_TOKENS)?.unwrap_or(0))
    }

    /// The caps of shared `c` the candidates try: `max_shared` alone for sessions without
    /// end, else every power of two below it too (the smaller setups of shorter sessions).
    fn caps(&self) -> Vec<usize> {
        let mut caps = vec![self.max_shared.max(1)];
        if self.session_tokens.is_some() {
            caps.extend((0..).map(|i| 1usize << i).take_while(|&c| c < self.max_shared));
        }
        caps
    }
}

/// The number in the environment variable `name` (`None` where it is unset); a value that is
/// not a number in `range` is an error that names the variable.
fn env_number(name: &str, range: std::ops::RangeInclusive<usize>) -> Result<Option<usize>, ProtocolError> {
    match std::env::var(name) {
        Err(_) => Ok(None),
        Ok(v) => v.parse::<usize>().ok().filter(|n| range.contains(n)).map(Some).ok_or_else(|| {
            ProtocolError::State(format!("{name}={v}: expected {} to {}", range.start(), range.end()))
        }),
    }
}

/// Which key switching the folded candidates may use: a design input
/// ([`crate::harness::DesignInputs::keyswitch`]), so that a server restricted to one kind for an
/// A/B run tells its clients, who derive the same design.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub enum KeySwitching {
    /// Both kinds (the default).
    #[default]
    Any,
    /// The RNS gadget only.
    Gadget,
    /// Hybrid, with a special prime of [`SPECIAL_PRIME_BITS`], only.
    Hybrid,
}

impl KeySwitching {
    /// `FASTQUERY_KEYSWITCH`: `gadget`, `hybrid`, or `any` (also where it is unset); any other
    /// value is an error that names the variable.
    pub fn from_env() -> Result<Self, ProtocolError> {
        match std::env::var("FASTQUERY_KEYSWITCH").as_deref() {
            Err(_) | Ok("any") => Ok(Self::Any),
            Ok("gadget") => Ok(Self::Gadget),
            Ok("hybrid") => Ok(Self::Hybrid),
            Ok(other) => Err(ProtocolError::State(format!(
                "FASTQUERY_KEYSWITCH={other}: expected gadget, hybrid or any"
            ))),
        }
    }

    /// The special-prime sizes the candidates try: 0 (the gadget key switch) and
    /// [`SPECIAL_PRIME_BITS`] (hybrid), or one of them.
    pub fn special_bits(self) -> &'static [u32] {
        match self {
            Self::Any => &[0, SPECIAL_PRIME_BITS],
            Self::Gadget => &[0],
            Self::Hybrid => &[SPECIAL_PRIME_BITS],
        }
    }

    /// The wire code (`Info`): 0, 1, 2.
    pub fn code(self) -> u32 {
        match self {
            Self::Any => 0,
            Self::Gadget => 1,
            Self::Hybrid => 2,
        }
    }

    /// The kind of a wire code.
    pub fn from_code(code: u32) -> Option<Self> {
        [Self::Any, Self::Gadget, Self::Hybrid].into_iter().find(|k| k.code() == code)
    }
}

/// Every folded design for an `m x d` table of `table_bits` bits in `Z_2^plain_bits` at
/// `tokens` tokens that holds its noise, ranked by bytes (query and response, and the request's
/// part of the setup where `allowed` knows the session's tokens; within [`BYTES_TIE`] of the
/// fewest, by estimated server time, and those within [`TIME_TIE`] of the fastest of them by
/// bytes again); the best first. `allowed` says which key switching they may use, how many
/// responses may share one `c`, and how long a session is.
pub fn candidates(
    id: u8,
    name: &'static str,
    (m, d, table_bits): (usize, usize, u32),
    plain_bits: u32,
    tokens: usize,
    allowed: Allowed,
) -> Vec<(FoldDesign, WireBytes, f64)> {
    let Allowed { keyswitch, session_tokens, decode_tokens, device, .. } = allowed;
    // Ties rank by the time of the reference CPU, or of a GPU where the server has one.
    let server = Server { threads: REFERENCE_THREADS as usize, device };
    let caps = allowed.caps();
    let mut out = Vec::new();
    for n in [4096usize, 8192, 16384] {
        let limit = security_limit(n).unwrap_or(0);
        // Without a special prime, and with one (hybrid key switching: one digit per limb, and
        // RGSW digits as wide as its smaller noise allows).
        let specials = keyswitch.special_bits();
        for (limbs, &special_bits) in (3..=8usize).flat_map(|l| specials.iter().map(move |s| (l, s))) {
            let bits = (limit.saturating_sub(special_bits) / limbs as u32).min(31);
            if bits < 28 {
                continue;
            }
            // The response keeps the first primes: smaller ones there shrink every response
            // coefficient (c1 is sent whole) while the chain above keeps the noise budget.
            let shapes = (2..=3usize.min(limbs - 1)).flat_map(|r| {
                [bits, 28, 26, 24].into_iter().filter(move |&b| b <= bits).map(move |b| (r, b))
            });
            for (response_limbs, response_bits) in shapes {
                let mut prime_bits = vec![response_bits; response_limbs];
                prime_bits.resize(limbs, bits);
                let spec =
                    ParamSpec { n, prime_bits, response_limbs, plain_bits, flood_bits: 40, special_bits };
                let Ok(params) = Params::new(spec) else { continue };
                let params = Arc::new(params);
                let digit_pairs: &[(u32, u32)] = if special_bits == 0 {
                    &[(16, 8), (8, 8), (16, 16), (8, 4), (16, 4)]
                } else {
                    let h = HYBRID_DIGIT_BITS;
                    &[(h, h), (h, 16), (h, 8)]
                };
                for &(ks_bits, rgsw_bits) in digit_pairs {
                    let mut m2 = 1;
                    while m2 <= m {
                        // Deeper expansions send fewer query coefficients for more noise: each
                        // level up to log2 N while the noise holds.
                        // Packed responses, one token per response, and packed responses
                        // split by parity (the last two for a c in the half ring).
                        let forms = [ResponseForm::Packed, ResponseForm::Single, ResponseForm::Split];
                        for (form, &max_shared) in
                            forms.into_iter().flat_map(|f| caps.iter().map(move |c| (f, c)))
                        {
                            for extra in 0.. {
                                let Ok(design) = FoldDesign::new(
                                    id,
                                    name,
                                    params.clone(),
                                    (m, d, table_bits),
                                    m2,
                                    ks_bits,
                                    rgsw_bits,
                                    tokens,
                                    extra,
                                    (form, max_shared),
                                ) else {
                                    break;
                                };
                                let bytes = design.predicted_bytes(tokens);
                                let ms = estimate_ms(&design, tokens, server);
                                // Bytes per request, or over the session where it has decode
                                // steps (then with the design's one-token request).
                                let one = || design.predicted_bytes(1);
                                let cost = bytes.over_session(one, tokens, session_tokens, decode_tokens);
                                out.push((design, bytes, ms, cost));
                            }
                        }
                        m2 *= 2;
                    }
                }
            }
        }
    }
    let total = |c: &(FoldDesign, WireBytes, f64, u64)| c.3;
    out.sort_by(|a, b| total(a).cmp(&total(b)).then(a.2.total_cmp(&b.2)));
    // Designs within BYTES_TIE of the fewest bytes count as ties: the fastest of them leads
    // (the last percents of bytes are not worth a fifth of the server's time and keys), where
    // "fastest" is as fine as the estimate: of the ties within TIME_TIE of the fastest, the
    // fewest bytes, then the smaller setup (sharing c1 over three response limbs instead of two
    // doubles its keys for the same bytes per request); the other ties after them by time.
    if let Some(first) = out.first() {
        let limit = total(first) as f64 * (1.0 + BYTES_TIE);
        let ties = out.iter().take_while(|c| total(c) as f64 <= limit).count();
        let fastest = out[..ties].iter().map(|c| c.2).fold(f64::INFINITY, f64::min);
        let near = |c: &(FoldDesign, WireBytes, f64, u64)| c.2 <= fastest * (1.0 + TIME_TIE);
        out[..ties].sort_by(|a, b| {
            near(b).cmp(&near(a)).then_with(|| {
                if near(a) {
                    total(a).cmp(&total(b)).then(a.1.setup.cmp(&b.1.setup)).then(a.2.total_cmp(&b.2))
                } else {
                    a.2.total_cmp(&b.2).then(a.1.setup.cmp(&b.1.setup))
                }
            })
        });
    }
    out.into_iter().map(|(design, bytes, ms, _)| (design, bytes, ms)).collect()
}

/// Each ciphertext `c` followed by `X^-1 c`: the second's even coefficients are the first's
/// odd ones (coefficient `2j + 1` at `2j`), exactly, so the two together keep what `c` kept
/// at even coefficients alone ([`ResponseForm::Split`]).
fn split_by_parity<B: Backend>(
    ring: &Ring<B>,
    cts: Ciphertexts<B, Coeff>,
) -> Result<Ciphertexts<B, Coeff>, ProtocolError> {
    let (count, limbs) = (cts.c0.polys(), cts.c0.shape().limbs);
    let mut shifted = cts.duplicate(ring)?;
    let back = 2 * ring.n() - 1;
    ring.monomial_mul_assign(&mut shifted.c0, back)?;
    ring.monomial_mul_assign(&mut shifted.c1, back)?;
    let mut out = Ciphertexts::zeros(ring, 2 * count, limbs)?;
    for i in 0..count {
        out.copy_from(ring, &cts, i, 2 * i, 1)?;
        out.copy_from(ring, &shifted, i, 2 * i + 1, 1)?;
    }
    Ok(out)
}

/// A session's keys.
struct FoldKeys<B: Backend> {
    pk: ServerKey<B>,
    galois: Vec<ServerGaloisKey<B>>,
    square: ServerGaloisKey<B>,
    /// The keys of responses sharing `c1`, where the design shares it.
    share: Option<ServerShareKeys<B>>,
}

/// The server of a folded design.
pub struct FoldServer<B: Backend> {
    design: FoldDesign,
    ring: Ring<B>,
    records: MacOperand<B>,
    sessions: Sessions<FoldKeys<B>>,
    limits: Limits,
    /// Working memory of one first-dimension product ([`FoldServer::with_batch_bytes`]).
    batch_bytes: usize,
    /// Tokens folded together (FASTQUERY_FOLD_GROUP), where set.
    fold_group: Option<usize>,
    /// A group converts all its index bits in one key switch where one bit's rows are fewer
    /// than this (FASTQUERY_RGSW_MERGE_ROWS; default: the backend's key-switching chunk on an
    /// accelerator or the CUDA emulator, where a small key switch is a chain of launches of a
    /// few blocks, and 0 on the host, where it is not and the merge would only add the slices'
    /// copies).
    merge_rows: usize,
}

/// A group's gadget rows of its index bits, its tokens' rows of a bit token after token.
enum BitRows<B: Backend> {
    /// One batch per bit, each converted by a key switch of its own.
    EachBit(Vec<Ciphertexts<B, Ntt>>),
    /// Every bit in one batch, bit after bit, converted by one key switch (a small group on a
    /// GPU, [`FoldServer::with_merge_rows`]).
    Merged(Ciphertexts<B, Ntt>),
}

impl<B: Backend> BitRows<B> {
    /// The batch that holds bit `b` of `bits`, and where its rows start in it.
    fn of_bit(&mut self, b: usize, bits: usize) -> (&mut Ciphertexts<B, Ntt>, usize) {
        match self {
            Self::EachBit(each) => (&mut each[b], 0),
            Self::Merged(all) => {
                let stride = all.len() / bits;
                (all, b * stride)
            }
        }
    }
}

/// The default bound on a batch's working memory on the CPU: 4 GiB, 31 tokens of llama-7b
/// (there the product is compute-bound, and one query ciphertext of 32 tokens already reuses
/// each table word 64 times). FASTQUERY_FOLD_BATCH_MIB overrides it.
pub const DEFAULT_BATCH_BYTES: usize = 4 << 30;
/// The default on an accelerator: 24 GiB (at most a third of its memory), the four query
/// ciphertexts of 128 llama-7b tokens in one product (17.3 GB with their RGSW ciphertexts), so
/// that the table is read from memory once per request, not once per ciphertext
/// (docs/BENCHMARKS.md).
pub const DEFAULT_ACCELERATOR_BATCH_BYTES: usize = 24 << 30;

/// The working-memory bound from FASTQUERY_FOLD_BATCH_MIB (`value`; whole MiB, 0 for one query
/// ciphertext at a time), or the default: [`DEFAULT_BATCH_BYTES`] on the host, on an accelerator
/// [`DEFAULT_ACCELERATOR_BATCH_BYTES`] or a third of its memory (`memory`, where known) if that
/// is less (the table and the keys share it). Anything else is an error naming the variable.
fn batch_bytes_from(
    value: Option<&str>,
    accelerator: bool,
    memory: Option<u64>,
) -> Result<usize, ProtocolError> {
    let default = match (accelerator, memory) {
        (false, _) => DEFAULT_BATCH_BYTES,
        (true, None) => DEFAULT_ACCELERATOR_BATCH_BYTES,
        (true, Some(m)) => DEFAULT_ACCELERATOR_BATCH_BYTES.min(usize::try_from(m / 3).unwrap_or(usize::MAX)),
    };
    match value.map(str::trim) {
        None => Ok(default),
        Some(v) => v.parse::<usize>().map(|mib| mib.saturating_mul(1 << 20)).map_err(|_| {
            ProtocolError::State(format!("FASTQUERY_FOLD_BATCH_MIB must be a whole number of MiB, not '{v}'"))
        }),
    }
}

impl<B: Backend> std::fmt::Debug for FoldServer<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FoldServer").field("scheme", &self.design.name).finish_non_exhaustive()
    }
}

impl<B: Backend> FoldServer<B> {
    /// Preprocesses `table` once: every record encoded and transformed on `backend`, as the
    /// `m1 x (m2 pieces)` operand of the multiply-accumulate.
    pub fn new(backend: Arc<B>, table: &IntTable, design: FoldDesign) -> Result<Self, ProtocolError> {
        if (table.m(), table.d()) != (design.m, design.d) {
            return Err(ProtocolError::State("the table does not match the design".into()));
        }
        let info = backend.info();
        let env = std::env::var("FASTQUERY_FOLD_BATCH_MIB").ok();
        let batch_bytes = batch_bytes_from(env.as_deref(), info.accelerator, info.memory)?;
        let fold_group = env_number("FASTQUERY_FOLD_GROUP", 1..=1 << 20)?;
        let merge_rows = env_number("FASTQUERY_RGSW_MERGE_ROWS", 0..=1 << 30)?
            .unwrap_or(if info.accelerator || backend.gpu() { backend.keyswitch_chunk() } else { 0 });
        let ring = Ring::new(backend, design.params.ring().clone())?;
        let l = design.layout;
        let n = design.params.n();
        let cols = l.m2 * l.pieces;
        let (m, d) = (design.m, design.d);
        let records = encode_mac_operand(&ring, &design.params, (l.m1, cols), |idx, poly| {
            poly.iter_mut().for_each(|v| *v = 0);
            let (i, col) = (idx / cols, idx % cols);
            let (g, p) = (col / l.pieces, col % l.pieces);
            let a = g * l.m1 + i;
            for h in 0..l.rows_per_record {
                let r = a * l.rows_per_record + h;
                if r >= m {
                    break;
                }
                // Rows of a record interleave: row h's channel c at coefficient c R + h.
                let width = (d - p * n).min(n);
                for j in 0..width {
                    poly[j * l.rows_per_record + h] = i64::from(table.get(r, p * n + j));
                }
            }
        })?;
        Ok(Self {
            design,
            ring,
            records,
            sessions: Sessions::new(),
            limits: Limits::default(),
            batch_bytes,
            fold_group,
            merge_rows,
        })
    }

    fn session(&self, id: u64) -> Result<Arc<FoldKeys<B>>, ProtocolError> {
        self.sessions.get(id)
    }

    /// Bytes a batch of query ciphertexts holds at once, per token: its rows of the first
    /// dimension's operand and of the product (`2 (m1 + m2 pieces)` polynomials) and its RGSW
    /// ciphertexts (four `G x 1` operands per index bit), all at full width.
    pub fn batch_bytes_per_token(&self) -> usize {
        let d = &self.design;
        let polys = 2 * (d.layout.m1 + d.layout.m2 * d.layout.pieces) + 4 * d.index_bits() * d.gadget_len();
        polys * d.params.limbs() * d.params.n() * 4
    }

    /// Query ciphertexts per first-dimension product: as many as the working-memory bound
    /// holds (at least one). One product of `2 T` rows reads the table once for `T` tokens; a
    /// GPU's tensor-core kernel needs the rows to be a real matrix (docs/BENCHMARKS.md).
    fn cts_per_batch(&self) -> usize {
        let per_ct = self.batch_bytes_per_token() * self.design.layout.tokens_per_ct;
        (self.batch_bytes / per_ct.max(1)).max(1)
    }

    /// Bounds the working memory of one first-dimension product (default
    /// [`DEFAULT_BATCH_BYTES`] on the CPU, [`DEFAULT_ACCELERATOR_BATCH_BYTES`] on a GPU, or
    /// FASTQUERY_FOLD_BATCH_MIB): the query ciphertexts of a request
    /// are expanded and multiplied by the table together as far as their operands fit.
    pub fn with_batch_bytes(mut self, bytes: usize) -> Self {
        self.batch_bytes = bytes;
        self
    }

    /// Converts a group's index bits in one key switch where one bit's rows are fewer than
    /// `rows` (0: each bit alone; default the backend's key-switching chunk on an accelerator, 0
    /// on the host, or FASTQUERY_RGSW_MERGE_ROWS). The same RGSW ciphertexts either way.
    pub fn with_merge_rows(mut self, rows: usize) -> Self {
        self.merge_rows = rows;
        self
    }

    /// The expanded slots of one query ciphertext (its `tokens` tokens), written into rows
    /// `2 t0 + 2 t` (c0) and `2 t0 + 2 t + 1` (c1) of the first dimension's operand `a`, and
    /// each token's gadget rows of index bit `b` into `bits[group][b]`, the tokens in groups of
    /// `at_once` (token `t0 + t` is number `(t0 + t) % at_once` of its group, its rows from
    /// there times `G`: token after token, for [`rgsw_sets_from_rows_ntt`]), or, where a group
    /// holds one batch for all its bits, bit `b`'s rows `b` times the group's tokens' further on
    /// (for [`rgsw_bits_from_rows_ntt`]).
    fn expand_into(
        &self,
        keys: &FoldKeys<B>,
        ct: Ciphertexts<B>,
        tokens: usize,
        (a, bits, at_once): (&mut Polys<B, Ntt>, &mut [BitRows<B>], usize),
        t0: usize,
    ) -> Result<(), ProtocolError> {
        let d = &self.design;
        let (params, l) = (&d.params, d.layout);
        let slots = d.slots_per_token();
        let layout = SlotLayout::new(l.k, tokens * slots)?;
        // Slots stay where the expansion's last level wrote them (slot s at s), in the NTT
        // domain, where the first dimension's product and the RGSW operands take them.
        // (Keeping the level buffers between requests was measured slower in the five-scheme
        // run: the first dimension's buffers then came from fresh pages; docs/BENCHMARKS.md.)
        let expanded = expand_positioned_ntt(&self.ring, params, ct, layout, &keys.galois)?;
        // Row 2t holds token t's one-hot c0s, row 2t + 1 its c1s.
        for t in 0..tokens {
            let row = 2 * (t0 + t);
            self.ring.copy_polys(&expanded.c0, t * slots, a, row * l.m1, l.m1)?;
            self.ring.copy_polys(&expanded.c1, t * slots, a, (row + 1) * l.m1, l.m1)?;
        }
        // A bit's gadget rows of this ciphertext's tokens in one group, in one move per half.
        let g = d.gadget_len();
        let (first, last) = (t0 / at_once, (t0 + tokens - 1) / at_once);
        let index_bits = d.index_bits();
        for (group, rows) in bits.iter_mut().enumerate().take(last + 1).skip(first) {
            let mine = (t0.max(group * at_once) - t0)..(tokens.min((group + 1) * at_once - t0));
            for b in 0..index_bits {
                let (rows, base) = rows.of_bit(b, index_bits);
                let moves: Vec<(usize, usize)> = mine
                    .clone()
                    .flat_map(|t| {
                        let at = base + (t0 + t) % at_once * g;
                        (0..g).map(move |e| (t * slots + l.m1 + b * g + e, at + e))
                    })
                    .collect();
                self.ring.copy_polys_at(&expanded.c0, &mut rows.c0, &moves)?;
                self.ring.copy_polys_at(&expanded.c1, &mut rows.c1, &moves)?;
            }
        }
        Ok(())
    }

    /// The folded ciphertexts (`pieces` per token) of the tokens of a batch of query
    /// ciphertexts (`(ciphertext, tokens)`): each expanded, then one first-dimension product
    /// for all their tokens, then the tokens folded together in groups, level by level. A
    /// group's RGSW of an index bit holds that bit of each of its tokens ([`Rgsw::sets`]) and
    /// its product rows are moved so that the tokens take turns (ciphertext `i T + t` is token
    /// `t`'s `i`-th), so each CMux level is one batch of the group's tokens' ciphertexts. A
    /// group is every token of the batch where the backend does not bound its host threads (a
    /// GPU: one token's levels were small launches, the last of one ciphertext), and as many
    /// tokens as it has threads where it does (the CPU: the moved rows then cost no more memory
    /// than two tokens' halves, as when tokens folded side by side). FASTQUERY_FOLD_GROUP (1 to
    /// 2^20 tokens) sets the group instead: `1` folds one token at a time, the A/B of a GPU run.
    fn fold_batch(
        &self,
        keys: &FoldKeys<B>,
        batch: Vec<(Ciphertexts<B>, usize)>,
        trace: &mut crate::trace::Phases,
    ) -> Result<Ciphertexts<B>, ProtocolError> {
        let d = &self.design;
        let (params, l) = (&d.params, d.layout);
        let limbs = params.limbs();
        let tokens: usize = batch.iter().map(|(_, t)| t).sum();
        let ring = &self.ring;
        // The phase's host steps (FASTQUERY_TRACE): where its host time goes, to find what
        // keeps the device waiting at one token.
        let mut clock = StepClock::start();
        let at_once =
            self.fold_group.or(ring.backend().host_threads()).unwrap_or(tokens).clamp(1, tokens.max(1));
        let groups: Vec<(usize, usize)> =
            (0..tokens).step_by(at_once).map(|g0| (g0, at_once.min(tokens - g0))).collect();
        let mut a: Polys<B, Ntt> = ring.zeros(Shape::new(2 * tokens * l.m1, limbs))?;
        let g = d.gadget_len();
        let index_bits = d.index_bits();
        // A group whose bits are small batches converts them in one key switch.
        let merged = |here: usize| index_bits > 1 && here * g < self.merge_rows;
        let mut bits: Vec<BitRows<B>> = groups
            .iter()
            .map(|&(_, here)| -> Result<_, fastquery_he::HeError> {
                Ok(if merged(here) {
                    BitRows::Merged(Ciphertexts::zeros(ring, index_bits * here * g, limbs)?)
                } else {
                    BitRows::EachBit(
                        (0..index_bits)
                            .map(|_| Ciphertexts::zeros(ring, here * g, limbs))
                            .collect::<Result<_, _>>()?,
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        clock.lap(trace, "buffers");
        let mut t0 = 0;
        for (ct, here) in batch {
            self.expand_into(keys, ct, here, (&mut a, &mut bits, at_once), t0)?;
            t0 += here;
        }
        clock.lap(trace, "expand");
        // A group's RGSW of a bit from one key switch with the key for s^2, or all its bits'
        // from one.
        let rgsws: Vec<Vec<Rgsw<B>>> = bits
            .into_iter()
            .map(|group| -> Result<Vec<Rgsw<B>>, fastquery_he::HeError> {
                match group {
                    BitRows::Merged(rows) => {
                        rgsw_bits_from_rows_ntt(ring, params, rows, index_bits, &keys.square, l.rgsw_bits)
                    }
                    BitRows::EachBit(each) => each
                        .into_iter()
                        .map(|rows| rgsw_sets_from_rows_ntt(ring, params, rows, &keys.square, l.rgsw_bits))
                        .collect(),
                }
            })
            .collect::<Result<_, _>>()?;
        clock.lap(trace, "rgsw");
        trace.mark("expand+rgsw");
        let cols = l.m2 * l.pieces;
        let mut out: Polys<B, Ntt> = ring.zeros(Shape::new(2 * tokens * cols, limbs))?;
        ring.mac_laid_out(&mut out, &a, &self.records, 2 * tokens, false)?;
        drop(a);
        trace.mark("mac");
        let group_bits = l.m2.ilog2() as usize;
        let fold_group =
            |(g0, here): (usize, usize), rgsws: &[Rgsw<B>]| -> Result<Ciphertexts<B>, ProtocolError> {
                // Token g0 + t's columns `from..from + count` (rows 2 (g0 + t) and 2 (g0 + t) + 1 of
                // the product), column `from + c` as ciphertext c here + t.
                let turns = |from: usize, count: usize| -> Result<Ciphertexts<B, Ntt>, ProtocolError> {
                    let mut cts: Ciphertexts<B, Ntt> = Ciphertexts::zeros(ring, count * here, limbs)?;
                    for (half, polys) in [&mut cts.c0, &mut cts.c1].into_iter().enumerate() {
                        let moves: Vec<(usize, usize)> = (0..here)
                            .flat_map(|t| {
                                let row = 2 * (g0 + t) + half;
                                (0..count).map(move |c| (row * cols + from + c, c * here + t))
                            })
                            .collect();
                        ring.copy_polys_at(&out, polys, &moves)?;
                    }
                    Ok(cts)
                };
                // The fold stays in the NTT domain where the product left it: each CMux level sends
                // only its differences back for their digits, and the result goes back once at the
                // end. The first level takes its two halves straight from the product.
                let mut cur = match rgsws[..group_bits].first() {
                    Some(bit) => cmux_pair(ring, turns(0, cols / 2)?, turns(cols / 2, cols / 2)?, bit)?,
                    None => turns(0, cols)?,
                };
                for bit in rgsws[..group_bits].iter().skip(1) {
                    cur = cmux_halves(ring, cur, bit)?;
                }
                // Row h moves to the multiples of R: times X^-h, one bit of h at a time.
                for (u, bit) in rgsws[group_bits..].iter().enumerate() {
                    cur = cmux_rotate(ring, params, cur, 1 << u, bit)?;
                }
                Ok(cur.inverse(ring)?)
            };
        if let [only] = groups[..]
            && l.pieces == 1
        {
            let cur = fold_group(only, &rgsws[0])?;
            trace.mark("fold");
            return Ok(cur);
        }
        // Piece i of the group's token t (at i here + t) to (g0 + t) pieces + i.
        let mut folded = Ciphertexts::zeros(ring, tokens * l.pieces, limbs)?;
        for (&(g0, here), rgsws) in groups.iter().zip(&rgsws) {
            let cur = fold_group((g0, here), rgsws)?;
            let moves: Vec<(usize, usize)> = (0..here)
                .flat_map(|t| (0..l.pieces).map(move |i| (i * here + t, (g0 + t) * l.pieces + i)))
                .collect();
            ring.copy_polys_at(&cur.c0, &mut folded.c0, &moves)?;
            ring.copy_polys_at(&cur.c1, &mut folded.c1, &moves)?;
        }
        trace.mark("fold");
        Ok(folded)
    }
}

impl<B: Backend> SchemeServer for FoldServer<B> {
    fn name(&self) -> &'static str {
        self.design.name
    }

    fn summary(&self) -> ParamSummary {
        self.design.summary()
    }

    fn preprocess_bytes(&self) -> usize {
        self.records.shape().words(self.design.params.n()) * 4
    }

    fn predicted_bytes(&self, tokens: usize) -> Option<WireBytes> {
        Some(self.design.predicted_bytes(tokens))
    }
    fn predicted_operations(&self, tokens: usize) -> Option<crate::Operations> {
        let (key_switches, external_products, mac_products) = self.design.operations(tokens);
        Some(crate::Operations { key_switches, external_products, mac_products })
    }

    fn open_session(&self, setup: &[u8]) -> Result<u64, ProtocolError> {
        let d = &self.design;
        let elements = d.key_elements();
        let (pk, mut keys, share) = decode_setup(
            &d.params,
            d.id,
            setup,
            self.limits,
            (&elements, d.layout.ks_bits),
            d.layout.sharing(),
        )?;
        let square = keys.pop().ok_or_else(|| ProtocolError::State("no key for s^2".into()))?;
        let load = |k| load_galois_key(&self.ring, &d.params, k, d.layout.ks_bits);
        let keys = FoldKeys {
            pk: load_public_key(&self.ring, &d.params, &pk)?,
            galois: keys.iter().map(load).collect::<Result<_, _>>()?,
            square: load(&square)?,
            share: share
                .map(|k| load_share_keys(&self.ring, &d.params, &k, d.layout.sharing()))
                .transpose()?,
        };
        self.sessions.open(keys)
    }

    fn close_session(&self, session: u64) {
        self.sessions.close(session);
    }

    fn sessions(&self) -> usize {
        self.sessions.len()
    }

    fn answer(&self, session: u64, query: &[u8]) -> Result<(Vec<u8>, Shares), ProtocolError> {
        let d = &self.design;
        let mut trace = crate::trace::Phases::new(d.name).waiting_on(self.ring.backend());
        let keys = self.session(session)?;
        let params = &d.params;
        let sent_for = |t: usize| d.query_sent(t).unwrap_or_default();
        let (tokens, cts) = decode_query_sent(params, d.id, query, &sent_for, self.limits)?;
        trace.mark("decode");
        let per = d.layout.tokens_per_ct;
        let mut folded = Ciphertexts::zeros(&self.ring, tokens * d.layout.pieces, params.limbs())?;
        let cts_per_batch = self.cts_per_batch();
        for (b, chunk) in cts.chunks(cts_per_batch).enumerate() {
            let first = b * cts_per_batch * per; // the batch's first token
            let mut clock = StepClock::start();
            let batch = chunk
                .iter()
                .enumerate()
                .map(|(i, ct)| {
                    let here = per.min(tokens - first - i * per);
                    Ok((load_ciphertexts(&self.ring, params, std::slice::from_ref(ct))?, here))
                })
                .collect::<Result<Vec<_>, ProtocolError>>()?;
            let here: usize = batch.iter().map(|(_, t)| t).sum();
            clock.lap(&mut trace, "load");
            let part = self.fold_batch(&keys, batch, &mut trace)?;
            folded.copy_from(&self.ring, &part, 0, first * d.layout.pieces, here * d.layout.pieces)?;
        }
        let folded = if d.layout.pack > 1 {
            let pack = d.layout.pack;
            let mut padded = Ciphertexts::zeros(&self.ring, tokens.div_ceil(pack) * pack, params.limbs())?;
            padded.copy_from(&self.ring, &folded, 0, 0, tokens)?;
            pack_strided(&self.ring, params, padded, pack, &keys.galois)?
        } else {
            folded
        };
        let folded = if d.layout.split { split_by_parity(&self.ring, folded)? } else { folded };
        trace.mark("pack");
        let mut clock = StepClock::start();
        let layout = d.positions(tokens);
        let positions: Vec<Vec<usize>> = layout.iter().map(|v| v.iter().map(|p| p.0).collect()).collect();
        clock.lap(&mut trace, "positions");
        let fin = finish(
            &self.ring,
            params,
            &keys.pk,
            &d.noise,
            folded.c0,
            folded.c1,
            &positions,
            keys.share.as_ref(),
            &mut rand::rng(),
        )?;
        trace.steps(&fin.steps);
        let mut clock = StepClock::start();
        let shares = place_shares(tokens, d.d, params.plain_bits(), &layout, &fin.shares);
        let response = encode_response(
            params,
            d.id,
            (d.noise.drop_bits, d.noise.c1_bits),
            &fin.responses,
            d.layout.sharing(),
        )?;
        clock.lap(&mut trace, "encode");
        trace.mark("finish+encode");
        Ok((response, shares))
    }
}

/// The client of a folded design.
pub struct FoldClient {
    design: FoldDesign,
    he: Client,
    state: ClientState,
    limits: Limits,
}

impl std::fmt::Debug for FoldClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FoldClient")
            .field("scheme", &self.design.name)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl FoldClient {
    /// A client with a fresh secret key.
    pub fn new(design: FoldDesign) -> Result<Self, ProtocolError> {
        let he = Client::new(design.params.clone())?;
        Ok(Self { design, he, state: ClientState::Fresh, limits: Limits::default() })
    }
}

impl SchemeClient for FoldClient {
    fn setup(&mut self) -> Result<Vec<u8>, ProtocolError> {
        if self.state != ClientState::Fresh {
            return Err(ProtocolError::State("setup was already sent".into()));
        }
        let d = &self.design;
        let elements = d.key_elements();
        let mut keys = self.he.galois_keys(&elements[..elements.len() - 1], d.layout.ks_bits)?;
        keys.push(self.he.square_key(d.layout.ks_bits));
        let sharing = d.layout.sharing();
        let share = if sharing.keyed() { Some(self.he.share_keys(sharing)?) } else { None };
        self.state = ClientState::Ready;
        Ok(encode_setup(&d.params, d.id, &self.he.public_key(), &keys, share.as_ref()))
    }

    fn query(&mut self, ids: &[usize]) -> Result<Vec<u8>, ProtocolError> {
        check_query(&self.state, ids.len(), self.limits.max_tokens)?;
        let d = &self.design;
        if let Some(&bad) = ids.iter().find(|&&r| r >= d.m) {
            return Err(ProtocolError::State(format!("token id {bad} is not below m = {}", d.m)));
        }
        let (params, l) = (&d.params, d.layout);
        let (slots, g) = (d.slots_per_token(), d.gadget_len());
        let group_bits = l.m2.ilog2() as usize;
        let one_hot = one_hot_slot(params, l.k)?;
        let mut msgs = Vec::new();
        for chunk in ids.chunks(l.tokens_per_ct) {
            let mut msg = Vec::new();
            let layout = SlotLayout::new(l.k, chunk.len() * slots)?;
            for (t, &r) in chunk.iter().enumerate() {
                let (i, group, h) = d.locate(r);
                let base = t * slots;
                msg.push((layout.position(base + i), one_hot.clone()));
                let bits = (0..group_bits)
                    .map(|b| (group >> (group_bits - 1 - b)) & 1 == 1)
                    .chain((0..l.rows_per_record.ilog2()).map(|u| (h >> u) & 1 == 1));
                for (b, bit) in bits.enumerate().filter(|(_, bit)| *bit) {
                    for e in 0..g {
                        let slot = layout.position(base + l.m1 + b * g + e);
                        msg.push((slot, gadget_slot(params, l.k, l.rgsw_bits, e, bit)?));
                    }
                }
            }
            msgs.push(msg);
        }
        let cts = self.he.encrypt_raw(&msgs)?;
        self.state = ClientState::Waiting { ids: ids.to_vec() };
        Ok(encode_query_sent(params, d.id, ids.len(), &cts, &d.query_sent(ids.len())?))
    }

    fn decode(&mut self, response: &[u8]) -> Result<Shares, ProtocolError> {
        let ClientState::Waiting { ids } = &self.state else {
            return Err(ProtocolError::State("no query is pending".into()));
        };
        let tokens = ids.len();
        let d = &self.design;
        let shares = decode_shares(
            &self.he,
            d.id,
            response,
            (&d.positions(tokens), d.layout.sharing()),
            (tokens, d.d),
            self.limits,
        )?;
        self.state = ClientState::Ready;
        Ok(shares)
    }
}

#[cfg(test)]
mod tests {
    use super::{DEFAULT_ACCELERATOR_BATCH_BYTES, DEFAULT_BATCH_BYTES, batch_bytes_from};

    /// The byte counts of the design search come from counted `c0` coefficients; they are
    /// the lengths of the positions the server keeps and the client reads, for every candidate
    /// of shapes with one row per record, several, and rows split into pieces, at token counts
    /// that fill the last response ciphertext or leave it partial.
    #[test]
    fn counted_coefficients_are_the_positions_kept() {
        for (m, d) in [(300usize, 40usize), (2000, 700), (100, 5000), (64, 4096), (8, 8200)] {
            for tokens in [1usize, 3, 8] {
                let designs = super::candidates(9, "t", (m, d, 5), 37, tokens, super::Allowed::default());
                assert!(!designs.is_empty(), "{m} x {d}");
                for (design, _, _) in &designs {
                    let positions = design.positions(tokens);
                    let listed: Vec<usize> = positions.iter().map(Vec::len).collect();
                    assert_eq!(
                        design.kept(tokens),
                        listed,
                        "{m} x {d}, {tokens} tokens: {:?}",
                        design.layout
                    );
                    assert_eq!(design.response_cts(tokens), positions.len());
                    // Each response's positions are in increasing order, each once, and every
                    // coordinate of every token is kept exactly once across the responses.
                    for v in &positions {
                        assert!(v.windows(2).all(|w| w[0].0 < w[1].0), "{:?}: out of order", design.layout);
                    }
                    let mut count = vec![0u8; tokens * d];
                    positions.iter().flatten().for_each(|p| count[p.1 * d + p.2] += 1);
                    assert!(count.iter().all(|&k| k == 1), "{m} x {d}, {tokens} tokens: {:?}", design.layout);
                }
            }
        }
    }

    /// The ranking: the first design is within BYTES_TIE of the fewest bytes and within
    /// TIME_TIE of the fastest estimate among those, and no design that is both has fewer bytes.
    #[test]
    fn the_first_design_has_the_fewest_bytes_among_near_fastest_ties() {
        // (llama-30b: the fastest tie sends 3.2 KB per token more than a near-fastest one.)
        for (m, d, tokens) in [(2000usize, 700usize, 8usize), (300, 40, 3), (4096, 512, 1), (32000, 6656, 8)]
        {
            let all = super::candidates(9, "t", (m, d, 4), 37, tokens, super::Allowed::default());
            let total = |b: &super::WireBytes| b.query + b.response;
            let fewest = all.iter().map(|c| total(&c.1)).min().unwrap();
            let ties: Vec<_> = all
                .iter()
                .filter(|c| total(&c.1) as f64 <= fewest as f64 * (1.0 + super::BYTES_TIE))
                .collect();
            let fastest = ties.iter().map(|c| c.2).fold(f64::INFINITY, f64::min);
            let near: Vec<_> = ties.iter().filter(|c| c.2 <= fastest * (1.0 + super::TIME_TIE)).collect();
            let first = &all[0];
            assert!(
                near.iter().any(|c| std::ptr::eq(**c, first)),
                "{m} x {d}: the first is not a near-fastest tie"
            );
            assert_eq!(total(&first.1), near.iter().map(|c| total(&c.1)).min().unwrap(), "{m} x {d}");
        }
    }

    #[test]
    fn the_batch_bound_comes_from_whole_mib_or_the_backend_default() {
        assert_eq!(batch_bytes_from(None, false, None).unwrap(), DEFAULT_BATCH_BYTES);
        assert_eq!(batch_bytes_from(None, true, None).unwrap(), DEFAULT_ACCELERATOR_BATCH_BYTES);
        // An accelerator's memory caps the default at a third of it.
        assert_eq!(batch_bytes_from(None, true, Some(80 << 30)).unwrap(), DEFAULT_ACCELERATOR_BATCH_BYTES);
        assert_eq!(batch_bytes_from(None, true, Some(24 << 30)).unwrap(), 8 << 30);
        assert_eq!(batch_bytes_from(None, false, Some(24 << 30)).unwrap(), DEFAULT_BATCH_BYTES);
        assert_eq!(batch_bytes_from(Some(" 512 "), true, Some(1 << 30)).unwrap(), 512 << 20);
        assert_eq!(batch_bytes_from(Some("0"), false, None).unwrap(), 0);
        for bad in ["", "-1", "1.5", "4G", "lots"] {
            let e = batch_bytes_from(Some(bad), false, None).unwrap_err().to_string();
            assert!(e.contains("FASTQUERY_FOLD_BATCH_MIB must be a whole number"), "{e}");
        }
    }
}
