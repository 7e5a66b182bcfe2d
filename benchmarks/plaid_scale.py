"""PLAID at 1x, 4x and 16x SciFact's token count, from SciFact's own token vectors, each step in a fresh process.

The corpus at scale `s` is `s` copies of SciFact's encoded documents (ColBERT head over all-MiniLM-L6-v2:
an exact MaxSim index, `--exact`, as `mbret eval --index-type exact` or the CI suite writes it). Copy 0 is
the corpus itself; copy c > 0 perturbs every token with seeded Gaussian noise (`--noise` x a unit vector's
scale, then renormalised), so the clusters are SciFact's own. Queries: SciFact's 300 test queries, encoded
once (WORK/queries.pt).

For each scale, each in its own process:
- `build`: the documented path for precomputed vectors: `train(sample, num_tokens=...)` on a seeded sample
  of whole documents, then `add` 2,048 documents at a time (float16, generated chunk by chunk), `save`;
  build time, peak RSS, stored bytes per token;
- `search`: load time, time to the first query's answer, queries/s at k=10 and k=100 with the default
  threads and on one thread (workers=1, torch threads 1: the PLAID paper's Table 3 setting), the anonymous
  (not file-backed) RSS of the process after the queries, and the largest single allocation of one
  query's search (torch profiler);
- `exact`: recall@10 of PLAID's top 10 against exact MaxSim over the same vectors (`--recall-queries` of
  the queries, streamed chunk by chunk: no exact index is written).

The last lines extrapolate the one-thread latency (a power law through the two largest scales) and the
index size to MS MARCO v1's 598M tokens, beside the paper's 185.5 / 222.3 ms and 21.6 GiB.

    python benchmarks/plaid_scale.py --exact runs/ci-suites/colbert/scifact/index --work runs/plaid-scale
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

CHUNK_DOCS = 2048
MSMARCO_TOKENS = 598_000_000
PAPER = {"k10_ms": 185.5, "k100_ms": 222.3, "index_gib": 21.6}


def status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class Corpus:
    """`scale` seeded perturbed copies of an exact index's documents, produced chunk by chunk."""

    def __init__(self, exact_dir: str, scale: int, noise: float) -> None:
        from mbret.indexes import load_index

        self.exact, _ = load_index(exact_dir)
        self.tokens, lengths = self.exact._flat()  # memory-mapped float16
        self.lengths = lengths.numpy()
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)])
        self.base_ids = list(self.exact.doc_ids)
        self.scale, self.noise = scale, noise
        self.num_docs = len(self.base_ids) * scale
        self.num_tokens = int(self.offsets[-1]) * scale

    def doc_id(self, i: int) -> str:
        copy, d = divmod(i, len(self.base_ids))
        return self.base_ids[d] if copy == 0 else f"{self.base_ids[d]}~{copy}"

    def documents(self, first: int, last: int) -> list[torch.Tensor]:
        """Documents first..last-1 (across copies) as float16."""
        out = []
        n = len(self.base_ids)
        i = first
        while i < last:
            copy, d = divmod(i, n)
            end = min(last, (copy + 1) * n)
            d_end = end - copy * n
            block = self.tokens[int(self.offsets[d]) : int(self.offsets[d_end])].float()
            if copy:
                g = torch.Generator().manual_seed(copy * 1_000_003 + d)
                block = block + self.noise * torch.randn(block.shape, generator=g) / math.sqrt(block.shape[1])
                block = torch.nn.functional.normalize(block, dim=-1)
            out.extend(torch.split(block.to(torch.float16), self.lengths[d:d_end].tolist()))
            i = end
        return out

    def chunks(self) -> Iterator[tuple[list[str], list[torch.Tensor]]]:
        for begin in range(0, self.num_docs, CHUNK_DOCS):
            end = min(begin + CHUNK_DOCS, self.num_docs)
            yield [self.doc_id(i) for i in range(begin, end)], self.documents(begin, end)


