"""Reranking a first stage by names and paths: a TREC run file or an index's top hits, rescored by another
model, written as a run and scored. What `mbret rerank` does, as one call (`rerank_first_stage`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mbret.errors import ParameterError
from mbret.eval.runner import EvalResult


@dataclass
class RerankReport:
    """Both stages' results (first stage, reranked), and what was done."""

    results: list[EvalResult]
    num_queries: int
    reranker: str
    mode: str
    rerank_depth: int
    output: Path


def rerank_first_stage(
    run: Path | None = None,
    *,
    data: str,
    model: str | None,
    output: Path | None,
    mode: str = "colbert",
    rerank_depth: int = 100,
    first_stage: Path | None = None,
    split: str = "test",
    metrics: str = "ndcg@10,recall@100,mrr@10",
    keep_identical_ids: bool = False,
    document_length: int | None = None,
    batch_size: int = 32,
    device: str | None = None,
    dtype: str = "auto",
) -> RerankReport:
    """Rescore each query's top `rerank_depth` hits of a first stage, the TREC run file `run` or the index
    `first_stage`, with `model` as `mode` (colbert, dense, cross-encoder); write the reranked run to `output`
    and score both stages on `data`'s qrels."""
    from mbret.data.datasets import load_dataset
    from mbret.eval.evaluation import parse_metrics
    from mbret.eval.metrics import evaluate_run
    from mbret.eval.runner import rerank_run, write_trec_run
    from mbret.io import atomic_file
    from mbret.retrieval.rerank import RERANK_MODES, Reranker

    required = {"data": (data, "the BEIR directory (or dataset id) of the run's queries and documents"),
                "model": (model, "the model that rescores the candidates (e.g. minilm)"),
                "output": (output, "the reranked TREC run to write")}  # fmt: skip
    for name, (value, what) in required.items():
        if not value:
            raise ParameterError(name, f"required: {what}")
    assert model is not None and output is not None
    if mode not in RERANK_MODES:
        raise ParameterError("mode", f"{mode}: a reranker is one of {', '.join(RERANK_MODES)}")
    if rerank_depth <= 0:
        raise ParameterError("rerank_depth", f"{rerank_depth}: must be a positive integer")
    if (run is None) == (first_stage is None):
        raise ParameterError("run", "give one first stage: a TREC run file or an index (first_stage)")
    if run is not None and keep_identical_ids:
        raise ParameterError("keep_identical_ids", "applies to an index's first stage; a run is reranked as it is")
    metric_names = parse_metrics(metrics)
    dataset = load_dataset(data, split=split)
    if run is not None:
        first = _read_run(run, dataset, data, split)
        label = Path(run).name
    else:
        assert first_stage is not None
        first = _search_first_stage(first_stage, dataset, rerank_depth, keep_identical_ids, device, dtype, batch_size)
        label = str(first_stage)
    reranker = Reranker.load(
        model, mode, device=device, dtype=dtype, batch_size=batch_size, document_length=document_length
    )
    reranked = rerank_run(dataset, first, reranker, rerank_depth)
    with atomic_file(output) as fh:
        write_trec_run(fh, reranked, "mbret-rerank")
    results = []
    stages = ((label, {q: dict(hits[:rerank_depth]) for q, hits in first.items()}), (reranker.name, reranked))
    for name, ranking in stages:
        means, _ = evaluate_run(dataset.qrels, ranking, metric_names)
        results.append(EvalResult(dataset.name, dataset.split, name, mode, means, len(first), len(dataset.corpus), {}))
    return RerankReport(results, len(first), reranker.name, mode, rerank_depth, output)


def _read_run(run: Path, dataset: Any, data: str, split: str) -> dict[str, list[tuple[str, float]]]:
    """A TREC run whose queries and documents are all the dataset's."""
    from mbret.data.runs import read_trec_run

    first = read_trec_run(run)
    for qid, hits in first.items():
        if qid not in dataset.queries:
            raise ParameterError("run", f"{run}: query {qid!r} is not among the {split} queries of {data}")
        missing = next((d for d, _ in hits if d not in dataset.corpus), None)
        if missing is not None:
            raise ParameterError("run", f"{run}: doc {missing!r} (query {qid!r}) is not in the corpus of {data}")
    return first


def _search_first_stage(
    index_dir: Path, dataset: Any, depth: int, keep_identical_ids: bool, device: str | None, dtype: str,
    batch_size: int,
) -> dict[str, list[tuple[str, float]]]:  # fmt: skip
    """Each query's top `depth` hits of the index, identical ids dropped unless kept."""
    from mbret.eval.metrics import drop_identical_ids
    from mbret.retrieval import Retriever

    retriever = Retriever.load(index_dir, device=device, dtype=dtype, batch_size=batch_size)
    qids = list(dataset.queries)
    found = retriever.search([dataset.queries[q] for q in qids], k=depth + (0 if keep_identical_ids else 1))
    scored = {q: {h.doc_id: h.score for h in row} for q, row in zip(qids, found)}
    if not keep_identical_ids:
        scored = drop_identical_ids(scored)
    return {q: sorted(docs.items(), key=lambda it: (-it[1], it[0]))[:depth] for q, docs in scored.items()}
