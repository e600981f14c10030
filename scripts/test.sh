#!/usr/bin/env bash
# Every test: the README's second command, and exactly what .ci/run runs.
set -euo pipefail
cd "$(dirname "$0")/.."
nvrtc_lib=$(bash scripts/setup.sh)
export LD_LIBRARY_PATH="$nvrtc_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# With NVRTC installed, the CUDA kernel compile test must run, not skip.
export FASTQUERY_REQUIRE_NVRTC=1
# The real SmolLM2 table (workload smollm2), for the GGUF reader's test on a real file.
FASTQUERY_SMOLLM2=$(bash scripts/install_smollm2.sh)
export FASTQUERY_SMOLLM2
# The binary with the CUDA backend compiled in must build (it runs only where a GPU is).
cargo build --locked -p fastquery --features cuda
cargo test --workspace --locked
