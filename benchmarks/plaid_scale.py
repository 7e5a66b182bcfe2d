"""PLAID as the corpus grows, from SciFact's own token vectors, each step in a fresh process.

Two corpora (`--corpus`), both from SciFact's encoded documents (ColBERT head over all-MiniLM-L6-v2: an
exact MaxSim index, `--exact`, as `mbret eval --index-type exact` or the CI suite writes it):
- `spans` (the default, and the source of every published scale figure): each document is 2-4 spans of
  10-40 consecutive token vectors cut from different SciFact documents, with light seeded noise
  (`--noise`, default 0.05 x a unit vector's scale, then renormalised): about 75 tokens a document,
  near MS MARCO's passage length, and no two documents near-copies. Scale `s` holds `s` x SciFact's token count.
- `copies`: `s` seeded perturbed copies of SciFact (copy 0 the corpus itself; `--noise` default 0.3). Every
  document has s-1 near-copies, so probed lists fill with near-ties: slower and less faithful than any real
  corpus (docs/benchmarks.md, "PLAID at scale"). Kept to reproduce the old figures.
Queries: SciFact's 300 test queries, encoded once (WORK/queries.pt).

For each scale, each in its own process:
- `build`: the documented path for precomputed vectors: `train(sample, num_tokens=...)` on a seeded sample
  of whole documents, then `add` 2,048 documents at a time (float16, generated chunk by chunk), `save`;
  build time, peak RSS, stored bytes per token;
- `search`: load time, time to the first query's answer, queries/s at k=10 and k=100 with the default
  threads and on one thread (workers=1, torch threads 1: the PLAID paper's Table 3 setting), each of
  the four stages' share of the one-thread time, the anonymous (not file-backed) RSS of the process after
  the queries, and the largest single allocation of one query's search (torch profiler);
- `exact`: exact MaxSim's top 10 and top 100 of the first `--recall-queries` queries, streamed chunk by
  chunk (no exact index is written), against which PLAID's recall@10 and recall@100 are reported.

The last lines extrapolate the one-thread latency (a power law through the two largest scales) and the
index size to MS MARCO v1's 598M tokens, beside the paper's 185.5 / 222.3 ms and 21.6 GiB.

    python benchmarks/plaid_scale.py --exact runs/ci-suites/colbert/scifact/index --work runs/plaid-scale \
        --scales 1 2 8 16 27
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

    def __init__(self, exact_dir: str, scale: float, noise: float) -> None:
        from mbret.indexes import load_index

        self.exact, _ = load_index(exact_dir)
        self.tokens, lengths = self.exact._flat()  # memory-mapped float16
        self.lengths = lengths.numpy()
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)])
        self.base_ids = list(self.exact.doc_ids)
        self.scale, self.noise = int(scale), noise
        self.num_docs = len(self.base_ids) * self.scale
        self.num_tokens = int(self.offsets[-1]) * self.scale

    @property
    def dimension(self) -> int:
        return int(self.tokens.shape[1])

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


SPANS = (2, 4)  # spans per document, at least / at most
SPAN_TOKENS = (10, 40)  # token vectors per span, at least / at most


class SpanCorpus(Corpus):
    """Documents of 2-4 spans of token vectors, each from a different SciFact document, with light noise
    (module docstring). Document i depends only on (`seed`, i // CHUNK_DOCS), so every process (build,
    exact) makes the same corpus chunk by chunk, and a larger scale extends a smaller one."""

    def __init__(self, exact_dir: str, scale: float, noise: float, seed: int = 0) -> None:
        super().__init__(exact_dir, 1, noise)
        self.seed = seed
        mean_doc = (SPANS[0] + SPANS[1]) / 2 * (SPAN_TOKENS[0] + SPAN_TOKENS[1]) / 2
        self.num_docs = max(int(round(scale * int(self.offsets[-1]) / mean_doc)), 1)
        self.num_tokens = sum(int(self.plan(begin)[3].sum()) for begin in range(0, self.num_docs, CHUNK_DOCS))

    def doc_id(self, i: int) -> str:
        return f"s{i}"

    def plan(self, begin: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The chunk starting at document `begin`: per span its source row start and length, per document
        its span count and token count."""
        count = min(CHUNK_DOCS, self.num_docs - begin)
        rng = np.random.default_rng([self.seed, begin // CHUNK_DOCS])
        spans = rng.integers(SPANS[0], SPANS[1] + 1, size=count)
        total = int(spans.sum())
        lengths = rng.integers(SPAN_TOKENS[0], SPAN_TOKENS[1] + 1, size=total)
        # each document's spans from distinct source documents: consecutive draws of one permutation
        sources = np.concatenate([rng.choice(len(self.lengths), size=n, replace=False) for n in spans])
        lengths = np.minimum(lengths, self.lengths[sources])
        room = self.lengths[sources] - lengths
        starts = self.offsets[sources] + (rng.random(total) * (room + 1)).astype(np.int64)
        doc_tokens = np.add.reduceat(lengths, np.concatenate([[0], np.cumsum(spans)[:-1]]))
        return starts, lengths, spans, doc_tokens

    def chunk(self, begin: int) -> list[torch.Tensor]:
        starts, lengths, _spans, doc_tokens = self.plan(begin)
        rows = np.concatenate([np.arange(a, a + n) for a, n in zip(starts, lengths)])
        block = self.tokens[torch.from_numpy(rows)].float()
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + begin)
        block += self.noise * torch.randn(block.shape, generator=g) / math.sqrt(block.shape[1])
        block = torch.nn.functional.normalize(block, dim=-1).to(torch.float16)
        return list(torch.split(block, doc_tokens.tolist()))

    def documents(self, first: int, last: int) -> list[torch.Tensor]:
        out: list[torch.Tensor] = []
        for begin in range(first - first % CHUNK_DOCS, last, CHUNK_DOCS):
            docs = self.chunk(begin)
            out.extend(docs[max(first - begin, 0) : last - begin])
        return out

    def chunks(self) -> Iterator[tuple[list[str], list[torch.Tensor]]]:
        for begin in range(0, self.num_docs, CHUNK_DOCS):
            docs = self.chunk(begin)
            yield [self.doc_id(i) for i in range(begin, begin + len(docs))], docs


def make_corpus(args: argparse.Namespace, scale: float) -> Corpus:
    if args.corpus == "copies":
        return Corpus(args.exact, scale, 0.3 if args.noise is None else args.noise)
    return SpanCorpus(args.exact, scale, 0.05 if args.noise is None else args.noise)


def label(scale: float) -> str:
    return f"{scale:g}x"


def sampled_documents(corpus: Corpus, picks: np.ndarray) -> list[torch.Tensor]:
    """The documents numbered `picks` (ascending), generated a chunk at a time."""
    out: list[torch.Tensor] = []
    for begin in range(0, corpus.num_docs, CHUNK_DOCS):
        chosen = picks[(picks >= begin) & (picks < begin + CHUNK_DOCS)]
        if len(chosen):
            docs = corpus.documents(begin, min(begin + CHUNK_DOCS, corpus.num_docs))
            out.extend(docs[int(i) - begin] for i in chosen)
    return out


def build(args: argparse.Namespace, scale: float) -> dict:
    from mbret.indexes import Manifest, PlaidIndex

    corpus = make_corpus(args, scale)
    start = time.perf_counter()
    index = PlaidIndex(corpus.dimension, nbits=args.nbits)
    picks = index.sample_documents(corpus.num_docs, corpus.num_tokens / corpus.num_docs)
    sample = torch.cat(sampled_documents(corpus, picks))
    index.train(sample, num_tokens=corpus.num_tokens)
    del sample
    for ids, docs in corpus.chunks():
        index.add(ids, docs)
    out = Path(args.work) / f"plaid-{args.corpus}-{label(scale)}"
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


def stage_ms(index, queries: list[torch.Tensor], k: int) -> dict[str, float]:  # noqa: ANN001
    """Milliseconds per query of each PLAID stage on this thread (stage 1 includes the centroid scores)."""
    from mbret.indexes.plaid import search as stages

    spent = dict.fromkeys(("probe_candidates", "pruned_interaction", "centroid_interaction", "exact_scores"), 0.0)
    originals = {name: getattr(stages, name) for name in spent}

    def clocked(name: str):  # noqa: ANN202
        def run(*args):  # noqa: ANN002, ANN202
            start = time.perf_counter()
            out = originals[name](*args)
            spent[name] += time.perf_counter() - start
            return out

        return run

    for name in spent:
        setattr(stages, name, clocked(name))
    try:
        index.search(queries, k=k, workers=1)
    finally:
        for name, fn in originals.items():
            setattr(stages, name, fn)
    return {name.split("_")[0]: 1000 * t / len(queries) for name, t in spent.items()}


def search(args: argparse.Namespace, scale: float) -> dict:
    from mbret.indexes import PlaidIndex

    queries = torch.load(Path(args.work) / "queries.pt", weights_only=True)
    anon_before = status_kb("RssAnon")
    start = time.perf_counter()
    index, _ = PlaidIndex.load(Path(args.work) / f"plaid-{args.corpus}-{label(scale)}")
    loaded = time.perf_counter()
    first = index.search(queries[:1], k=10)
    row: dict = {"load_s": loaded - start, "first_query_s": time.perf_counter() - start}
    for k in (10, 100):
        index.search(queries[:8], k=k)
        t = time.perf_counter()
        hits = index.search(queries, k=k)
        row[f"qps_k{k}"] = len(queries) / (time.perf_counter() - t)
        row[f"top{k}"] = [[d for d, _ in h] for h in hits]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    for k in (10, 100):
        some = queries[: args.latency_queries]
        t = time.perf_counter()
        index.search(some, k=k, workers=1)
        row[f"ms_1thread_k{k}"] = 1000 * (time.perf_counter() - t) / len(some)
        row[f"stage_ms_k{k}"] = stage_ms(index, some, k)
    torch.set_num_threads(threads)
    row["anon_rss_mb"] = status_kb("RssAnon") / 1024
    row["anon_growth_mb"] = (status_kb("RssAnon") - anon_before) / 1024
    row["largest_query_alloc_kb"] = {k: largest_allocation(index, queries[0], k) / 1024 for k in (10, 100)}
    assert first
    return row


def exact_top(args: argparse.Namespace, scale: float) -> list[list[str]]:
    """Exact MaxSim's top 100 of the first `--recall-queries` queries over the corpus, chunk by chunk."""
    from mbret.indexes import ExactMaxSimIndex

    queries = torch.load(Path(args.work) / "queries.pt", weights_only=True)[: args.recall_queries]
    corpus = make_corpus(args, scale)
    best: list[list[tuple[float, str]]] = [[] for _ in queries]
    for ids, docs in corpus.chunks():
        part = ExactMaxSimIndex(corpus.dimension)
        part.add(ids, docs)
        for row, hits in zip(best, part.search(queries, k=100)):
            row.extend((s, d) for d, s in hits)
            row.sort(key=lambda hit: (-hit[0], hit[1]))
            del row[100:]
    return [[d for _, d in row] for row in best]


def recall(found: list[list[str]], truth: list[list[str]], k: int) -> float:
    """Mean share of exact's top k that PLAID's top k holds."""
    return float(np.mean([len(set(a[:k]) & set(b[:k])) / max(len(b[:k]), 1) for a, b in zip(found, truth)]))


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
    parser.add_argument("--corpus", choices=["spans", "copies"], default="spans", help="module docstring")
    parser.add_argument("--scales", type=float, nargs="+", default=[1, 2, 8], help="x SciFact's token count")
    parser.add_argument("--nbits", type=int, default=2)
    parser.add_argument("--noise", type=float, help="x a unit vector's scale (default: 0.05 spans, 0.3 copies)")
    parser.add_argument("--recall-queries", type=int, default=100)
    parser.add_argument("--latency-queries", type=int, default=100)
    parser.add_argument("--_step", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._step:
        step, scale = args._step[0], args._step[1]
        result = {"build": build, "search": search, "exact": exact_top}[step](args, float(scale))
        print(json.dumps(result))
        return
    Path(args.work).mkdir(parents=True, exist_ok=True)
    encode_queries(args)
    rows = {}
    for scale in args.scales:
        row = child("build", args, scale) | child("search", args, scale)
        truth = child("exact", args, scale)
        for k in (10, 100):
            row[f"recall@{k}_vs_exact"] = recall(row.pop(f"top{k}")[: len(truth)], truth, k)
        rows[scale] = row
        print(json.dumps({"scale": scale} | row), flush=True)
    (Path(args.work) / f"plaid_scale_{args.corpus}.json").write_text(json.dumps(rows, indent=1))
    base = rows[min(rows)]
    print(f"{'scale':>6} {'tokens':>11} {'docs':>9} {'build s':>8} {'peak MB':>8} {'B/tok':>6} {'load s':>7} "
          f"{'q/s k10':>8} {'1t ms k10':>9} {'1t ms k100':>10} {'anon MB':>8} {'R@10':>5} {'R@100':>5} "
          f"{'qps/1x':>6}")  # fmt: skip
    for scale, r in rows.items():
        print(
            f"{label(scale):>6} {r['tokens']:>11,} {r['docs']:>9,} {r['build_s']:8.1f} {r['build_peak_rss_mb']:8.0f} "
            f"{r['bytes_per_token']:6.1f} {r['load_s']:7.2f} {r['qps_k10']:8.1f} "
            f"{r['ms_1thread_k10']:9.1f} {r['ms_1thread_k100']:10.1f} {r['anon_rss_mb']:8.0f} "
            f"{r['recall@10_vs_exact']:5.3f} {r['recall@100_vs_exact']:5.3f} {r['qps_k10'] / base['qps_k10']:6.2f}"
        )
    for scale, r in rows.items():
        for k in (10, 100):
            stages = ", ".join(f"{name} {ms:.2f}" for name, ms in r[f"stage_ms_k{k}"].items())
            print(f"{label(scale):>6} k={k}: stages, ms/query on 1 thread: {stages}")
    if len(rows) >= 2:
        ordered = sorted(rows.items())
        tokens = np.log([r["tokens"] for _, r in ordered])
        for k in (10, 100):
            ms = np.log([r[f"ms_1thread_k{k}"] for _, r in ordered])
            slope, intercept = np.polyfit(tokens, ms, 1)  # a power law through every scale
            pairs = np.diff(ms) / np.diff(tokens)  # the exponent between neighbouring scales: the fit's spread
            low, high = (
                float(np.exp(ms[-1] + e * (math.log(MSMARCO_TOKENS) - tokens[-1]))) for e in (pairs.min(), pairs.max())
            )
            print(f"MS MARCO v1 (598M tokens), k={k}: {math.exp(intercept + slope * math.log(MSMARCO_TOKENS)):.1f} "
                  f"ms/query on 1 thread (fit through {len(ordered)} scales, latency ~ tokens^{slope:.2f}; "
                  f"{low:.1f}-{high:.1f} ms by the neighbouring pairs' exponents {pairs.min():.2f}-{pairs.max():.2f}); "
                  f"PLAID paper: {PAPER[f'k{k}_ms']} ms")  # fmt: skip
        last = ordered[-1][1]
        print(f"MS MARCO v1 index: {last['bytes_per_token'] * MSMARCO_TOKENS / 2**30:.1f} GiB at "
              f"{last['bytes_per_token']:.1f} B/token; PLAID paper: {PAPER['index_gib']} GiB")  # fmt: skip


if __name__ == "__main__":
    main()
