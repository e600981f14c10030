//! Scheme `fastquery`: the paper's two ideas in this engine, with everything one-hotness gives.
//!
//! * **Quantized table** (the quantizer crate): per-channel widths under an average budget,
//!   with the widest channel capped ([`WireCost`]): in this layout every entry takes one
//!   coefficient whatever its width, so what a width costs on the wire is the noise it adds
//!   through `max|Q|`, which sets the modulus every query coefficient carries.
//! * **One-hot-aware parameters**: `t = 2^l` holds one entry (no accumulation), the noise grows
//!   with `max|Q|` times the query noise (not `m max|Q|`), and the chain is the smallest whose
//!   computed bound holds with flooding ([`choose`] tries every candidate and keeps what the
//!   noise analysis accepts).
//! * **One-hot-aware dense packing**: Cheetah's split with a power-of-two input block, so that
//!   the products' channels sit on a stride, and PackLWEs packs `pack` products into one
//!   response in which every kept coefficient is a requested entry. Unpacked designs take any
//!   of Cheetah's splits (the widest input block for each output block).
//! * **A cost model over the candidates** (ring degree, chain, split, packing): exact wire bytes
//!   ([`Design::predicted_bytes`], equal to the encoded messages) and an operation-count
//!   estimate of the server's time calibrated on this engine; the design that minimises the
//!   [`Objective`] is kept (`fastquery`: bytes, the paper's aim; `fastquery-wan` and
//!   `fastquery-lan`: latency on the WAN and LAN models), and printed with its predicted bytes;
//!   [`choose_any`] ranks these designs and the folded ones of [`crate::fold`] together.
//! * **Batching**: one request carries all its tokens (one query and one response message).

use std::sync::Arc;

use fastquery_he::{ParamSpec, Params, security_limit};
use fastquery_pack::CheetahLayout;
use serde::Serialize;

use crate::{
    ProtocolError,
    blocked::{Design, Packing, WireBytes},
    cost::{Device, Server},
    harness::{Link, SchemeDesign},
};

/// Wire id of the scheme.
pub const SCHEME_ID: u8 = 4;

/// Gadget digit width of the Galois keys.
pub const DIGIT_BITS: u32 = 16;

/// The quantizer's cost model for this scheme: a channel's width costs its bits against the
/// accuracy budget, and widths above `max_bits` are refused (they would raise `max|Q|`, hence
/// the noise, hence the modulus of every query coefficient).
#[derive(Clone, Copy, Debug)]
pub struct WireCost {
    /// Widest channel allowed.
    pub max_bits: u32,
}

impl fastquery_quant::CostModel for WireCost {
    fn cost(&self, _channel: usize, bits: u32) -> u64 {
        if bits <= self.max_bits { u64::from(bits) } else { u64::MAX / (1 << 20) }
    }
}

/// What the cost model minimises. Both parties rank the same candidates, so an objective holds
/// only public inputs: the server's threads and device are among them
/// ([`crate::harness::DesignInputs::server`]), never the machine the ranking runs on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Objective {
    /// Bytes of query and response (the paper's aim); ties by latency on the WAN model for a
    /// one-thread server.
    Bytes,
    /// Estimated latency per token on `link` (bytes, round trip and the estimated time of
    /// `server`: a CPU's threads, or a GPU's profile, [`crate::cost`]).
    Latency {
        /// The link model.
        link: Link,
        /// The server the time is estimated for.
        server: Server,
    },
}

/// One candidate of the cost model, and what it predicts.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Choice {
    /// Ring degree.
    pub n: usize,
    /// Prime sizes of the chain.
    pub prime_bits: Vec<u32>,
    /// Limbs kept after switching.
    pub response_limbs: usize,
    /// Input block (Cheetah's split, a power of two where packed; Iron's `kw` for a token
    /// blocking).
    pub d1: usize,
    /// Output rows per product (Iron's `mw`).
    pub d0: usize,
    /// Products packed per response ciphertext (1: none).
    pub pack: usize,
    /// Bits of each `c1` coefficient of a response where `c1` is rounded (0: sent whole).
    pub c1_bits: u32,
    /// Exact bytes of the request the model was asked about.
    pub predicted: WireBytes,
    /// Estimated server time for the request (ms).
    pub server_ms: f64,
    /// Estimated client time for the request (ms, [`CLIENT_THREADS`] threads): its queries'
    /// encryption and its responses' decryption.
    pub client_ms: f64,
    /// Estimated latency per token under the link (ms).
    pub latency_ms_per_token: f64,
}

