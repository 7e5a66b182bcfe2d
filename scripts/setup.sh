#!/usr/bin/env bash
# Create .venv and install mbret with its dev extras, keeping the CPU build of torch (see constraints-cpu.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q -c constraints-cpu.txt torch==2.13.0
python -m pip install -q -c constraints-cpu.txt -e '.[dev]'
