//! The measurement harness: one table, one request, every scheme, one run.
//!
//! Latency follows protocol.md section 6 (Cheetah's link models):
//! `latency = client compute + server compute + bytes / bandwidth + rounds * RTT`, with
//! LAN = 3 Gbps and 0.3 ms RTT, WAN = 400 Mbps and 40 ms RTT. One query and its response are
//! one round. The one-time setup (keys) is reported separately and not in the per-token numbers.

use std::{sync::Arc, time::Instant};

use fastquery_backend::Backend;
use fastquery_table::IntTable;
use serde::Serialize;

use crate::{
    ParamSummary, ProtocolError, SchemeClient, SchemeServer,
    blocked::{BlockedClient, BlockedServer, Design, WireBytes},
    bumblebee, cheetah,
    cost::{Device, Server},
    fastquery,
    fold::{FoldClient, FoldServer, KeySwitching},
    iron,
};

/// FastQuery's table ([`SchemeKind::table`]): bits per entry on average ...
pub const QUANT_BITS: u32 = 4;
/// ... and at most (the widest channel, capped by the scheme's wire cost model).
pub const QUANT_MAX_BITS: u32 = 5;
/// The baselines' table ([`SchemeKind::table`]): bits per entry of the fixed-point encoding ...
pub const FIXED_POINT_BITS: u32 = 16;
/// ... of which fractional.
pub const FIXED_POINT_FRAC: u32 = 12;

/// A network link model.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Link {
    /// Name.
    pub name: &'static str,
    /// Bandwidth in bits per second.
    pub bits_per_s: f64,
    /// Round-trip time in milliseconds.
    pub rtt_ms: f64,
}

/// Cheetah's LAN: 3 Gbps, 0.3 ms.
pub const LAN: Link = Link { name: "LAN", bits_per_s: 3e9, rtt_ms: 0.3 };
/// Cheetah's WAN: 400 Mbps, 40 ms.
pub const WAN: Link = Link { name: "WAN", bits_per_s: 400e6, rtt_ms: 40.0 };

impl Link {
    /// `compute + bytes / bandwidth + rounds * RTT`, in milliseconds.
    pub fn latency_ms(&self, compute_ms: f64, bytes: f64, rounds: f64) -> f64 {
        compute_ms + bytes * 8.0 / self.bits_per_s * 1e3 + rounds * self.rtt_ms
    }
}

/// A scheme's two halves, as the harness drives them.
pub type SchemePair = (Box<dyn SchemeServer>, Box<dyn SchemeClient>);

/// The public inputs from which both parties derive a scheme's design: the server tells the
/// client (a networked server in its `Info`). Nothing else may steer the choice, or a client
/// on another machine would derive another design (the thread count of the machine that ranks
/// the candidates once did, for `fastquery-wan`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct DesignInputs {
    /// Rows of the table.
    pub m: usize,
    /// Channels.
    pub d: usize,
    /// Signed bits of the table's codes.
    pub bits: u32,
    /// The share ring is `Z_2^plain_bits`.
    pub plain_bits: u32,
    /// Tokens per request the design is made for (the most one request may carry).
    pub tokens: usize,
    /// Threads of the server's CPU: `fastquery-wan` ranks designs by latency, with an estimate
    /// of the server's time on them.
    pub server_threads: usize,
    /// Where the server computes (its backend's device, or `FASTQUERY_COST_DEVICE`): a GPU's
    /// estimates are [`crate::cost`]'s profile, not the CPU's work over its threads.
    pub device: Device,
    /// The key switching `fastquery`'s folded designs may use (`FASTQUERY_KEYSWITCH` on the
    /// server, for A/B runs).
    pub keyswitch: KeySwitching,
    /// The most responses of a folded design that share one `c` (1 to
    /// [`fastquery_he::share::MAX_SHARED`]; `FASTQUERY_MAX_SHARED` or `serve --max-shared` on
    /// the server): fewer keys in the setup for more bytes per token.
    pub max_shared: usize,
    /// Tokens a session carries, where the server knows them (`FASTQUERY_SESSION_TOKENS` or
    /// `serve --session-tokens`): `fastquery`'s designs then count each request's part of the
    /// setup ([`crate::fold::Allowed::session_tokens`]).
    pub session_tokens: Option<usize>,
    /// Of a session's tokens, how many arrive one per request (decode steps;
    /// `FASTQUERY_DECODE_TOKENS` or `serve --decode-tokens`, at most `session_tokens`):
    /// `fastquery` then ranks by the whole session's bytes, its latency variants by the whole
    /// session's estimated latency ([`crate::fold::Allowed::decode_tokens`]).
    pub decode_tokens: usize,
}

