"""Scoring by names and paths: a dataset against a model, an index, or several fused (optionally reranked), or a
whole suite. What `mbret eval` does, as one call (`run_evaluation`), with its option checks here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mbret.errors import ParameterError
from mbret.eval.metrics import parse_metric
from mbret.eval.runner import EvalResult
from mbret.types import SearchParams

DEFAULT_RERANK_DEPTH = 100


@dataclass
class Evaluation:
    """A dataset's result per stage (first stage, then reranked), or a suite's summary; notes for the user."""

    stages: list[EvalResult] = field(default_factory=list)
    suite_summary: dict[str, Any] | None = None
    suite_name: str | None = None
    output: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def result(self) -> EvalResult:
        """The last stage's result (the reranked one when there was a rerank)."""
        return self.stages[-1]


def parse_metrics(metrics: str) -> list[str]:
    """Comma-separated NAME@K, each checked."""
    names = [m.strip() for m in metrics.split(",") if m.strip()]
    for name in names:
        parse_metric(name)
    return names


def run_evaluation(
    data: str | None = None,
    *,
    suite: str | None = None,
    paper_model: str | None = None,
    data_dir: Path | None = None,
    save_index: bool = False,
    resume: bool = False,
    model: str | None = None,
    mode: str = "dense",
    index_dir: Path | None = None,
    index_type: str | None = None,
    split: str = "test",
    output: Path | None = None,
    metrics: str = "ndcg@10,recall@100,mrr@10",
    keep_identical_ids: bool = False,
    query_length: int | None = None,
    query_expansion: bool | None = None,
    document_length: int | None = None,
    pool_factor: int | None = None,
    nbits: int = 2,
    search_params: SearchParams | None = None,
    where: str | None = None,
    params: list[str] | None = None,
    ids: Path | None = None,
    batch_size: int = 64,
    device: str | None = None,
    dtype: str = "auto",
    fuse: str | None = None,
    fusion: str = "rrf",
    alpha: float = 0.5,
    fusion_depth: int = 100,
    rerank_model: str | None = None,
    rerank_depth: int = DEFAULT_RERANK_DEPTH,
    index_params: list[str] | None = None,
    echo: Callable[[str], None] = print,
) -> Evaluation:
    """Score `data` (a BEIR directory or dataset id) with a model (built into an index here), an existing
    index (`index_dir`) or several fused (`fuse`), then rerank with `rerank_model` (`MODEL[:MODE]`); or score
    each dataset of `suite`. Writes results.json and run.trec under `output` when given. `params`: the values
    of `where`'s `?`s as text; `ids`: a file of the doc ids to search among. `echo` takes a suite's progress."""
    from mbret.retrieval.indexing import build_index_params
    from mbret.retrieval.retriever import check_mode
    from mbret.retrieval.searching import check_fusion_options, filter_values, read_ids

    if index_dir is None and fuse is None:
        index_type = check_mode(mode, index_type)
    metric_names = parse_metrics(metrics)
    values = filter_values(where, params)
    if rerank_depth <= 0:
        raise ParameterError("rerank_depth", f"{rerank_depth}: must be a positive integer")
    if rerank_model is None and rerank_depth != DEFAULT_RERANK_DEPTH:
        raise ParameterError("rerank_depth", "applies with a reranker (rerank_model MODEL[:MODE])")
    for name, value in (("index_params", index_params), ("pool_factor", pool_factor)):
        if value and (index_dir is not None or fuse is not None or suite is not None):
            raise ParameterError(name, "sets up the index built here; not with an existing index, fuse or a suite")
    check_fusion_options(fuse, fusion, alpha, fusion_depth)
    if fuse is not None:
        built_only = {"index_type": index_type, "query_length": query_length, "query_expansion": query_expansion,
                      "document_length": document_length}  # fmt: skip
        for name, value in built_only.items():
            if value is not None:
                raise ParameterError(name, "each fused index is searched as it was built")
    chosen = read_ids(ids) if ids is not None else None
    built_index_params = build_index_params(index_type or "", index_params, nbits)
    if suite is not None:
        given = {"rerank_model": rerank_model, "fuse": fuse, "where": where, "ids": chosen, "data": data,
                 "index_dir": index_dir}  # fmt: skip
        for name, value in given.items():
            if value is not None:
                raise ParameterError(name, "applies to one dataset, not a suite (it builds an index per dataset)")
        if mode == "bm25":
            raise ParameterError("mode", "a suite scores a model; score bm25 per dataset")
        if model is None:
            raise ParameterError("model", "required to score a suite")
        if keep_identical_ids or split != "test":
            raise ParameterError(
                "keep_identical_ids" if keep_identical_ids else "split",
                "a suite takes split and identical-id policy per dataset from the registry; set `split:` or "
                "`keep_identical_ids:` in a suite YAML instead",
            )
        return _suite(
            suite, output, echo, model=model, mode=mode, index_type=index_type, index_params=built_index_params,
            search_params=search_params, metrics=tuple(metric_names), paper_model=paper_model, data_dir=data_dir,
            save_index=save_index, resume=resume, batch_size=batch_size, device=device, dtype=dtype,
            query_length=query_length, document_length=document_length, query_expansion=query_expansion,
        )  # fmt: skip
    if data is None:
        raise ParameterError("data", "give a dataset (a BEIR directory or dataset id) or a suite")
    dataset, retriever = _first_stage(
        data, split, index_dir=index_dir, fuse=fuse, fusion=fusion, alpha=alpha, fusion_depth=fusion_depth,
        model=model, mode=mode, device=device, dtype=dtype, batch_size=batch_size, query_expansion=query_expansion,
        query_length=query_length,
    )  # fmt: skip
    from mbret.eval.runner import evaluate

    result = evaluate(
        dataset, retriever, model=model, mode=mode, index_type=index_type, query_length=query_length,
        document_length=document_length, query_expansion=query_expansion, pool_factor=pool_factor,
        index_params=built_index_params, search_params=search_params, metrics=metric_names,
        keep_identical_ids=keep_identical_ids, batch_size=batch_size, device=device, dtype=dtype, where=where,
        params=values, ids=chosen,
        k=max(rerank_depth, 100, *(parse_metric(m)[1] for m in metric_names)) if rerank_model else None,
    )  # fmt: skip
    stages = [result]
    if rerank_model is not None:
        from mbret.eval.runner import rerank_result
        from mbret.retrieval.rerank import Reranker, split_model_mode

        name, rerank_mode = split_model_mode(rerank_model)
        reranker = Reranker.load(name, rerank_mode, device=device, dtype=dtype, batch_size=batch_size)
        stages.append(rerank_result(dataset, result, reranker, rerank_depth, metric_names))
    if output is not None:
        stages[-1].save(output)
    note = stages[-1].settings.get("queries_cut_note")
    return Evaluation(stages, output=output, notes=[note] if note else [])


