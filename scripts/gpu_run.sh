#!/usr/bin/env bash
# Every CUDA check of issue 7, on a machine with an NVIDIA GPU, from the binaries that
# scripts/gpu_build.sh put in .device/. Two parts, each under 10 minutes (every step has its
# own time limit, and a failing step does not stop the others), most important first:
#   bash .device/gpu_run.sh schemes   correctness (tests, check) and the schemes' benches
#   bash .device/gpu_run.sh kernels   the kernel summary, the criterion benches, the fused
#                                     key switch against its steps, the CPU at two threads
# (no argument: both). Writes to $OUT (default /tmp/fastquery-gpu):
#   run.log               everything printed, step by step, with each step's exit status
#   bench-<w>-<t>.json    `fastquery bench --backend cuda` reports (server time, floors, bytes)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/fastquery-gpu}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/run.log") 2>&1
D=.device
# NVRTC: the toolkit's, wherever the driver's libraries are not enough.
if ! ldconfig -p | grep -q libnvrtc; then
  for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib $(ls -d /usr/local/cuda-*/lib64 2>/dev/null); do
    if ls "$d"/libnvrtc.so* >/dev/null 2>&1; then
      export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
      break
    fi
  done
fi
step() {
  local name=$1 limit=$2
  shift 2
  echo "=== $name (limit ${limit}s): $*"
  local t0=$SECONDS
  timeout "$limit" "$@"
  echo "=== $name: exit $? after $((SECONDS - t0)) s"
}
date -u
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
ldconfig -p | grep -E 'libcuda\.|libnvrtc' || true
export FASTQUERY_REQUIRE_NVRTC=1 FASTQUERY_TRACE=1
part=${1:-all}
if [ "$part" = schemes ] || [ "$part" = all ]; then
  # 1. Correctness: NVRTC, the conformance suite and every scheme on the GPU (the emulator's
  #    copies already ran in CI and are skipped here).
  step tests 120 "$D/gpu-tests" --skip emulated --test-threads 1
  step check 45 "$D/fastquery" --backend cuda check
  # 2. The schemes with the server on the GPU: the two fastest at llama-7b for 8, 1 and 128
  #    tokens, llama-30b at 8; every share verified, the memory floor printed beside each.
  for t in 8 1 128; do
    step "bench llama-7b $t" 100 "$D/fastquery" --backend cuda bench --workload llama-7b \
      --schemes fastquery,cheetah --tokens "$t" --repeat 3 --json "$OUT/bench-llama-7b-$t.json"
  done
  step "bench llama-30b 8" 100 "$D/fastquery" --backend cuda bench --workload llama-30b \
    --schemes fastquery,cheetah --tokens 8 --repeat 3 --json "$OUT/bench-llama-30b-8.json"
fi
if [ "$part" = kernels ] || [ "$part" = all ]; then
  # 3. Kernels: the summary, then criterion (short windows: each batch fills the GPU).
  step kernels 90 "$D/fastquery" --backend cuda kernels
  step criterion 240 "$D/cuda-bench" --bench --warm-up-time 1 --measurement-time 2
  # The fused key switch against its composed steps (FASTQUERY_CUDA_FUSED_KS=0), one run each.
  for f in 0 1; do
    FASTQUERY_CUDA_FUSED_KS=$f step "fused key switch $f" 50 "$D/fastquery" --backend cuda bench \
      --workload llama-7b --schemes fastquery --tokens 8 --repeat 3
  done
  # The issue's "20x the 2-core CPU backend", on this machine's CPU held to two threads.
  step "cpu, 2 threads" 110 "$D/fastquery" --backend cpu --threads 2 bench --workload llama-7b \
    --schemes fastquery --tokens 8 --json "$OUT/bench-cpu2-llama-7b-8.json"
fi
date -u
