//! `fastquery demo` and `fastquery bench`: the schemes end to end through the harness.

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use clap::Args;
use fastquery_backend::Backend;
use fastquery_protocol::harness::{
    self, DesignInputs, QUANT_BITS, QUANT_MAX_BITS, SchemeDesign, SchemeKind, SchemeReport,
};
use fastquery_table::{IntTable, Workload};
use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::Serialize;

use crate::backend::AnyBackend;

/// Arguments of `fastquery bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Workload: tiny, llama-7b, llama-30b (synthetic tables; see workloads).
    #[arg(long, default_value = "tiny")]
    workload: String,
    /// Comma-separated schemes.
    #[arg(long, value_delimiter = ',', default_value = "cheetah")]
    schemes: Vec<String>,
    /// Tokens per request (ids drawn uniformly).
    #[arg(long, default_value_t = 8)]
    tokens: usize,
    /// Seed of the synthetic table and of the token ids.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Share ring 2^l (default: each scheme's own).
    #[arg(long)]
    plain_bits: Option<u32>,
    /// Write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also measure a server's throughput with this many clients, their requests answered one
    /// by one and then in one batch (one pass over the table); 0 or 1: skip.
    #[arg(long, default_value_t = 0)]
    clients: usize,
    /// Send each scheme's request this many times on one session (1 to 100): every share is
    /// verified each time, and the times reported are the medians (each run's server time per
    /// token is in the JSON).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100))]
    repeat: u64,
    /// Send each scheme's request this many times before the measured ones (0 to 100; verified,
    /// not timed): the measured requests then show the steady state, not the first request's
    /// fresh memory.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=100))]
    warm_up: u64,
    /// The server's design inputs, as `serve` sets them.
    #[command(flatten)]
    design: DesignArgs,
}

/// Design inputs a server's operator sets (`serve`, and `bench` for A/B runs), over the
/// environment's: both parties derive the design from them (`Info` carries them).
#[derive(Clone, Copy, Debug, Default, Args)]
pub struct DesignArgs {
    /// The most responses of a folded fastquery design that share one `c` (1 to 16; default
    /// 16, or `FASTQUERY_MAX_SHARED`): fewer keys in each client's setup (80 at 16, 12 at 4, at
    /// most one at 1) for more bytes per token.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=fastquery_protocol::fold::MAX_SHARED as u64))]
    pub max_shared: Option<u64>,
    /// Tokens a client's session carries, prompt and generated (1 to 4294967295; default
    /// `FASTQUERY_SESSION_TOKENS`, else sessions without end): fastquery's design then counts
    /// each request's part of the setup, so short sessions take fewer keys. `bench` also
    /// reports each scheme's bytes over such a session.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=fastquery_protocol::fold::MAX_SESSION_TOKENS as u64))]
    pub session_tokens: Option<u64>,
    /// Of the session's tokens, how many arrive one per request: the steps of autoregressive
    /// decoding (default `FASTQUERY_DECODE_TOKENS`, else 0; at most `--session-tokens`):
    /// fastquery's design then counts the whole session's bytes, one-token requests included.
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=fastquery_protocol::fold::MAX_SESSION_TOKENS as u64))]
    pub decode_tokens: Option<u64>,
}

impl DesignArgs {
    /// `inputs` with the flags that were given (clap checked their ranges; an error where the
    /// decode steps do not fit the session).
    pub(crate) fn apply(&self, inputs: DesignInputs) -> anyhow::Result<DesignInputs> {
        let size = |v: Option<u64>| v.and_then(|v| usize::try_from(v).ok());
        Ok(DesignInputs {
            max_shared: size(self.max_shared).unwrap_or(inputs.max_shared),
            session_tokens: size(self.session_tokens).or(inputs.session_tokens),
            decode_tokens: size(self.decode_tokens).unwrap_or(inputs.decode_tokens),
            ..inputs
        }
        .checked()?)
    }

    /// The session these flags declare over the environment's (`FASTQUERY_SESSION_TOKENS`,
    /// `FASTQUERY_DECODE_TOKENS`): its tokens (`None`: without end) and decode steps; an error
    /// where the decode steps do not fit it.
    pub(crate) fn session(&self) -> anyhow::Result<(Option<usize>, usize)> {
        use fastquery_protocol::fold::Allowed;
        let session = match self.session_tokens {
            Some(t) => Some(usize::try_from(t)?),
            None => Allowed::session_tokens_from_env()?,
        };
        let decode = match self.decode_tokens {
            Some(g) => usize::try_from(g)?,
            None => Allowed::decode_tokens_from_env()?,
        };
        harness::check_session(session, decode)?;
        Ok((session, decode))
    }
}

