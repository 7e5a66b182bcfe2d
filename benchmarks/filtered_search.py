"""Filtered search against unfiltered search and against over-fetching then discarding, on SciFact.

Every SciFact document gets a seeded metadata value `r`, uniform in [0, 1), so `r < s` matches a share s
of the corpus: 0.1%, 1%, 10% and 50%. For PLAID (ColBERT head over all-MiniLM-L6-v2, nbits 2) and FAISS
HNSW (all-MiniLM-L6-v2), all 300 test queries are searched at k=10 in one call:

- filtered: `search(..., where="r < ?", params=[s])`, the filter applied inside the search;
- unfiltered: the same search without a filter (the baseline "never slower than");
- over-fetch: unfiltered top k' for k' = 10, 20, 40, ... up to the corpus, keeping the matching hits,
  at the smallest k' whose recall reaches the filtered search's (the baseline "5x at 1%"), or at k' = 2560
  with the recall it got, when none does.

Recall is of the true filtered top 10: exact MaxSim over the uncompressed token vectors (an exact index
of the same vectors, filtered) for PLAID, exact inner product (FAISS flat, filtered) for HNSW. Queries/s
are the best of three passes (fifteen for HNSW), unfiltered measured again beside each share (a
machine's speed drifts over the minutes the over-fetch passes take); the SQL filter runs once per call
(its time is printed on its own).

    python benchmarks/filtered_search.py --data ../shared/data/beir/scifact --work runs/filter-bench
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

SHARES = (0.001, 0.01, 0.1, 0.5)
OVERFETCH_MAX = 2560  # the deepest over-fetch tried (half of SciFact); where it still misses, its recall says so


def with_metadata(corpus: dict) -> dict:
    rng = np.random.default_rng(0)
    values = rng.random(len(corpus))
    return {d: {**doc, "metadata": {"r": float(v)}} for (d, doc), v in zip(corpus.items(), values)}


def timed(fn, passes: int = 2):  # noqa: ANN001, ANN201
    best, out = float("inf"), None
    for _ in range(passes):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def recall(hits: list[list[tuple[str, float]]], truth: list[list[tuple[str, float]]]) -> float:
    scores = [len({d for d, _ in h[:10]} & {d for d, _ in t}) / len(t) for h, t in zip(hits, truth) if t]
    return float(np.mean(scores))


def measure(name: str, index, truth_index, queries, n_docs: int) -> list[dict]:  # noqa: ANN001
    rows = []
    index.search(queries[:4], 10)  # warm-up: builds derived state
    passes = 3 if name == "plaid" else 15  # HNSW answers all queries in milliseconds: more passes, less noise
    for share in SHARES:
        base_s, _ = timed(lambda: index.search(queries, 10), passes=passes)  # beside each share: speed drifts
        where, params = "r < ?", [share]

        def select(where=where, params=params):  # noqa: ANN001, ANN202
            index.documents.clear_cache()  # the SQL itself, each pass
            return index.select(where, params)

        sql_s, subset = timed(select)
        truth = truth_index.search(queries, 10, where=where, params=params)

        def search(where=where, params=params):  # noqa: ANN001, ANN202
            index.documents.clear_cache()  # each pass pays for its SQL, as a one-off filter would
            return index.search(queries, 10, where=where, params=params)

        filtered_s, filtered = timed(search, passes=passes)
        target = recall(filtered, truth)
        matching = set(np.asarray(index.doc_ids, dtype=object)[subset].tolist())
        over = None
        fetch = 10
        while True:
            fetch = min(fetch, n_docs)
            over_s, raw = timed(lambda fetch=fetch: index.search(queries, fetch), passes=1)
            kept = [[(d, s) for d, s in row if d in matching][:10] for row in raw]
            over = {"k": fetch, "s": over_s, "recall": recall(kept, truth)}
            if over["recall"] >= target - 1e-9 or fetch >= min(n_docs, OVERFETCH_MAX):
                break
            fetch *= 2
        row = {
            "index": name,
            "share": share,
            "matching": len(subset),
            "sql_ms": round(1000 * sql_s, 2),
            "unfiltered_qps": round(len(queries) / base_s, 1),
            "filtered_qps": round(len(queries) / filtered_s, 1),
            "filtered_recall": round(target, 4),
            "overfetch_k": over["k"],
            "overfetch_qps": round(len(queries) / over["s"], 1),
            "overfetch_recall": round(over["recall"], 4),
        }
        if name == "hnsw":  # the same filter through FAISS's selector alone, without the exact small-subset path
            import mbret.indexes.faiss_index as faiss_index

            saved, faiss_index.EXACT_SUBSET_DOCS = faiss_index.EXACT_SUBSET_DOCS, 0
            selector_s, selected = timed(search, passes=passes)
            faiss_index.EXACT_SUBSET_DOCS = saved
            row["selector_only_qps"] = round(len(queries) / selector_s, 1)
            row["selector_only_recall"] = round(recall(selected, truth), 4)
        row["filtered_vs_unfiltered"] = round(row["filtered_qps"] / row["unfiltered_qps"], 2)
        row["filtered_vs_overfetch"] = round(row["filtered_qps"] / row["overfetch_qps"], 2)
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def sweep(plaid, queries) -> None:  # noqa: ANN001
    """Queries/s of a filter matching S documents, scored whole by stage 4 and searched by stages 1-4, for
    S from 64 to 4096: the crossing is `EXACT_SUBSET_DOCS`."""
    import mbret.indexes.plaid.search as stages

    rng = np.random.default_rng(1)
    ids = list(plaid.doc_ids)
    plaid.search(queries[:4], 10)
    saved = stages.EXACT_SUBSET_DOCS
    for size in (64, 128, 256, 512, 1024, 2048, 4096):
        chosen = [ids[i] for i in rng.choice(len(ids), size, replace=False)]
        row = {"subset": size}
        for name, threshold in (("whole", 1 << 30), ("searched", 0)):
            stages.EXACT_SUBSET_DOCS = threshold
            seconds, _ = timed(lambda chosen=chosen: plaid.search(queries, 10, ids=chosen))
            row[f"{name}_qps"] = round(len(queries) / seconds, 1)
        stages.EXACT_SUBSET_DOCS = saved
        print(json.dumps(row), flush=True)


def sweep_hnsw(hnsw, queries) -> None:  # noqa: ANN001
    """Milliseconds a call takes for a filter matching S documents on HNSW, scored exactly on the stored
    vectors and walked through FAISS's `IDSelector`, for S from 256 to 4,096 and Q = 1, 16 and 300 queries a
    call (the SQL left out: the same ids each time): where `EXACT_SUBSET_DOCS` stands against both."""
    import mbret.indexes.faiss_index as faiss_index

    rng = np.random.default_rng(1)
    ids = list(hnsw.doc_ids)
    hnsw.search(queries[:4], 10)
    saved = faiss_index.EXACT_SUBSET_DOCS
    for size in (256, 1024, 2048, 2600, 4096):
        chosen = [ids[i] for i in rng.choice(len(ids), size, replace=False)]
        for count in (1, 16, 300):
            batches = [queries[i : i + count] for i in range(0, 300, count)][: max(1, 64 // count)]
            row = {"subset": size, "queries": count}
            for name, threshold in (("exact", 1 << 30), ("selector", 0)):
                faiss_index.EXACT_SUBSET_DOCS = threshold
                seconds, _ = timed(
                    lambda batches=batches, chosen=chosen: [hnsw.search(b, 10, ids=chosen) for b in batches], passes=7
                )
                row[f"{name}_ms_per_call"] = round(1000 * seconds / len(batches), 3)
            faiss_index.EXACT_SUBSET_DOCS = saved
            print(json.dumps(row), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/beir/scifact")
    parser.add_argument("--work", default="runs/filter-bench")
    parser.add_argument("--only", choices=("plaid", "hnsw"), default=None)
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="also the sweeps (PLAID and HNSW): where scoring a subset whole costs what searching it does",
    )
    args = parser.parse_args()

    import torch

    from mbret.data.datasets import load_dataset
    from mbret.indexes import PlaidIndex, load_index
    from mbret.retrieval import Retriever

    torch.manual_seed(0)
    dataset = load_dataset(args.data)
    corpus = with_metadata(dataset.corpus)
    texts = list(dataset.queries.values())
    work = Path(args.work)
    results = []
    if args.only in (None, "plaid"):
        exact_dir = work / "colbert-exact"
        if not (exact_dir / "manifest.json").is_file():
            Retriever.build(corpus, "minilm", mode="colbert", index_type="exact").save(exact_dir)
        retriever = Retriever.load(exact_dir)
        exact = retriever.index
        queries = retriever.encoder.encode_queries(texts, batch_size=64)
        tokens, lengths = exact._flat()  # noqa: SLF001 - the stored vectors, to build PLAID from the same ones
        docs = list(torch.split(tokens, lengths.tolist()))
        ids = list(exact.doc_ids)
        plaid_dir = work / "colbert-plaid"
        if (plaid_dir / "manifest.json").is_file():
            plaid, _ = load_index(plaid_dir)
        else:
            plaid = PlaidIndex(tokens.shape[1], nbits=2)
            plaid.add_in_chunks(ids, docs, chunk_docs=2048, documents=[corpus[d] for d in ids])
            plaid.save(plaid_dir, retriever.manifest())
        results += measure("plaid", plaid, exact, queries, len(ids))
        if args.sweep:
            sweep(plaid, queries)
    if args.only in (None, "hnsw"):
        flat_dir = work / "dense-flat"
        if not (flat_dir / "manifest.json").is_file():
            Retriever.build(corpus, "minilm", index_type="flat").save(flat_dir)
        retriever = Retriever.load(flat_dir)
        flat = retriever.index
        queries = retriever.encoder.encode_queries(texts, batch_size=64)
        from mbret.indexes import FaissIndex

        vectors = np.stack([flat.index.reconstruct(i) for i in range(len(flat.doc_ids))])
        hnsw = FaissIndex(vectors.shape[1], "hnsw")
        hnsw.add(list(flat.doc_ids), vectors, [corpus[d] for d in flat.doc_ids])
        results += measure("hnsw", hnsw, flat, queries, len(flat.doc_ids))
        if args.sweep:
            sweep_hnsw(hnsw, queries)
    (work / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
