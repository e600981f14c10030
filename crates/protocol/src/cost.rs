//! The server the design search estimates for, and what a design costs on a GPU.
//!
//! The latency objectives rank designs by an estimate of the server's time. The CPU's model
//! ([`crate::fastquery`] and [`crate::fold`]) counts work and divides it by the server's
//! threads; on a GPU that model was 6-27 times off with no common factor (an H200, 2026-12-04,
//! docs/BENCHMARKS.md), and `fastquery-lan` took a one-token design 1.45 times slower there than
//! `fastquery`'s. A GPU is not bound by the work of a request but by its **chains**: the
//! expansion's levels, the fold's levels and the finish's stages each wait for the one before,
//! and a level of a few key switches occupies a few blocks of the device for as long as one
//! block takes to transform its digit rows in turn. So the GPU profile prices each dependent
//! level as the larger of a latency and its batch's throughput time, and the host's part of the
//! finish per response.
//!
//! Which server it is ([`Device`]) is a design input ([`crate::harness::DesignInputs::device`]):
//! the server says so in its `Info`, and the client derives the same design.

use serde::Serialize;

use crate::{ProtocolError, blocked::Design, fold::FoldDesign, harness::SchemeDesign};

/// What the server computes on: a design input, for the cost model only (every design runs on
/// every backend).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum Device {
    /// The CPU backend (or any backend ranked like it).
    #[default]
    Cpu,
    /// An NVIDIA GPU (the CUDA backend), at the costs of [`gpu_fold_phases`] and
    /// [`gpu_blocked_phases`].
    Gpu,
}

impl Device {
    /// The wire code (`Info`): 0, 1.
    pub fn code(self) -> u32 {
        match self {
            Self::Cpu => 0,
            Self::Gpu => 1,
        }
    }

    /// The device of a wire code.
    pub fn from_code(code: u32) -> Option<Self> {
        [Self::Cpu, Self::Gpu].into_iter().find(|d| d.code() == code)
    }

    /// Its name in reports and in `FASTQUERY_COST_DEVICE`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Gpu => "gpu",
        }
    }

    /// `FASTQUERY_COST_DEVICE`: `cpu` or `gpu` ranks the designs for that server whatever the
    /// backend (for A/B runs: a GPU server running the design a CPU's model ranks first);
    /// `backend` where it is unset; any other value is an error that names the variable.
    pub fn from_env(backend: Self) -> Result<Self, ProtocolError> {
        match std::env::var("FASTQUERY_COST_DEVICE").as_deref() {
            Err(_) => Ok(backend),
            Ok(v) => [Self::Cpu, Self::Gpu].into_iter().find(|d| d.name() == v).ok_or_else(|| {
                ProtocolError::State(format!("FASTQUERY_COST_DEVICE={v}: expected cpu or gpu"))
            }),
        }
    }
}

/// The server a design's time is estimated for: its host threads and its device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Server {
    /// Threads of the host (the CPU model divides its work by them).
    pub threads: usize,
    /// Where the server computes.
    pub device: Device,
}

impl Server {
    /// A CPU server of `threads` threads.
    pub fn cpu(threads: usize) -> Self {
        Self { threads, device: Device::Cpu }
    }
}

/// A request's estimated GPU time by phase, ms, as `FASTQUERY_TRACE=sync` times them (each
/// phase waits for the device before it ends); [`GpuPhases::served_ms`] is a request's time
/// without the waits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct GpuPhases {
    /// Reading the query and whatever the request pays once.
    pub decode: f64,
    /// The query's expansion (or, for a blocked design, its ciphertexts' upload and
    /// transforms) and the RGSW conversion.
    pub expand: f64,
    /// The table product.
    pub product: f64,
    /// The fold's CMux levels.
    pub fold: f64,
    /// Packing key switches.
    pub pack: f64,
    /// Re-randomisation, flooding, the `c1` switch, modulus switching and the encoding.
    pub finish: f64,
    /// The served request's time against the phases' sum ([`GPU_OVERLAP`] for a folded
    /// design, whose host and device work overlap where nothing waits; 1 for a blocked one).
    pub overlap: f64,
}

impl GpuPhases {
    /// The phases' sum: a request's time with every phase synchronised.
    pub fn synchronised_ms(&self) -> f64 {
        self.decode + self.expand + self.product + self.fold + self.pack + self.finish
    }

    /// A request's time as served: the synchronised sum times the overlap.
    pub fn served_ms(&self) -> f64 {
        self.synchronised_ms() * self.overlap
    }
}