def _first_stage(data: str, split: str, **given: Any) -> tuple[Any, Any]:
    """The dataset, and the retriever to score (None: `evaluate` builds one from the model)."""
    from mbret.data.datasets import load_dataset

    dataset = load_dataset(data, split=split)
    judged = {d for docs in dataset.qrels.values() for d in docs}
    load = {name: given[name] for name in ("device", "dtype", "batch_size")}
    if given["fuse"] is not None:
        from mbret.retrieval.fusion import FusedRetriever
        from mbret.retrieval.searching import fused_dirs

        for name in ("index_dir", "model"):
            if given[name] is not None:
                raise ParameterError(name, "not with fuse, which names the indexes to score")
        retriever = FusedRetriever.load(
            fused_dirs(given["fuse"]), fusion=given["fusion"], alpha=given["alpha"],
            fusion_depth=given["fusion_depth"], **load,
        )  # fmt: skip
        for path, part in zip(retriever.paths, retriever.retrievers):
            _check_holds(path, part.index, judged, data, "fuse")
        return dataset, retriever
    if given["index_dir"] is not None:
        from mbret.retrieval import Retriever

        retriever = Retriever.load(
            given["index_dir"], model=given["model"], query_expansion=given["query_expansion"],
            query_length=given["query_length"], **load,
        )  # fmt: skip
        _check_holds(given["index_dir"], retriever.index, judged, data, "index_dir")
        return dataset, retriever
    if given["model"] is None and given["mode"] != "bm25":
        raise ParameterError("model", "required unless an existing index is scored (index_dir)")
    return dataset, None


def _check_holds(path: str | Path, index: Any, judged: set[str], data: str, parameter: str) -> None:
    missing = next((d for d in sorted(judged) if d not in index), None)
    if missing is not None:
        raise ParameterError(parameter, f"{path}: lacks doc {missing!r} of {data}; index the same corpus")


def _suite(suite: str, output: Path | None, echo: Callable[[str], None], **settings: Any) -> Evaluation:
    from mbret.eval.registry import resolve_suite
    from mbret.eval.suite import SuiteOptions, check_output, run_suite

    output = check_output(output)
    resolved = resolve_suite(suite)
    echo(f"suite {resolved.name}: {', '.join(s.name for s in resolved.datasets)}")
    summary = run_suite(resolved, SuiteOptions(**settings), output, echo=echo)
    return Evaluation(suite_summary=summary, suite_name=resolved.name, output=output)