/// Whether `decode` decode steps fit a session of `session` tokens (`None`: without end, which
/// has none).
pub fn check_session(session: Option<usize>, decode: usize) -> Result<(), ProtocolError> {
    match session {
        None if decode > 0 => Err(ProtocolError::State(format!(
            "{decode} decode tokens without a session (set its tokens too)"
        ))),
        Some(t) if decode > t => {
            Err(ProtocolError::State(format!("{decode} decode tokens in a session of {t}")))
        }
        _ => Ok(()),
    }
}

impl DesignInputs {
    /// `self` where its session is consistent: decode steps only within a declared session,
    /// and no more of them than it has tokens.
    pub fn checked(self) -> Result<Self, ProtocolError> {
        check_session(self.session_tokens, self.decode_tokens).map(|()| self)
    }

    /// What the server allows its folded designs.
    pub fn allowed(&self) -> crate::fold::Allowed {
        crate::fold::Allowed {
            keyswitch: self.keyswitch,
            max_shared: self.max_shared,
            session_tokens: self.session_tokens,
            decode_tokens: self.decode_tokens,
            device: self.device,
        }
    }

    /// The server the latency objectives estimate for.
    pub fn server(&self) -> Server {
        Server { threads: self.server_threads.max(1), device: self.device }
    }

    /// The inputs of a server with `backend`'s threads (its pool on the CPU; the global rayon
    /// pool's where the backend does not bound them) over `table`, with the key switching of
    /// [`KeySwitching::from_env`], the sharing of [`crate::fold::Allowed::max_shared_from_env`]
    /// and the session of [`crate::fold::Allowed::session_tokens_from_env`] and
    /// [`crate::fold::Allowed::decode_tokens_from_env`] (an error where `FASTQUERY_KEYSWITCH`,
    /// `FASTQUERY_MAX_SHARED`, `FASTQUERY_SESSION_TOKENS` or `FASTQUERY_DECODE_TOKENS` has
    /// another value, or the decode steps do not fit the session).
    pub fn for_backend<B: Backend>(
        backend: &B,
        table: &IntTable,
        plain_bits: u32,
        tokens: usize,
    ) -> Result<Self, ProtocolError> {
        Self {
            m: table.m(),
            d: table.d(),
            bits: table.bits(),
            plain_bits,
            tokens,
            server_threads: backend.host_threads().unwrap_or_else(rayon::current_num_threads).max(1),
            device: Device::from_env(if backend.gpu() { Device::Gpu } else { Device::Cpu })?,
            keyswitch: KeySwitching::from_env()?,
            max_shared: crate::fold::Allowed::max_shared_from_env()?,
            session_tokens: crate::fold::Allowed::session_tokens_from_env()?,
            decode_tokens: crate::fold::Allowed::decode_tokens_from_env()?,
        }
        .checked()
    }
}

/// The design a scheme runs: a coefficient-encoded layout, or `fastquery`'s folded query.
#[derive(Clone, Debug)]
pub enum SchemeDesign {
    /// A coefficient-encoded layout (every baseline; `fastquery`'s blocked candidates).
    Blocked(Design),
    /// The compressed query, expanded and folded by the server.
    Folded(Box<crate::fold::FoldDesign>),
}

impl SchemeDesign {
    /// The exact bytes of a `tokens`-token request.
    pub fn predicted_bytes(&self, tokens: usize) -> WireBytes {
        match self {
            Self::Blocked(d) => d.predicted_bytes(tokens),
            Self::Folded(f) => f.predicted_bytes(tokens),
        }
    }

    /// Parameters and layout, for reports.
    pub fn summary(&self) -> ParamSummary {
        match self {
            Self::Blocked(d) => d.summary(),
            Self::Folded(f) => f.summary(),
        }
    }
}

/// The schemes this build implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchemeKind {
    /// Cheetah's layout and parameters, one token per query.
    Cheetah,
    /// Iron's blocking over the tokens of a batch, Cheetah's parameters.
    Iron,
    /// Bumblebee's parameters and split, responses packed with Galois keys.
    Bumblebee,
    /// FastQuery: quantized table, one-hot-aware parameters and packing chosen by a cost model
    /// for the fewest bytes.
    FastQuery,
    /// The same, with the design (blocked or folded) chosen for the least estimated latency
    /// on the WAN model.
    FastQueryWan,
    /// The same on the LAN model.
    FastQueryLan,
}