/// Per-operation costs of the blocked designs' server phases on this engine's CPU backend, for
/// the cost model (ns of one thread; the estimate divides by the server's threads). Measured
/// per phase (`FASTQUERY_TRACE`) on the 2-vCPU AVX-512 VM of docs/BENCHMARKS.md on 2026-12-03
/// (twenty-sixth session), on cheetah's one-token requests and fastquery-lan's, iron's and
/// bumblebee's eight-token requests at llama-7b and llama-30b (a "word" is one coefficient of
/// one limb):
///
/// * the query's expansion (seed expansion, upload and transform): 7.4-7.7 ns per word of the
///   query's ciphertexts since the twenty-seventh session's stream reading (cheetah 11.4 and
///   13.8 ms for 180 and 227 ciphertexts, fastquery-lan 114-140 ms for 2,000 once its buffers
///   are pooled; 10-11 ns before);
/// * the table product: 0.09-0.1 ns per coefficient product (fastquery-lan's eight tokens,
///   8.5 G products in 385-477 ms, 13.7 G in 631-675 ms), but never faster than the table
///   streams ([`TABLE_STREAM_BYTES_PER_S`]);
/// * plaintexts encoded per request (past the preprocessing budget: iron's blocking): 4.8 ns
///   per plaintext word (iron's 4.2 G words in 9.3-11.6 s at llama-7b);
/// * each response ciphertext's inverse transform, re-randomisation, flooding, switch and
///   encoding: 13.5-17.9 ns per word of its `c0` since the twenty-ninth session's finish of
///   `c0` at its kept coefficients alone (cheetah 19.2-20.2 ms for 179 responses and
///   fastquery-lan 264-284 ms for 2,048 at llama-7b, cheetah 28-55 ms, median 34, for 230 and
///   fastquery-lan 229-287 ms for 1,664 at llama-30b; fitted at 15.5); 17.6-19.1 ns after the
///   twenty-eighth session's one-pass products by the public key, 20.6-21.5 ns after the
///   twenty-seventh session's vectorised zero-noise sampler, 30-40 ns before;
/// * packed products' inverse transforms `0.2 N log2 N` a row (bumblebee), and a key switch of
///   the packing 1.75 times its transforms and digit products (bumblebee's 4,095 per token at
///   llama-7b: 0.67 ms each on two threads).
///
/// Until this calibration the model counted transforms only (`0.1 N log2 N`) and 0.35 ns per
/// product: it put a one-token cheetah request at 1.33-1.50x its measured time, fastquery-lan's
/// eight tokens at 1.6-1.8x, iron's at 0.4x and bumblebee's at 2.3-2.7x (the bench's
/// "estimated / measured" lines).
const EXPAND_NS_PER_WORD: f64 = 7.6;
const MAC_NS: f64 = 0.095;
pub(crate) const ENCODE_NS_PER_WORD: f64 = 4.8;
const FINISH_NS_PER_WORD: f64 = 15.5;
const NTT_NS_PER_BUTTERFLY: f64 = 0.2;
/// A rounded `c1` ([`Design::with_rounded_c1`]), per coefficient of every response: the server
/// rounds it once in its finish and the encoder writes the rounded values (since 2026-12-04;
/// before, the finish rounded it, lifted it back and the encoder rounded it again: 49-53 ns of
/// one thread in the thirtieth session's traces of `fastquery-lan` with rounding, 7.5 M
/// coefficients a llama-7b request). Scaled by what the one rounding is of those three passes
/// in `cargo bench -p fastquery-benches --bench wire` (`c1_round` 22.4 ns and `c1_lift` 13.2 ns
/// a coefficient on two threads: 22.4 of 58.0, 2026-12-04 on the 2-vCPU AVX2 VM): 19 ns. The
/// client reads and lifts it (about 15 ns, within this VM's noise).
pub(crate) const ROUND_SERVER_NS_PER_COEFF: f64 = 19.0;
const ROUND_CLIENT_NS_PER_COEFF: f64 = 15.0;
const KEYSWITCH_OVERHEAD: f64 = 1.75;
/// Bytes per second the multiply-accumulate streams the preprocessed table at, at most: the
/// folded designs' floor too ([`crate::fold::RECORD_STREAM_BYTES_PER_S`], measured on the
/// 2-vCPU VM). It was 1.5 GB/s, from the first multiply-accumulate (issue 6), until
/// 2026-12-03: ten times below what cheetah's product measured then (2.1 GB per llama-7b token
/// in 124 ms), so a one-token blocked design was estimated at 1.4 s and `fastquery-lan` took a
/// folded design twice as slow as cheetah's layout (docs/BENCHMARKS.md).
const TABLE_STREAM_BYTES_PER_S: f64 = crate::fold::RECORD_STREAM_BYTES_PER_S;

