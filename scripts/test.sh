#!/usr/bin/env bash
# Install from scratch (if needed) and run the whole test suite, real-data checks included, plus ruff and a
# strict build of the API reference.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
ruff check mbret tests benchmarks examples
# the API reference: a reference to an object that no longer exists, or a broken link, fails here
# (no --quiet: it hides the warnings that --strict counts, and the build then passes whatever is broken)
site=$(mktemp -d)
mkdocs build --strict --site-dir "$site"
rm -rf "$site"
python -m pytest "$@"