/// The JSON report.
#[derive(Debug, Serialize)]
struct BenchReport {
    workload: String,
    synthetic: bool,
    m: usize,
    d: usize,
    tokens: usize,
    backend: String,
    device: String,
    threads: usize,
    schemes: Vec<SchemeReport>,
    /// fastquery against each baseline measured in the same run.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    ratios: std::collections::BTreeMap<String, Ratio>,
    /// The same for the variants chosen for the least latency on the WAN and on the LAN.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    ratios_fastquery_wan: std::collections::BTreeMap<String, Ratio>,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    ratios_fastquery_lan: std::collections::BTreeMap<String, Ratio>,
    /// The backend's measured copy bandwidth (read + write), GB/s.
    bandwidth_gbs: f64,
    /// Per scheme: the memory-bound floor of its server time per token, the preprocessed table
    /// read once per request at `bandwidth_gbs`.
    table_floor_ms_per_token: std::collections::BTreeMap<String, f64>,
}

/// The backend's copy bandwidth in GB/s (bytes read plus written per second,
/// [`crate::kernels::copy_bandwidth`]): 1 GiB on a GPU, 256 MiB elsewhere, median of five.
fn measure_bandwidth<B: Backend>(b: &Arc<B>) -> anyhow::Result<f64> {
    let words = if b.info().accelerator { 1 << 28 } else { 64 << 20 };
    crate::kernels::copy_bandwidth(b, words, 5)
}

/// The server's counted work per token (`fastquery_backend::work`): key switches and the
/// one-limb transforms inside them, other transforms, coefficient products; for a design that
/// states its operation counts, those beside them.
fn print_work(reports: &[SchemeReport], tokens: usize) {
    println!("server work per token (counted in the first repetition):");
    let t = tokens.max(1) as f64;
    for r in reports {
        let w = &r.server_work;
        let stated = r.predicted_operations.map_or(String::new(), |o| {
            format!(
                "; the design states {:.1} key switches + {:.1} external products, {:.2} M products",
                o.key_switches as f64 / t,
                o.external_products as f64 / t,
                o.mac_products as f64 / t / 1e6
            )
        });
        println!(
            "  {:<14} {:.1} key switches ({:.0} transforms in them), {:.0} other transforms, {:.2} M coefficient products{stated}",
            r.scheme,
            w.key_switches as f64 / t,
            w.key_switch_transforms as f64 / t,
            w.transforms as f64 / t,
            w.mac_products as f64 / t / 1e6,
        );
        if let Some(k) = &r.kernel_times {
            let total: f64 = k.iter().map(|k| k.ms).sum();
            println!(
                "  {:<14} kernel time (FASTQUERY_CUDA_PROFILE): {:.3} ms per token in {:.0} launches; most first:",
                "",
                total / t,
                k.iter().map(|k| k.launches as f64).sum::<f64>() / t
            );
            for k in k.iter().take(12) {
                println!(
                    "  {:<14}   {:<26} {:>8.3} ms {:>7.0} launches {:>5.1}%",
                    "",
                    k.kernel,
                    k.ms / t,
                    k.launches as f64 / t,
                    100.0 * k.ms / total.max(f64::MIN_POSITIVE)
                );
            }
        }
        if w.launches > 0 {
            println!(
                "  {:<14} on the device: {:.0} kernel launches, {:.0} allocations, {:.0} waits for the device, {:.2} MB across the bus",
                "",
                w.launches as f64 / t,
                w.allocations as f64 / t,
                w.waits as f64 / t,
                w.bus_bytes as f64 / t / 1e6,
            );
        }
    }
}

