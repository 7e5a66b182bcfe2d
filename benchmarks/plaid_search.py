"""PLAID against exact MaxSim on SciFact's three query sets (ColBERT head over all-MiniLM-L6-v2), in one run.

The corpus is encoded once into an exact MaxSim index (`--exact DIR`, or WORK/exact, encoded with mbret's
defaults when missing); every PLAID index is built from those same vectors, so the two searches differ
only in PLAID. Query sets: SciFact's own test queries (`full`), the same cut to four words (`short`), and
known-item queries of three middle sentences of a document (`long`), from `mbret.data.query_sets`. Queries
are encoded once beforehand; queries/s is index search only.

Sections (`--sections`, any of):
- `speed`: exact MaxSim in float32 (the baseline) and with the bfloat16 screen (same hits), and PLAID at
  its default search budgets, at k=10 and k=100 (NDCG@10 from the top 100: eval's depth): queries/s,
  NDCG@10, its difference from exact and the ratio of queries/s to float32 exact, per query set; then
  bytes per token and build time / peak RSS (each build in its own process);
- `curves`: NDCG@10 difference from exact, recall@10 of exact's top 10, and queries/s along a ladder of
  search budgets (probes, threshold, candidates, fully scored documents), per nbits, query set and k;
- `fidelity`: the NDCG@10 difference at the defaults for both build paths (`one-shot`: every vector given
  to `PlaidIndex.add`, which trains on a sample of them; `streaming`: trained on a sample of whole
  documents, then added 2,048 documents at a time, as `Retriever` builds) and three codec seeds;
- `k10`: NDCG@10 difference, recall@10 and queries/s at k=10 along per-query budgets (probes, threshold,
  candidates, stage 4's query tokens x documents budget), PLAID built one-shot per nbits and seed: how the
  k <= 10 defaults were chosen per nbits (`budget_k`);
- `sizes`: build time and peak RSS at three corpus fractions (nbits 2, each in its own process).

Writes WORK/plaid_search.json.

    python benchmarks/plaid_search.py --work runs/plaid-bench --sections speed curves fidelity
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from mbret.data.datasets import Dataset
from mbret.indexes import ExactMaxSimIndex, PlaidIndex
from mbret.retrieval.colbert import ColBERTEncoder

CHUNK_DOCS = 2048
# (n_ivf_probe, centroid_score_threshold, n_candidates, n_full_scores), cheapest first
LADDER = [
    (1, 0.5, 256, 64),
    (1, 0.5, 256, 128),
    (1, 0.5, 256, 256),
    (2, 0.45, 512, 128),
    (2, 0.45, 512, 256),
    (2, 0.45, 1024, 256),
    (2, 0.45, 1024, 512),
    (4, 0.4, 1024, 256),
    (4, 0.4, 2048, 512),
    (4, 0.4, 4096, 1024),
    (8, 0.3, 4096, 1024),
    (16, 0.0, 4096, 4096),
]
# k10: (n_ivf_probe, centroid_score_threshold, n_candidates, stage 4's budget of query tokens x documents)
K10_LADDER = [
    (1, 0.5, 256, 2048),  # ColBERT's k <= 10 probes, threshold, candidates; the nbits-2 default
    (1, 0.5, 512, 2048),
    (2, 0.45, 256, 2048),
    (1, 0.5, 256, 4096),
    (2, 0.45, 512, 4096),
    (1, 0.5, 512, 4096),
    (2, 0.45, 1024, 4096),  # k <= 100's: the nbits-4 default
]


def peak_rss_mb() -> float:
    """This process's peak resident memory. Linux's VmHWM belongs to the address space made by exec, so
    it excludes the parent's memory that `ru_maxrss` carries over a fork + exec."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_streaming(
    doc_ids: list[str | None], docs: list[torch.Tensor], nbits: int, seed: int = 0, residual_quantizer: str = "pq"
) -> PlaidIndex:
    """Trained on a seeded sample of whole documents, then added `CHUNK_DOCS` at a time: `Retriever`'s way."""
    index = PlaidIndex(docs[0].shape[1], nbits=nbits, seed=seed, residual_quantizer=residual_quantizer)
    index.add_in_chunks(doc_ids, docs, chunk_docs=CHUNK_DOCS)
    return index


