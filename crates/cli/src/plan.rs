//! `fastquery plan`: the design a server would take for each length of its clients' sessions,
//! without running it: the operator's view of `serve --session-tokens` and `--max-shared`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use fastquery_protocol::{
    blocked::WireBytes,
    fastquery::estimated_server_ms,
    harness::{DesignInputs, FIXED_POINT_BITS, SchemeDesign, SchemeKind},
};
use serde::Serialize;

use crate::{backend::AnyBackend, bench::mb};

/// Arguments of `fastquery plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The table: a workload (tiny, llama-7b, llama-30b), smollm2, or a .gguf, .safetensors or
    /// .npy file (as `serve --table`).
    #[arg(long, default_value = "llama-7b")]
    table: String,
    /// Tensor name inside a .gguf or .safetensors file.
    #[arg(long)]
    tensor: Option<String>,
    /// Seed of a synthetic table.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Scheme: fastquery, fastquery-wan or fastquery-lan (the baselines' designs do not depend
    /// on the session).
    #[arg(long, default_value = "fastquery")]
    scheme: String,
    /// Tokens per request the design is made for (as `serve --tokens`).
    #[arg(long, default_value_t = 8)]
    tokens: usize,
    /// Session lengths to plan for, in tokens (each 1 to 4294967295); sessions without end are
    /// always planned too.
    #[arg(long, value_delimiter = ',', default_value = "8,64,256,1024,4096,16384",
          value_parser = clap::value_parser!(u64).range(1..=fastquery_protocol::fold::MAX_SESSION_TOKENS as u64))]
    sessions: Vec<u64>,
    /// The most responses that share one `c` (as `serve --max-shared`).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=fastquery_protocol::fold::MAX_SHARED as u64))]
    max_shared: Option<u64>,
    /// Percent of each session's tokens that arrive one per request (decode steps, 0 to 100;
    /// as `serve --decode-tokens`): the designs then count the whole session's bytes.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=100))]
    decode_percent: u64,
    /// Write the plan as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// One session length's design.
#[derive(Debug, Serialize)]
struct PlanRow {
    /// Tokens per session (`None`: without end).
    session_tokens: Option<usize>,
    /// Of those, the tokens that arrive one per request.
    decode_tokens: usize,
    folded: bool,
    n: usize,
    /// Responses sharing one `c` (folded designs; 1: none).
    shared: usize,
    setup_bytes: usize,
    /// Query and response per token.
    bytes_per_token: f64,
    /// Bytes per token over the session: its setup, its full requests' query and response, and
    /// its one-token requests'.
    bytes_per_token_with_setup: f64,
    /// Query and response of a request of one token on this design (a decode step).
    one_token_request: f64,
    /// The same for the design of sessions without end (no session declared).
    undeclared_with_setup: f64,
    /// Bumblebee's bytes per token with its setup spread over the session, over this row's:
    /// how many times fewer fastquery sends over such a session.
    vs_bumblebee: f64,
    /// The design search's estimate of the server's time per token of a full request, ms,
    /// for this server (a CPU's threads, or the GPU profile with `--backend cuda`; it ranks, to
    /// about a third on a CPU: docs/BENCHMARKS.md).
    est_server_ms_per_token: f64,
    /// The same for a request of one token (a decode step), ms.
    est_one_token_ms: f64,
    layout: String,
    /// What a request of `tokens` tokens and one of one token send (setup included).
    #[serde(skip)]
    bytes: (WireBytes, WireBytes),
}

/// Bytes per token over a session of `session` tokens (`decode` of them one per request) on a
/// design that sends `full` for a request of `tokens` tokens and `one` for a request of one.
fn per_token(
    (full, one): (WireBytes, WireBytes),
    tokens: usize,
    session: Option<usize>,
    decode: usize,
) -> f64 {
    match session {
        Some(t) if decode > 0 => full.over_session(|| one, tokens, session, decode) as f64 / t as f64,
        _ => full.per_request(tokens, session) as f64 / tokens as f64,
    }
}

/// A ratio to one decimal, or to two decimals below 1 (a latency variant sends tens
/// of times bumblebee's bytes: "0.0x" would hide by how much).
fn ratio(x: f64) -> String {
    if x >= 1.0 { format!("{x:.1}x") } else { format!("{x:.2}x") }
}