impl SchemeKind {
    /// Every scheme.
    pub const ALL: [SchemeKind; 6] =
        [Self::Cheetah, Self::Iron, Self::Bumblebee, Self::FastQuery, Self::FastQueryWan, Self::FastQueryLan];

    /// Looks a scheme up by name.
    pub fn parse(name: &str) -> Result<Self, ProtocolError> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| ProtocolError::UnknownScheme(name.into()))
    }

    /// The name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Cheetah => "cheetah",
            Self::Iron => "iron",
            Self::Bumblebee => "bumblebee",
            Self::FastQuery => "fastquery",
            Self::FastQueryWan => "fastquery-wan",
            Self::FastQueryLan => "fastquery-lan",
        }
    }

    /// The share ring this scheme uses by default (`l`).
    pub fn default_plain_bits(self) -> u32 {
        match self {
            Self::Cheetah | Self::Iron | Self::FastQuery | Self::FastQueryWan | Self::FastQueryLan => 37,
            Self::Bumblebee => 64,
        }
    }

    /// Whether this is one of FastQuery's variants (they query the quantized table).
    pub fn is_fastquery(self) -> bool {
        matches!(self, Self::FastQuery | Self::FastQueryWan | Self::FastQueryLan)
    }

    /// Whether one query carries many tokens (Cheetah as published: one token per query).
    pub fn batches_tokens(self) -> bool {
        !matches!(self, Self::Cheetah)
    }

    /// The integer table this scheme queries, from a real one: for FastQuery the quantizer's
    /// per-channel mixed precision at [`QUANT_BITS`] bits on average and at most
    /// [`QUANT_MAX_BITS`] (allocated under the scheme's wire cost); for the baselines
    /// [`FIXED_POINT_BITS`]-bit fixed point with [`FIXED_POINT_FRAC`] fractional bits. Scales
    /// and zero points are public ([`IntTable::row`] gives the integers the shares add up to).
    pub fn table(self, real: &fastquery_table::Table) -> Result<IntTable, ProtocolError> {
        if !self.is_fastquery() {
            return Ok(IntTable::fixed_point(real, FIXED_POINT_FRAC, FIXED_POINT_BITS)?);
        }
        let cost = fastquery::WireCost { max_bits: QUANT_MAX_BITS };
        let budget = u64::from(QUANT_BITS) * real.d() as u64;
        let sensitivity = fastquery_quant::Sensitivity::recommended();
        let (quantized, _) = fastquery_quant::quantize_table(real, &sensitivity, &cost, budget, true)?;
        Ok(quantized.to_int_table()?)
    }

    /// The design both parties derive from the public `inputs` (Iron's blocking depends on the
    /// batch, the latency objectives' ranking on the server's threads).
    pub fn design(self, inputs: &DesignInputs) -> Result<SchemeDesign, ProtocolError> {
        let DesignInputs { m, d, bits, plain_bits, tokens, .. } = *inputs;
        let server = inputs.server();
        let allowed = inputs.allowed();
        let objective = match self {
            Self::Cheetah => return Ok(SchemeDesign::Blocked(cheetah::design(m, d, bits, plain_bits)?)),
            Self::Iron => return Ok(SchemeDesign::Blocked(iron::design(m, d, bits, plain_bits, tokens)?)),
            Self::Bumblebee => return Ok(SchemeDesign::Blocked(bumblebee::design(m, d, bits, plain_bits)?)),
            Self::FastQuery => fastquery::Objective::Bytes,
            Self::FastQueryWan => fastquery::Objective::Latency { link: WAN, server },
            Self::FastQueryLan => fastquery::Objective::Latency { link: LAN, server },
        };
        Ok(fastquery::choose_any(m, d, bits, plain_bits, tokens, allowed, objective)?.0)
    }

    /// A client alone, for a server built on the same `inputs` (a networked client learns
    /// them from the server's `Info`; it never sees the table).
    pub fn client(self, inputs: &DesignInputs) -> Result<Box<dyn SchemeClient>, ProtocolError> {
        Ok(match self.design(inputs)? {
            SchemeDesign::Blocked(design) => Box::new(BlockedClient::new(design, inputs.d)?),
            SchemeDesign::Folded(f) => Box::new(FoldClient::new(*f)?),
        })
    }

    /// Builds the server (preprocessing `table` on `backend`) and a client, for queries of
    /// `tokens` tokens, with the design inputs of [`DesignInputs::for_backend`].
    pub fn build<B: Backend>(
        self,
        backend: Arc<B>,
        table: &IntTable,
        plain_bits: u32,
        tokens: usize,
    ) -> Result<SchemePair, ProtocolError> {
        let inputs = DesignInputs::for_backend(backend.as_ref(), table, plain_bits, tokens)?;
        self.build_for(backend, table, &inputs)
    }

    /// Builds the server (preprocessing `table` on `backend`) and a client on given design
    /// inputs (refused where they do not describe `table`).
    pub fn build_for<B: Backend>(
        self,
        backend: Arc<B>,
        table: &IntTable,
        inputs: &DesignInputs,
    ) -> Result<SchemePair, ProtocolError> {
        check_inputs(inputs, table)?;
        // Both parties derive the same design from public inputs; it is computed once here.
        build_design(backend, table, inputs, self.design(inputs)?)
    }

    /// The scheme's wire id (the `SCHEME_ID` of its design).
    pub fn id(self) -> u8 {
        self as u8 + 1
    }

    /// The scheme of a wire id.
    pub fn from_id(id: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.id() == id)
    }
}

