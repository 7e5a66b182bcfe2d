"""Hybrid search: several mbret indexes of one corpus (bm25 + colbert, dense + bm25, ...) searched with the
same queries, their rankings fused into one.

- `rrf`, reciprocal rank fusion (Cormack, Clarke and Büttcher, SIGIR 2009): a document scores
  sum over indexes of 1 / (rrf_k + rank), rank counted from 1 in each index's hits, rrf_k = 60 as in the
  paper and in Pyserini. Scores are never compared across indexes, so no normalisation is needed.
- `linear`: each index's scores for a query are min-max normalised over the hits it returned, to [0, 1]
  (a document an index did not return gets 0 from it), then weighted: `alpha` for the first index and
  1 - alpha shared equally by the others (two indexes: alpha * first + (1 - alpha) * second, next-plaid's
  and Pyserini's hybrid convention).

Each index is searched `fusion_depth` deep (at least k) before fusing; a filter applies inside every index's
search. Ties are broken by doc id, so a fused ranking is deterministic.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mbret.errors import MbretError, ParameterError
from mbret.retrieval.retriever import Hit, Retriever, fill_documents
from mbret.types import SearchParams

FUSIONS = ("rrf", "linear")
RRF_K = 60
DEFAULT_DEPTH = 100

Ranking = list[tuple[str, float]]


def _top(scores: dict[str, float], k: int) -> Ranking:
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:k]


def fuse_rrf(rankings: Sequence[Ranking], k: int, rrf_k: int = RRF_K) -> Ranking:
    """One query's rankings (best first) fused by reciprocal rank: sum of 1 / (rrf_k + rank)."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, (doc_id, _) in enumerate(ranking, 1):
            scores[doc_id] = scores.get(doc_id, 0.0) + 1.0 / (rrf_k + rank)
    return _top(scores, k)


def fuse_linear(rankings: Sequence[Ranking], k: int, alpha: float = 0.5) -> Ranking:
    """One query's rankings fused by a weighted sum of min-max normalised scores: `alpha` for the first,
    1 - alpha shared by the others. A ranking whose scores are all equal normalises them to 1."""
    if not 0.0 <= alpha <= 1.0:
        raise ParameterError("alpha", f"{alpha}: must be between 0 and 1")
    others = len(rankings) - 1
    weights = [alpha] + [(1.0 - alpha) / others] * others if others else [1.0]
    scores: dict[str, float] = {}
    for weight, ranking in zip(weights, rankings):
        if not ranking:
            continue
        values = [s for _, s in ranking]
        low, high = min(values), max(values)
        for doc_id, score in ranking:
            norm = (score - low) / (high - low) if high > low else 1.0
            scores[doc_id] = scores.get(doc_id, 0.0) + weight * norm
    return _top(scores, k)


def fuse(
    runs: Sequence[Sequence[Ranking]], k: int, fusion: str = "rrf", alpha: float = 0.5, rrf_k: int = RRF_K
) -> list[Ranking]:
    """Per query, the fused top k of several runs (one list of rankings per index, queries in the same order)."""
    if fusion not in FUSIONS:
        raise ParameterError("fusion", f"{fusion}: choose one of {', '.join(FUSIONS)}")
    if len({len(run) for run in runs}) > 1:
        raise MbretError("fuse(): every run needs one ranking per query")
    per_query = list(zip(*runs))
    if fusion == "rrf":
        return [fuse_rrf(rankings, k, rrf_k) for rankings in per_query]
    return [fuse_linear(rankings, k, alpha) for rankings in per_query]


