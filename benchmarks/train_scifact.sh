#!/usr/bin/env bash
# Real CPU training runs on SciFact's train split, each compared with its starting model on the test split.
#   (i)  dense:   minilm fine-tuned with cached MNRL on hard negatives mined by `mbret mine`
#   (ii) colbert: the untrained ColBERT head over minilm distilled (KL) from the dense minilm's scores
#                 (`mbret score --teacher dense:minilm`), exact MaxSim for evaluation
# Usage: bash benchmarks/train_scifact.sh [WORK_DIR] [dense|colbert|both]
# Takes about an hour on 2 CPU cores. Baselines are evaluated in the same run unless
# SKIP_BASELINES=1 (then the recorded 0.6451 dense / 0.6329 ColBERT-exact apply).
set -euo pipefail
WORK=${1:-runs/train-scifact}
WHICH=${2:-both}
DATA=${DATA:-../shared/data/beir/scifact}
DENSE_STEPS=${DENSE_STEPS:-200}
COLBERT_STEPS=${COLBERT_STEPS:-150}
mkdir -p "$WORK"
export HF_HUB_OFFLINE=1

stamp() { date +%s; }

if [[ "$WHICH" != colbert ]]; then
  t0=$(stamp)
  mbret mine "$DATA" --model minilm --output "$WORK/mined.jsonl" --num-negatives 8 --range-min 3 --range-max 50 \
    --relative-margin 0.05 --cache "$WORK/mine-cache"
  t1=$(stamp)
  rm -rf "$WORK/dense"
  mbret train --mode dense --model minilm --data "$WORK/mined.jsonl" --output "$WORK/dense" --loss cmnrl \
    --num-negatives 1 --batch-size 16 --mini-batch-size 16 --lr 2e-5 --max-steps "$DENSE_STEPS" \
    --document-length 256 --save-steps 100 --device cpu 2>&1 | tail -3
  t2=$(stamp)
  mbret eval "$DATA" --model "$WORK/dense/final" --output "$WORK/eval-dense-trained"
  if [[ "${SKIP_BASELINES:-0}" != 1 ]]; then mbret eval "$DATA" --model minilm --output "$WORK/eval-dense-start"; fi
  echo "dense: mine $((t1 - t0))s, train $((t2 - t1))s"
fi

if [[ "$WHICH" != dense ]]; then
  [[ -f "$WORK/mined.jsonl" ]] || mbret mine "$DATA" --model minilm --output "$WORK/mined.jsonl" --num-negatives 8 \
    --range-min 3 --range-max 50 --relative-margin 0.05 --cache "$WORK/mine-cache"
  t0=$(stamp)
  mbret score "$WORK/mined.jsonl" --teacher dense:minilm --output "$WORK/scored.jsonl"
  t1=$(stamp)
  rm -rf "$WORK/colbert"
  mbret train --mode colbert --model minilm --data "$WORK/scored.jsonl" --output "$WORK/colbert" --loss kl \
    --num-negatives 3 --batch-size 8 --lr 3e-5 --teacher-temperature 0.05 --max-steps "$COLBERT_STEPS" --save-steps 50 \
    --device cpu 2>&1 | tail -3
  t2=$(stamp)
  mbret eval "$DATA" --model "$WORK/colbert/final" --mode colbert --index-type exact --output "$WORK/eval-colbert-trained"
  if [[ "${SKIP_BASELINES:-0}" != 1 ]]; then
    mbret eval "$DATA" --model minilm --mode colbert --index-type exact --output "$WORK/eval-colbert-start"
  fi
  echo "colbert: score $((t1 - t0))s, train $((t2 - t1))s"
fi

python - "$WORK" <<'EOF'
import json, sys
from pathlib import Path
work = Path(sys.argv[1])
recorded = {"dense": 0.6451, "colbert": 0.6329}
for mode in ("dense", "colbert"):
    trained = work / f"eval-{mode}-trained" / "results.json"
    if not trained.is_file():
        continue
    after = json.loads(trained.read_text())["metrics"]["ndcg@10"]
    start_file = work / f"eval-{mode}-start" / "results.json"
    before = json.loads(start_file.read_text())["metrics"]["ndcg@10"] if start_file.is_file() else recorded[mode]
    source = "this run" if start_file.is_file() else "recorded"
    print(f"{mode}: NDCG@10 {before:.4f} ({source} starting model) -> {after:.4f} trained ({after - before:+.4f})")
EOF
