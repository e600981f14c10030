//! `fastquery session`: whole client sessions, measured side by side: each scheme's setup, the
//! prompt in requests of `--tokens`, then the decode steps one token per request, every share
//! verified; the bytes beside what the designs predict and what fastquery's search counted.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use fastquery_protocol::{
    harness::{DesignInputs, SchemeKind},
    session::{PhaseReport, SessionReport, run_session},
};
use fastquery_table::Workload;
use serde::Serialize;

use crate::{
    backend::AnyBackend,
    bench::{DesignArgs, Tables, mb, token_ids},
};

/// Arguments of `fastquery session`.
#[derive(Debug, Args)]
pub struct SessionArgs {
    /// Workload: tiny, llama-7b, llama-30b (synthetic tables; see workloads).
    #[arg(long, default_value = "tiny")]
    workload: String,
    /// Comma-separated schemes.
    #[arg(long, value_delimiter = ',', default_value = "bumblebee,fastquery")]
    schemes: Vec<String>,
    /// Tokens per prompt request (the design's request size; the last request is shorter
    /// where the prompt does not fill it).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=4096))]
    tokens: u64,
    /// Seed of the synthetic table and of the token ids.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Also run each fastquery scheme on the design it takes for sessions without end (no
    /// session declared): what declaring the session saves, measured.
    #[arg(long)]
    undeclared: bool,
    /// Rounds of unmeasured requests each server answers on the session before its prompt (a
    /// prompt-sized request and, with decode steps, a one-token one; verified, not timed or
    /// counted; 0 to 100): 1, a server as `serve` leaves it after its default self-check, whose
    /// buffers have been used once; 0, a fresh process whose first requests fault their
    /// memory in.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(0..=100))]
    warm_up: u64,
    /// Write the report as JSON to this file (and the table as Markdown beside it).
    #[arg(long)]
    json: Option<PathBuf>,
    /// The session (`--session-tokens`, required here, and `--decode-tokens`) and the sharing
    /// cap, as `serve` sets them; the designs are made for them.
    #[command(flatten)]
    design: DesignArgs,
}

/// The longest session this command runs: every token is a real request on this machine.
const MAX_RUN_TOKENS: usize = 1 << 16;

#[derive(Debug, Serialize)]
struct Report {
    workload: String,
    m: usize,
    d: usize,
    session_tokens: usize,
    decode_tokens: usize,
    request_tokens: usize,
    backend: String,
    device: String,
    sessions: Vec<SessionReport>,
    /// Each baseline's (and each undeclared design's) session over fastquery's: bytes, LAN and
    /// WAN latency (above 1: fastquery sends or waits less).
    ratios: Vec<SessionRatio>,
}

#[derive(Debug, Serialize)]
struct SessionRatio {
    against: String,
    bytes: f64,
    lan: f64,
    wan: f64,
}

/// A row's name: the scheme, and whether its design was made for another session.
fn label(r: &SessionReport) -> String {
    if r.declared { r.scheme.clone() } else { format!("{} (no session)", r.scheme) }
}

/// `fastquery session`.
pub fn run(backend: &AnyBackend, args: &SessionArgs) -> anyhow::Result<bool> {
    let workload = Workload::parse(&args.workload)?;
    let kinds = args.schemes.iter().map(|s| SchemeKind::parse(s)).collect::<Result<Vec<_>, _>>()?;
    let tokens = usize::try_from(args.tokens)?;
    let (session, decode) = args.design.session()?;
    let session = session.context(
        "a session needs its length: --session-tokens T (or FASTQUERY_SESSION_TOKENS), with --decode-tokens G of them one per request",
    )?;
    if session > MAX_RUN_TOKENS {
        anyhow::bail!(
            "--session-tokens {session}: this command sends every token (at most {MAX_RUN_TOKENS}); `fastquery plan` models longer sessions"
        );
    }
    let (m, d) = workload.shape();
    let info = backend.info();
    let tables = Tables::build(workload, args.seed, &kinds)?;
    let ids = token_ids(args.seed, session, m);
    eprintln!(
        "a session of {session} tokens: {} prompt tokens in requests of {tokens}, then {decode} decode steps",
        session - decode
    );
    let mut sessions = Vec::new();
    for &kind in &kinds {
        let table = tables.of(kind)?;
        let base = backend.design_inputs(table, kind.default_plain_bits(), tokens)?;
        let mut runs = vec![args.design.apply(base)?];
        if args.undeclared && kind.is_fastquery() {
            runs.push(DesignInputs { session_tokens: None, decode_tokens: 0, ..runs[0] });
        }
        for inputs in runs {
            let pb = crate::bench::spinner();
            let r = crate::with_backend!(backend, b => run_session(kind, b.clone(), table, &ids, decode, args.warm_up as usize, &inputs, &|msg| pb.set_message(msg.to_string())));
            pb.finish_and_clear();
            sessions.push(r?);
        }
    }
    let ratios = ratios(&sessions);
    let text =
        markdown(workload.name(), (session, decode, tokens, args.warm_up), &info.device, &sessions, &ratios);
    print!("{text}");
    let all_ok = sessions.iter().all(|r| r.verified);
    if let Some(path) = &args.json {
        let report = Report {
            workload: workload.name().into(),
            m,
            d,
            session_tokens: session,
            decode_tokens: decode,
            request_tokens: tokens,
            backend: info.name.into(),
            device: info.device.clone(),
            sessions,
            ratios,
        };
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        let md = path.with_extension("md");
        std::fs::write(&md, &text).with_context(|| format!("writing {}", md.display()))?;
        eprintln!("wrote {} and {}", path.display(), md.display());
    }
    Ok(all_ok)
}

