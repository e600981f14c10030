#!/usr/bin/env bash
# Builds, here (no GPU needed), everything the CUDA checks run on a lent NVIDIA machine, and
# copies it stripped into .device/ (git-ignored; `carry` it to the device):
#   .device/fastquery    the binary with the CUDA backend (feature cuda)
#   .device/gpu-tests    crates/cuda/tests/gpu.rs: NVRTC compile, conformance on the GPU,
#                        every scheme end to end on the GPU (and the emulator's copies of both)
#   .device/cuda-bench   the criterion benches of benches/cuda.rs
#   .device/gpu_run.sh   the script to run there (scripts/gpu_run.sh)
# Then, on the device: `bash .device/gpu_run.sh` (see that script for what it writes to $OUT).
set -euo pipefail
cd "$(dirname "$0")/.."
exe_of() { python3 -c 'import sys,json
for l in sys.stdin:
    j = json.loads(l)
    if j.get("executable") and j.get("target", {}).get("name") == sys.argv[1]:
        print(j["executable"])' "$1" | tail -n1; }
cargo build --release --locked -p fastquery --features cuda --bins
tests=$(cargo test --release --locked -p fastquery-cuda --test gpu --no-run --message-format=json | exe_of gpu)
bench=$(cargo bench --locked -p fastquery-benches --features cuda --bench cuda --no-run --message-format=json | exe_of cuda)
mkdir -p .device
cp target/release/fastquery .device/fastquery
cp "$tests" .device/gpu-tests
cp "$bench" .device/cuda-bench
cp scripts/gpu_run.sh .device/gpu_run.sh
strip .device/fastquery .device/gpu-tests .device/cuda-bench
du -sh .device/* >&2