/// Refuses design inputs that do not describe `table`.
fn check_inputs(inputs: &DesignInputs, table: &IntTable) -> Result<(), ProtocolError> {
    if (inputs.m, inputs.d, inputs.bits) != (table.m(), table.d(), table.bits()) {
        return Err(ProtocolError::State(format!(
            "design inputs for a {} x {} table of {}-bit codes, given a {} x {} table of {}-bit codes",
            inputs.m,
            inputs.d,
            inputs.bits,
            table.m(),
            table.d(),
            table.bits()
        )));
    }
    Ok(())
}

/// The server (preprocessing `table` on `backend`) and the client of a design derived from
/// `inputs`, which describe `table` ([`check_inputs`]).
fn build_design<B: Backend>(
    backend: Arc<B>,
    table: &IntTable,
    inputs: &DesignInputs,
    design: SchemeDesign,
) -> Result<SchemePair, ProtocolError> {
    Ok(match design {
        SchemeDesign::Blocked(design) => (
            Box::new(BlockedServer::new(backend, table, design.clone())?),
            Box::new(BlockedClient::new(design, inputs.d)?),
        ),
        SchemeDesign::Folded(f) => {
            (Box::new(FoldServer::new(backend, table, (*f).clone())?), Box::new(FoldClient::new(*f)?))
        }
    })
}

/// One scheme's measurements on one request.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SchemeReport {
    /// Scheme name.
    pub scheme: String,
    /// Every share pair reconstructed the exact table entry (checked, not assumed).
    pub verified: bool,
    /// Query bytes per token, on the wire.
    pub upload_bytes_per_token: f64,
    /// Response bytes per token, on the wire.
    pub download_bytes_per_token: f64,
    /// One-time setup bytes (keys).
    pub setup_bytes: usize,
    /// Server compute per token (the median over the repetitions).
    pub server_ms_per_token: f64,
    /// Server compute per token of each repetition, in order.
    pub server_ms_per_token_runs: Vec<f64>,
    /// Requests sent before the measured ones (verified, not timed).
    pub warm_up_requests: usize,
    /// Client compute per token (query and decode; the median over the repetitions).
    pub client_ms_per_token: f64,
    /// Once-per-table preprocessing time.
    pub preprocess_ms: f64,
    /// Preprocessed table bytes held by the server.
    pub preprocess_bytes: usize,
    /// Query/response round trips per token.
    pub rounds_per_token: f64,
    /// Latency per token on the LAN model.
    pub lan_ms_per_token: f64,
    /// Latency per token on the WAN model.
    pub wan_ms_per_token: f64,
    /// Parameters and layout.
    pub params: ParamSummary,
    /// The design inputs the scheme ran on.
    pub inputs: DesignInputs,
    /// The bytes the scheme's design predicts for this request (setup, query, response); the
    /// measured totals must equal them.
    pub predicted_bytes: Option<WireBytes>,
    /// Measured bytes of the same messages.
    pub measured_bytes: WireBytes,
    /// The work the server asked of its backend for one request (all its queries; counted by
    /// `fastquery_backend::work` in the first repetition).
    pub server_work: fastquery_backend::work::Work,
    /// Device time per kernel over the same request, where the backend times its launches
    /// (`FASTQUERY_CUDA_PROFILE=1`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_times: Option<Vec<fastquery_backend::work::KernelTime>>,
    /// The design's own operation counts for the same request, where it states them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub predicted_operations: Option<crate::Operations>,
    /// The server time per token the design search's cost model estimates for the same
    /// requests on the server's threads ([`crate::fastquery::estimated_server_ms`]; for every
    /// scheme, so that a run shows how well the latency objectives' ranking matches it).
    pub estimated_server_ms_per_token: f64,
    /// Where the server is a GPU ([`DesignInputs::device`]): the profile's phases of the
    /// request's first batch, synchronised ([`crate::cost::gpu_phases`], as
    /// `FASTQUERY_TRACE=sync` times them), so that a run shows which phase it is off in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimated_gpu_phases: Option<crate::cost::GpuPhases>,
    /// Server throughput with several clients' requests answered one by one and in one batch
    /// (when asked for).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batching: Option<BatchReport>,
}