def build(args: argparse.Namespace, scale: int) -> dict:
    from mbret.indexes import Manifest, PlaidIndex

    corpus = Corpus(args.exact, scale, args.noise)
    start = time.perf_counter()
    index = PlaidIndex(corpus.tokens.shape[1], nbits=args.nbits)
    picks = index.sample_documents(corpus.num_docs, corpus.num_tokens / corpus.num_docs)
    sample = torch.cat([corpus.documents(int(i), int(i) + 1)[0] for i in picks])
    index.train(sample, num_tokens=corpus.num_tokens)
    del sample
    for ids, docs in corpus.chunks():
        index.add(ids, docs)
    out = Path(args.work) / f"plaid-{scale}x"
    fields = {"mode": "colbert", "model": "minilm", "normalized": True, "max_length": 300}
    manifest = Manifest(kind="plaid", dimension=index.dimension, num_docs=0, index_type="plaid", **fields)
    index.save(out, manifest, replace=True)
    seconds = time.perf_counter() - start
    stored = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    return {
        "tokens": corpus.num_tokens,
        "docs": corpus.num_docs,
        "centroids": len(index.codec.centroids),
        "build_s": seconds,
        "build_peak_rss_mb": status_kb("VmHWM") / 1024,
        "bytes_per_token": stored / corpus.num_tokens,
        "index_mb": stored / 2**20,
    }


def largest_allocation(index, query: torch.Tensor, k: int) -> int:  # noqa: ANN001
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        index.search([query], k=k, workers=1)
    return max(max(e.cpu_memory_usage, e.self_cpu_memory_usage) for e in prof.events())


def search(args: argparse.Namespace, scale: int) -> dict:
    from mbret.indexes import PlaidIndex

    queries = torch.load(Path(args.work) / "queries.pt", weights_only=True)
    anon_before = status_kb("RssAnon")
    start = time.perf_counter()
    index, _ = PlaidIndex.load(Path(args.work) / f"plaid-{scale}x")
    loaded = time.perf_counter()
    first = index.search(queries[:1], k=10)
    row: dict = {"load_s": loaded - start, "first_query_s": time.perf_counter() - start}
    for k in (10, 100):
        index.search(queries[:8], k=k)
        t = time.perf_counter()
        hits = index.search(queries, k=k)
        row[f"qps_k{k}"] = len(queries) / (time.perf_counter() - t)
        if k == 10:
            row["top10"] = [[d for d, _ in h] for h in hits]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    for k in (10, 100):
        some = queries[: args.latency_queries]
        t = time.perf_counter()
        index.search(some, k=k, workers=1)
        row[f"ms_1thread_k{k}"] = 1000 * (time.perf_counter() - t) / len(some)
    torch.set_num_threads(threads)
    row["anon_rss_mb"] = status_kb("RssAnon") / 1024
    row["anon_growth_mb"] = (status_kb("RssAnon") - anon_before) / 1024
    row["largest_query_alloc_kb"] = {k: largest_allocation(index, queries[0], k) / 1024 for k in (10, 100)}
    assert first
    return row


def exact_top10(args: argparse.Namespace, scale: int) -> list[list[str]]:
    """Exact MaxSim top 10 of the first `--recall-queries` queries over the scaled corpus, chunk by chunk."""
    from mbret.indexes import ExactMaxSimIndex

    queries = torch.load(Path(args.work) / "queries.pt", weights_only=True)[: args.recall_queries]
    corpus = Corpus(args.exact, scale, args.noise)
    best: list[list[tuple[float, str]]] = [[] for _ in queries]
    for ids, docs in corpus.chunks():
        part = ExactMaxSimIndex(corpus.tokens.shape[1])
        part.add(ids, docs)
        for row, hits in zip(best, part.search(queries, k=10)):
            row.extend((s, d) for d, s in hits)
            row.sort(reverse=True)
            del row[10:]
    return [[d for _, d in row] for row in best]


def encoder_of(exact_dir: str):  # noqa: ANN201
    """The ColBERT encoder an exact index was built with, as its manifest names it, on the CPU."""
    from mbret.indexes import read_manifest
    from mbret.retrieval.colbert import ColBERTEncoder

    manifest = read_manifest(exact_dir)
    return ColBERTEncoder.load(
        manifest.model,
        device="cpu",
        query_length=manifest.query_length,
        document_length=manifest.document_length,
        query_expansion=manifest.query_expansion,
    )