/// The design search's estimate of each scheme's server time beside the measured one: the
/// latency objectives rank designs by it, so a run shows where it is off.
fn print_estimates(reports: &[SchemeReport]) {
    println!("server time per token, estimated by the design search's cost model / measured:");
    for r in reports {
        println!(
            "  {:<14} {:>10.1} ms / {:>10.1} ms ({:.2}x)",
            r.scheme,
            r.estimated_server_ms_per_token,
            r.server_ms_per_token,
            r.estimated_server_ms_per_token / r.server_ms_per_token
        );
        if let Some(p) = r.estimated_gpu_phases {
            println!(
                "  {:<14} GPU profile per request, phases synchronised (FASTQUERY_TRACE=sync to compare): decode {:.2}, expand+rgsw {:.2}, mac {:.2}, fold {:.2}, pack {:.2}, finish+encode {:.2} ms; served {:.2} ms",
                "",
                p.decode,
                p.expand,
                p.product,
                p.fold,
                p.pack,
                p.finish,
                p.served_ms()
            );
        }
    }
}

/// The memory-bound floor per token: the table read once per request.
fn table_floor_ms(r: &SchemeReport, kind: SchemeKind, tokens: usize, gbs: f64) -> f64 {
    let per_request = r.preprocess_bytes as f64 / (gbs * 1e9) * 1e3;
    if kind.batches_tokens() { per_request / tokens as f64 } else { per_request }
}

pub(crate) fn spinner() -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    pb.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

/// Ratios of fastquery to one baseline (baseline / fastquery: above 1 means fastquery wins).
#[derive(Debug, Serialize)]
struct Ratio {
    comm: f64,
    lan_latency: f64,
    wan_latency: f64,
    /// Over a session of `--session-tokens` tokens: the setup and that many tokens' query and
    /// response.
    #[serde(skip_serializing_if = "Option::is_none")]
    session_comm: Option<f64>,
}

/// Bytes on the link over a session of `tokens` tokens: the setup once, and each token's query
/// and response.
fn session_bytes(r: &SchemeReport, tokens: usize) -> f64 {
    r.setup_bytes as f64 + tokens as f64 * (r.upload_bytes_per_token + r.download_bytes_per_token)
}

fn run_one<B: Backend>(
    b: &Arc<B>,
    kind: SchemeKind,
    table: &IntTable,
    ids: &[usize],
    (plain_bits, design): (Option<u32>, DesignArgs),
    clients: usize,
    runs: (usize, usize),
) -> anyhow::Result<SchemeReport> {
    let pb = spinner();
    let plain = plain_bits.unwrap_or(kind.default_plain_bits());
    let inputs = design.apply(DesignInputs::for_backend(b.as_ref(), table, plain, ids.len())?)?;
    let report = harness::run_on(kind, b.clone(), table, ids, &inputs, clients, runs, &|msg| {
        pb.set_message(msg.to_string())
    });
    pb.finish_and_clear();
    Ok(report?)
}

/// The tables a run's schemes query, each built only where one of them needs it: the
/// baselines' fixed-point encoding and fastquery's quantized one of the same synthetic table.
pub(crate) struct Tables {
    fixed: Option<IntTable>,
    pub(crate) quantized: Option<IntTable>,
}

impl Tables {
    /// The synthetic `workload` table of `seed`, encoded for `kinds` (the real-valued table
    /// goes once both are built).
    pub(crate) fn build(workload: Workload, seed: u64, kinds: &[SchemeKind]) -> anyhow::Result<Self> {
        let (m, d) = workload.shape();
        eprintln!("building the synthetic {} table ({m} x {d}, seed {seed})", workload.name());
        let real = workload.synthetic(seed);
        let fixed =
            kinds.iter().any(|k| !k.is_fastquery()).then(|| SchemeKind::Cheetah.table(&real)).transpose()?;
        let quantized = kinds
            .iter()
            .any(|k| k.is_fastquery())
            .then(|| {
                eprintln!(
                    "quantizing it for fastquery ({QUANT_BITS} bits on average, at most {QUANT_MAX_BITS})"
                );
                SchemeKind::FastQuery.table(&real)
            })
            .transpose()?;
        Ok(Self { fixed, quantized })
    }

    /// The table `kind` queries.
    pub(crate) fn of(&self, kind: SchemeKind) -> anyhow::Result<&IntTable> {
        if kind.is_fastquery() { self.quantized.as_ref() } else { self.fixed.as_ref() }
            .with_context(|| format!("no table was built for {}", kind.name()))
    }
}

/// `count` token ids of a table of `m` rows, uniform, from `seed` (the same ids for every
/// scheme of a run).
pub(crate) fn token_ids(seed: u64, count: usize, m: usize) -> Vec<usize> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 0x70_6b_65_6e);
    (0..count).map(|_| rng.random_range(0..m)).collect()
}

