"""Metric values against hand computation, BEIR's identical-id policy, and MRR's cutoff."""

from __future__ import annotations

import math

import pytest

from mbret.errors import MbretError
from mbret.eval.metrics import drop_identical_ids, evaluate_run, parse_metric


def test_values_by_hand() -> None:
    qrels = {"q1": {"a": 1, "b": 2}, "q2": {"c": 1}}
    run = {"q1": {"x": 0.9, "b": 0.8, "a": 0.1}, "q2": {"y": 0.5}}
    means, per_query = evaluate_run(qrels, run, ["ndcg@10", "recall@100", "mrr@10", "precision@1", "recall@1"])
    # trec_eval's nDCG uses linear gains (gain = relevance), as BEIR's numbers do
    dcg = 2 / math.log2(3) + 1 / math.log2(4)
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    assert per_query["q1"]["ndcg@10"] == pytest.approx(dcg / idcg)
    assert per_query["q2"]["ndcg@10"] == 0.0
    assert means["ndcg@10"] == pytest.approx(dcg / idcg / 2)
    assert per_query["q1"]["mrr@10"] == pytest.approx(0.5)
    assert means["recall@100"] == pytest.approx(0.5)
    assert per_query["q1"]["precision@1"] == 0.0 and per_query["q1"]["recall@1"] == 0.0


def test_mrr_cutoff() -> None:
    qrels = {"q": {"rel": 1}}
    run = {"q": {f"n{i}": 1.0 - i / 100 for i in range(10)} | {"rel": 0.0}}
    means, _ = evaluate_run(qrels, run, ["mrr@10", "mrr@11"])
    assert means["mrr@10"] == 0.0 and means["mrr@11"] == pytest.approx(1 / 11)


def test_query_missing_from_run_counts_as_zero() -> None:
    means, _ = evaluate_run({"q1": {"a": 1}, "q2": {"b": 1}}, {"q1": {"a": 1.0}}, ["ndcg@10"])
    assert means["ndcg@10"] == pytest.approx(0.5)


def test_identical_ids_dropped() -> None:
    run = {"q1": {"q1": 0.99, "d": 0.5}, "d": {"d": 1.0}}
    assert drop_identical_ids(run) == {"q1": {"d": 0.5}, "d": {}}


@pytest.mark.parametrize("bad", ["ndcg", "ndcg@0", "foo@10", "ndcg@ten"])
def test_bad_metric_names(bad: str) -> None:
    with pytest.raises(MbretError, match="NAME@K"):
        parse_metric(bad)
