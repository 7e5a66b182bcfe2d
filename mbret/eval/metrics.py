"""IR metrics through pytrec_eval (trec_eval's own code), named `ndcg@10`, `recall@100`, `mrr@10`, ...

MRR@k is trec_eval's reciprocal rank on the run cut to its top k, as BEIR computes it. BEIR's identical-id
policy (a doc whose id equals the query id is dropped from the run) is applied by `drop_identical_ids`.
"""

from __future__ import annotations

import re

import pytrec_eval

from mbret.errors import ParameterError

DEFAULT_METRICS = ("ndcg@10", "recall@100", "mrr@10")
Run = dict[str, dict[str, float]]  # query id -> doc id -> score

_TREC_MEASURES = {
    "ndcg": "ndcg_cut",
    "recall": "recall",
    "precision": "P",
    "p": "P",
    "map": "map_cut",
    "mrr": "recip_rank",
}


def parse_metric(name: str) -> tuple[str, int]:
    match = re.fullmatch(r"\s*([a-zA-Z]+)@(\d+)\s*", name)
    if not match or match.group(1).lower() not in _TREC_MEASURES or int(match.group(2)) <= 0:
        raise ParameterError("metrics", f"{name!r}: use NAME@K with NAME one of ndcg, recall, precision, map, mrr")
    return match.group(1).lower(), int(match.group(2))


def drop_identical_ids(run: Run) -> Run:
    """BEIR's policy: a query never retrieves the doc that shares its id (e.g. ArguAna, Quora)."""
    return {qid: {did: s for did, s in docs.items() if did != qid} for qid, docs in run.items()}


def _top_k(docs: dict[str, float], k: int) -> dict[str, float]:
    return dict(sorted(docs.items(), key=lambda item: (-item[1], item[0]))[:k])


def evaluate_run(
    qrels: dict[str, dict[str, int]],
    run: Run,
    metrics: tuple[str, ...] | list[str] = DEFAULT_METRICS,
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Mean and per-query values of each metric over the queries in `qrels` (missing from run = 0)."""
    parsed = [(name, *parse_metric(name)) for name in metrics]
    per_query: dict[str, dict[str, float]] = {qid: {} for qid in qrels}
    full_run = {qid: run.get(qid, {}) for qid in qrels}
    trec_names = {f"{_TREC_MEASURES[m]}.{k}" for _, m, k in parsed if m != "mrr"}
    if trec_names:
        results = pytrec_eval.RelevanceEvaluator(qrels, trec_names).evaluate(full_run)
        for name, measure, k in parsed:
            if measure == "mrr":
                continue
            key = f"{_TREC_MEASURES[measure]}_{k}"
            for qid in qrels:
                per_query[qid][name] = results.get(qid, {}).get(key, 0.0)
    for name, _, k in (p for p in parsed if p[1] == "mrr"):
        cut = {qid: _top_k(docs, k) for qid, docs in full_run.items()}
        results = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(cut)
        for qid in qrels:
            per_query[qid][name] = results.get(qid, {}).get("recip_rank", 0.0)
    n = max(len(qrels), 1)
    means = {name: sum(per_query[q][name] for q in qrels) / n for name, _, _ in parsed}
    return means, per_query