def build_plaid_from_npy(embeddings_dir: str, fraction: float, nbits: int, out: str) -> None:
    """Stream a fraction of an exact index's token vectors into a PLAID index; print time and peak RSS."""
    from mbret.indexes import Manifest, read_manifest

    manifest = read_manifest(embeddings_dir)
    exact, _ = ExactMaxSimIndex.load(embeddings_dir)  # ids and token counts; rows are read below
    doc_ids = list(exact.doc_ids)
    doclens = exact._flat()[1].numpy()
    tokens_file = Path(embeddings_dir) / manifest.files["embeddings"]
    if tokens_file.suffix == ".npy":  # the older layout
        with open(tokens_file, "rb") as fh:  # read rows with plain reads: a memory map's touched pages would
            np.lib.format.read_magic(fh)  # count in this process's RSS and hide what the build itself holds
            shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
            data_offset = fh.tell()
    else:  # raw float16 rows
        shape, dtype, data_offset = (int(doclens.sum()), manifest.dimension), np.float16, 0
    row_bytes = shape[1] * np.dtype(dtype).itemsize

    def read_rows(first: int, last: int) -> np.ndarray:
        rows = np.fromfile(
            tokens_file, dtype=dtype, count=(last - first) * shape[1], offset=data_offset + first * row_bytes
        )
        return rows.reshape(last - first, shape[1])

    n_docs = max(1, int(len(doclens) * fraction))
    offsets = np.concatenate([[0], np.cumsum(doclens)])
    start = time.perf_counter()
    index = PlaidIndex(manifest.dimension, nbits=nbits)
    num_tokens = int(offsets[n_docs])
    picked = index.sample_documents(n_docs, num_tokens / n_docs)
    sample = np.concatenate([read_rows(int(offsets[i]), int(offsets[i + 1])) for i in picked])  # float16
    index.train(torch.from_numpy(sample), num_tokens=num_tokens)
    del sample
    for begin in range(0, n_docs, CHUNK_DOCS):
        end = min(begin + CHUNK_DOCS, n_docs)
        block = torch.from_numpy(read_rows(int(offsets[begin]), int(offsets[end])))  # float16, as stored
        index.add(doc_ids[begin:end], list(torch.split(block, doclens[begin:end].tolist())))
    fields = {"mode": "colbert", "model": manifest.model, "normalized": True, "max_length": manifest.max_length}
    manifest = Manifest(kind="plaid", dimension=index.dimension, num_docs=0, index_type="plaid", **fields)
    index.save(out, manifest, replace=True)  # a rerun rewrites the last run's index
    seconds = time.perf_counter() - start
    print(json.dumps({"docs": n_docs, "tokens": num_tokens, "build_s": seconds, "peak_rss_mb": peak_rss_mb()}))


class QuerySet:
    """One query set's encoded queries, qrels and exact MaxSim reference."""

    def __init__(self, name: str, dataset: Dataset, encoder: ColBERTEncoder) -> None:
        self.name, self.qrels = name, dataset.qrels
        self.qids = list(dataset.queries)
        self.vectors = encoder.encode_queries([dataset.queries[q] for q in self.qids])
        self.exact_ndcg: float | None = None
        self.exact_top10: list[set[str]] = []

    def score(self, hits: list[list[tuple[str, float]]]) -> float:
        from mbret.eval.metrics import evaluate_run

        # no SciFact query id equals a doc id (nor a long query's "long-<doc>"): nothing for BEIR to drop
        run = {q: dict(row) for q, row in zip(self.qids, hits)}
        return evaluate_run(self.qrels, run, ["ndcg@10"])[0]["ndcg@10"]

    repeats = 1  # `--repeats`: queries/s from the fastest of this many passes over the set

    def measure(self, index: ExactMaxSimIndex | PlaidIndex, k: int, **options: object) -> dict[str, float]:
        index.search(self.vectors[:2], k=k, **options)  # warm-up: builds derived state
        seconds = float("inf")
        for _ in range(self.repeats):
            start = time.perf_counter()
            hits = index.search(self.vectors, k=k, **options)
            seconds = min(seconds, time.perf_counter() - start)
        found = [{d for d, _ in row[:10]} for row in hits]
        row = {"qps": len(self.qids) / seconds, "ndcg@10": self.score(hits)}
        if self.exact_ndcg is None:
            self.exact_ndcg, self.exact_top10 = row["ndcg@10"], found
        row["diff"] = row["ndcg@10"] - self.exact_ndcg
        row["recall@10"] = sum(len(f & e) for f, e in zip(found, self.exact_top10)) / max(
            sum(len(e) for e in self.exact_top10), 1
        )
        return row