/// The client's side of a blocked request, per word of its query's ciphertexts (sampling,
/// transforms and the seeded encryption) and per word of its responses (the decryption of the
/// kept coefficients, `c1 s` transformed whole, in parallel over the responses), ns of one
/// thread. Re-fitted in the twenty-seventh session, after the encryption's products went to
/// Shoup form and the decryption parallel: per llama-7b token cheetah's 180 queries and 179
/// responses took 19.9 ms on two threads, fastquery-lan's 250 and 128 25.8-28.7 ms, and at
/// llama-30b cheetah's 227 and 230 23.7 ms, fastquery-lan's 250 and 208 26.2 ms; the response
/// cost is the profile's (`perf`: 5.4 ms of one thread for 179 responses), the query cost the
/// least-squares fit given it (every run within 7%). Before: 12 and 11 ns, from 31-48 ms. Where the latency objectives rank blocked designs
/// on a fast link, the client's time decides as much as the server's (more query ciphertexts
/// save server work and cost the client's encryption). A folded design's client takes under a
/// millisecond per token (one query ciphertext for eight tokens): not counted.
const CLIENT_QUERY_NS_PER_WORD: f64 = 11.6;
const CLIENT_RESPONSE_NS_PER_WORD: f64 = 2.0;
/// The threads the client's estimate assumes: the reference machine's. The client's machine
/// is not a design input (both parties derive the design from public inputs, and the server
/// does not know its clients), so the ranking assumes one like the reference.
pub const CLIENT_THREADS: f64 = 2.0;

/// The client's estimated time for a `tokens`-token request on a blocked `design`, ms.
pub fn client_estimate_ms(design: &Design, tokens: usize) -> f64 {
    let p = &design.params;
    let words = (p.n() * p.limbs()) as f64;
    let groups = design.groups(tokens) as f64;
    let queries = groups * design.layout.in_blocks() as f64;
    let responses = groups * design.responses_per_group() as f64;
    let rounded =
        if design.noise.c1_bits > 0 { responses * p.n() as f64 * ROUND_CLIENT_NS_PER_COEFF } else { 0.0 };
    ((queries * CLIENT_QUERY_NS_PER_WORD + responses * CLIENT_RESPONSE_NS_PER_WORD) * words + rounded)
        / CLIENT_THREADS
        / 1e6
}

/// The estimated server time of a `tokens`-token request on a blocked `design`, ms: the CPU
/// model at the server's threads, or the GPU profile ([`crate::cost::gpu_blocked_phases`]).
fn estimate_ms(design: &Design, tokens: usize, server: Server) -> f64 {
    match server.device {
        Device::Cpu => cpu_estimate_ms(design, tokens, server.threads.max(1) as f64),
        Device::Gpu => crate::cost::gpu_blocked_phases(design, tokens).served_ms(),
    }
}

fn cpu_estimate_ms(design: &Design, tokens: usize, threads: f64) -> f64 {
    let p = &design.params;
    let (n, l) = (p.n() as f64, p.limbs() as f64);
    let ntt = NTT_NS_PER_BUTTERFLY * n * n.log2();
    let groups = design.groups(tokens) as f64;
    let (ib, ob) = (design.layout.in_blocks() as f64, design.layout.out_blocks() as f64);
    let words = l * n;
    let pts_bytes = ib * ob * words * 4.0;
    let expand_ns = groups * ib * words * EXPAND_NS_PER_WORD;
    let mac_ns =
        (2.0 * groups * ib * ob * words * MAC_NS / threads).max(pts_bytes / TABLE_STREAM_BYTES_PER_S * 1e9);
    // Plaintexts past the server's budget are encoded, a transform per block and limb, for every
    // request ([`crate::blocked::PREPROCESS_BUDGET`]; the default, not the environment's, so that
    // both parties rank alike): Iron's token blocking of a LLaMA table holds 17 GB of them.
    let encode_ns = if pts_bytes > crate::blocked::PREPROCESS_BUDGET as f64 {
        ib * ob * words * ENCODE_NS_PER_WORD
    } else {
        0.0
    };
    // Packed products are transformed back before the packing (unpacked ones in the finish).
    let (pack_ns, inverse_ns) = match design.packing {
        None => (0.0, 0.0),
        Some(pk) => {
            let digits = fastquery_he::galois::gadget(p, pk.digit_bits).1 as f64;
            let ks = groups * design.keyswitches_per_group() as f64;
            let one =
                KEYSWITCH_OVERHEAD * ((digits * l * l + 2.0 * l) * ntt + digits * l * 2.0 * words * MAC_NS);
            (ks * one, 2.0 * groups * ob * l * ntt)
        }
    };
    let responses = groups * design.responses_per_group() as f64;
    let round_ns = if design.noise.c1_bits > 0 { responses * n * ROUND_SERVER_NS_PER_COEFF } else { 0.0 };
    let finish_ns = responses * words * FINISH_NS_PER_WORD + round_ns;
    ((expand_ns + encode_ns + inverse_ns + pack_ns + finish_ns) / threads + mac_ns) / 1e6
}