/// `fastquery bench`.
pub fn run(backend: &AnyBackend, args: &BenchArgs) -> anyhow::Result<bool> {
    let workload = Workload::parse(&args.workload)?;
    let kinds = args.schemes.iter().map(|s| SchemeKind::parse(s)).collect::<Result<Vec<_>, _>>()?;
    if args.tokens == 0 {
        anyhow::bail!("--tokens must be at least 1");
    }
    let (m, d) = workload.shape();
    let info = backend.info();
    let tables = Tables::build(workload, args.seed, &kinds)?;
    if let Some(q) = &tables.quantized {
        let plain = args.plain_bits.unwrap_or(SchemeKind::FastQuery.default_plain_bits());
        print_candidates(&args.design.apply(backend.design_inputs(q, plain, args.tokens)?)?)?;
    }
    let ids = token_ids(args.seed, args.tokens, m);
    let mut reports = Vec::new();
    for &kind in &kinds {
        let t = tables.of(kind)?;
        let r = crate::with_backend!(backend, b => run_one(b, kind, t, &ids, (args.plain_bits, args.design), args.clients, (args.warm_up as usize, args.repeat as usize))?);
        reports.push(r);
    }
    print_table(workload.name(), m, d, args.tokens, &info.device, &reports);
    let gbs = crate::with_backend!(backend, b => measure_bandwidth(b)?);
    let mut floors = std::collections::BTreeMap::new();
    println!("memory-bound floors ({} copy bandwidth measured: {gbs:.1} GB/s read + write):", info.name);
    for (r, kind) in reports.iter().zip(&kinds) {
        let floor = table_floor_ms(r, *kind, args.tokens, gbs);
        floors.insert(r.scheme.clone(), floor);
        println!(
            "  {:<14} server {:>10.1} ms/token; table floor {:>8.2} ms/token ({:.0} MB preprocessed; {:.1}x the floor)",
            r.scheme,
            r.server_ms_per_token,
            floor,
            r.preprocess_bytes as f64 / 1e6,
            r.server_ms_per_token / floor
        );
    }
    print_work(&reports, args.tokens);
    print_estimates(&reports);
    if args.warm_up > 0 {
        println!(
            "each scheme first sent its request {} time(s) unmeasured (every share verified)",
            args.warm_up
        );
    }
    if args.repeat > 1 {
        println!("server time per token over {} repetitions (the tables give the medians):", args.repeat);
        for r in &reports {
            let runs: Vec<String> = r.server_ms_per_token_runs.iter().map(|t| format!("{t:.1}")).collect();
            println!("  {:<14} {} ms", r.scheme, runs.join(", "));
        }
    }
    for r in &reports {
        if let Some(b) = &r.batching {
            println!(
                "{}: {} clients x {} tokens: one by one {:.0} ms, batched {:.0} ms ({:.2}x){}",
                r.scheme,
                b.clients,
                b.tokens,
                b.sequential_ms,
                b.batched_ms,
                b.speedup,
                if b.verified { "" } else { "  SHARES DID NOT RECONSTRUCT" }
            );
        }
    }
    // The session the designs were made for (the flag's, or FASTQUERY_SESSION_TOKENS).
    let session = reports.iter().find_map(|r| r.inputs.session_tokens);
    let ratios_main = ratios(&reports, "fastquery", session);
    let ratios_wan = ratios(&reports, "fastquery-wan", session);
    let ratios_lan = ratios(&reports, "fastquery-lan", session);
    let markdown = markdown(
        workload.name(),
        args.tokens,
        &info.device,
        &reports,
        &[("fastquery", &ratios_main), ("fastquery-wan", &ratios_wan), ("fastquery-lan", &ratios_lan)],
        session,
    );
    print!("{markdown}");
    let all_ok = reports.iter().all(|r| r.verified && r.batching.as_ref().is_none_or(|b| b.verified));
    if let Some(path) = &args.json {
        let threads = backend.threads();
        let report = BenchReport {
            workload: workload.name().into(),
            synthetic: true,
            m,
            d,
            tokens: args.tokens,
            backend: info.name.into(),
            device: info.device.clone(),
            threads,
            schemes: reports,
            ratios: ratios_main,
            ratios_fastquery_wan: ratios_wan,
            ratios_fastquery_lan: ratios_lan,
            bandwidth_gbs: gbs,
            table_floor_ms_per_token: floors,
        };
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        let md = path.with_extension("md");
        std::fs::write(&md, &markdown).with_context(|| format!("writing {}", md.display()))?;
        let svg = path.with_extension("svg");
        crate::chart::bytes_and_latency(
            &svg,
            &format!("{}, {} tokens", workload.name(), args.tokens),
            &report.schemes,
        )?;
        eprintln!("wrote {}, {} and {}", path.display(), md.display(), svg.display());
    }
    Ok(all_ok)
}

