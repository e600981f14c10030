#!/usr/bin/env bash
# Installs what the build and the tests need on a fresh machine, idempotently, into .cache/.
# - a Rust toolchain recent enough for the workspace (checked; rustup installs it);
# - a C++17 compiler (g++ through apt when missing), for the CUDA emulator of the tests (the
#   kernels compiled for the host: fastquery-cuda's feature `emulator`);
# - NVRTC 13.0 from PyPI (nvidia-cuda-nvrtc), so that CI compiles every CUDA kernel for sm_80 and
#   sm_90 without a GPU or a CUDA toolkit. Prints the folder to put on LD_LIBRARY_PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install Rust with rustup (https://rustup.rs), then re-run." >&2
  exit 1
fi
need="1.91"
have=$(rustc --version | awk '{print $2}')
if [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -n1)" != "$need" ]; then
  echo "rustc $have is older than $need: run 'rustup update stable'." >&2
  exit 1
fi
if ! command -v c++ >/dev/null 2>&1 && ! command -v g++ >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    sudo=""
    if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then sudo="sudo"; fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends g++ >&2 ||
      { $sudo apt-get update -q >&2 || true; DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends g++ >&2; }
  else
    echo "no C++ compiler and no apt-get: install g++ (the CUDA emulator of the tests needs it)" >&2
    exit 1
  fi
fi
nvrtc_dir=.cache/nvrtc
lib="$nvrtc_dir/nvidia/cu13/lib"
if [ ! -f "$lib/libnvrtc.so.13" ]; then
  mkdir -p "$nvrtc_dir/wheel"
  python3 -m pip download --no-deps --quiet --disable-pip-version-check \
    "nvidia-cuda-nvrtc==13.0.88" -d "$nvrtc_dir/wheel" >&2
  python3 - "$nvrtc_dir" <<'PY'
import glob, sys, zipfile
d = sys.argv[1]
whl = glob.glob(d + "/wheel/nvidia_cuda_nvrtc-*.whl")[0]
with zipfile.ZipFile(whl) as z:
    for name in z.namelist():
        if name.startswith("nvidia/cu13/lib/"):
            z.extract(name, d)
PY
fi
echo "$PWD/$lib"
