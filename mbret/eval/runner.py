"""`mbret eval`: encode, index, search and score one dataset; write results.json and a TREC run atomically."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mbret
from mbret.data.datasets import Dataset, doc_text
from mbret.deprecation import no_other_kwargs, renamed
from mbret.errors import MbretError, ParameterError
from mbret.eval.manifest import library_versions, run_manifest
from mbret.eval.metrics import DEFAULT_METRICS, drop_identical_ids, evaluate_run
from mbret.io import atomic_file, write_json_atomic
from mbret.retrieval.fusion import FusedRetriever
from mbret.retrieval.rerank import Reranker
from mbret.retrieval.retriever import Retriever
from mbret.types import SearchParams


@dataclass
class EvalResult:
    dataset: str
    split: str | None
    model: str
    mode: str
    metrics: dict[str, float]
    num_queries: int
    num_docs: int
    timings: dict[str, float]
    run: dict[str, dict[str, float]] = field(repr=False, default_factory=dict)
    per_query: dict[str, dict[str, float]] = field(repr=False, default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "split": self.split,
            "model": self.model,
            "mode": self.mode,
            "metrics": self.metrics,
            "num_queries": self.num_queries,
            "num_docs": self.num_docs,
            "timings": self.timings,
            "settings": self.settings,
            "mbret_version": mbret.__version__,
        }

    def save(self, output: str | Path, run_name: str = "mbret") -> None:
        """Write `results.json` and `run.trec` into `output`, each by atomic rename."""
        output = Path(output)
        with atomic_file(output / "run.trec") as fh:
            write_trec_run(fh, self.run, run_name)
        write_json_atomic(output / "results.json", self.to_json())


def write_trec_run(fh: Any, run: dict[str, dict[str, float]], run_name: str = "mbret") -> None:
    for qid, docs in run.items():
        ranked = sorted(docs.items(), key=lambda item: (-item[1], item[0]))
        for rank, (doc_id, score) in enumerate(ranked, start=1):
            fh.write(f"{qid} Q0 {doc_id} {rank} {score:.6f} {run_name}\n")


def evaluate(
    dataset: Dataset,
    retriever: Retriever | FusedRetriever | None = None,
    *,
    model: str | None = None,
    mode: str = "dense",
    index_type: str | None = None,
    metrics: tuple[str, ...] | list[str] = DEFAULT_METRICS,
    k: int | None = None,
    keep_identical_ids: bool = False,
    batch_size: int = 64,
    device: str | None = None,
    dtype: str | None = None,
    show_progress: bool = True,
    query_length: int | None = None,
    document_length: int | None = None,
    query_expansion: bool | None = None,
    pool_factor: int | None = None,
    index_params: dict[str, Any] | None = None,
    search_params: SearchParams | None = None,
    manifest: dict[str, Any] | None = None,
    with_manifest: bool = True,
    where: str | None = None,
    params: Sequence[Any] = (),
    ids: Sequence[str] | None = None,
    **deprecated: Any,
) -> EvalResult:
    """Score a retriever (dense, colbert or bm25) on `dataset`; builds one from `model` unless `retriever` is
    given (`mode="bm25"` needs no model).

    The result's settings carry the run manifest (versions, weights hash, ...): `manifest` if given, else
    computed here, unless `with_manifest` is False (evaluations during training, whose weights keep moving
    and whose results are not saved, skip hashing the whole model each time).

    `where`/`params`/`ids` restrict the run to the documents a metadata condition and an id list select
    (`Retriever.search`); qrels are left as they are, so a judged document outside the filter counts as
    missed (recorded in the settings as `filter`).

    A given `retriever` is left as it was: `batch_size` (and `search_params`) hold for this evaluation's
    search only, as arguments of the call, never set on the retriever; so one retriever may be evaluated
    with one setting after another, or from several threads at once.

    `search_params` set the search settings of this run's searches (over the retriever's defaults; the
    retriever is not changed), recorded in the settings as `search_params`.
    """
    from mbret.eval.metrics import parse_metric

    keep_identical_ids = renamed(deprecated, "ignore_identical_ids", "keep_identical_ids", keep_identical_ids,
                                 False, convert=lambda ignore: not ignore)  # fmt: skip
    document_length = renamed(deprecated, "max_length", "document_length", document_length, None)
    no_other_kwargs(deprecated, "evaluate")
    depth = k or max(max(parse_metric(m)[1] for m in metrics), 100)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    if retriever is None:
        if model is None and mode != "bm25":
            raise ValueError("evaluate() needs a retriever or a model")
        retriever = Retriever.build(
            dataset.corpus,
            model,
            index_type=index_type,
            index_params=index_params,
            batch_size=batch_size,
            device=device,
            dtype=dtype,
            show_progress=show_progress,
            mode=mode,
            query_length=query_length,
            document_length=document_length,
            query_expansion=query_expansion,
            pool_factor=pool_factor,
        )
        timings.update(retriever.timings)
    qids = list(dataset.queries)
    extra = 0 if keep_identical_ids else 1  # BEIR asks for one more hit when it drops identical ids
    texts = [dataset.queries[q] for q in qids]
    cut = retriever.count_cut_queries(texts)
    hits = retriever.search(
        texts,
        k=depth + extra,
        where=where,
        params=params,
        ids=ids,
        search_params=search_params,
        batch_size=batch_size,
    )
    timings["encode_queries_s"] = retriever.timings["encode_queries_s"]
    timings["search_s"] = retriever.timings["search_s"]
    run = {qid: {h.doc_id: h.score for h in row} for qid, row in zip(qids, hits)}
    if not keep_identical_ids:
        run = drop_identical_ids(run)
    run = {qid: dict(sorted(docs.items(), key=lambda it: (-it[1], it[0]))[:depth]) for qid, docs in run.items()}
    means, per_query = evaluate_run(dataset.qrels, run, metrics)
    timings["total_s"] = time.perf_counter() - start
    common = {
        "batch_size": batch_size,
        "depth": depth,
        "search_params": used.given() if (used := retriever.settings_for(search_params)) else None,
        "keep_identical_ids": keep_identical_ids,
        "queries_cut": cut,
        "queries_cut_note": retriever.cut_queries_note(texts, cut),
        "filter": (
            {"where": where, "params": list(params), "ids": len(ids) if ids is not None else None}
            if where is not None or ids is not None
            else None
        ),
    }
    if isinstance(retriever, FusedRetriever):
        model_name, mode, num_docs = retriever.name, "fusion", retriever.num_docs
        settings = {**retriever.settings(), **common, "manifest": manifest or {"versions": library_versions()}}
    else:
        model_name, mode, num_docs = retriever.encoder.name, retriever.mode, len(retriever.index)
        index_manifest = retriever.manifest()
        settings = {
            "index_type": index_manifest.index_type,
            "index_params": retriever.index.params,
            "max_length": index_manifest.max_length,
            **common,
            "query_prompt": index_manifest.query_prompt,
            "document_prompt": index_manifest.document_prompt,
            "query_length": index_manifest.query_length,
            "query_expansion": index_manifest.query_expansion,
            "document_length": index_manifest.document_length,
            "pool_factor": index_manifest.pool_factor,
            "device": str(retriever.encoder.device),
            "manifest": manifest
            or (run_manifest(retriever.encoder, seed=getattr(retriever.encoder, "seed", 0)) if with_manifest else None),
        }
    return EvalResult(
        dataset=dataset.name,
        split=dataset.split,
        model=model_name,
        mode=mode,
        metrics=means,
        num_queries=len(qids),
        num_docs=num_docs,
        timings={name: round(value, 3) for name, value in timings.items()},
        run=run,
        per_query=per_query,
        settings=settings,
    )


def rerank_run(
    dataset: Dataset,
    run: dict[str, list[tuple[str, float]]],
    reranker: Reranker,
    rerank_depth: int | None = None,
    **deprecated: Any,
) -> dict[str, dict[str, float]]:
    """Each query's top `rerank_depth` hits of a first-stage `run` (best first), rescored by `reranker` from
    the dataset's texts; hits below `rerank_depth` are dropped. `depth=` is its old name."""
    depth = renamed(deprecated, "depth", "rerank_depth", rerank_depth, None)
    no_other_kwargs(deprecated, "rerank_run")
    if depth is None:
        raise TypeError("rerank_run() missing the argument rerank_depth")
    if depth <= 0:
        raise ParameterError("rerank_depth", f"{depth}: must be a positive integer")
    qids = [q for q in run if run[q]]
    missing = next((d for q in qids for d, _ in run[q][:depth] if d not in dataset.corpus), None)
    if missing is not None:
        raise MbretError(f"the first stage returned doc {missing!r}, which is not in {dataset.name}'s corpus")
    candidates = [[(d, doc_text(dataset.corpus[d])) for d, _ in run[q][:depth]] for q in qids]
    reranked = reranker.rerank([dataset.queries[q] for q in qids], candidates)
    return {q: {h.doc_id: h.score for h in hits} for q, hits in zip(qids, reranked)} | {
        q: {} for q in run if not run[q]
    }


