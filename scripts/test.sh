#!/usr/bin/env bash
# Set up (see setup.sh) and run the whole test suite: unit and integration tests, lint, types.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --engine vllm  # the integration tests run a real vLLM (tests/integration/test_vllm_real.py)
.venv/bin/ruff check src tests benchmarks
.venv/bin/mypy
# Container services for the docker/podman/chroot tests (scripts/services.sh): a dockerd of
# our own, stopped at exit if this script started it, and podman's config.
if [ "$(id -u)" -eq 0 ]; then
    if ! scripts/services.sh status 2>&1 | grep -q "dockerd running"; then
        trap 'scripts/services.sh stop' EXIT
    fi
    services_env=$(scripts/services.sh start)  # a failed start stops the script (set -e)
    eval "$services_env"
fi
.venv/bin/python -m pytest -q "$@"
