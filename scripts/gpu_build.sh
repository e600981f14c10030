#!/usr/bin/env bash
# Builds, here (no GPU needed), everything the CUDA checks run on a lent NVIDIA machine, and
# copies it stripped into .device/ (git-ignored; `carry` it to the device):
#   .device/fastquery    the binary with the CUDA and wgpu backends (features cuda, wgpu)
#   .device/gpu-tests    crates/cuda/tests/gpu.rs: NVRTC compile, conformance on the GPU,
#                        every scheme end to end on the GPU (and the emulator's copies of both)
#   .device/wgpu-tests   crates/wgpu/tests/wgpu.rs: the conformance suite and every scheme on the
#                        first wgpu adapter (Vulkan on an NVIDIA machine)
#   .device/cuda-bench   the criterion benches of benches/cuda.rs
#   .device/gl/*.deb     the Vulkan loader (libvulkan1), for a machine that has NVIDIA's Vulkan
#                        driver but no loader (fetched with apt-get download where apt works)
#   .device/gpu_run.sh   the script to run there (scripts/gpu_run.sh)
# Then, on the device: `bash .device/gpu_run.sh` (see that script for what it writes to $OUT).
set -euo pipefail
cd "$(dirname "$0")/.."
exe_of() { python3 -c 'import sys,json
for l in sys.stdin:
    j = json.loads(l)
    if j.get("executable") and j.get("target", {}).get("name") == sys.argv[1]:
        print(j["executable"])' "$1" | tail -n1; }
cargo build --release --locked -p fastquery --features cuda,wgpu --bins
tests=$(cargo test --release --locked -p fastquery-cuda --test gpu --no-run --message-format=json | exe_of gpu)
wtests=$(cargo test --release --locked -p fastquery-wgpu --test wgpu --no-run --message-format=json | exe_of wgpu)
bench=$(cargo bench --locked -p fastquery-benches --features cuda --bench cuda --no-run --message-format=json | exe_of cuda)
mkdir -p .device
cp target/release/fastquery .device/fastquery
cp "$tests" .device/gpu-tests
cp "$wtests" .device/wgpu-tests
cp "$bench" .device/cuda-bench
cp scripts/gpu_run.sh .device/gpu_run.sh
strip .device/fastquery .device/gpu-tests .device/wgpu-tests .device/cuda-bench
# The Vulkan loader as a package to unpack there (gpu_run.sh wgpu); optional.
if command -v apt-get >/dev/null 2>&1 && ! ls .device/gl/libvulkan1_*.deb >/dev/null 2>&1; then
  lists=$(mktemp -d)
  mkdir -p .device/gl "$lists/partial"
  o=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 "-oDir::State::Lists=$lists")
  if apt-get "${o[@]}" update -q >/dev/null 2>&1; then
    (cd .device/gl && apt-get "${o[@]}" download libvulkan1 >/dev/null 2>&1) || echo "no libvulkan1 package: gpu_run.sh wgpu needs the machine's own loader" >&2
  fi
  rm -rf "$lists"
fi
du -sh .device/* >&2