def encode_queries(args: argparse.Namespace) -> None:
    from mbret.data.datasets import load_dataset

    path = Path(args.work) / "queries.pt"
    if path.exists():
        return
    encoder = encoder_of(args.exact)
    dataset = load_dataset(args.data)
    vectors = encoder.encode_queries([dataset.queries[q] for q in dataset.queries])
    torch.save([v.float().contiguous() for v in vectors], path)


def child(step: str, args: argparse.Namespace, scale: int) -> dict:
    command = [sys.executable, __file__, "--_step", step, str(scale)] + sys.argv[1:]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exact", default="runs/ci-suites/colbert/scifact/index", help="SciFact's exact index")
    parser.add_argument("--data", default="../shared/data/beir/scifact")
    parser.add_argument("--work", default="runs/plaid-scale")
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--nbits", type=int, default=2)
    parser.add_argument("--noise", type=float, default=0.3, help="perturbation of copies, x a unit vector's scale")
    parser.add_argument("--recall-queries", type=int, default=100)
    parser.add_argument("--latency-queries", type=int, default=100)
    parser.add_argument("--_step", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._step:
        step, scale = args._step[0], int(args._step[1])
        result = {"build": build, "search": search, "exact": exact_top10}[step](args, scale)
        print(json.dumps(result))
        return
    Path(args.work).mkdir(parents=True, exist_ok=True)
    encode_queries(args)
    rows = {}
    for scale in args.scales:
        row = child("build", args, scale) | child("search", args, scale)
        truth = child("exact", args, scale)
        found = row.pop("top10")[: len(truth)]
        row["recall@10_vs_exact"] = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth)]))
        rows[scale] = row
        print(json.dumps({"scale": scale} | row), flush=True)
    (Path(args.work) / "plaid_scale.json").write_text(json.dumps(rows, indent=1))
    base = rows[min(rows)]
    print(f"{'scale':>5} {'tokens':>11} {'build s':>8} {'peak MB':>8} {'B/tok':>6} {'load s':>7} {'1st q s':>8} "
          f"{'q/s k10':>8} {'q/s k100':>8} {'1t ms k10':>9} {'1t ms k100':>10} {'anon MB':>8} {'B/tok anon':>10} "
          f"{'R@10':>5} {'qps/1x':>6}")  # fmt: skip
    for scale, r in rows.items():
        print(
            f"{scale:>5} {r['tokens']:>11,} {r['build_s']:8.1f} {r['build_peak_rss_mb']:8.0f} "
            f"{r['bytes_per_token']:6.1f} "
            f"{r['load_s']:7.2f} {r['first_query_s']:8.2f} {r['qps_k10']:8.1f} {r['qps_k100']:8.1f} "
            f"{r['ms_1thread_k10']:9.1f} {r['ms_1thread_k100']:10.1f} {r['anon_rss_mb']:8.0f} "
            f"{r['anon_rss_mb'] * 2**20 / r['tokens']:10.2f} {r['recall@10_vs_exact']:5.3f} "
            f"{r['qps_k10'] / base['qps_k10']:6.2f}"
        )
    if len(rows) >= 2:
        (s1, a), (s2, b) = sorted(rows.items())[-2:]
        for k in (10, 100):
            slope = math.log(b[f"ms_1thread_k{k}"] / a[f"ms_1thread_k{k}"]) / math.log(b["tokens"] / a["tokens"])
            ms = b[f"ms_1thread_k{k}"] * (MSMARCO_TOKENS / b["tokens"]) ** slope
            print(f"MS MARCO v1 (598M tokens), k={k}: {ms:.1f} ms/query on 1 thread (latency ~ tokens^{slope:.2f}, "
                  f"from {s1}x-{s2}x); PLAID paper: {PAPER[f'k{k}_ms']} ms")  # fmt: skip
        print(f"MS MARCO v1 index: {b['bytes_per_token'] * MSMARCO_TOKENS / 2**30:.1f} GiB at "
              f"{b['bytes_per_token']:.1f} B/token; PLAID paper: {PAPER['index_gib']} GiB")  # fmt: skip


if __name__ == "__main__":
    main()