@dataclass
class FusedRetriever:
    """Several retrievers over one corpus, searched together and fused (`fuse`). `search_params` are the
    default search settings given to every index's search (each reads its own type's and ignores the rest),
    under each search's own."""

    retrievers: list[Retriever]
    fusion: str = "rrf"
    alpha: float = 0.5
    fusion_depth: int = DEFAULT_DEPTH
    rrf_k: int = RRF_K
    paths: list[str] = field(default_factory=list)  # where each retriever's index was loaded from
    search_params: SearchParams | None = None
    # per-thread `timings`: threads may search one FusedRetriever at once, as one Retriever
    _local: threading.local = field(default_factory=threading.local, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.retrievers) < 2:
            raise ParameterError("retrievers", "fusion takes two or more indexes")
        if self.fusion not in FUSIONS:
            raise ParameterError("fusion", f"{self.fusion}: choose one of {', '.join(FUSIONS)}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ParameterError("alpha", f"{self.alpha}: must be between 0 and 1")
        if self.fusion_depth <= 0:
            raise ParameterError("fusion_depth", f"{self.fusion_depth}: must be a positive integer")

    @classmethod
    def load(
        cls,
        paths: Sequence[str | Path],
        fusion: str = "rrf",
        alpha: float = 0.5,
        fusion_depth: int = DEFAULT_DEPTH,
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int = 64,
        search_params: SearchParams | None = None,
    ) -> FusedRetriever:
        """Load each index with its own model; refuses indexes that do not hold the same documents."""
        if len(paths) < 2:
            raise ParameterError("paths", "fusion takes two or more index directories")
        retrievers = [Retriever.load(p, device=device, dtype=dtype, batch_size=batch_size) for p in paths]
        first = {d for d in retrievers[0].index.doc_ids if d is not None}
        for path, retriever in zip(paths[1:], retrievers[1:]):
            ids = {d for d in retriever.index.doc_ids if d is not None}
            if ids != first:
                extra = next(iter(ids - first), None) or next(iter(first - ids))
                raise ParameterError(
                    "paths",
                    f"{path}: holds other documents than {paths[0]} (e.g. {extra!r}); fuse indexes of one corpus",
                )
        return cls(
            retrievers,
            fusion=fusion,
            alpha=alpha,
            fusion_depth=fusion_depth,
            paths=[str(p) for p in paths],
            search_params=search_params,
        )

    @property
    def timings(self) -> dict[str, float]:
        """Seconds of this thread's last search: `encode_queries_s` and `search_s` (fusing included)."""
        timings: dict[str, float] | None = getattr(self._local, "timings", None)
        if timings is None:
            timings = self._local.timings = {}
        return timings

    @property
    def name(self) -> str:
        parts = "+".join(f"{r.mode}:{r.encoder.name}" if r.mode != "bm25" else "bm25" for r in self.retrievers)
        return f"{self.fusion}({parts})"

    @property
    def num_docs(self) -> int:
        return len(self.retrievers[0].index)

    @property
    def batch_size(self) -> int:
        return self.retrievers[0].batch_size

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        for retriever in self.retrievers:
            retriever.batch_size = value

    def configure_search(self, params: SearchParams) -> None:
        """Deprecated: pass `search_params` to `search` (or set `FusedRetriever.search_params`). This sets
        `params` over those defaults."""
        warnings.warn(
            "FusedRetriever.configure_search is deprecated; pass search_params= to search()",
            DeprecationWarning,
            stacklevel=2,
        )
        self.search_params = params.over(self.search_params)

    def settings_for(self, search_params: SearchParams | None = None) -> SearchParams | None:
        """The settings given to each index for a search with `search_params`: those over the defaults."""
        return self.search_params if search_params is None else search_params.over(self.search_params)

    def count_cut_queries(self, queries: Sequence[str]) -> int:
        return max(r.count_cut_queries(queries) for r in self.retrievers)

    def cut_queries_note(self, queries: Sequence[str], cut: int | None = None) -> str | None:
        return next((n for r in self.retrievers if (n := r.cut_queries_note(queries)) is not None), None)

    def search(
        self,
        queries: Sequence[str],
        k: int = 10,
        show_progress: bool = False,
        where: str | None = None,
        params: Sequence[Any] = (),
        ids: Iterable[str] | None = None,
        return_documents: bool = False,
        search_params: SearchParams | None = None,
        batch_size: int | None = None,
    ) -> list[list[Hit]]:
        """The fused top-k hits per query: every index searched `fusion_depth` deep (at least k) with the same
        filter and the same `search_params` (over `FusedRetriever.search_params`), then fused.
        `return_documents` fills the hits from the first index's document store."""
        if k <= 0:
            raise MbretError(f"-k {k}: must be a positive integer")
        if ids is not None:
            ids = list(ids)
        encode = search = 0.0
        runs = []
        settings = self.settings_for(search_params)
        for retriever in self.retrievers:
            hits = retriever.search(
                queries,
                k=max(k, self.fusion_depth),
                show_progress=show_progress,
                where=where,
                params=params,
                ids=ids,
                search_params=settings,
                batch_size=batch_size,
            )
            runs.append([[(h.doc_id, h.score) for h in row] for row in hits])
            encode += retriever.timings.get("encode_queries_s", 0.0)
            search += retriever.timings.get("search_s", 0.0)
        start = time.perf_counter()
        fused = fuse(runs, k, self.fusion, self.alpha, self.rrf_k)
        self.timings.update(encode_queries_s=encode, search_s=search + time.perf_counter() - start)
        hits = [[Hit(doc_id, score) for doc_id, score in row] for row in fused]
        if return_documents:
            fill_documents(hits, self.retrievers[0].index)
        return hits

    def settings(self) -> dict[str, Any]:
        """What an evaluation records of this retriever."""
        return {
            "index_type": "fusion",  # what `mbret report` labels a result by
            "fusion": self.fusion,
            "alpha": self.alpha if self.fusion == "linear" else None,
            "rrf_k": self.rrf_k if self.fusion == "rrf" else None,
            "fusion_depth": self.fusion_depth,
            "indexes": [
                {
                    "path": path,
                    "mode": r.mode,
                    "model": r.encoder.name,
                    "index_type": r.index.index_type,
                    "index_params": r.index.params,
                }
                for r, path in zip(self.retrievers, self.paths or [None] * len(self.retrievers))
            ],
        }