/// The server a cost model estimates for, in words.
pub(crate) fn server_name(server: fastquery_protocol::cost::Server) -> String {
    match server.device {
        fastquery_protocol::cost::Device::Cpu => format!("a {}-thread CPU server", server.threads),
        fastquery_protocol::cost::Device::Gpu => "a GPU server (the H200's profile)".into(),
    }
}

/// FastQuery's cost model: the designs it ranks best, and the one with the fewest bytes.
fn print_candidates(inputs: &DesignInputs) -> anyhow::Result<()> {
    use fastquery_protocol::{
        fastquery,
        harness::{LAN, WAN},
    };
    let started = std::time::Instant::now();
    let DesignInputs { m, d, bits, plain_bits, tokens, .. } = *inputs;
    let server = inputs.server();
    let objective = fastquery::Objective::Latency { link: WAN, server };
    let all = fastquery::candidates(m, d, bits, plain_bits, tokens, objective)?;
    let show = |tag: &str, c: &fastquery::Choice| {
        println!(
            "  {tag} N={} chain {}x{} bits (response {} limbs), block {}x{}, pack {}{}: predicted query {} + response {} per request, est. server {:.0} ms + client {:.0} ms, WAN {:.1} ms/token",
            c.n,
            c.prime_bits.len(),
            c.prime_bits.first().copied().unwrap_or(0),
            c.response_limbs,
            c.d1,
            c.d0,
            c.pack,
            if c.c1_bits > 0 { format!(", c1 rounded to {} bits", c.c1_bits) } else { String::new() },
            mb(c.predicted.query as f64),
            mb(c.predicted.response as f64),
            c.server_ms,
            c.client_ms,
            c.latency_ms_per_token
        );
    };
    println!(
        "fastquery cost model, blocked layouts ({} designs pass the noise analysis, searched in {:.2} s; ranked by WAN latency on {}):",
        all.len(),
        server_name(server),
        started.elapsed().as_secs_f64()
    );
    for (i, (c, _)) in all.iter().take(5).enumerate() {
        show(if i == 0 { " first:" } else { "      :" }, c);
    }
    if let Some((c, _)) = all.iter().min_by_key(|(c, _)| c.predicted.query + c.predicted.response) {
        show("fewest bytes:", c);
    }
    let started = std::time::Instant::now();
    let folded = fastquery_protocol::fold::candidates(
        fastquery::SCHEME_ID,
        "fastquery",
        (m, d, bits),
        plain_bits,
        tokens,
        inputs.allowed(),
    );
    println!(
        "fastquery cost model, folded queries ({} designs pass the noise analysis, searched in {:.2} s; fastquery takes the fewest bytes of all):",
        folded.len(),
        started.elapsed().as_secs_f64()
    );
    for (f, bytes, ms) in folded.iter().take(3) {
        let s = f.summary();
        println!(
            "  N={} chain {:.0} bits -> {:.0}, {}: predicted query {} + response {} per request, est. server {ms:.0} ms",
            s.n,
            s.log2_q,
            s.log2_q_response,
            s.layout,
            mb(bytes.query as f64),
            mb(bytes.response as f64)
        );
    }
    // The latency variants rank both kinds together.
    for (name, link) in [("fastquery-wan", WAN), ("fastquery-lan", LAN)] {
        let objective = fastquery::Objective::Latency { link, server };
        let (design, latency) =
            fastquery::choose_any(m, d, bits, plain_bits, tokens, inputs.allowed(), objective)?;
        let kind = if matches!(design, SchemeDesign::Folded(_)) { "folded" } else { "blocked" };
        let s = design.summary();
        let what = format!("{kind}, N={} chain {:.0} bits, {}", s.n, s.log2_q, s.layout);
        println!("{name} takes the least estimated {} latency: {what} ({latency:.1} ms/token)", link.name);
    }
    Ok(())
}

