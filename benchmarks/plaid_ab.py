"""PLAID of this tree against PLAID of another source tree (a baseline commit), on the same SciFact vectors.

Both trees build PLAID (nbits 2 and 4, `add_in_chunks` as `Retriever` does) from one exact MaxSim index's
token vectors and search the same encoded queries (SciFact's test queries and their 4-word cuts), each
tree in its own process: queries/s (best of two passes) and NDCG@10 at k=10 and k=100, then the ratio of
this tree's queries/s to the baseline's, cell by cell.

    git worktree add /tmp/mbret-base 5a58095
    python benchmarks/plaid_ab.py --baseline /tmp/mbret-base
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def measure(args: argparse.Namespace) -> dict:
    import torch

    from mbret.eval.metrics import evaluate_run
    from mbret.indexes import PlaidIndex, load_index

    try:
        from mbret.data.datasets import load_dataset
        from mbret.data.query_sets import short_queries
    except ImportError:  # a baseline tree from before datasets moved down to mbret.data
        from mbret.eval.data import load_dataset
        from mbret.eval.query_sets import short_queries

    exact, _ = load_index(args.exact)
    dataset = load_dataset(args.data)
    sets = {"full": dataset, "short": short_queries(dataset)}
    cache = Path(args.work) / "ab-queries.pt"
    vectors = torch.load(cache, weights_only=True)
    tokens, lengths = exact._flat()
    docs = list(torch.split(tokens, lengths.tolist()))
    out: dict = {}
    for nbits in (2, 4):
        index = PlaidIndex(tokens.shape[1], nbits=nbits)
        index.add_in_chunks(list(exact.doc_ids), docs, chunk_docs=2048)
        index.search(vectors["full"][:2], k=10)
        for name, data in sets.items():
            for k in (10, 100):
                index.search(vectors[name][:4], k=k)
                best = 0.0
                for _ in range(2):
                    start = time.perf_counter()
                    hits = index.search(vectors[name], k=k)
                    best = max(best, len(hits) / (time.perf_counter() - start))
                run = {q: dict(row) for q, row in zip(data.queries, hits)}
                out[f"nbits {nbits} {name} k={k}"] = [best, evaluate_run(data.qrels, run, ["ndcg@10"])[0]["ndcg@10"]]
    return out


def encode(args: argparse.Namespace) -> None:
    import torch
    from plaid_scale import encoder_of

    from mbret.data.datasets import load_dataset
    from mbret.data.query_sets import short_queries

    cache = Path(args.work) / "ab-queries.pt"
    if cache.exists():
        return
    encoder = encoder_of(args.exact)
    dataset = load_dataset(args.data)
    sets = {"full": dataset, "short": short_queries(dataset)}
    cache.parent.mkdir(parents=True, exist_ok=True)
    encoded = {n: [v.float() for v in encoder.encode_queries(list(d.queries.values()))] for n, d in sets.items()}
    torch.save(encoded, cache)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", required=True, help="a source tree of mbret (e.g. a git worktree)")
    parser.add_argument("--exact", default="runs/ci-suites/colbert/scifact/index")
    parser.add_argument("--data", default="../shared/data/beir/scifact")
    parser.add_argument("--work", default="runs/plaid-ab")
    parser.add_argument("--_measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._measure:
        print(json.dumps(measure(args)))
        return
    encode(args)
    results = {}
    for label, tree in (("baseline", Path(args.baseline).resolve()), ("this tree", REPO)):
        env = os.environ | {"PYTHONPATH": str(tree)}
        done = subprocess.run(
            [sys.executable, __file__, "--_measure", *sys.argv[1:]], env=env, check=True, capture_output=True, text=True
        )
        results[label] = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{'cell':<22} {'base q/s':>9} {'ours q/s':>9} {'ratio':>6} {'base NDCG':>10} {'ours NDCG':>10}")
    for cell, (qps, ndcg) in results["this tree"].items():
        base_qps, base_ndcg = results["baseline"][cell]
        print(f"{cell:<22} {base_qps:9.1f} {qps:9.1f} {qps / base_qps:6.2f} {base_ndcg:10.4f} {ndcg:10.4f}")


if __name__ == "__main__":
    main()