def speed_line(query_set: str, label: str, k: int, row: dict[str, float], baseline_qps: float) -> str:
    return (
        f"{query_set:<6} {label:<18} {k:>4} {row['qps']:10.2f} {row['ndcg@10']:8.4f} {row['diff']:+9.4f} "
        f"{row['qps'] / baseline_qps:8.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/beir/scifact")
    parser.add_argument("--work", default="runs/plaid-bench", help="where the encoded corpus and indexes go")
    parser.add_argument("--exact", help="an exact MaxSim index of --data to reuse (default: WORK/exact)")
    parser.add_argument("--model", default="minilm", help="encodes WORK/exact when it is missing")
    parser.add_argument("--nbits", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--query-sets", nargs="+", default=["full", "short", "long"])
    parser.add_argument(
        "--sections", nargs="+", default=["speed"], choices=["speed", "curves", "fidelity", "k10", "sizes"]
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="fidelity: codec seeds")
    parser.add_argument(
        "--residual-quantizers",
        nargs="+",
        default=["pq"],
        choices=["pq", "scalar"],
        help="fidelity: the codecs compared (scalar: ColBERTv2's buckets, the baseline)",
    )
    parser.add_argument("--paths", nargs="+", default=["one-shot", "streaming"], help="fidelity: build paths")
    parser.add_argument("--rungs", type=int, nargs="+", help="curves: which budgets of the ladder (0 = cheapest)")
    parser.add_argument("--sizes", type=float, nargs="+", default=[0.25, 0.5, 1.0], help="sizes: corpus fractions")
    parser.add_argument(
        "--repeats", type=int, default=1, help="queries/s from the fastest of N passes, for exact and PLAID alike"
    )
    parser.add_argument("--_build", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    QuerySet.repeats = max(1, args.repeats)
    if args._build:
        build_plaid_from_npy(args._build[0], float(args._build[1]), int(args._build[2]), args._build[3])
        return

    from mbret.data.datasets import load_beir_dir
    from mbret.data.query_sets import query_sets
    from mbret.hardware import cpu_has_native
    from mbret.retrieval import Retriever
    from mbret.types import SearchParams

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    exact_dir = Path(args.exact) if args.exact else work / "exact"
    dataset = load_beir_dir(args.data)
    if not (exact_dir / "manifest.json").is_file():
        built = Retriever.build(dataset.corpus, args.model, mode="colbert", index_type="exact")
        built.save(exact_dir, replace=True)
        print(f"encoded {len(dataset.corpus)} documents in {built.timings['encode_corpus_s']:.0f}s")
    exact = Retriever.load(exact_dir, device="cpu")
    tokens, lengths = exact.index._flat()
    doc_ids, docs = list(exact.index.doc_ids), list(torch.split(tokens, lengths.tolist()))
    sets = {name: QuerySet(name, ds, exact.encoder) for name, ds in query_sets(dataset).items()}
    sets = {name: sets[name] for name in args.query_sets}
    out_file = work / "plaid_search.json"
    results: dict = {"exact": str(exact_dir), "markers": exact.encoder.prompts}
    results["query_expansion"] = exact.encoder.query_expansion
    print(
        f"{len(exact.index)} documents, {exact.index.num_tokens} token vectors; queries: "
        + ", ".join(f"{s.name} {len(s.qids)}" for s in sets.values())
        + f"; torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"native bfloat16 {cpu_has_native(torch.bfloat16, unknown=False)}"
    )
    baseline: dict[tuple[str, int], float] = {}
    for qs in sets.values():  # exact MaxSim in float32 throughout: the reference and the speed baseline
        for k in (100, 10):
            row = qs.measure(exact.index, k, screen=False)
            baseline[qs.name, k] = row["qps"]
            results[f"exact/{qs.name}/{k}"] = row
        print(f"{qs.name}: exact NDCG@10 {qs.exact_ndcg:.4f}, {baseline[qs.name, 10]:.1f} queries/s at k=10")

    def save() -> None:
        out_file.write_text(json.dumps(results, indent=1, default=float))

    if "speed" in args.sections:
        print(f"{'set':<6} {'index':<18} {'k':>4} {'queries/s':>10} {'NDCG@10':>8} {'vs exact':>9} {'x exact':>8}")
        for qs in sets.values():
            for k in (10, 100):
                print(speed_line(qs.name, "exact MaxSim", k, results[f"exact/{qs.name}/{k}"], baseline[qs.name, k]))
                row = qs.measure(exact.index, k, screen=True)
                results[f"screened/{qs.name}/{k}"] = row
                print(speed_line(qs.name, "exact, screened", k, row, baseline[qs.name, k]))
        for nbits in args.nbits:
            out = work / f"plaid-nbits{nbits}"
            done = subprocess.run(
                [sys.executable, __file__, "--_build", str(exact_dir), "1.0", str(nbits), str(out)],
                check=True, capture_output=True, text=True,
            )  # fmt: skip
            build = json.loads(done.stdout.strip().splitlines()[-1])
            plaid, _ = PlaidIndex.load(out)
            stored = sum(f.stat().st_size for f in out.glob("*.npy") if f.name.startswith(("codes", "residuals")))
            build["bytes_per_token"] = stored / plaid.num_tokens
            results[f"build/{nbits}"] = build
            for qs in sets.values():
                for k in (10, 100):
                    row = qs.measure(plaid, k)
                    results[f"plaid{nbits}/{qs.name}/{k}"] = row
                    print(speed_line(qs.name, f"PLAID nbits={nbits}", k, row, baseline[qs.name, k]))
            print(
                f"PLAID nbits={nbits}: {build['bytes_per_token']:.1f} bytes/token on disk (codes + residuals); "
                f"build from encoded vectors {build['build_s']:.1f}s, peak RSS {build['peak_rss_mb']:.0f} MB"
            )
            save()
    if "curves" in args.sections:
        for nbits in args.nbits:
            plaid = build_streaming(doc_ids, docs, nbits)
            for qs in sets.values():
                for k in (10, 100):
                    for budget in [LADDER[i] for i in args.rungs] if args.rungs else LADDER:
                        if budget[3] < k:
                            continue
                        row = qs.measure(plaid, k, search_params=SearchParams(*budget))
                        results[f"curve/{nbits}/{qs.name}/{k}/{budget}"] = row
                        print(f"curve nbits={nbits} {qs.name:<5} k={k:<3} {budget}: {row['diff']:+.4f} NDCG@10, "
                              f"recall@10 {row['recall@10']:.3f}, {row['qps']:.0f} q/s", flush=True)  # fmt: skip
                    save()
    if "fidelity" in args.sections:
        for nbits, quantizer, path, seed in itertools.product(
            args.nbits, args.residual_quantizers, args.paths, args.seeds
        ):
            if path == "one-shot":
                plaid = PlaidIndex(exact.index.dimension, nbits=nbits, seed=seed, residual_quantizer=quantizer)
                plaid.add(doc_ids, docs)
            else:
                plaid = build_streaming(doc_ids, docs, nbits, seed, quantizer)
            for qs in sets.values():
                for k in (10, 100):
                    row = qs.measure(plaid, k)
                    results[f"fidelity/{nbits}/{quantizer}/{path}/{seed}/{qs.name}/{k}"] = row
                    print(f"fidelity nbits={nbits} {quantizer:<6} {path:<9} seed={seed} {qs.name:<5} k={k:<3}: "
                          f"{row['diff']:+.4f} NDCG@10, {row['qps']:.0f} q/s", flush=True)  # fmt: skip
            save()
    if "k10" in args.sections:
        from mbret.indexes.plaid import search as plaid_search

        default_budgets = dict(plaid_search.FULL_SCORE_BUDGET)
        for nbits, seed in itertools.product(args.nbits, args.seeds):
            plaid = PlaidIndex(exact.index.dimension, nbits=nbits, seed=seed)
            plaid.add(doc_ids, docs)
            for probe, threshold, candidates, budget in K10_LADDER:
                # k=10 reads the k <= 10 budget at nbits 2 and the k <= 100 one at nbits 4 (`budget_k`)
                plaid_search.FULL_SCORE_BUDGET.update({10: budget, 100: budget})
                settings = SearchParams(probe, threshold, candidates)
                for qs in sets.values():
                    row = qs.measure(plaid, 10, search_params=settings)
                    results[f"k10/{nbits}/{seed}/{qs.name}/{(probe, threshold, candidates, budget)}"] = row
                    print(f"k10 nbits={nbits} seed={seed} {qs.name:<5} ({probe}, {threshold}, {candidates}, "
                          f"{budget}): {row['diff']:+.4f} NDCG@10, recall@10 {row['recall@10']:.3f}, "
                          f"{row['qps']:.0f} q/s", flush=True)  # fmt: skip
            plaid_search.FULL_SCORE_BUDGET.update(default_budgets)
            save()
    if "sizes" in args.sections:
        print(f"build at {len(args.sizes)} corpus sizes (nbits=2, streaming {CHUNK_DOCS}-document chunks):")
        for fraction in args.sizes:
            done = subprocess.run(
                [sys.executable, __file__, "--_build", str(exact_dir), str(fraction), "2",
                 str(work / f"plaid-size{fraction}")],
                check=True, capture_output=True, text=True,
            )  # fmt: skip
            build = json.loads(done.stdout.strip().splitlines()[-1])
            results[f"size/{fraction}"] = build
            print(f"  {build['docs']:>6} docs {build['tokens']:>9} tokens: build {build['build_s']:6.1f}s, "
                  f"peak RSS {build['peak_rss_mb']:6.0f} MB")  # fmt: skip
    save()


if __name__ == "__main__":
    main()
