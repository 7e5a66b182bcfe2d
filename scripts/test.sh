#!/usr/bin/env bash
# Install from scratch (if needed) and run the whole test suite, real-data checks included, plus ruff.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
ruff check mbret tests benchmarks examples
python -m pytest "$@"
