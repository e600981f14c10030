//! A whole client session, measured: the setup once, the prompt's tokens in requests of the
//! design's size, then the decode steps one token per request, every share verified.
//!
//! `fastquery bench` measures one request and extrapolates a session from it; the design search
//! ranks `fastquery`'s designs by a session's bytes ([`WireBytes::session_total`]) where the
//! server declares its sessions. [`run_session`] sends such a session for real, so that the
//! model's bytes are compared with the bytes that went over the wire, request by request, and
//! the time of a decode step (a one-token request on a design made for longer ones) is
//! measured rather than assumed.

use std::{sync::Arc, time::Instant};

use fastquery_backend::Backend;
use fastquery_table::IntTable;
use serde::Serialize;

use crate::{
    ParamSummary, ProtocolError, SchemeServer,
    blocked::WireBytes,
    harness::{DesignInputs, LAN, Link, SchemeKind, WAN, ms, round_trip},
};

/// One phase of a session (its prompt, or its decode steps): its requests' bytes and times.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PhaseReport {
    /// Tokens of the phase.
    pub tokens: usize,
    /// Query/response round trips (a scheme that answers one token per query sends one per
    /// token).
    pub requests: usize,
    /// Query bytes of every request, on the wire.
    pub query_bytes: usize,
    /// Response bytes of every request, on the wire.
    pub response_bytes: usize,
    /// What the design predicts for the same requests, query and response
    /// ([`SchemeServer::predicted_bytes`] of each request's size); `None` where it states none.
    pub predicted_bytes: Option<usize>,
    /// Server time of every request together, ms.
    pub server_ms: f64,
    /// Server time of each request, in order, ms (a decode step's tail, not only its mean).
    pub server_ms_each: Vec<f64>,
    /// The server path's phases (the names `FASTQUERY_TRACE` prints), each with its time in
    /// every request that ran it, in order, ms; empty for a scheme whose server does not time
    /// its phases.
    pub server_phases: Vec<ServerPhase>,
    /// Client time (queries and decoding) of every request together, ms.
    pub client_ms: f64,
    /// The phase on the LAN model: compute, bytes and round trips, ms.
    pub lan_ms: f64,
    /// The same on the WAN model, ms.
    pub wan_ms: f64,
}

/// One phase of the server's path over a session's requests.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ServerPhase {
    /// Its name (`decode`, `expand+rgsw`, `mac`, `fold`, ... for the folded schemes).
    pub name: String,
    /// Its time in each request that ran it, in order, ms.
    pub ms_each: Vec<f64>,
}

impl ServerPhase {
    /// The median (nearest rank) of its times, ms.
    pub fn median_ms(&self) -> Option<f64> {
        nearest_rank(&self.ms_each, 0.5)
    }
}

impl PhaseReport {
    /// Query and response bytes together.
    pub fn bytes(&self) -> usize {
        self.query_bytes + self.response_bytes
    }

