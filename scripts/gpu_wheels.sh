#!/usr/bin/env bash
# Downloads, on a machine with internet, the wheels scripts/gpu_check.sh needs on an offline
# GPU machine: Serval's dependencies with the dev and exl3 extras, exllamav2, and a build
# backend, for Linux x86_64 and the GPU machine's Python. torch and the NVIDIA/CUDA/triton
# wheels are left out: the GPU machine's own CUDA torch is used.
# SKIP (a regex of package names) leaves out more, e.g. what the GPU machine already has.
# Usage: [SKIP='numpy|sympy'] scripts/gpu_wheels.sh OUT_DIR [PYTHON_VERSION (default 3.12)]
set -euo pipefail
cd "$(dirname "$0")/.."

OUT="${1:?usage: scripts/gpu_wheels.sh OUT_DIR [PYTHON_VERSION]}"
PYVER="${2:-3.12}"
PYTHON="${PYTHON:-python3}"
# pip matches --platform tags literally, so every glibc version is named (2.39 down to 2.17).
target=(--python-version "$PYVER" --only-binary=:all: --platform linux_x86_64)
for glibc in $(seq 39 -1 17); do target+=(--platform "manylinux_2_${glibc}_x86_64"); done
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

# Resolve the whole set without installing it, then keep all but torch and its CUDA stack.
"$PYTHON" -m pip install --disable-pip-version-check -q --dry-run --ignore-installed \
    --target "$scratch/target" "${target[@]}" --report "$scratch/report.json" ".[dev,exl3]"
SKIP="${SKIP:-}" "$PYTHON" - "$scratch/report.json" >"$scratch/wanted.txt" <<'PY'
import json, os, re, sys
extra = os.environ["SKIP"]
skip = re.compile(rf"^(torch|triton|nvidia-.*|cuda-.*|serval{'|' + extra if extra else ''})$")
for item in json.load(open(sys.argv[1]))["install"]:
    meta = item["metadata"]
    name = re.sub(r"[-_.]+", "-", meta["name"]).lower()
    if not skip.match(name):
        print(f"{name}=={meta['version']}")
PY
grep -o '"exllamav2==[^"]*"' pyproject.toml | head -n 1 | tr -d '"' >>"$scratch/wanted.txt"
grep -o '"setuptools>=[^"]*"' pyproject.toml | tr -d '"' >>"$scratch/wanted.txt"
mkdir -p "$OUT"
"$PYTHON" -m pip download --disable-pip-version-check -q --no-deps "${target[@]}" \
    --dest "$OUT" -r "$scratch/wanted.txt"
echo "$(wc -l <"$scratch/wanted.txt") packages, $(du -sh "$OUT" | cut -f1) in $OUT"