/// The candidates' designs for an `m x d` table of `table_bits` signed bits, share ring
/// `2^plain_bits`, requests of `tokens` tokens, ranked by `objective`; the best first.
pub fn candidates(
    m: usize,
    d: usize,
    table_bits: u32,
    plain_bits: u32,
    tokens: usize,
    objective: Objective,
) -> Result<Vec<(Choice, Design)>, ProtocolError> {
    let (link, server) = match objective {
        Objective::Bytes => (crate::harness::WAN, Server::cpu(1)),
        Objective::Latency { link, server } => (link, server),
    };
    let mut out = Vec::new();
    // Everything else a choice reports is read off its design.
    let push = |out: &mut Vec<(Choice, Design)>, design: Design, (d1, d0): (usize, usize)| {
        let predicted = design.predicted_bytes(tokens);
        let server_ms = estimate_ms(&design, tokens, server);
        let client_ms = client_estimate_ms(&design, tokens);
        let bytes = (predicted.query + predicted.response) as f64;
        let latency = link.latency_ms(server_ms + client_ms, bytes, 1.0) / tokens as f64;
        let spec = design.params.spec();
        let choice = Choice {
            n: spec.n,
            prime_bits: spec.prime_bits.clone(),
            response_limbs: spec.response_limbs,
            d1,
            d0,
            pack: design.packing.map_or(1, |p| p.count),
            c1_bits: design.noise.c1_bits,
            predicted,
            server_ms,
            client_ms,
            latency_ms_per_token: latency,
        };
        out.push((choice, design));
    };
    // Each design twice where rounding `c1` saves bytes: with `c1` whole, and rounded (fewer
    // bytes for more of the server's and the client's time); the objective chooses.
    let push_both = |out: &mut Vec<(Choice, Design)>, design: Design, split: (usize, usize)| {
        let rounded = design.clone().with_rounded_c1();
        if rounded.noise.c1_bits > 0 {
            push(out, rounded, split);
        }
        push(out, design, split);
    };
    for n in [4096usize, 8192] {
        let limit = security_limit(n).unwrap_or(0);
        for limbs in 2..=8usize {
            let bits = (limit / limbs as u32).min(31);
            if bits < 20 {
                continue;
            }
            for response_limbs in 1..=limbs {
                let spec = ParamSpec {
                    n,
                    prime_bits: vec![bits; limbs],
                    response_limbs,
                    plain_bits,
                    flood_bits: 40,
                    special_bits: 0,
                };
                // A response modulus the client's decryption cannot hold (above 2^126) is no
                // candidate: the search listed such designs, and a server refused them.
                let Ok(params) = Params::new(spec) else { continue };
                if params.response_modulus().is_err() {
                    continue;
                }
                let params = Arc::new(params);
                // Every design of these parameters that the noise analysis accepts.
                let design = |layout: Arc<dyn fastquery_pack::BlockLayout>, packing: Option<Packing>| {
                    Design::new(SCHEME_ID, "fastquery", params.clone(), layout, packing, table_bits).ok()
                };
                // Iron's token blocking (no packing: its outputs are not on a stride).
                if tokens > 1
                    && let Ok(layout) = fastquery_pack::IronLayout::choose(m, d, n, tokens)
                    && let Some(design) = design(Arc::new(layout), None)
                {
                    push_both(&mut out, design, (layout.kw, layout.mw));
                }
                // Splits from 64 rows up while half of one still holds fewer than m rows; 64
                // always, so that a table of up to 32 rows has a design too (without it, a
                // one-token request on such a table had no blocked candidate at all and
                // fastquery-wan failed).
                let mut d1 = 64;
                while d1 <= n && (d1 == 64 || d1 / 2 < m) {
                    let d0 = (n / d1).min(d);
                    let layout = CheetahLayout { m, d, n, d0, d1 };
                    let out_blocks = layout.out_blocks();
                    let mut packs = vec![1usize];
                    let mut pk = 2;
                    while pk <= d1 && pk / 2 < out_blocks {
                        packs.push(pk);
                        pk *= 2;
                    }
                    for pack in packs {
                        let packing = (pack > 1).then_some(Packing { count: pack, digit_bits: DIGIT_BITS });
                        if let Some(design) = design(Arc::new(layout), packing) {
                            push_both(&mut out, design, (d1, d0));
                        }
                    }
                    d1 *= 2;
                }
                // Unpacked, the input block need not be a power of two (only PackLWEs needs the
                // products' channels on a stride): Cheetah's other splits, the widest input
                // block for each output block of at most `n / 64` rows, as above while half
                // of one holds fewer than `m` rows.
                for d0 in 1..=(n / 64).min(d) {
                    let d1 = n / d0;
                    if d1.is_power_of_two() || d1 / 2 >= m {
                        continue;
                    }
                    if let Some(design) = design(Arc::new(CheetahLayout { m, d, n, d0, d1 }), None) {
                        push_both(&mut out, design, (d1, d0));
                    }
                }
            }
        }
    }
    if out.is_empty() {
        return Err(ProtocolError::State(format!(
            "no fastquery design holds the noise of a {table_bits}-bit table in Z_2^{plain_bits}"
        )));
    }
    let bytes = |c: &Choice| c.predicted.query + c.predicted.response;
    match objective {
        Objective::Bytes => out.sort_by(|a, b| {
            bytes(&a.0).cmp(&bytes(&b.0)).then(a.0.latency_ms_per_token.total_cmp(&b.0.latency_ms_per_token))
        }),
        Objective::Latency { .. } => {
            out.sort_by(|a, b| a.0.latency_ms_per_token.total_cmp(&b.0.latency_ms_per_token))
        }
    }
    Ok(out)
}