/// Several clients' requests of the same size, answered one by one and then in one
/// [`SchemeServer::answer_many`] call on the same server, every share verified.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BatchReport {
    /// Clients (sessions), one request each.
    pub clients: usize,
    /// Tokens per request.
    pub tokens: usize,
    /// Server time for all requests, one `answer` each.
    pub sequential_ms: f64,
    /// Server time for all requests in one `answer_many`.
    pub batched_ms: f64,
    /// `sequential_ms / batched_ms`.
    pub speedup: f64,
    /// Every share of both runs reconstructed exactly.
    pub verified: bool,
}

/// Whether `got` (reconstructed shares, one row of `d` values per id, row-major) holds exactly
/// the table's rows of `ids` mod `2^plain_bits`.
pub fn rows_match(table: &IntTable, ids: &[usize], plain_bits: u32, got: &[u64]) -> bool {
    let mask = if plain_bits == 64 { u64::MAX } else { (1u64 << plain_bits) - 1 };
    let d = table.d();
    got.len() == ids.len() * d
        && ids.iter().enumerate().all(|(row, &k)| {
            table
                .row(k)
                .iter()
                .zip(&got[row * d..(row + 1) * d])
                .all(|(&q, &g)| g == (i64::from(q) as u64) & mask)
        })
}

/// Every scheme end to end on `backend` (the tiny table, five tokens including block edges,
/// the request sent twice on one session, then a session with a short prompt request and a
/// decode step), each share checked by [`run`] and [`crate::session::run_session`]: the GPU
/// backends' test binaries call this.
pub fn verify_every_scheme<B: Backend>(backend: Arc<B>) -> Result<(), ProtocolError> {
    verify_schemes(backend, &SchemeKind::ALL)
}

/// [`verify_every_scheme`] for the schemes `kinds`.
pub fn verify_schemes<B: Backend>(backend: Arc<B>, kinds: &[SchemeKind]) -> Result<(), ProtocolError> {
    let table = IntTable::fixed_point(
        &fastquery_table::Workload::Tiny.synthetic(3),
        FIXED_POINT_FRAC,
        FIXED_POINT_BITS,
    )?;
    let ids = [0usize, 170, 171, 511, 300];
    for &kind in kinds {
        let r = run(kind, backend.clone(), &table, &ids, kind.default_plain_bits(), 0, (0, 2), &|_| {})?;
        if !r.verified || r.server_ms_per_token_runs.len() != 2 {
            return Err(ProtocolError::State(format!(
                "{}: shares do not reconstruct the table",
                kind.name()
            )));
        }
        // A session on a design for three tokens: a prompt of four (a request of three, then a
        // short one of one) and a decode step; every share exact, every request's bytes as
        // predicted.
        let inputs = DesignInputs {
            session_tokens: Some(ids.len()),
            decode_tokens: 1,
            ..DesignInputs::for_backend(backend.as_ref(), &table, kind.default_plain_bits(), 3)?
        }
        .checked()?;
        let s = crate::session::run_session(kind, backend.clone(), &table, &ids, 1, 0, &inputs, &|_| {})?;
        let predicted = |p: &crate::session::PhaseReport| p.predicted_bytes == Some(p.bytes());
        if !s.verified || !predicted(&s.prompt) || !predicted(&s.decode) {
            return Err(ProtocolError::State(format!(
                "{}: a session's shares or bytes are wrong: {s:?}",
                kind.name()
            )));
        }
    }
    Ok(())
}

