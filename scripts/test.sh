#!/usr/bin/env bash
# Set up (see setup.sh) and run the whole test suite: unit and integration tests, lint, types.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ruff check src tests benchmarks
.venv/bin/mypy
exec .venv/bin/python -m pytest -q "$@"