/// The design the cost model picks, with its choice.
pub fn choose(
    m: usize,
    d: usize,
    table_bits: u32,
    plain_bits: u32,
    tokens: usize,
    objective: Objective,
) -> Result<(Choice, Design), ProtocolError> {
    Ok(candidates(m, d, table_bits, plain_bits, tokens, objective)?.swap_remove(0))
}

/// The design the `objective` ranks first among the blocked candidates of [`candidates`] and
/// the folded ones of [`crate::fold::candidates`]: the fewest bytes of query and response (the
/// setup is paid once, or in parts over a session of `allowed.session_tokens` tokens:
/// [`WireBytes::per_request`]), or the least estimated latency per token (the folded designs'
/// server time from [`crate::fold::estimate_ms`] at the objective's server threads, and the
/// same bytes on the link), with that score (bytes per request, or ms per token). Where the
/// session has `allowed.decode_tokens` decode steps, both count the whole session, its
/// one-token requests included ([`WireBytes::over_session`], [`session_latency_ms`]; the
/// score is then bytes per session, or ms per token over it). A tie goes to the blocked design.
pub fn choose_any(
    m: usize,
    d: usize,
    table_bits: u32,
    plain_bits: u32,
    tokens: usize,
    allowed: crate::fold::Allowed,
    objective: Objective,
) -> Result<(SchemeDesign, f64), ProtocolError> {
    // Bytes per request, with the request's part of the setup where the session is known, or
    // over the whole session where it has decode steps. The latency objectives rank a session
    // with decode steps by its whole latency ([`session_latency_ms`]); the folded candidates
    // they score are the same either way.
    let decode = allowed.decode_tokens;
    let allowed = match objective {
        Objective::Bytes => allowed,
        Objective::Latency { .. } => crate::fold::Allowed { decode_tokens: 0, ..allowed },
    };
    let session = allowed.session_tokens.filter(|_| decode > 0);
    let total = |full: WireBytes, one: &dyn Fn() -> WireBytes| {
        full.over_session(one, tokens, allowed.session_tokens, allowed.decode_tokens) as f64
    };
    // `full`: the server's estimated time and the bytes of a full request; `one`: the same
    // for a one-token request (asked for only where the session has decode steps).
    let score = |full: (f64, WireBytes), one: &dyn Fn() -> (f64, WireBytes)| match (objective, session) {
        (Objective::Bytes, _) => total(full.1, &|| one().1),
        (Objective::Latency { link, .. }, Some(s)) => {
            session_latency_ms(link, full, one(), tokens, s, decode)
        }
        (Objective::Latency { link, .. }, None) => {
            link.latency_ms(full.0, total(full.1, &|| full.1), 1.0) / tokens as f64
        }
    };
    let server = match objective {
        Objective::Bytes => Server::cpu(1),
        Objective::Latency { server, .. } => server,
    };
    // The candidates come ranked without the setup; the first of equal scores keeps that order.
    let blocked = candidates(m, d, table_bits, plain_bits, tokens, objective).ok().and_then(|all| {
        all.into_iter()
            .map(|(c, design)| {
                let one = || {
                    (
                        estimate_ms(&design, 1, server) + client_estimate_ms(&design, 1),
                        design.predicted_bytes(1),
                    )
                };
                (score((c.server_ms + c.client_ms, c.predicted), &one), design)
            })
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(score, design)| (SchemeDesign::Blocked(design), score))
    });
    let folds =
        crate::fold::candidates(SCHEME_ID, "fastquery", (m, d, table_bits), plain_bits, tokens, allowed);
    let folded = match objective {
        // The candidates come ranked by bytes (near-equal bytes by estimated time).
        Objective::Bytes => folds.into_iter().next().map(|(f, b, _)| {
            let score = total(b, &|| f.predicted_bytes(1));
            (SchemeDesign::Folded(Box::new(f)), score)
        }),
        Objective::Latency { .. } => folds
            .into_iter()
            .map(|(f, b, _)| {
                let one = || (crate::fold::estimate_ms(&f, 1, server), f.predicted_bytes(1));
                let latency = score((crate::fold::estimate_ms(&f, tokens, server), b), &one);
                (SchemeDesign::Folded(Box::new(f)), latency)
            })
            .min_by(|a, b| a.1.total_cmp(&b.1)),
    };
    match (blocked, folded) {
        (Some(b), Some(f)) => Ok(if b.1 <= f.1 { b } else { f }),
        (Some(pick), None) | (None, Some(pick)) => Ok(pick),
        (None, None) => Err(ProtocolError::State(format!(
            "no fastquery design holds the noise of a {table_bits}-bit table in Z_2^{plain_bits}"
        ))),
    }
}

