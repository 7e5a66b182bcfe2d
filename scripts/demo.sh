#!/usr/bin/env bash
# The main job end to end, offline, on the bundled SciFact slice: index, search, evaluate.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
mbret index examples/scifact-mini --model minilm --output runs/scifact-mini --overwrite
mbret search runs/scifact-mini "Vitamin D deficiency increases the risk of bone fractures" -k 5
mbret eval examples/scifact-mini --index runs/scifact-mini --output runs/scifact-mini-eval
