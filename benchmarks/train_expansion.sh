#!/usr/bin/env bash
# Query expansion when training a ColBERT head from a non-ColBERT model: the same short `mbret train --mode
# colbert` run from all-MiniLM-L6-v2 on SciFact's train split twice, with and without [MASK] expansion, each
# scored on SciFact test and on its short- and long-query sets (examples/make_query_sets.py), exact MaxSim.
# The winner is the default for new heads (mbret.training.config.NEW_HEAD_QUERY_EXPANSION).
# Usage: bash benchmarks/train_expansion.sh [WORK_DIR]   (about 40 minutes on 2 CPU cores)
set -euo pipefail
WORK=${1:-runs/train-expansion}
DATA=${DATA:-../shared/data/beir/scifact}
STEPS=${STEPS:-60}
export HF_HUB_OFFLINE=1
mkdir -p "$WORK"
[[ -d "$WORK/sets/scifact-short" ]] || python examples/make_query_sets.py "$DATA" "$WORK/sets"
for setting in query-expansion no-query-expansion; do
  if [[ ! -d "$WORK/$setting/final" ]]; then
    rm -rf "$WORK/$setting"
    start=$(date +%s)
    # in-batch contrastive on the train qrels' (query, positive) pairs: about one epoch of 919 pairs
    mbret train --mode colbert --model minilm --data "$DATA" --loss contrastive --batch-size 16 --lr 3e-5 \
      --max-steps "$STEPS" --save-steps 1000 --device cpu --"$setting" --output "$WORK/$setting" 2>&1 | tail -1
    echo "$setting: trained in $(($(date +%s) - start))s"
  fi
  [[ -f "$WORK/$setting-index/manifest.json" ]] || mbret index "$DATA" --model "$WORK/$setting/final" \
    --mode colbert --index-type exact --output "$WORK/$setting-index"
  for queries in "$DATA" "$WORK/sets/scifact-short" "$WORK/sets/scifact-long"; do
    name=$(basename "$queries")
    mbret eval "$queries" --index "$WORK/$setting-index" --metrics ndcg@10 --output "$WORK/eval-$setting-$name" \
      | tail -1
  done
done
python - "$WORK" <<'PY'
import json, sys
from pathlib import Path
work = Path(sys.argv[1])
print("| training | scifact | short | long |\n|---|---|---|---|")
for setting in ("query-expansion", "no-query-expansion"):
    cells = []
    for name in ("scifact", "scifact-short", "scifact-long"):
        results = json.loads((work / f"eval-{setting}-{name}" / "results.json").read_text())
        cells.append(f"{results['metrics']['ndcg@10']:.4f}")
    print(f"| --{setting} | " + " | ".join(cells) + " |")
PY
