#!/usr/bin/env bash
# Set up and run the demo: sender and receiver on this machine, on the embedded default
# (SQLite Dagster storage, a local PostgreSQL, a local inbox folder). Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/arb demo "$@"
