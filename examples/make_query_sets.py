"""Write the short- and long-query sets of a BEIR dataset as BEIR directories beside each other.

Short: each judged query cut to its first four words, same qrels. Long: known-item queries, three
sentences from the middle of a document (64+ pre-tokens), relevant to that document only. Both share the
dataset's corpus (copied, so each directory stands alone). See `mbret.data.query_sets`.

    python examples/make_query_sets.py ../shared/data/beir/scifact runs/query-sets
    mbret eval runs/query-sets/scifact-short --model minilm --mode colbert
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from mbret.data.datasets import Dataset, load_beir_dir
from mbret.data.query_sets import long_queries, short_queries
from mbret.io import atomic_new_dir


def write_queries(source: Path, dataset: Dataset, target: Path) -> None:
    with atomic_new_dir(target) as tmp:
        shutil.copyfile(source / "corpus.jsonl", tmp / "corpus.jsonl")
        (tmp / "qrels").mkdir()
        with open(tmp / "queries.jsonl", "w", encoding="utf-8") as fh:
            for qid, text in dataset.queries.items():
                fh.write(json.dumps({"_id": qid, "text": text}) + "\n")
        with open(tmp / "qrels" / f"{dataset.split}.tsv", "w", encoding="utf-8") as fh:
            fh.write("query-id\tcorpus-id\tscore\n")
            for qid, judged in dataset.qrels.items():
                for doc_id, grade in judged.items():
                    fh.write(f"{qid}\t{doc_id}\t{grade}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="a BEIR directory")
    parser.add_argument("out", type=Path, help="where <name>-short/ and <name>-long/ go")
    parser.add_argument("--split", default="test")
    args = parser.parse_args()
    dataset = load_beir_dir(args.source, split=args.split)
    name = args.source.resolve().name
    for built in (short_queries(dataset), long_queries(dataset)):
        target = args.out / f"{name}-{built.name.rsplit('-', 1)[1]}"
        write_queries(args.source, built, target)
        print(f"wrote {len(built.queries)} queries to {target}")


if __name__ == "__main__":
    main()