/// Measures [`BatchReport`] on a server built on `inputs`: `clients` fresh clients with random
/// requests of `inputs.tokens` tokens each (one token for schemes that do not batch).
pub fn measure_batching(
    kind: SchemeKind,
    server: &dyn SchemeServer,
    table: &IntTable,
    inputs: &DesignInputs,
    clients: usize,
    seed: u64,
) -> Result<BatchReport, ProtocolError> {
    use rand::{Rng, SeedableRng};
    let (m, plain_bits) = (table.m(), inputs.plain_bits);
    let tokens = if kind.batches_tokens() { inputs.tokens } else { 1 };
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut cs = Vec::with_capacity(clients);
    let mut sessions = Vec::with_capacity(clients);
    for _ in 0..clients {
        let mut c = kind.client(inputs)?;
        sessions.push(server.open_session(&c.setup()?)?);
        cs.push(c);
    }
    let mut verified = true;
    let mut run = |batched: bool, cs: &mut Vec<Box<dyn SchemeClient>>| -> Result<f64, ProtocolError> {
        let ids: Vec<Vec<usize>> =
            (0..clients).map(|_| (0..tokens).map(|_| rng.random_range(0..m)).collect()).collect();
        let queries = cs.iter_mut().zip(&ids).map(|(c, i)| c.query(i)).collect::<Result<Vec<_>, _>>()?;
        let t = Instant::now();
        let answers = if batched {
            let batch: Vec<(u64, &[u8])> =
                sessions.iter().zip(&queries).map(|(&s, q)| (s, q.as_slice())).collect();
            server.answer_many(&batch)
        } else {
            sessions.iter().zip(&queries).map(|(&s, q)| server.answer(s, q)).collect()
        };
        let elapsed = ms(t);
        for ((c, a), i) in cs.iter_mut().zip(answers).zip(&ids) {
            let (resp, server_shares) = a?;
            let got = c.decode(&resp)?.reconstruct(&server_shares)?;
            verified &= rows_match(table, i, plain_bits, &got);
        }
        Ok(elapsed)
    };
    let sequential_ms = run(false, &mut cs)?;
    let batched_ms = run(true, &mut cs)?;
    for s in sessions {
        server.close_session(s);
    }
    Ok(BatchReport {
        clients,
        tokens,
        sequential_ms,
        batched_ms,
        speedup: sequential_ms / batched_ms,
        verified,
    })
}

/// Runs `kind` on `table` for the token `ids`: preprocess, set up, query, answer, decode,
/// verify. The requests are first sent `warm_up` times unmeasured (their shares verified
/// too), then `repeat` times measured. `progress` is told each phase as it starts. The design
/// inputs are those of [`DesignInputs::for_backend`].
#[allow(clippy::too_many_arguments)]
pub fn run<B: Backend>(
    kind: SchemeKind,
    backend: Arc<B>,
    table: &IntTable,
    ids: &[usize],
    plain_bits: u32,
    clients: usize,
    runs: (usize, usize),
    progress: &dyn Fn(&str),
) -> Result<SchemeReport, ProtocolError> {
    let inputs = DesignInputs::for_backend(backend.as_ref(), table, plain_bits, ids.len())?;
    run_on(kind, backend, table, ids, &inputs, clients, runs, progress)
}