/// The H200's profile (2026-12-04, thirty-first session, docs/BENCHMARKS.md "CUDA backend on
/// an NVIDIA H200"): llama-7b requests of `fastquery` (one and eight tokens, phases with
/// `FASTQUERY_TRACE=sync`) and `cheetah` (per-token phases), and the criterion kernels. Every
/// key-switch cost is at the reference shape (N = 8192, a hybrid key switch of five limbs: five
/// digit rows into six limbs) and scales with the transform work of a design's shape.
///
/// * [`GPU_KS_US`]: a key switch in a batch of 256 (`cuda/keyswitch_hybrid/8192/5`, 3.51 us).
/// * [`GPU_EXPAND_KS_US`], [`GPU_LEVEL_US`]: an expansion step per ciphertext of a large level,
///   and the time of a level of few key switches (a fused block transforms its digit rows in
///   turn, so a level of one key switch runs a handful of blocks as long as one takes). Fitted
///   to the synchronised expansion and RGSW conversion of one token (13 levels of 1 to 83 key
///   switches, then eight conversions of five rows, one per index bit: 2.7-3.5 ms) and eight
///   (levels of 1 to 660, then each token's eight conversions: 15.5-17.3 ms): 5.8 and 125 us
///   give 3.1 and 16.4 ms.
/// * [`GPU_EXT_LEVEL_US`]: a fold level of few external products, with the external product
///   priced at the transform work of its RGSW digit rows against the key switch's
///   ([`GPU_KS_US`], 5.8 us at the reference). The one-token fold, eight levels of 64 to 1
///   products, took 1.4-1.5 ms: 150 us gives 1.46 (and the eight-token fold of the time,
///   each token's chain after the other's, 11.7 ms against 12.0-12.4 measured).
/// * [`GPU_TABLE_BYTES_PER_S`], [`GPU_PRODUCTS_PER_S`]: the table product within a request
///   (2.62 GB in 1.2 ms at one token; 10.5 G coefficient products in 5.2 ms at eight tokens).
/// * [`GPU_FINISH_REQUEST_MS`], [`GPU_FINISH_NS_PER_WORD`]: the finish (mostly the host's:
///   noise words, the zero encryption's parts, the responses' encoding) of one response
///   (2.1 ms) and of eight sharing one `c1` (6.0-9.6 ms), per word of a response's `c0` at
///   its response limbs (two at llama-7b: 16,384 words).
/// * [`GPU_QUERY_NS_PER_WORD`], [`GPU_RESPONSE_NS_PER_WORD`]: a blocked design's query
///   ciphertexts (read, seeds expanded, uploaded, transformed) and responses, per word: of
///   cheetah's 7.8 ms per token (eight tokens), its 179 responses of 16,384 words took 2.8 ms
///   and its product 0.39 ms; the rest (its expansion phase, 3.3 ms, and the reading of 10 MB
///   of query) is put on its 180 query ciphertexts.
/// * [`GPU_REQUEST_MS`]: a folded request's reading of its query (0.1-0.3 ms).
/// * [`GPU_OVERLAP`]: a folded request served against synchronised (6.0 / 8.4 ms at one
///   token, 34 / 42.5 at eight).
///
/// Held out of the fit and checked in `crates/protocol/tests/gpu_costs.rs`: llama-30b, and the
/// one-token design `fastquery-lan` took on the H200.
pub const GPU_KS_US: f64 = 3.5;
/// See [`GPU_KS_US`].
pub const GPU_EXPAND_KS_US: f64 = 5.8;
/// See [`GPU_KS_US`].
pub const GPU_LEVEL_US: f64 = 125.0;
/// See [`GPU_KS_US`].
pub const GPU_EXT_LEVEL_US: f64 = 150.0;
/// See [`GPU_KS_US`].
pub const GPU_TABLE_BYTES_PER_S: f64 = 2.2e12;
/// See [`GPU_KS_US`].
pub const GPU_PRODUCTS_PER_S: f64 = 2.0e12;
/// See [`GPU_KS_US`].
pub const GPU_FINISH_REQUEST_MS: f64 = 1.25;
/// See [`GPU_KS_US`].
pub const GPU_FINISH_NS_PER_WORD: f64 = 49.0;
/// See [`GPU_KS_US`].
pub const GPU_QUERY_NS_PER_WORD: f64 = 1.56;
/// See [`GPU_KS_US`].
pub const GPU_RESPONSE_NS_PER_WORD: f64 = 0.95;
/// See [`GPU_KS_US`].
pub const GPU_REQUEST_MS: f64 = 0.2;
/// See [`GPU_KS_US`].
pub const GPU_OVERLAP: f64 = 0.75;