def rerank_result(
    dataset: Dataset,
    first: EvalResult,
    reranker: Reranker,
    rerank_depth: int | None = None,
    metrics: Sequence[str] = DEFAULT_METRICS,
    **deprecated: Any,
) -> EvalResult:
    """A first-stage evaluation's run reranked (`rerank_run`, its top `rerank_depth` hits), scored; the first
    stage's model and metrics are kept in its settings as `first_stage`. `depth=` is the old name of
    `rerank_depth`."""
    depth = renamed(deprecated, "depth", "rerank_depth", rerank_depth, None)
    no_other_kwargs(deprecated, "rerank_result")
    start = time.perf_counter()
    ranked = {q: sorted(docs.items(), key=lambda it: (-it[1], it[0])) for q, docs in first.run.items()}
    run = rerank_run(dataset, ranked, reranker, depth)  # refuses a missing depth
    means, per_query = evaluate_run(dataset.qrels, run, list(metrics))
    seconds = time.perf_counter() - start
    return EvalResult(
        dataset=first.dataset,
        split=first.split,
        model=f"{first.model} -> {reranker.name}",
        mode=f"{first.mode}+rerank",
        metrics=means,
        num_queries=first.num_queries,
        num_docs=first.num_docs,
        timings={**first.timings, "rerank_s": round(seconds, 3)},
        run=run,
        per_query=per_query,
        settings={
            **first.settings,
            "rerank": {"model": reranker.name, "mode": reranker.mode, "depth": depth},
            "first_stage": {"model": first.model, "mode": first.mode, "metrics": first.metrics},
        },
    )


def format_table(result: EvalResult, *more: EvalResult) -> str:
    """A plain-text table of one or more results (a row each), for the terminal."""
    names = list(result.metrics)
    header = ["dataset", "split", "model", *names]
    rows = [
        [
            r.dataset,
            str(r.split),
            " -> ".join(part if "(" in part else Path(part).name or part for part in r.model.split(" -> ")),
            *(f"{r.metrics[n]:.4f}" for n in names),
        ]
        for r in (result, *more)
    ]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths))
    rule = "  ".join("-" * w for w in widths)
    values = "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows)
    return f"{line}\n{rule}\n{values}"