/// [`run`] on given design inputs (for a request of `inputs.tokens` tokens at most, in the
/// share ring of `inputs.plain_bits`), as a server with other inputs than the defaults runs.
#[allow(clippy::too_many_arguments)]
pub fn run_on<B: Backend>(
    kind: SchemeKind,
    backend: Arc<B>,
    table: &IntTable,
    ids: &[usize],
    inputs: &DesignInputs,
    clients: usize,
    (warm_up, repeat): (usize, usize),
    progress: &dyn Fn(&str),
) -> Result<SchemeReport, ProtocolError> {
    if repeat == 0 {
        return Err(ProtocolError::State("at least one repetition".into()));
    }
    let plain_bits = inputs.plain_bits;
    progress(&format!("{}: preprocessing the {} x {} table", kind.name(), table.m(), table.d()));
    let t = Instant::now();
    // The design once: for the pair, and for the cost model's estimate below.
    check_inputs(inputs, table)?;
    let design = kind.design(inputs)?;
    let profiler = backend.clone();
    let (server, mut client) = build_design(backend, table, inputs, design.clone())?;
    let preprocess_ms = ms(t);
    progress(&format!("{}: setup", kind.name()));
    let setup = client.setup()?;
    let session = server.open_session(&setup)?;
    let batches: Vec<&[usize]> = if kind.batches_tokens() { vec![ids] } else { ids.chunks(1).collect() };
    let mut verified = true;
    // Warm-up requests: the first request after startup pays for its fresh working memory
    // (docs/BENCHMARKS.md); these are answered and verified but not timed or counted.
    for w in 0..warm_up {
        progress(&format!("{}: warm-up request {}/{warm_up}", kind.name(), w + 1));
        for batch in &batches {
            verified &=
                round_trip(server.as_ref(), session, client.as_mut(), table, plain_bits, batch)?.matched;
        }
    }
    // Every repetition sends the same requests again on the same session: the bytes must not
    // change, every share is verified, and the times are reported as medians.
    let (mut bytes, mut client_runs, mut server_runs) = (None, Vec::new(), Vec::new());
    let mut server_work = fastquery_backend::work::Work::default();
    // Kernel times of the first repetition alone, where the backend keeps them.
    profiler.kernel_times()?;
    let mut kernel_times = None;
    for rep in 0..repeat {
        let (mut up, mut down, mut client_ms, mut server_ms) = (0usize, 0usize, 0f64, 0f64);
        for (b, batch) in batches.iter().enumerate() {
            progress(&format!(
                "{}: query {}/{} ({} tokens), repetition {}/{repeat}",
                kind.name(),
                b + 1,
                batches.len(),
                batch.len(),
                rep + 1
            ));
            let r = round_trip(server.as_ref(), session, client.as_mut(), table, plain_bits, batch)?;
            (up, down) = (up + r.up, down + r.down);
            (client_ms, server_ms) = (client_ms + r.client_ms, server_ms + r.server_ms);
            if rep == 0 {
                server_work = server_work + r.server_work;
            }
            verified &= r.matched;
        }
        if *bytes.get_or_insert((up, down)) != (up, down) {
            return Err(ProtocolError::State(format!("repetition {} sent other byte counts", rep + 1)));
        }
        client_runs.push(client_ms);
        server_runs.push(server_ms);
        if rep == 0 {
            kernel_times = profiler.kernel_times()?;
        }
    }
    let (up, down) = bytes.unwrap_or_default();
    let (client_ms, server_ms) = (median(&client_runs), median(&server_runs));
    let batching = if clients > 1 {
        progress(&format!("{}: {clients} clients, one by one and batched", kind.name()));
        Some(measure_batching(kind, server.as_ref(), table, inputs, clients, 0xba7c)?)
    } else {
        None
    };
    let tokens = ids.len() as f64;
    let rounds = batches.len() as f64;
    let estimated_server_ms_per_token = batches
        .iter()
        .map(|b| crate::fastquery::estimated_server_ms(&design, b.len(), inputs.server()))
        .sum::<f64>()
        / tokens;
    let estimated_gpu_phases = (inputs.device == Device::Gpu).then(|| {
        let first = batches.first().map_or(1, |b| b.len());
        crate::cost::gpu_phases(&design, first, crate::cost::FoldRun::cuda(first))
    });
    let compute = client_ms + server_ms;
    let bytes = (up + down) as f64;
    Ok(SchemeReport {
        scheme: kind.name().into(),
        verified,
        upload_bytes_per_token: up as f64 / tokens,
        download_bytes_per_token: down as f64 / tokens,
        setup_bytes: setup.len(),
        server_ms_per_token: server_ms / tokens,
        server_ms_per_token_runs: server_runs.iter().map(|t| t / tokens).collect(),
        warm_up_requests: warm_up,
        client_ms_per_token: client_ms / tokens,
        preprocess_ms,
        preprocess_bytes: server.preprocess_bytes(),
        rounds_per_token: rounds / tokens,
        lan_ms_per_token: LAN.latency_ms(compute, bytes, rounds) / tokens,
        wan_ms_per_token: WAN.latency_ms(compute, bytes, rounds) / tokens,
        params: server.summary(),
        inputs: *inputs,
        predicted_bytes: kind.batches_tokens().then(|| server.predicted_bytes(ids.len())).flatten(),
        measured_bytes: WireBytes { setup: setup.len(), query: up, response: down },
        server_work,
        kernel_times,
        predicted_operations: server.predicted_operations(ids.len()),
        estimated_server_ms_per_token,
        estimated_gpu_phases,
        batching,
    })
}

