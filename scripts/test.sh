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
# lavapipe (Mesa's software Vulkan) for the wgpu backend: its whole conformance suite and the
# end-to-end schemes run on it, and must not skip.
bash scripts/install_vulkan.sh
export FASTQUERY_REQUIRE_WGPU=1
# The Vulkan loader warns on every device creation without a runtime dir.
if [ -z "${XDG_RUNTIME_DIR:-}" ]; then
  XDG_RUNTIME_DIR=$(mktemp -d)
  chmod 700 "$XDG_RUNTIME_DIR"
  export XDG_RUNTIME_DIR
fi
# The binary with both GPU backends compiled in must build; the CUDA one runs only where a GPU
# is, the wgpu one runs here on lavapipe (the demo, end to end, shares checked), and the CUDA
# backend's own code runs here on the emulator of its kernels (the same demo, about 45 s).
cargo build --locked -p fastquery --features cuda-emulator,wgpu
bin="${CARGO_TARGET_DIR:-target}/debug/fastquery"
"$bin" --backend wgpu demo --tokens 3,7 >/dev/null
"$bin" --backend cuda-emulator demo --tokens 3,7 >/dev/null
# A server over two emulated devices (`serve --devices 0,1`): each preprocesses its copy of the
# table and passes its own self-check, then a client's shares add up.
cargo test --locked -p fastquery --features cuda-emulator,wgpu --test commands -- serve_from_two_emulated_devices
cargo test --workspace --locked