/// Every other session over the first fastquery session made for this one.
fn ratios(sessions: &[SessionReport]) -> Vec<SessionRatio> {
    let Some(fq) = sessions.iter().find(|r| r.scheme == "fastquery" && r.declared) else { return Vec::new() };
    sessions
        .iter()
        .filter(|r| !std::ptr::eq(*r, fq))
        .map(|r| SessionRatio {
            against: label(r),
            bytes: r.total_bytes as f64 / fq.total_bytes as f64,
            lan: r.lan_ms / fq.lan_ms,
            wan: r.wan_ms / fq.wan_ms,
        })
        .collect()
}

/// The sessions as Markdown: bytes by phase, the designs' predictions, times, and the ratios.
fn markdown(
    workload: &str,
    (session, decode, tokens, warm_up): (usize, usize, usize, u64),
    device: &str,
    sessions: &[SessionReport],
    ratios: &[SessionRatio],
) -> String {
    let warm = match warm_up {
        0 => "a fresh server".to_string(),
        1 => "after one warm-up round".to_string(),
        w => format!("after {w} warm-up rounds"),
    };
    let mut s = format!(
        "\n### {workload}: a session of {session} tokens, {} in prompt requests of {tokens}, {decode} decode steps ({device}; {warm})\n\n",
        session - decode
    );
    s += "| scheme | verified | setup | prompt: requests, bytes | decode: requests, bytes | session bytes | predicted = measured | search's model | server: prompt | server: per decode step (median / p95) | LAN | WAN |\n";
    s += "|---|---|---|---|---|---|---|---|---|---|---|---|\n";
    for r in sessions {
        let predicted = match (r.prompt.predicted_bytes, r.decode.predicted_bytes) {
            (Some(p), Some(d)) if p == r.prompt.bytes() && d == r.decode.bytes() => "yes".to_string(),
            (Some(p), Some(d)) => format!("NO ({} + {})", mb(p as f64), mb(d as f64)),
            _ => "-".into(),
        };
        let per_step = match (r.decode.server_ms_quantile(0.5), r.decode.server_ms_quantile(0.95)) {
            (Some(p50), Some(p95)) => {
                format!("{:.1} ms ({p50:.1} / {p95:.1})", r.decode.server_ms / r.decode.requests as f64)
            }
            _ => "-".into(),
        };
        s += &format!(
            "| {} | {} | {} | {}, {} | {}, {} | {} | {predicted} | {} | {:.2} s | {per_step} | {:.2} s | {:.2} s |\n",
            label(r),
            if r.verified { "yes" } else { "NO" },
            mb(r.setup_bytes as f64),
            r.prompt.requests,
            mb(r.prompt.bytes() as f64),
            r.decode.requests,
            mb(r.decode.bytes() as f64),
            mb(r.total_bytes as f64),
            r.model_bytes.map_or("-".into(), |b| mb(b as f64)),
            r.prompt.server_ms / 1e3,
            r.lan_ms / 1e3,
            r.wan_ms / 1e3,
        );
    }
    s += &phase_table(sessions);
    if !ratios.is_empty() {
        s += "\n| fastquery's session vs | bytes | LAN latency | WAN latency |\n|---|---|---|---|\n";
        for r in ratios {
            s += &format!("| {} | {:.2}x | {:.2}x | {:.2}x |\n", r.against, r.bytes, r.lan, r.wan);
        }
    }
    s
}

/// Where the server's time goes: each timed phase's median per prompt request and per decode
/// step (the names `FASTQUERY_TRACE` prints); empty where no scheme times its phases.
fn phase_table(sessions: &[SessionReport]) -> String {
    let list = |p: &PhaseReport| {
        let parts: Vec<String> = p
            .server_phases
            .iter()
            .filter_map(|ph| ph.median_ms().map(|ms| format!("{} {ms:.1}", ph.name)))
            .collect();
        if parts.is_empty() { "-".to_string() } else { parts.join(", ") }
    };
    if sessions.iter().all(|r| r.prompt.server_phases.is_empty() && r.decode.server_phases.is_empty()) {
        return String::new();
    }
    let mut s =
        "\n| server phases, median ms | per prompt request | per decode step |\n|---|---|---|\n".to_string();
    for r in sessions {
        s += &format!("| {} | {} | {} |\n", label(r), list(&r.prompt), list(&r.decode));
    }
    s
}
