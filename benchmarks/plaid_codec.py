"""PLAID's residual quantizers against each other, with search taken out: SciFact's token vectors (ColBERT
head over all-MiniLM-L6-v2, the exact index of `plaid_search.py`) compressed by each codec, decompressed,
and searched exhaustively (every document, exact MaxSim over the decoded vectors).

The baseline is ColBERTv2's scalar buckets (`residual_quantizer="scalar"`); the default is per-byte
codebooks (`"pq"`). Both share the same k-means centroids, sample and bytes per token. Printed per nbits
and codec seed: the mean squared error of the decoded unit vectors, its ratio to the baseline's, and the
NDCG@10 difference from exact MaxSim on the original vectors for each query set. So what is left of PLAID's
gap to exact with this codec, whatever the search budgets, is read off directly.

    python benchmarks/plaid_codec.py --exact runs/plaid-bench/exact --nbits 4 2 --seeds 0
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from mbret.data.datasets import load_beir_dir
from mbret.data.query_sets import query_sets
from mbret.eval.metrics import evaluate_run
from mbret.indexes.kernels import max_per_segment
from mbret.indexes.plaid.codec import TRAIN_PER_CENTROID, ResidualCodec, default_num_centroids, sample_rows
from mbret.retrieval import Retriever

BLOCK_TOKENS = 60_000  # document tokens scored at a time


def exhaustive_ndcg(
    vectors: torch.Tensor, lengths: torch.Tensor, doc_ids: list[str], queries: dict, qrels: dict
) -> float:
    """NDCG@10 of exact MaxSim over every document of `vectors` (float32, documents' tokens in order)."""
    qids = list(queries)
    q_all = torch.cat([queries[q] for q in qids]).float()
    owner = torch.repeat_interleave(torch.arange(len(qids)), torch.tensor([len(queries[q]) for q in qids]))
    offsets = np.concatenate([[0], np.cumsum(lengths.numpy())])
    scores = torch.zeros(len(qids), len(doc_ids))
    first = 0
    while first < len(doc_ids):
        last = int(np.searchsorted(offsets, offsets[first] + BLOCK_TOKENS, side="right")) - 1
        last = min(max(last, first + 1), len(doc_ids))
        best = max_per_segment(vectors[offsets[first] : offsets[last]] @ q_all.T, lengths[first:last])
        scores[:, first:last] = torch.zeros(len(qids), last - first).index_add_(0, owner, best.T)
        first = last
    top = scores.topk(100, dim=1)
    run = {
        q: {doc_ids[i]: float(s) for i, s in zip(ix.tolist(), sc.tolist())}
        for q, ix, sc in zip(qids, top.indices, top.values)
    }
    return evaluate_run(qrels, run, ["ndcg@10"])[0]["ndcg@10"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/beir/scifact")
    parser.add_argument("--exact", default="runs/plaid-bench/exact", help="exact MaxSim index (plaid_search.py)")
    parser.add_argument("--nbits", type=int, nargs="+", default=[4, 2])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--query-sets", nargs="+", default=["full", "short"])
    parser.add_argument("--out", default="runs/plaid-bench/plaid_codec.json")
    args = parser.parse_args()

    dataset = load_beir_dir(args.data)
    exact = Retriever.load(args.exact, device="cpu")
    tokens, lengths = exact.index._flat()
    tokens = tokens.float()
    doc_ids = list(exact.index.doc_ids)
    sets = {}
    for name, ds in query_sets(dataset).items():
        if name in args.query_sets:
            qids = list(ds.queries)
            encoded = exact.encoder.encode_queries([ds.queries[q] for q in qids])
            sets[name] = (dict(zip(qids, encoded)), ds.qrels)
    reference = {name: exhaustive_ndcg(tokens, lengths, doc_ids, *sets[name]) for name in sets}
    print("exact MaxSim NDCG@10: " + ", ".join(f"{n} {v:.4f}" for n, v in reference.items()), flush=True)
    centroids = default_num_centroids(len(tokens))
    results: list[dict] = []
    print(f"{'nbits':>5} {'seed':>4} {'codec':<7} {'sq. error':>10} {'x scalar':>9} {'train s':>8}  NDCG@10 vs exact")
    for nbits in args.nbits:
        for seed in args.seeds:
            sample = sample_rows(tokens, centroids * TRAIN_PER_CENTROID, seed)
            base_error = None
            for quantizer in ("scalar", "pq"):
                start = time.perf_counter()
                codec = ResidualCodec.train(sample, nbits, centroids, seed=seed, quantizer=quantizer)
                seconds = time.perf_counter() - start
                codes, packed, _ = codec.compress(tokens)
                decoded = codec.decompress(codes, packed)
                error = float(((decoded - tokens) ** 2).sum(dim=1).mean())
                base_error = base_error or error
                row = {"nbits": nbits, "seed": seed, "codec": quantizer, "sq_error": error, "train_s": seconds}
                for name in sets:
                    row[name] = exhaustive_ndcg(decoded, lengths, doc_ids, *sets[name]) - reference[name]
                del decoded
                results.append(row)
                diffs = ", ".join(f"{name} {row[name]:+.4f}" for name in sets)
                print(
                    f"{nbits:>5} {seed:>4} {quantizer:<7} {error:10.5f} {error / base_error:9.2f} {seconds:8.1f}  "
                    f"{diffs}",
                    flush=True,
                )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"exact": reference, "rows": results}, indent=1))


if __name__ == "__main__":
    main()
