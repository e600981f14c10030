//! # fastquery (the binary)
//!
//! The user-facing command, at the top of the crate graph. Its main job (`demo`, also what runs
//! with no subcommand) runs private queries on an embedded default table; `bench` measures the
//! schemes side by side; `check` and `kernels` check and time the arithmetic.
// One audited FFI call (the allocator option in `keep_freed_memory`); nothing else is unsafe.
#![deny(unsafe_code)]

mod backend;
mod bench;
mod chart;
mod check;
mod kernels;
mod net;
mod plan;
mod quantize;
mod session;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::backend::BackendKind;

/// See the workspace manifest: large buffers are reused instead of mapped and faulted in anew.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_decommits` (index in mimalloc v3's `mi_option_e`; the -sys crate
/// names no constant for it). The test `allocator_option_indices_match_this_mimalloc` pins it.
const MI_OPTION_PURGE_DECOMMITS: libmimalloc_sys::mi_option_t = 5;

/// Makes the allocator's purges of freed memory lazy: `MADV_FREE` (the kernel takes the pages
/// back only under memory pressure) instead of `MADV_DONTNEED` (the pages go back at once).
///
/// Why: a request allocates and frees buffers of hundreds of MB between its phases. Returned at
/// once, they come back as fresh pages that the kernel faults in and zeroes, and on a VM with
/// free-page reporting (Firecracker here) the host has taken them too: an N = 8192 expansion of
/// 2^11 slots took 6.6 s instead of 1.8 s, and 6.7 s of system time instead of 0.6 s, over five
/// repetitions (docs/BENCHMARKS.md). Unlike turning purging off, lazily freed pages cannot run
/// the machine out of memory. `MIMALLOC_PURGE_DECOMMITS` in the environment still wins.
#[allow(unsafe_code)]
fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DECOMMITS").is_some() {
        return;
    }
    // SAFETY: sets an integer in mimalloc's option table; no pointers, valid at any time.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DECOMMITS, 0) }
}

/// Private embedding-table queries for two-party LLM inference.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Compute backend: cpu, cuda, cuda-emulator or wgpu (GPU backends only where compiled in;
    /// cuda-emulator runs the CUDA backend's kernels on the CPU, for checks without a GPU).
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
        /// Scheme (cheetah, iron, bumblebee, fastquery, fastquery-wan, fastquery-lan).
        #[arg(long, default_value = "fastquery")]
        scheme: String,
    },
    /// Runs schemes on a workload, verifies every share, and reports bytes, compute and latency.
    Bench(bench::BenchArgs),
    /// The design fastquery takes for each length of a client's session (setup, bytes per
    /// token, and both together), without running it: what `serve --session-tokens` would pick.
    Plan(plan::PlanArgs),
    /// Whole client sessions side by side: the setup, the prompt in requests, then decode steps
    /// one token each, every share verified; bytes against the designs' predictions.
    Session(session::SessionArgs),
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
    keep_freed_memory();
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
    // `serve` opens its own devices (one or several) and `query` none, so the backend opens only
    // where a command runs on it.
    let (kind, threads) = (cli.backend, cli.threads);
    let open = move || kind.open(threads);
    match cli.command {
        Some(Command::Check { seed }) => check::run(&open()?, seed),
        Some(Command::Kernels { quick }) => {
            kernels::run(&open()?, quick)?;
            Ok(true)
        }
        Some(Command::Demo { tokens, scheme }) => bench::demo(&open()?, &scheme, &tokens),
        Some(Command::Bench(args)) => bench::run(&open()?, &args),
        Some(Command::Plan(args)) => plan::run(&open()?, &args),
        Some(Command::Session(args)) => session::run(&open()?, &args),
        Some(Command::Quantize(args)) => quantize::run(&args),
        Some(Command::Serve(args)) => net::serve(kind, threads, &args),
        Some(Command::Query(args)) => net::query(&args),
        None => bench::demo(&open()?, "fastquery", &[0, 1, 42, 255, 511]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The index is mimalloc v3's: its neighbours hold their documented defaults
    /// (`arena_eager_commit` 2, `purge_decommits` 1, `purge_delay` 1000 ms), and setting it
    /// reads back. A mimalloc that reorders its options fails here, not silently in production.
    #[test]
    #[allow(unsafe_code)]
    fn allocator_option_indices_match_this_mimalloc() {
        if std::env::vars_os().any(|(k, _)| k.to_string_lossy().starts_with("MIMALLOC_")) {
            eprintln!("skipped: MIMALLOC_* set in the environment");
            return;
        }
        // SAFETY: reads and writes integers in mimalloc's option table.
        unsafe {
            assert_eq!(libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DECOMMITS - 1), 2);
            assert_eq!(libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DECOMMITS), 1);
            assert_eq!(libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DECOMMITS + 10), 1000);
            keep_freed_memory();
            assert_eq!(libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DECOMMITS), 0);
        }
    }
}
