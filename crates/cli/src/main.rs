//! # fastquery (the binary)
//!
//! The user-facing command, at the top of the crate graph. Its main job (`demo`, also what runs
//! with no subcommand) runs private queries on an embedded default table; `bench` measures the
//! schemes side by side; `check` and `kernels` check and time the arithmetic.
#![forbid(unsafe_code)]

mod backend;
mod bench;
mod chart;
mod check;
mod kernels;
mod net;
mod quantize;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::backend::BackendKind;

/// See the workspace manifest: large buffers are reused instead of mapped and faulted in anew.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Private embedding-table queries for two-party LLM inference.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Compute backend: cpu, cuda or wgpu (GPU backends only where compiled in).
    #[arg(long, global = true, default_value = "cpu")]
    backend: BackendKind,
    /// Worker threads of the CPU backend (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Private queries on the embedded default table (`tiny`): tokens, bytes each way, time, and
    /// the check that the two parties' shares add up to the table's rows.
    Demo {
        /// Token ids to look up.
        #[arg(long, value_delimiter = ',', default_values_t = [0usize, 1, 42, 255, 511])]
        tokens: Vec<usize>,
        /// Scheme (cheetah, iron, bumblebee, fastquery, fastquery-wan).
        #[arg(long, default_value = "fastquery")]
        scheme: String,
    },
    /// Runs schemes on a workload, verifies every share, and reports bytes, compute and latency.
    Bench(bench::BenchArgs),
    /// Mixed-precision quantization of a table under a bit budget: histogram, error, traffic.
    Quantize(quantize::QuantizeArgs),
    /// Self-check of the arithmetic: primes, roots, RNS, NTT against its definition and the
    /// backend conformance suite on the chosen backend.
    Check {
        /// Seed of the random inputs (default: fresh, printed so a failure can be replayed).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Serves private queries over TCP: loads and preprocesses a table once, then answers
    /// authorised clients (`fastquery query`) until Ctrl-C.
    Serve(net::ServeArgs),
    /// Queries a `fastquery serve` server: writes this party's shares to an .npy file.
    Query(net::QueryArgs),
    /// Microbenchmark summary: NTT against tfhe-ntt in the same run, thread scaling, and
    /// multiply-accumulate throughput.
    Kernels {
        /// Fewer repetitions (for smoke tests; numbers are noisier).
        #[arg(long)]
        quick: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Returns whether every check passed.
fn run(cli: Cli) -> anyhow::Result<bool> {
    let backend = cli.backend.open(cli.threads)?;
    match cli.command {
        Some(Command::Check { seed }) => check::run(&backend, seed),
        Some(Command::Kernels { quick }) => {
            kernels::run(&backend, quick)?;
            Ok(true)
        }
        Some(Command::Demo { tokens, scheme }) => bench::demo(&backend, &scheme, &tokens),
        Some(Command::Bench(args)) => bench::run(&backend, &args),
        Some(Command::Quantize(args)) => quantize::run(&args),
        Some(Command::Serve(args)) => net::serve(&backend, &args),
        Some(Command::Query(args)) => net::query(&args),
        None => bench::demo(&backend, "fastquery", &[0, 1, 42, 255, 511]),
    }
}
