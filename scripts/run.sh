#!/usr/bin/env bash
# Set up (see setup.sh) and run `memgap run` on the embedded default; arguments pass through.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/memgap run "$@"
