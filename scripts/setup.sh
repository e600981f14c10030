#!/usr/bin/env bash
# Installs what the build and the tests need on a fresh machine. Idempotent.
# Today: a Rust toolchain recent enough for the workspace (rust-version in Cargo.toml).
# Later issues add NVRTC (pip, into .cache/) and Mesa's lavapipe (apt) for the GPU checks.
set -euo pipefail
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
