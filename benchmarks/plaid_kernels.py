"""PLAID's kernels against their previous versions (the baseline, copied below from commit cfff9c5), in one
run: the ratio is what a change bought, whatever the machine's speed that hour.

Sections (`--sections`, any of):
- `segments`: `max_per_segment` (a per-document max over token rows) at query lengths 4-123, baseline
  (one scatter-reduce with `include_self=False`) against now (`segment_reduce` below 16 columns, a -inf
  scatter from 16);
- `gather`: one stage-sized gather of centroid-score rows, as one temporary against blocks of
  `BLOCK_FLOATS`: what a temporary past glibc's largest heap chunk costs in page faults;
- `assign`: nearest-centroid assignment of 131,072 vectors to 4,096 centroids, torch blocks + argmax (the
  baseline) against `faiss.knn`;
- `stages` (needs `--exact DIR`, the exact MaxSim index of a ColBERT run, e.g. the SciFact suite's with
  `--save-index`, and `--dataset DIR`): builds one PLAID index (nbits 2) from its vectors, then times
  each search stage per query, baseline stages against now, in alternating rounds, per query set (full,
  short, long) and k; checks that both return the same hits.

Every section runs on one thread.

    python benchmarks/plaid_kernels.py --sections segments gather assign
    python benchmarks/plaid_kernels.py --sections stages --exact runs/suite/colbert/scifact/index \\
        --dataset ../shared/data/beir/scifact --work runs/kernels
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

import torch

from mbret.indexes import kernels
from mbret.indexes.kernels import ranges
from mbret.indexes.plaid import search as now
from mbret.indexes.plaid.codec import ResidualCodec
from mbret.indexes.plaid.ivf import SearchState


# -- the baseline (cfff9c5) -----------------------------------------------------------------------------
def baseline_max_per_segment(values: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    owner = torch.repeat_interleave(torch.arange(len(counts), device=values.device), counts)
    best = torch.zeros(len(counts), values.shape[1], device=values.device)
    return best.scatter_reduce_(0, owner[:, None].expand_as(values), values, "amax", include_self=False)


def baseline_assign(centroids: torch.Tensor, vectors: torch.Tensor, block: int = 4096) -> torch.Tensor:
    out = torch.empty(len(vectors), dtype=torch.int64)
    for start in range(0, len(vectors), block):
        out[start : start + block] = (vectors[start : start + block].float() @ centroids.T).argmax(dim=1)
    return out


INTERACTION_DOCS = 4096
max_per_segment = baseline_max_per_segment
positions = now.positions


def baseline_pruned_interaction(
    state: SearchState, scores_t: torch.Tensor, docs: torch.Tensor, kept: torch.Tensor
) -> torch.Tensor:
    """Stage 2: approximate MaxSim of one query over ascending `docs`, counting only the centroids `kept`
    (bool per centroid), each query token's max at least 0. Read from the kept centroids' inverted lists
    (few: pruning keeps the centroids near some query token) and scattered into a (docs, query tokens)
    buffer by each pair's position among `docs`, looked up in the thread's `positions` map."""
    kept_ids = torch.nonzero(kept).flatten()
    best = torch.zeros(len(docs), scores_t.shape[1], device=scores_t.device)
    position = positions(state.num_docs, scores_t.device)
    position.index_copy_(0, docs, torch.arange(1, len(docs) + 1, dtype=torch.int32, device=docs.device))
    try:
        for chunk in state.chunks:
            starts = chunk.ivf_offsets.index_select(0, kept_ids)
            counts = chunk.ivf_offsets.index_select(0, kept_ids + 1) - starts
            pair_docs = chunk.ivf_docs.index_select(0, ranges(starts, starts + counts))
            where = position.index_select(0, pair_docs.to(torch.int64).add_(chunk.doc_start))
            use = where > 0
            values = scores_t.index_select(0, torch.repeat_interleave(kept_ids, counts)[use])
            #  (the (pairs, lq) index is an expanded view: faster than building flat int64 targets)
            target = where[use].to(torch.int64).sub_(1)
            best.scatter_reduce_(0, target[:, None].expand_as(values), values, "amax")
    finally:
        position.index_fill_(0, docs, 0)  # back to all zeros, in O(candidates)
    return best.sum(dim=1)


def baseline_centroid_interaction(state: SearchState, scores_t: torch.Tensor, docs: torch.Tensor) -> torch.Tensor:
    """Stage 3: approximate MaxSim of one query over ascending `docs` from centroid scores alone, read
    through each document's distinct centroids: their rows of `scores_t` (centroids, query tokens),
    max-reduced per document and query token, summed over query tokens. A document without tokens scores
    0. Gathers `INTERACTION_DOCS` documents' pairs at a time."""
    out = torch.empty(len(docs), device=scores_t.device)
    for chunk, begin, _end, local in state.per_chunk(docs):
        for b in range(0, len(local), INTERACTION_DOCS):
            part = local[b : b + INTERACTION_DOCS]
            starts = chunk.doc_code_offsets.index_select(0, part)
            counts = chunk.doc_code_offsets.index_select(0, part + 1) - starts
            codes = chunk.widen(chunk.doc_codes.index_select(0, ranges(starts, starts + counts)))
            best = max_per_segment(scores_t.index_select(0, codes), counts)
            out[begin + b : begin + b + len(part)] = best.sum(dim=1)
    return out