/// Transform work of the reference key switch: five digit rows into six limbs at N = 8192.
const REFERENCE_WORK: f64 = 5.0 * 6.0 * 8192.0 * 13.0;
/// Transform work of one row at the reference degree (a level's latency scales with the rows a
/// block transforms in turn).
const REFERENCE_ROW: f64 = 5.0 * 8192.0 * 13.0;

/// The cost of a dependent level of `count` operations, each `per_us` in a large batch, none
/// faster than `latency_us` together: ms.
fn level_ms(count: usize, per_us: f64, latency_us: f64) -> f64 {
    if count == 0 { 0.0 } else { (count as f64 * per_us).max(latency_us) / 1e3 }
}

/// `n log2 n`.
fn transform(n: usize) -> f64 {
    n as f64 * (n as f64).log2()
}

/// A key switch of `rows` digit rows into `limbs` limbs at degree `n`: its time in a large
/// batch ([`GPU_KS_US`] at the reference's transform work) and a level's latency (`latency_us`
/// at the reference's five rows, for the rows a block transforms in turn), us.
fn key_switch_us(rows: usize, limbs: usize, n: usize, latency_us: f64) -> (f64, f64) {
    (
        GPU_KS_US * (rows * limbs) as f64 * transform(n) / REFERENCE_WORK,
        latency_us * rows as f64 * transform(n) / REFERENCE_ROW,
    )
}

/// The host threads of the profile's machine (the H200's VM), for the host's parts it takes
/// from the CPU model.
const GPU_HOST_THREADS: f64 = 16.0;

/// How a GPU server runs a folded request: its tokens fold `group` at a time (the CUDA backend
/// folds a whole request together), and a group converts all its index bits in one key switch
/// where one bit's rows are fewer than `merge_rows` (the backend's key-switching chunk; 0: each
/// bit alone, as before 2026-12-04).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FoldRun {
    /// Tokens folded together.
    pub group: usize,
    /// A bit's rows under which a group's bits convert together.
    pub merge_rows: usize,
}

impl FoldRun {
    /// The CUDA backend's way with a `tokens`-token request: every token together, bits
    /// together below its key-switching chunk of 256 ciphertexts.
    pub fn cuda(tokens: usize) -> Self {
        Self { group: tokens, merge_rows: 256 }
    }
}

/// A folded design's estimated GPU phases for a `tokens`-token request run as `run` says.
pub fn gpu_fold_phases(design: &FoldDesign, tokens: usize, run: FoldRun) -> GpuPhases {
    let p = &design.params;
    let l = &design.layout;
    let (n, limbs) = (p.n(), p.limbs());
    let group = run.group.clamp(1, tokens.max(1));
    // A key switch: its digit rows transformed into every limb of the key.
    let (key_rows, key_limbs) = fastquery_he::galois::key_shape(p, l.ks_bits);
    let (ks_us, ks_latency) = key_switch_us(key_rows, key_limbs, n, GPU_LEVEL_US);
    let step_us = GPU_EXPAND_KS_US / GPU_KS_US * ks_us;
    // An external product: the RGSW gadget's digit rows of both halves, each into every limb
    // (a level's latency that of one half's rows).
    let rgsw_rows = design.gadget_len();
    let (ext_us, _) = key_switch_us(2 * rgsw_rows, limbs, n, 0.0);
    let (_, ext_latency) = key_switch_us(rgsw_rows, limbs, n, GPU_EXT_LEVEL_US);

    // Each query ciphertext expands level after level (its own chain).
    let layouts = design.slot_layouts(tokens).unwrap_or_default();
    let mut expand: f64 = layouts
        .iter()
        .map(|s| (0..l.k).map(|j| level_ms(s.split(j), step_us, ks_latency)).sum::<f64>())
        .sum();
    // The RGSW conversion: per group of tokens folded together, a key switch per index bit, or
    // one for all of them where a bit's rows are few.
    let bits = design.index_bits();
    for start in (0..tokens).step_by(group) {
        let rows = group.min(tokens - start) * rgsw_rows;
        expand += if bits > 1 && rows < run.merge_rows {
            level_ms(bits * rows, ks_us, ks_latency)
        } else {
            bits as f64 * level_ms(rows, ks_us, ks_latency)
        };
    }

    // The table product: two rows per token against every record.
    let records = (l.m1 * l.m2 * l.pieces) as f64 * (limbs * n * 4) as f64;
    let products = design.operations(tokens).2 as f64;
    let product = (records / GPU_TABLE_BYTES_PER_S).max(products / GPU_PRODUCTS_PER_S) * 1e3;

    // The fold: per group, log2 m2 levels halving the groups, then one level per row bit.
    let mut fold = 0.0;
    for start in (0..tokens).step_by(group) {
        let batch = group.min(tokens - start) * l.pieces;
        let mut width = l.m2 / 2;
        while width >= 1 {
            fold += level_ms(batch * width, ext_us, ext_latency);
            width /= 2;
        }
        for _ in 0..l.rows_per_record.ilog2() {
            fold += level_ms(batch, ext_us, ext_latency);
        }
    }

    // Packing: each level of PackLWEs halves the ciphertexts.
    let mut pack = 0.0;
    let mut cts = tokens.div_ceil(l.pack) * l.pack;
    let mut width = l.pack;
    while width > 1 {
        cts /= 2;
        pack += level_ms(cts, ks_us, ks_latency);
        width /= 2;
    }

    // The finish: the host's part per response word, and the c1 switch's stages on the device
    // (keys of the response limbs and the special prime: hybrid, one digit row per limb).
    let responses = design.response_cts(tokens);
    let lr = p.response_limbs();
    let (share_us, share_latency) = key_switch_us(lr, lr + 1, n, GPU_LEVEL_US);
    let sharing = l.sharing();
    let mut instances = responses;
    let mut switch = 0.0;
    for (sources, targets) in sharing.stages() {
        switch += level_ms(instances * (targets + 1).div_ceil(2), share_us, share_latency);
        instances = instances.div_ceil(sources);
    }
    let finish =
        GPU_FINISH_REQUEST_MS + responses as f64 * (lr * n) as f64 * GPU_FINISH_NS_PER_WORD / 1e6 + switch;
    GpuPhases { decode: GPU_REQUEST_MS, expand, product, fold, pack, finish, overlap: GPU_OVERLAP }
}

