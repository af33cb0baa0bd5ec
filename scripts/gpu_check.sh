#!/usr/bin/env bash
# The GPU check of the ExLlama engines, in one go on a CUDA machine (docs/gpu-check.md):
#   installs what is missing (from a folder of wheels when the machine is offline), builds the
#   exllamav2 and exllamav3 CUDA extensions, builds a tiny fp16 model and a LoRA, runs
#   tests/gpu (logits and greedy tokens against transformers, LoRA, speculative decoding,
#   8 concurrent streams and a JSON schema through the real HTTP server, on each engine),
#   then prints tokens/s of each engine alone and through the HTTP server.
# Usage: scripts/gpu_check.sh [WHEEL_DIR]     (or set SERVAL_WHEELS)
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELS="${1:-${SERVAL_WHEELS:-}}"
PYTHON="${PYTHON:-python3}"
VENV=.gpu-venv
WORK="${SERVAL_GPU_WORK:-/tmp/serval-gpu-check}"
say() { printf '[gpu-check %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
started=$SECONDS

if ! nvidia-smi -L >/dev/null 2>&1; then
    say "no NVIDIA GPU is visible (nvidia-smi -L failed)"
    exit 1
fi
nvidia-smi -L >&2

# A venv that sees the machine's own CUDA build of torch; everything else goes into it.
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv --system-site-packages "$VENV"
fi
export PATH="$PWD/$VENV/bin:$PATH"  # torch's JIT builder looks for ninja on PATH
if ! python -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() and torch.version.cuda else 1)'; then
    say "torch is missing or is not a CUDA build; install a CUDA torch for this machine first"
    exit 1
fi

pip_args=(--disable-pip-version-check -q)
if [ -n "$WHEELS" ]; then
    pip_args+=(--no-index --find-links "$WHEELS")
fi
exl2="$(grep -o '"exllamav2==[^"]*"' pyproject.toml | head -n 1 | tr -d '"')"
say "installing Serval's dependencies, exllamav3 and $exl2${WHEELS:+ from $WHEELS}"
python -m pip install "${pip_args[@]}" ".[dev,exl3]"
# exllamav2 declares pandas and fastparquet (quantisation only); it runs without them.
python -m pip install "${pip_args[@]}" --no-deps "$exl2"

# Both extensions compile on first import; in parallel they take about as long as exllamav3's.
export MAX_JOBS="${MAX_JOBS:-$(nproc)}"
say "building the exllamav2 and exllamav3 CUDA extensions (first run: about 5 minutes)"
mkdir -p "$WORK"
build() {
    local t0=$SECONDS
    if python -c "import $1" >"$WORK/build-$1.log" 2>&1; then
        say "$1 extension ready in $((SECONDS - t0)) s"
    else
        cat "$WORK/build-$1.log" >&2
        say "$1 failed to build; the log above says why"
        return 1
    fi
}
build exllamav2 & v2=$!
build exllamav3 & v3=$!
wait "$v2"
wait "$v3"

say "building the tiny check model and its LoRA in $WORK"
python scripts/gpu_check.py model "$WORK"

say "running tests/gpu"
python -m pytest tests/gpu -q -p no:cacheprovider --timeout=600

for engine in exllamav2 exllamav3; do
    say "measuring $engine"
    python scripts/gpu_check.py bench "$WORK" "$engine"
done
say "done in $((SECONDS - started)) s"