def baseline_exact_scores(
    state: SearchState, query: torch.Tensor, scores_t: torch.Tensor, docs: torch.Tensor
) -> torch.Tensor:
    """Stage 4: MaxSim over decompressed vectors, without decompressing. A token's similarity with each query
    token is (centroid score + residual product) / norm of the decompressed vector; then a per-document max
    (`max_per_segment`). Tokens are read in storage order, so the memory maps are read forwards. `docs` in
    any order; a document without tokens scores 0."""
    order = torch.argsort(docs)
    ordered = docs[order]
    scores = torch.empty(len(docs), device=scores_t.device)
    for chunk, begin, end, local in state.per_chunk(ordered):
        lengths = chunk.doclens.index_select(0, local)
        first = chunk.offsets.index_select(0, local)
        rows = ranges(first, first + lengths)
        sims = scores_t.index_select(0, chunk.widen(chunk.codes.index_select(0, rows)))
        packed = chunk.residuals.index_select(0, rows).view(torch.uint8).view(len(rows), state.residual_bytes)
        sims += state.codec.residual_similarities(query, packed)
        sims /= chunk.norms.index_select(0, rows).clamp_min(1e-12)[:, None]
        scores[begin:end] = max_per_segment(sims, lengths).sum(dim=1)
    out = torch.empty_like(scores)
    out[order] = scores
    return out


BASELINE = {
    "pruned_interaction": baseline_pruned_interaction,
    "centroid_interaction": baseline_centroid_interaction,
    "exact_scores": baseline_exact_scores,
}
CURRENT = {name: getattr(now, name) for name in BASELINE}


# -- measurement -------------------------------------------------------------------------------------------
def timed(fn, *args, repeat: int = 10) -> float:  # noqa: ANN001, ANN002
    """Milliseconds per call, after one warm-up call."""
    fn(*args)
    start = time.perf_counter()
    for _ in range(repeat):
        fn(*args)
    return (time.perf_counter() - start) / repeat * 1000


def segments() -> None:
    print("max_per_segment: 232 documents of 115-345 token rows; ms per call, one thread")
    for lq in (4, 8, 9, 12, 16, 23, 32, 64, 123):
        counts = torch.randint(115, 345, (232,))
        values = torch.randn(int(counts.sum()), lq)
        assert torch.equal(kernels.max_per_segment(values, counts), baseline_max_per_segment(values, counts))
        old, new = timed(baseline_max_per_segment, values, counts), timed(kernels.max_per_segment, values, counts)
        print(f"  lq {lq:3d}: baseline {old:6.2f}  now {new:6.2f}  speed-up {old / new:4.2f}x")


def gather_whole(table: torch.Tensor, rows: torch.Tensor) -> float:
    return float(table.index_select(0, rows).amax())


def gather_blocks(table: torch.Tensor, rows: torch.Tensor, block: int) -> float:
    return max(float(table.index_select(0, rows[b : b + block]).amax()) for b in range(0, len(rows), block))