/// What a server's [`self_check`] did: requests answered and verified, and their server time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SelfCheck {
    /// Requests of `tokens` tokens answered.
    pub requests: usize,
    /// Tokens per request.
    pub tokens: usize,
    /// One-token requests answered after them (one where `tokens > 1`: a decode step's size).
    pub single: usize,
    /// Server time of every request together, ms.
    pub server_ms: f64,
}

/// Answers `requests` requests of `tokens` token ids (drawn from `seed`; one token per request
/// for a scheme that does not batch tokens), then, where `tokens > 1`, one request of a single
/// token (a decode step), with `client`, the scheme's own client as [`SchemeKind::build`]
/// returns it, on a session of their own that is closed afterwards, and checks that every share
/// reconstructs the rows of `table`. `fastquery serve` runs it before it listens: a backend or
/// a table that answers wrongly never serves, and the first client finds the working buffers
/// of a full request and of a one-token one already in place (docs/BENCHMARKS.md: the first
/// request after startup paid for fresh memory, about 1.5 s of a llama-7b prompt's 9 s).
#[allow(clippy::too_many_arguments)]
pub fn self_check(
    kind: SchemeKind,
    server: &dyn SchemeServer,
    client: &mut dyn SchemeClient,
    table: &IntTable,
    plain_bits: u32,
    tokens: usize,
    requests: usize,
    seed: u64,
) -> Result<SelfCheck, ProtocolError> {
    use rand::{Rng, SeedableRng};
    if tokens == 0 || table.m() == 0 {
        return Err(ProtocolError::State("a self-check needs at least one token and one row".into()));
    }
    let tokens = if kind.batches_tokens() { tokens } else { 1 };
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let session = server.open_session(&client.setup()?)?;
    let single = usize::from(tokens > 1 && requests > 0);
    let run = |client: &mut dyn SchemeClient, rng: &mut rand::rngs::StdRng| -> Result<f64, ProtocolError> {
        let mut server_ms = 0.0;
        for r in 0..requests + single {
            let size = if r < requests { tokens } else { 1 };
            let ids: Vec<usize> = (0..size).map(|_| rng.random_range(0..table.m())).collect();
            let done = round_trip(server, session, client, table, plain_bits, &ids)?;
            server_ms += done.server_ms;
            if !done.matched {
                return Err(ProtocolError::State(format!(
                    "self-check: the shares of request {} of {} ({} tokens) do not add up to the table's rows",
                    r + 1,
                    requests + single,
                    ids.len()
                )));
            }
        }
        Ok(server_ms)
    };
    let result = run(client, &mut rng);
    server.close_session(session);
    Ok(SelfCheck { requests, tokens, single, server_ms: result? })
}

/// One request through both parties ([`round_trip`]).
pub(crate) struct RoundTrip {
    /// Query and response bytes.
    pub(crate) up: usize,
    pub(crate) down: usize,
    /// The client's query and decoding, and the server's answer, ms.
    pub(crate) client_ms: f64,
    pub(crate) server_ms: f64,
    /// The backend work counted during the answer.
    pub(crate) server_work: fastquery_backend::work::Work,
    /// The server path's phases during the answer (name, ms), where it times them.
    pub(crate) server_phases: Vec<(&'static str, f64)>,
    /// Whether the two parties' shares add up to the rows of the request.
    pub(crate) matched: bool,
}

/// `client` queries `ids` on `session`, `server` answers, the client decodes, and the shares
/// are checked against `table`'s rows: what every measured, warm-up and self-check request does.
pub(crate) fn round_trip(
    server: &dyn SchemeServer,
    session: u64,
    client: &mut dyn SchemeClient,
    table: &IntTable,
    plain_bits: u32,
    ids: &[usize],
) -> Result<RoundTrip, ProtocolError> {
    let t = Instant::now();
    let query = client.query(ids)?;
    let mut client_ms = ms(t);
    let (t, before) = (Instant::now(), fastquery_backend::work::snapshot());
    let (answer, server_phases) = crate::trace::collect(|| server.answer(session, &query));
    let server_ms = ms(t);
    let (response, server_shares) = answer?;
    let server_work = fastquery_backend::work::snapshot() - before;
    let t = Instant::now();
    let client_shares = client.decode(&response)?;
    client_ms += ms(t);
    let got = client_shares.reconstruct(&server_shares)?;
    Ok(RoundTrip {
        up: query.len(),
        down: response.len(),
        client_ms,
        server_ms,
        server_work,
        server_phases,
        matched: rows_match(table, ids, plain_bits, &got),
    })
}

/// The median (the mean of the middle two for an even count); 0 for none.
fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

pub(crate) fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}
