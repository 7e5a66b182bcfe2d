"""Rebuild examples/scifact-mini from a BEIR SciFact directory (deterministic: same input, same output).

Takes the first 50 test queries by id, every document they judge, and evenly spaced other documents up to
500 in all, so the bundled demo has real queries, real judgements and real distractors.

    python examples/make_scifact_mini.py ../shared/data/beir/scifact examples/scifact-mini
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mbret.data.datasets import load_beir_dir

NUM_QUERIES, NUM_DOCS = 50, 500


def main(source: str, target: str) -> None:
    data = load_beir_dir(source, split="test")
    qids = sorted(data.qrels, key=int)[:NUM_QUERIES]
    judged = {d for q in qids for d in data.qrels[q]}
    others = [d for d in data.corpus if d not in judged]
    step = max(1, len(others) // (NUM_DOCS - len(judged)))
    chosen = judged | set(others[::step][: NUM_DOCS - len(judged)])
    out = Path(target)
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    with open(out / "corpus.jsonl", "w", encoding="utf-8") as fh:
        for doc_id, doc in data.corpus.items():
            if doc_id in chosen:
                fh.write(json.dumps({"_id": doc_id, "title": doc["title"], "text": doc["text"]}) + "\n")
    with open(out / "queries.jsonl", "w", encoding="utf-8") as fh:
        for qid in qids:
            fh.write(json.dumps({"_id": qid, "text": data.queries[qid]}) + "\n")
    with open(out / "qrels" / "test.tsv", "w", encoding="utf-8") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for qid in qids:
            for doc_id, rel in data.qrels[qid].items():
                fh.write(f"{qid}\t{doc_id}\t{rel}\n")
    print(f"wrote {len(chosen)} docs, {len(qids)} queries to {out}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
