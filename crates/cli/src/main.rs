//! # fastquery (the binary)
//!
//! The user-facing command, at the top of the crate graph. Until the private query lands, its
//! main job (no subcommand) is a self-check of the arithmetic on the chosen backend followed by a
//! microbenchmark summary; `check` and `kernels` run either half.
#![forbid(unsafe_code)]

mod backend;
mod check;
mod kernels;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::backend::BackendKind;

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
    /// Self-check of the arithmetic: primes, roots, RNS, NTT against its definition and the
    /// backend conformance suite on the chosen backend.
    Check {
        /// Seed of the random inputs (default: fresh, printed so a failure can be replayed).
        #[arg(long)]
        seed: Option<u64>,
    },
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
        None => {
            let ok = check::run(&backend, None)?;
            println!();
            kernels::run(&backend, false)?;
            Ok(ok)
        }
    }
}