/// The estimated server time of a `tokens`-token request on `design`, ms, for `server` (a
/// CPU's threads, or a GPU): what the latency objectives rank by, for either kind of
/// design.
pub fn estimated_server_ms(design: &SchemeDesign, tokens: usize, server: Server) -> f64 {
    match design {
        SchemeDesign::Blocked(d) => estimate_ms(d, tokens, server),
        SchemeDesign::Folded(f) => crate::fold::estimate_ms(f, tokens, server),
    }
}

/// The estimated client time of a `tokens`-token request on `design`, ms
/// ([`client_estimate_ms`] for a blocked design; a folded design's client is not counted):
/// with [`estimated_server_ms`], the compute the latency objectives rank by.
pub fn estimated_client_ms(design: &SchemeDesign, tokens: usize) -> f64 {
    match design {
        SchemeDesign::Blocked(d) => client_estimate_ms(d, tokens),
        SchemeDesign::Folded(_) => 0.0,
    }
}

/// The estimated latency per token of a session of `session` tokens on `link`, `decode` of them
/// one per request and the rest in requests of `tokens`: the setup's transfer, then each
/// request's server time, bytes and round trip (`full` and `one`: a full and a one-token
/// request's estimated server ms and bytes; a last, shorter prompt request counted as a full
/// one, as [`WireBytes::session_total`] does).
pub fn session_latency_ms(
    link: Link,
    full: (f64, WireBytes),
    one: (f64, WireBytes),
    tokens: usize,
    session: usize,
    decode: usize,
) -> f64 {
    let (requests, decode) = crate::blocked::session_requests(tokens, session, decode);
    let on = |(ms, b): (f64, WireBytes)| link.latency_ms(ms, (b.query + b.response) as f64, 1.0);
    (link.latency_ms(0.0, full.1.setup as f64, 0.0) + requests as f64 * on(full) + decode as f64 * on(one))
        / session.max(1) as f64
}
