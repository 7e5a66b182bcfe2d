"""Retrieval pipelines on SciFact, one table: BM25, dense, the ColBERT head, BM25 -> ColBERT rerank, BM25 +
dense fusion, and ColBERT with token pooling.

    python benchmarks/pipelines.py --data ../shared/data/beir/scifact --work runs/pipelines

Every row is scored by `mbret.eval.runner` on the test split (NDCG@10, Recall@100):

- bm25: `--mode bm25` with its defaults (lucene, k1 1.5, b 0.75, English stemmer and stopwords);
- dense: all-MiniLM-L6-v2, exact inner product (`flat`);
- colbert pool factor 1, 2, 3: the untrained ColBERT head over all-MiniLM-L6-v2 (PLAID, nbits 2, the
  default index), the corpus encoded once and each pooled index built from the same vectors, so the pool
  factor is the only difference (baseline: pool factor 1); index bytes are the saved directory without the
  document store, which all share;
- bm25 -> colbert: BM25's top 100 per query reranked by exact MaxSim of the same ColBERT head
  (`mbret.retrieval.rerank`, which encodes each distinct candidate once);
- bm25 + dense: reciprocal rank fusion (k = 60) of the two indexes' top 100.

Results: docs/benchmarks.md ("Retrieval pipelines"); JSON in WORK/results.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def directory_bytes(path: Path) -> int:
    """Bytes of an index directory without its document store (the same for every index of a corpus)."""
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file() and not f.name.startswith("documents"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/beir/scifact")
    parser.add_argument("--work", default="runs/pipelines")
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--pool-factors", default="1,2,3")
    parser.add_argument("--depth", type=int, default=100, help="BM25 hits reranked and fused per query")
    args = parser.parse_args()

    from mbret.data.datasets import doc_text, load_dataset
    from mbret.eval.runner import evaluate, rerank_result
    from mbret.indexes import PlaidIndex
    from mbret.retrieval import Retriever
    from mbret.retrieval.fusion import FusedRetriever
    from mbret.retrieval.rerank import Reranker
    from mbret.retrieval.retriever import load_encoder

    torch.manual_seed(0)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    dataset = load_dataset(args.data)
    corpus = dataset.corpus
    rows: list[dict] = []

    def row(name: str, result, seconds: float, index_bytes: int | None = None) -> None:  # noqa: ANN001
        entry = {
            "pipeline": name,
            "ndcg@10": round(result.metrics["ndcg@10"], 4),
            "recall@100": round(result.metrics["recall@100"], 4),
            "seconds": round(seconds, 1),
            "index_bytes": index_bytes,
        }
        rows.append(entry)
        print(json.dumps(entry), flush=True)

    start = time.perf_counter()
    bm25 = Retriever.build(corpus, None, mode="bm25", show_progress=False)
    bm25.save(work / "bm25", replace=True)
    bm25_result = evaluate(dataset, bm25, show_progress=False, k=args.depth)
    row("bm25", bm25_result, time.perf_counter() - start, directory_bytes(work / "bm25"))

    start = time.perf_counter()
    dense = Retriever.build(corpus, args.model, show_progress=False)
    dense.save(work / "dense", replace=True)
    row("dense " + args.model, evaluate(dataset, dense, show_progress=False), time.perf_counter() - start)

    start = time.perf_counter()
    fused = FusedRetriever([bm25, dense], fusion="rrf", fusion_depth=args.depth)
    row("bm25 + dense, rrf", evaluate(dataset, fused, show_progress=False), time.perf_counter() - start)

    start = time.perf_counter()
    encoder = load_encoder(args.model, "colbert")
    ids = list(corpus)
    vectors = encoder.encode_corpus([doc_text(corpus[d]) for d in ids], dtype=torch.float16)
    encode_s = time.perf_counter() - start
    print(json.dumps({"colbert_encode_s": round(encode_s, 1), "tokens": sum(len(v) for v in vectors)}), flush=True)

    start = time.perf_counter()
    reranker = Reranker(mode="colbert", name=f"colbert {args.model}", encoder=encoder)
    reranked = rerank_result(dataset, bm25_result, reranker, args.depth, ["ndcg@10", "recall@100"])
    row(f"bm25 -> colbert rerank @{args.depth}", reranked, time.perf_counter() - start)

    for factor in (int(f) for f in args.pool_factors.split(",")):
        start = time.perf_counter()
        encoder.pool_factor = factor
        pooled = encoder.pool_documents(list(vectors))
        index = PlaidIndex(pooled[0].shape[1], nbits=2)
        index.add_in_chunks(ids, pooled, chunk_docs=2048, documents=[corpus[d] for d in ids])
        retriever = Retriever(encoder=encoder, index=index)
        retriever.save(work / f"colbert-pool{factor}", replace=True)
        result = evaluate(dataset, retriever, show_progress=False)
        name = f"colbert {args.model}, pool factor {factor} ({sum(len(p) for p in pooled):,} tokens)"
        row(name, result, time.perf_counter() - start, directory_bytes(work / f"colbert-pool{factor}"))
    (work / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote {work / 'results.json'}")


if __name__ == "__main__":
    main()