fn ratios(
    reports: &[SchemeReport],
    variant: &str,
    session: Option<usize>,
) -> std::collections::BTreeMap<String, Ratio> {
    let mut out = std::collections::BTreeMap::new();
    let Some(fq) = reports.iter().find(|r| r.scheme == variant) else { return out };
    let comm = |r: &SchemeReport| r.upload_bytes_per_token + r.download_bytes_per_token;
    for r in reports.iter().filter(|r| !r.scheme.starts_with("fastquery")) {
        out.insert(
            r.scheme.clone(),
            Ratio {
                comm: comm(r) / comm(fq),
                lan_latency: r.lan_ms_per_token / fq.lan_ms_per_token,
                wan_latency: r.wan_ms_per_token / fq.wan_ms_per_token,
                session_comm: session.map(|t| session_bytes(r, t) / session_bytes(fq, t)),
            },
        );
    }
    out
}

/// The run as a Markdown table, with the ratios of fastquery to each baseline.
fn markdown(
    workload: &str,
    tokens: usize,
    device: &str,
    reports: &[SchemeReport],
    ratios: &[(&str, &std::collections::BTreeMap<String, Ratio>)],
    session: Option<usize>,
) -> String {
    let mut s = format!("\n### {workload}, {tokens} tokens per request ({device})\n\n");
    s += "| scheme | up / token | down / token | setup (once) | server / token | LAN / token | WAN / token | predicted = measured bytes |\n";
    s += "|---|---|---|---|---|---|---|---|\n";
    for r in reports {
        let check = match &r.predicted_bytes {
            Some(p) if *p == r.measured_bytes => "yes".to_string(),
            Some(p) => format!("NO (predicted {p:?})"),
            None => "-".to_string(),
        };
        s += &format!(
            "| {} | {} | {} | {} | {:.1} ms | {:.1} ms | {:.1} ms | {} |\n",
            r.scheme,
            mb(r.upload_bytes_per_token),
            mb(r.download_bytes_per_token),
            mb(r.setup_bytes as f64),
            r.server_ms_per_token,
            r.lan_ms_per_token,
            r.wan_ms_per_token,
            check
        );
    }
    if let Some(t) = session {
        s += &format!(
            "\nOver a session of {t} tokens (the setup once, then each token's query and response):"
        );
        for r in reports {
            s += &format!(" {} {};", r.scheme, mb(session_bytes(r, t)));
        }
        s.pop();
        s += ".\n";
    }
    for (variant, ratios) in ratios.iter().filter(|r| !r.1.is_empty()) {
        let over = session.map_or(String::new(), |t| format!(" communication over {t} tokens |"));
        let rule = if session.is_some() { "---|" } else { "" };
        s += &format!(
            "\n| {variant} vs | communication | LAN latency | WAN latency |{over}\n|---|---|---|---|{rule}\n"
        );
        for (name, r) in ratios.iter() {
            s += &format!("| {name} | {:.2}x | {:.2}x | {:.2}x |", r.comm, r.lan_latency, r.wan_latency);
            if let Some(c) = r.session_comm {
                s += &format!(" {c:.2}x |");
            }
            s += "\n";
        }
    }
    s
}

/// Bytes for a report: MB to two decimals, or KB to one below 0.1 MB (a folded query of a few
/// KB per token would read "0.00 MB").
pub(crate) fn mb(x: f64) -> String {
    if x < 1e5 { format!("{:.1} KB", x / 1e3) } else { format!("{:.2} MB", x / 1e6) }
}