    /// One request's server phases added, each to its own series.
    fn add_phases(&mut self, phases: &[(&'static str, f64)]) {
        for &(name, ms) in phases {
            match self.server_phases.iter_mut().find(|p| p.name == name) {
                Some(p) => p.ms_each.push(ms),
                None => self.server_phases.push(ServerPhase { name: name.into(), ms_each: vec![ms] }),
            }
        }
    }

    /// The `q`-quantile (0 to 1) of the requests' server times, ms: the nearest rank, so the
    /// value of a request that ran (`None` without requests).
    pub fn server_ms_quantile(&self, q: f64) -> Option<f64> {
        nearest_rank(&self.server_ms_each, q)
    }
}

/// The `q`-quantile (0 to 1) of `values` by the nearest rank: the value of rank `ceil(q n)`
/// (at least 1) in ascending order, so always one of the values (the lower middle for the
/// median of an even count); `None` for no values. `session` and `query --decode-steps`
/// both report their medians with it.
pub fn nearest_rank(values: &[f64], q: f64) -> Option<f64> {
    let mut t = values.to_vec();
    t.sort_by(f64::total_cmp);
    let last = t.len().checked_sub(1)?;
    Some(t[((q.clamp(0.0, 1.0) * t.len() as f64).ceil() as usize).saturating_sub(1).min(last)])
}

/// A whole session of one scheme ([`run_session`]).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SessionReport {
    /// Scheme name.
    pub scheme: String,
    /// Whether the design was made for this session (`inputs.session_tokens` is its length)
    /// rather than for sessions without end.
    pub declared: bool,
    /// Every share of every request reconstructed the exact table rows.
    pub verified: bool,
    /// Tokens of the session, prompt and decode steps.
    pub session_tokens: usize,
    /// Rounds of unmeasured requests the server answered on the session before its prompt
    /// (each a prompt-sized request and, where the session has decode steps, a one-token one;
    /// verified, not timed or counted): a warm server, as `serve --self-check` leaves it.
    pub warm_up_rounds: usize,
    /// The most tokens one prompt request carries (the design's request size).
    pub request_tokens: usize,
    /// The setup's bytes (keys), sent once.
    pub setup_bytes: usize,
    /// The client's key generation and the server's opening of the session, ms.
    pub setup_ms: f64,
    /// The prompt's requests.
    pub prompt: PhaseReport,
    /// The decode steps: one token per request.
    pub decode: PhaseReport,
    /// Every byte of the session: setup, queries and responses.
    pub total_bytes: usize,
    /// The session's bytes as the design search counts them ([`WireBytes::session_total`] of
    /// the design's predictions; the last prompt request as a full one), where the design
    /// states its bytes.
    pub model_bytes: Option<u64>,
    /// The whole session on the LAN model (setup included), ms.
    pub lan_ms: f64,
    /// The same on the WAN model, ms.
    pub wan_ms: f64,
    /// Parameters and layout.
    pub params: ParamSummary,
    /// The design inputs the scheme ran on.
    pub inputs: DesignInputs,
}

/// Runs a session of `ids.len()` tokens on `kind`'s design for `inputs`: the setup, the first
/// `ids.len() - decode` ids in requests of `inputs.tokens` tokens (the last one shorter where
/// they do not fill it; one token per query for a scheme that does not batch tokens), then the
/// last `decode` ids one per request. Before the prompt, after the setup, the server answers
/// `warm_up` rounds of unmeasured requests on the session (the prompt's first request and, where
/// there are decode steps, the first decode step's token), so that the measured requests find
/// the working memory a server that has answered before holds (the first request of a fresh
/// process faults in its buffers: about 1.5 s of a llama-7b prompt's 9 s on the 2-vCPU VM,
/// docs/BENCHMARKS.md). Every share is checked against `table`; `progress` is told each phase as
/// it starts. The table is preprocessed first (not counted).
#[allow(clippy::too_many_arguments)]
pub fn run_session<B: Backend>(
    kind: SchemeKind,
    backend: Arc<B>,
    table: &IntTable,
    ids: &[usize],
    decode: usize,
    warm_up: usize,
    inputs: &DesignInputs,
    progress: &dyn Fn(&str),
) -> Result<SessionReport, ProtocolError> {
    if ids.is_empty() || decode > ids.len() || inputs.tokens == 0 {
        return Err(ProtocolError::State(format!(
            "a session needs at least one token, no more decode steps than tokens ({decode} of {}) and requests of at least one token",
            ids.len()
        )));
    }
    progress(&format!("{}: preprocessing the {} x {} table", kind.name(), table.m(), table.d()));
    let (server, mut client) = kind.build_for(backend, table, inputs)?;
    progress(&format!("{}: setup", kind.name()));
    let t = Instant::now();
    let setup = client.setup()?;
    let session = server.open_session(&setup)?;
    let setup_ms = ms(t);
    let (prompt_ids, decode_ids) = ids.split_at(ids.len() - decode);
    let prompt_size = if kind.batches_tokens() { inputs.tokens } else { 1 };
    let mut verified = true;
    let warm: Vec<&[usize]> =
        [prompt_ids.chunks(prompt_size).next(), decode_ids.chunks(1).next()].into_iter().flatten().collect();
    // An error here, as in the phases, still closes the session (below).
    let warmed = (|| -> Result<(), ProtocolError> {
        for round in 0..warm_up {
            progress(&format!("{}: warm-up round {}/{warm_up}", kind.name(), round + 1));
            for request in &warm {
                let r =
                    round_trip(server.as_ref(), session, client.as_mut(), table, inputs.plain_bits, request)?;
                verified &= r.matched;
            }
        }
        Ok(())
    })();
    let mut phase = |name: &str, requests: Vec<&[usize]>| -> Result<PhaseReport, ProtocolError> {
        let mut p = PhaseReport {
            tokens: requests.iter().map(|r| r.len()).sum(),
            requests: requests.len(),
            predicted_bytes: Some(0),
            ..PhaseReport::default()
        };
        for (i, request) in requests.iter().enumerate() {
            if i % 16 == 0 {
                progress(&format!("{}: {name} request {}/{}", kind.name(), i + 1, requests.len()));
            }
            let r = round_trip(server.as_ref(), session, client.as_mut(), table, inputs.plain_bits, request)?;
            verified &= r.matched;
            (p.query_bytes, p.response_bytes) = (p.query_bytes + r.up, p.response_bytes + r.down);
            (p.server_ms, p.client_ms) = (p.server_ms + r.server_ms, p.client_ms + r.client_ms);
            p.server_ms_each.push(r.server_ms);
            p.add_phases(&r.server_phases);
            p.predicted_bytes = p
                .predicted_bytes
                .zip(server.predicted_bytes(request.len()))
                .map(|(sum, w)| sum + w.query + w.response);
        }
        let on = |link: Link| link.latency_ms(p.server_ms + p.client_ms, p.bytes() as f64, p.requests as f64);
        (p.lan_ms, p.wan_ms) = (on(LAN), on(WAN));
        Ok(p)
    };
    let result = warmed
        .and_then(|()| phase("prompt", prompt_ids.chunks(prompt_size).collect()))
        .and_then(|prompt| Ok((prompt, phase("decode", decode_ids.chunks(1).collect())?)));
    server.close_session(session);
    let (prompt, decode_phase) = result?;
    let model_bytes = model_bytes(server.as_ref(), kind, inputs.tokens, ids.len(), decode);
    let on = |link: Link, p: f64, d: f64| link.latency_ms(setup_ms, setup.len() as f64, 1.0) + p + d;
    Ok(SessionReport {
        scheme: kind.name().into(),
        declared: inputs.session_tokens == Some(ids.len()),
        verified,
        session_tokens: ids.len(),
        warm_up_rounds: warm_up,
        request_tokens: prompt_size,
        setup_bytes: setup.len(),
        setup_ms,
        total_bytes: setup.len() + prompt.bytes() + decode_phase.bytes(),
        model_bytes,
        lan_ms: on(LAN, prompt.lan_ms, decode_phase.lan_ms),
        wan_ms: on(WAN, prompt.wan_ms, decode_phase.wan_ms),
        prompt,
        decode: decode_phase,
        params: server.summary(),
        inputs: *inputs,
    })
}

/// The session's bytes from the design's own predictions, as the search counts them.
fn model_bytes(
    server: &dyn SchemeServer,
    kind: SchemeKind,
    tokens: usize,
    session: usize,
    decode: usize,
) -> Option<u64> {
    let one: WireBytes = server.predicted_bytes(1)?;
    if kind.batches_tokens() {
        Some(server.predicted_bytes(tokens)?.session_total(&one, tokens, session, decode))
    } else {
        Some(one.session_total(&one, 1, session, decode))
    }
}