/// `fastquery plan`.
pub fn run(backend: &AnyBackend, args: &PlanArgs) -> anyhow::Result<bool> {
    let kind = SchemeKind::parse(&args.scheme)?;
    if !kind.is_fastquery() {
        anyhow::bail!(
            "plan is for fastquery, fastquery-wan and fastquery-lan: {} has one design",
            kind.name()
        );
    }
    if args.tokens == 0 {
        anyhow::bail!("--tokens must be at least 1");
    }
    let (name, real, _, _) = crate::quantize::resolve_table(&args.table, args.tensor.as_deref(), args.seed)?;
    let table = kind.table(&real)?;
    drop(real);
    let design_args =
        crate::bench::DesignArgs { max_shared: args.max_shared, session_tokens: None, decode_tokens: None };
    let base = design_args.apply(backend.design_inputs(&table, kind.default_plain_bits(), args.tokens)?)?;
    let sessions = args.sessions.iter().map(|&s| usize::try_from(s).ok()).chain([None]);
    let mut rows = Vec::new();
    for session_tokens in sessions {
        let decode_tokens =
            session_tokens.map_or(0, |t| (t as u128 * args.decode_percent as u128 / 100) as usize);
        let inputs = DesignInputs { session_tokens, decode_tokens, ..base };
        rows.push(
            row(kind, &inputs).with_context(|| format!("planning a session of {session_tokens:?} tokens"))?,
        );
    }
    // What the design of sessions without end (the last row) costs over each session, and
    // what bumblebee's (its 16-bit fixed-point table, its own share ring; its keys are its
    // setup) does.
    let endless = rows.last().map(|r| r.bytes).context("a row without end")?;
    let bumblebee = SchemeKind::Bumblebee;
    let bb_inputs = DesignInputs {
        bits: FIXED_POINT_BITS,
        plain_bits: bumblebee.default_plain_bits(),
        session_tokens: None,
        decode_tokens: 0,
        ..base
    };
    let bb_design = bumblebee.design(&bb_inputs)?;
    let bb = (bb_design.predicted_bytes(args.tokens), bb_design.predicted_bytes(1));
    for r in &mut rows {
        let (session, decode) = (r.session_tokens, r.decode_tokens);
        r.undeclared_with_setup = per_token(endless, args.tokens, session, decode);
        r.vs_bumblebee = per_token(bb, args.tokens, session, decode) / r.bytes_per_token_with_setup;
    }
    println!(
        "{} on {name} ({} x {}, {}-bit codes), {} tokens per request, at most {} responses per shared c{}:",
        kind.name(),
        base.m,
        base.d,
        base.bits,
        args.tokens,
        base.max_shared,
        if args.decode_percent > 0 {
            format!(", {}% of each session's tokens one per request", args.decode_percent)
        } else {
            String::new()
        }
    );
    println!(
        "{:>16} {:>8} {:>6} {:>7} {:>10} {:>10} {:>11} {:>23} {:>13} {:>12} {:>15}",
        "session (tokens)",
        "design",
        "N",
        "shared",
        "setup",
        "per token",
        "with setup",
        "undeclared, with setup",
        "vs bumblebee",
        "1-token req.",
        "est. server ms"
    );
    for r in &rows {
        println!(
            "{:>16} {:>8} {:>6} {:>7} {:>10} {:>10} {:>11} {:>23} {:>13} {:>12} {:>15}",
            r.session_tokens.map_or("without end".to_string(), |t| t.to_string()),
            if r.folded { "folded" } else { "blocked" },
            r.n,
            r.shared,
            mb(r.setup_bytes as f64),
            mb(r.bytes_per_token),
            mb(r.bytes_per_token_with_setup),
            mb(r.undeclared_with_setup),
            ratio(r.vs_bumblebee),
            mb(r.one_token_request),
            format!("{:.0} / {:.0}", r.est_server_ms_per_token, r.est_one_token_ms)
        );
    }
    println!(
        "  est. server ms: the design search's estimate of the server's time per token of a full request / of a one-token request, for {}",
        crate::bench::server_name(base.server())
    );
    let mut seen: Vec<&str> = Vec::new();
    for r in &rows {
        if !seen.contains(&r.layout.as_str()) {
            seen.push(&r.layout);
            println!("  {}", r.layout);
        }
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&rows)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(true)
}

/// The design `kind` takes on `inputs`, and what it sends.
fn row(kind: SchemeKind, inputs: &DesignInputs) -> anyhow::Result<PlanRow> {
    let design = kind.design(inputs)?;
    let tokens = inputs.tokens;
    let bytes = design.predicted_bytes(tokens);
    let summary = design.summary();
    let (folded, shared) = match &design {
        SchemeDesign::Folded(f) => (true, f.layout.share),
        SchemeDesign::Blocked(_) => (false, 1),
    };
    let t = tokens as f64;
    let pair = (bytes, design.predicted_bytes(1));
    Ok(PlanRow {
        session_tokens: inputs.session_tokens,
        decode_tokens: inputs.decode_tokens,
        folded,
        n: summary.n,
        shared,
        setup_bytes: bytes.setup,
        bytes_per_token: (bytes.query + bytes.response) as f64 / t,
        bytes_per_token_with_setup: per_token(pair, tokens, inputs.session_tokens, inputs.decode_tokens),
        one_token_request: pair.1.per_request(1, None) as f64,
        undeclared_with_setup: 0.0,
        vs_bumblebee: 0.0,
        est_server_ms_per_token: estimated_server_ms(&design, tokens, inputs.server()) / t,
        est_one_token_ms: estimated_server_ms(&design, 1, inputs.server()),
        layout: summary.layout,
        bytes: pair,
    })
}