fn print_table(workload: &str, m: usize, d: usize, tokens: usize, device: &str, reports: &[SchemeReport]) {
    println!("workload {workload} ({m} x {d}, synthetic), {tokens} tokens, {device}");
    println!(
        "{:<10} {:>8} {:>12} {:>12} {:>10} {:>12} {:>12} {:>12} {:>12}",
        "scheme",
        "verified",
        "up/token",
        "down/token",
        "setup",
        "server/token",
        "client/token",
        "LAN/token",
        "WAN/token"
    );
    for r in reports {
        println!(
            "{:<10} {:>8} {:>12} {:>12} {:>10} {:>9.1} ms {:>9.1} ms {:>9.1} ms {:>9.1} ms",
            r.scheme,
            if r.verified { "yes" } else { "NO" },
            mb(r.upload_bytes_per_token),
            mb(r.download_bytes_per_token),
            mb(r.setup_bytes as f64),
            r.server_ms_per_token,
            r.client_ms_per_token,
            r.lan_ms_per_token,
            r.wan_ms_per_token
        );
    }
    for r in reports {
        let p = &r.params;
        println!(
            "  {}: N={} log2 q={:.1} ({} limbs) -> q'={:.1} bits, t=2^{}, sigma={}, noise slack {:.1} bits spent on {} dropped low c0 bits{}; {}; preprocessed {} in {:.0} ms",
            r.scheme,
            p.n,
            p.log2_q,
            p.limbs,
            p.log2_q_response,
            p.t,
            p.sigma,
            p.noise_slack_bits,
            p.drop_bits,
            if p.c1_bits > 0 { format!(" and c1 rounded to {} bits", p.c1_bits) } else { String::new() },
            p.layout,
            mb(r.preprocess_bytes as f64),
            r.preprocess_ms
        );
    }
}

/// `fastquery demo`: private queries on the embedded default table.
pub fn demo(backend: &AnyBackend, scheme: &str, tokens: &[usize]) -> anyhow::Result<bool> {
    let kind = SchemeKind::parse(scheme)?;
    let workload = Workload::Tiny;
    let (m, d) = workload.shape();
    if let Some(&bad) = tokens.iter().find(|&&k| k >= m) {
        anyhow::bail!("token id {bad} is outside the demo table's vocabulary of {m} (ids 0..{})", m - 1);
    }
    if tokens.is_empty() {
        anyhow::bail!("no tokens given");
    }
    let real = workload.synthetic(1);
    // FastQuery queries the quantizer's table; the baselines the 16-bit fixed-point one.
    let table = kind.table(&real)?;
    println!("FastQuery demo: a private lookup in a {m} x {d} embedding table (synthetic, seed 1)");
    if kind.is_fastquery() {
        println!(
            "The table is quantized per channel ({QUANT_BITS} bits on average, at most {QUANT_MAX_BITS}); Q[k][c] below are its codes."
        );
    }
    println!("The client holds token ids {tokens:?}; the server holds the table. Neither sees the other's.");
    let r = crate::with_backend!(backend, b => run_one(b, kind, &table, tokens, (None, DesignArgs::default()), 0, (0, 1))?);
    let t = tokens.len() as f64;
    println!("scheme {} on '{}': {}", r.scheme, backend.info().name, r.params.layout);
    println!(
        "  setup (keys, once): {}   query: {}   response: {}",
        mb(r.setup_bytes as f64),
        mb(r.upload_bytes_per_token * t),
        mb(r.download_bytes_per_token * t)
    );
    println!(
        "  compute: client {:.1} ms, server {:.1} ms; latency on LAN {:.1} ms, on WAN {:.1} ms",
        r.client_ms_per_token * t,
        r.server_ms_per_token * t,
        r.lan_ms_per_token * t,
        r.wan_ms_per_token * t
    );
    println!(
        "  parameters: N={}, log2 q={:.1}, t=2^{}, flooding sigma={} bits, noise slack {:.1} bits",
        r.params.n, r.params.log2_q, r.params.t, r.params.sigma, r.params.noise_slack_bits
    );
    let over_tcp = crate::net::demo_over_loopback(backend, kind, &table, tokens)?;
    for &k in tokens {
        let q = table.row(k);
        let show: Vec<String> =
            q.iter().take(4).zip(real.row(k)).map(|(&v, &x)| format!("{v} (~{x:+.4})")).collect();
        println!("  token {k:>4}: Q[k][0..4] = {}", show.join(", "));
    }
    if r.verified && over_tcp {
        println!(
            "shares reconstructed exactly: client share + server share = Q[k][c] (mod 2^{}) for all {} entries, \
             in process and over TCP",
            r.params.t,
            tokens.len() * d
        );
    } else {
        println!("SHARES DID NOT RECONSTRUCT: this is a bug, please report it");
    }
    Ok(r.verified && over_tcp)
}

#[cfg(test)]
mod byte_tests {
    #[test]
    fn small_byte_counts_read_in_kb() {
        assert_eq!(super::mb(3203.125), "3.2 KB");
        assert_eq!(super::mb(99_949.0), "99.9 KB");
        assert_eq!(super::mb(100_000.0), "0.10 MB");
        assert_eq!(super::mb(16_539_310.0), "16.54 MB");
    }
}