/// A blocked design's estimated GPU phases for a `tokens`-token request.
pub fn gpu_blocked_phases(design: &Design, tokens: usize) -> GpuPhases {
    let p = &design.params;
    let (n, limbs) = (p.n(), p.limbs());
    let words = (n * limbs) as f64;
    let groups = design.groups(tokens) as f64;
    let (ib, ob) = (design.layout.in_blocks() as f64, design.layout.out_blocks() as f64);
    let expand = groups * ib * words * GPU_QUERY_NS_PER_WORD / 1e6;
    let pts_bytes = ib * ob * words * 4.0;
    let products = 2.0 * groups * ib * ob * words;
    let mut product = (pts_bytes / GPU_TABLE_BYTES_PER_S).max(products / GPU_PRODUCTS_PER_S) * 1e3;
    // Plaintexts past the preprocessing budget are encoded for every request on the host and
    // uploaded (not measured on a GPU: the CPU's encoding on the host's threads, and the bus
    // at the 25 GB/s of a PCIe 5 x16 link's practice).
    if pts_bytes > crate::blocked::PREPROCESS_BUDGET as f64 {
        product += pts_bytes / 4.0 * crate::fastquery::ENCODE_NS_PER_WORD / GPU_HOST_THREADS / 1e6
            + pts_bytes / 25e9 * 1e3;
    }
    let pack = match design.packing {
        None => 0.0,
        Some(pk) => {
            let (key_rows, key_limbs) = fastquery_he::galois::key_shape(p, pk.digit_bits);
            let (ks_us, ks_latency) = key_switch_us(key_rows, key_limbs, n, GPU_LEVEL_US);
            // Per group, PackLWEs' levels over its output blocks, each halving the ciphertexts.
            let per_level = design.responses_per_group() as f64 * groups;
            let mut ms = 0.0;
            let mut width = pk.count;
            while width > 1 {
                width /= 2;
                ms += level_ms((per_level * width as f64).ceil() as usize, ks_us, ks_latency);
            }
            ms
        }
    };
    let responses = groups * design.responses_per_group() as f64;
    // A rounded c1 is rounded on the host (the CPU's cost on its threads).
    let round = if design.noise.c1_bits > 0 {
        responses * n as f64 * crate::fastquery::ROUND_SERVER_NS_PER_COEFF / GPU_HOST_THREADS
    } else {
        0.0
    };
    let finish = (responses * words * GPU_RESPONSE_NS_PER_WORD + round) / 1e6;
    GpuPhases { decode: GPU_REQUEST_MS, expand, product, fold: 0.0, pack, finish, overlap: 1.0 }
}

/// A design's estimated GPU phases for a `tokens`-token request, folded designs run as `run`
/// says.
pub fn gpu_phases(design: &SchemeDesign, tokens: usize, run: FoldRun) -> GpuPhases {
    match design {
        SchemeDesign::Folded(f) => gpu_fold_phases(f, tokens, run),
        SchemeDesign::Blocked(b) => gpu_blocked_phases(b, tokens),
    }
}