def gather() -> None:
    print("gathering 100,000 rows of a (4096, lq) centroid-score table; ms per call, one thread")
    for lq in (9, 32, 123):
        table, rows = torch.randn(4096, lq), torch.randint(0, 4096, (100_000,))
        block = max(now.BLOCK_FLOATS // lq, 1)

        old, new = timed(gather_whole, table, rows), timed(gather_blocks, table, rows, block)
        print(f"  lq {lq:3d}: one temporary {old:6.2f}  blocks {new:6.2f}  speed-up {old / new:4.2f}x")


def assign() -> None:
    torch.manual_seed(0)
    centroids = torch.nn.functional.normalize(torch.randn(4096, 128), dim=1)
    vectors = torch.nn.functional.normalize(torch.randn(131_072, 128), dim=1)
    agree = float((baseline_assign(centroids, vectors) == ResidualCodec.assign(centroids, vectors)).float().mean())
    old = timed(baseline_assign, centroids, vectors, repeat=3)
    new = timed(ResidualCodec.assign, centroids, vectors, repeat=3)
    print(
        f"assign 131,072 x 4,096 centroids: baseline {old:.0f} ms  now {new:.0f} ms  speed-up {old / new:.2f}x"
        f"  (same centroid for {agree:.4%})"
    )


def stages(exact_dir: Path, dataset_dir: Path, work: Path, rounds: int) -> None:
    from mbret.data.datasets import load_dataset
    from mbret.data.query_sets import long_queries, query_sets
    from mbret.indexes import PlaidIndex
    from mbret.retrieval import Retriever

    work.mkdir(parents=True, exist_ok=True)
    exact = Retriever.load(exact_dir, device="cpu")
    if not (work / "plaid" / "manifest.json").exists():
        tokens, lengths = exact.index._flat()
        plaid = PlaidIndex(exact.encoder.dimension, nbits=2)
        plaid.add(list(exact.index.doc_ids), list(torch.split(tokens, lengths.tolist())))
        Retriever(encoder=exact.encoder, index=plaid).save(work / "plaid")
    index = Retriever.load(work / "plaid", device="cpu").index
    state = index.search_state()
    dataset = load_dataset(dataset_dir)
    sets = {**query_sets(dataset), "long": long_queries(dataset, num_queries=100)}
    encoded = {name: exact.encoder.encode_queries(list(s.queries.values())) for name, s in sets.items()}
    torch.set_num_threads(1)
    spent: dict[tuple[str, str, int, str], float] = defaultdict(float)

    def run(label: str, stage_fns: dict, name: str, k: int) -> list:  # noqa: ANN001
        def clock(stage: str, fn):  # noqa: ANN001, ANN202
            def wrapped(*args):  # noqa: ANN002, ANN202
                start = time.perf_counter()
                out = fn(*args)
                spent[label, name, k, stage] += time.perf_counter() - start
                return out

            return wrapped

        for stage, fn in stage_fns.items():
            setattr(now, stage, clock(stage, fn))
        try:
            params = now.resolve_budgets(None, k, index.nbits)
            start = time.perf_counter()
            hits = [now.search_one(state, q, k, params) for q in encoded[name]]
            spent[label, name, k, "total"] += time.perf_counter() - start
            return hits
        finally:
            for stage, fn in CURRENT.items():
                setattr(now, stage, fn)

    for _ in range(rounds):
        for name in sets:
            for k in (10, 100):
                old, new = run("baseline", BASELINE, name, k), run("now", CURRENT, name, k)
                for a, b in zip(old, new):
                    assert [d for d, _ in a] == [d for d, _ in b], (name, k)
                    assert max(abs(x - y) for (_, x), (_, y) in zip(a, b)) < 1e-4, (name, k)
    print(f"PLAID stages, ms per query on one thread ({rounds} alternating rounds; same hits both ways)")
    for name in sets:
        per = rounds * len(encoded[name])
        for k in (10, 100):
            cells = []
            for stage in ("pruned_interaction", "centroid_interaction", "exact_scores", "total"):
                old, new = (1000 * spent[label, name, k, stage] / per for label in ("baseline", "now"))
                cells.append(f"{stage.split('_')[0]} {old:.2f} -> {new:.2f} ({old / new:.2f}x)")
            print(f"  {name:5s} k={k:3d}: " + "; ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sections",
        nargs="+",
        default=["segments", "gather", "assign"],
        choices=["segments", "gather", "assign", "stages"],
    )
    parser.add_argument("--exact", type=Path, help="an exact MaxSim index (for `stages`)")
    parser.add_argument("--dataset", type=Path, help="its BEIR dataset (for `stages`)")
    parser.add_argument("--work", type=Path, default=Path("runs/kernels"))
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for section in args.sections:
        if section == "stages":
            if args.exact is None or args.dataset is None:
                parser.error("stages needs --exact and --dataset")
            stages(args.exact, args.dataset, args.work, args.rounds)
        else:
            {"segments": segments, "gather": gather, "assign": assign}[section]()


if __name__ == "__main__":
    main()
