"""A Retriever (and a FusedRetriever) that threads share, as `mbret serve` does: searches running at once,
each with its own queries, k, filter and settings, get what the same search gets alone, and their own
timings; `evaluate` leaves the retriever it is given as it was."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

import mbret
from mbret.data import Dataset

from .serving import TOPICS, served_corpus

THREADS = 6
ROUNDS = 3


def _calls(plaid: bool) -> list[dict[str, Any]]:
    """One search per thread: other queries, k, filter and (PLAID) budgets in each."""
    calls = []
    for i in range(THREADS):
        call: dict[str, Any] = {"queries": [f"a study of {TOPICS[i % len(TOPICS)]}", TOPICS[(i + 2) % len(TOPICS)]]}
        call["k"] = 2 + i
        if i % 2:
            call.update(where="year >= ?", params=[2000 + 3 * i])
        if plaid and i % 3:
            call["search_params"] = mbret.SearchParams(n_ivf_probe=1 + i % 2, n_full_scores=4 * i)
        calls.append(call)
    return calls


def _rows(hits: list[list[mbret.Hit]]) -> list[list[tuple[str, float]]]:
    return [[(h.doc_id, h.score) for h in row] for row in hits]


def _search_together(retriever: Any, calls: list[dict[str, Any]]) -> tuple[list[list[Any]], list[dict[str, float]]]:
    """Every call in its own thread, all released at once, each searched ROUNDS times; per thread, its
    results and the `timings` it sees afterwards."""
    start = threading.Barrier(len(calls))
    results: list[list[Any]] = [[] for _ in calls]
    timings: list[dict[str, float]] = [{} for _ in calls]
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            start.wait()
            for _ in range(ROUNDS):
                results[i].append(_rows(retriever.search(**calls[i])))
            timings[i] = retriever.timings
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    return results, timings


def _same(got: list[list[tuple[str, float]]], alone: list[list[tuple[str, float]]]) -> bool:
    return [[d for d, _ in row] for row in got] == [[d for d, _ in row] for row in alone] and all(
        s == pytest.approx(t, abs=1e-5) for row, other in zip(got, alone) for (_, s), (_, t) in zip(row, other)
    )


@pytest.mark.parametrize("kind", ["flat", "plaid", "fused"])
def test_threads_share_one_retriever(served_indexes: dict[str, Path], kind: str) -> None:
    if kind == "fused":
        retriever: Any = mbret.FusedRetriever.load([served_indexes["flat"], served_indexes["exact"]])
    else:
        retriever = mbret.Retriever.load(served_indexes[kind])
    calls = _calls(plaid=kind == "plaid")
    alone = [_rows(retriever.search(**call)) for call in calls]
    assert all(alone) and len({str(a) for a in alone}) == len(alone)  # each thread asks something else
    own = retriever.timings
    own_before = dict(own)

    results, timings = _search_together(retriever, calls)

    for got, expected in zip(results, alone):
        assert all(_same(rows, expected) for rows in got)
    # each thread sees the timings of its own last search, in a dict of its own; this thread's are untouched
    for seen in timings:
        assert set(seen) == {"encode_queries_s", "search_s"} and all(v >= 0 for v in seen.values())
    assert len({id(seen) for seen in timings}) == THREADS and all(seen is not own for seen in timings)
    assert retriever.timings is own and own == own_before


def test_build_timings_stay_with_the_building_thread(tiny_model: str) -> None:
    """The CLI reads `retriever.timings` after a build in the same thread; another thread starts empty."""
    retriever = mbret.Retriever.build(served_corpus(12), tiny_model, show_progress=False)
    assert {"encode_corpus_s", "index_build_s"} <= set(retriever.timings)
    elsewhere: list[dict[str, float]] = []
    thread = threading.Thread(target=lambda: elsewhere.append(dict(retriever.timings)))
    thread.start()
    thread.join()
    assert elsewhere == [{}]


def _state(retriever: Any) -> dict[str, Any]:
    """What a caller set up on a retriever: its settings, its encoder's, and its index's."""
    encoder = {
        name: value
        for name, value in vars(retriever.encoder).items()
        if isinstance(value, (bool, int, float, str, tuple, type(None)))
    }
    index = retriever.index
    return {
        "batch_size": retriever.batch_size,
        "search_params": getattr(retriever, "search_params", None),
        "encoder": encoder,
        "index_search_params": getattr(index, "search_params", None),
        "index_params": dict(getattr(index, "params", None) or {}),
        "num_docs": len(index),
        "generation": index.generation,
    }


def test_evaluate_leaves_the_retriever_as_it_was(served_indexes: dict[str, Path]) -> None:
    retriever = mbret.Retriever.load(served_indexes["plaid"], batch_size=16)
    queries = {f"q{i}": f"a study of {topic}" for i, topic in enumerate(TOPICS)}
    qrels = {f"q{i}": {f"d{i}": 1, f"d{i + len(TOPICS)}": 1} for i in range(len(TOPICS))}
    dataset = Dataset("served", served_corpus(), queries, qrels, split="test")
    texts = list(queries.values())
    before, hits_before = _state(retriever), _rows(retriever.search(texts, k=10))
    settings = mbret.SearchParams(n_ivf_probe=1, n_candidates=8, n_full_scores=4)

    result = mbret.evaluate(
        dataset,
        retriever,
        metrics=["ndcg@10"],
        k=10,
        batch_size=2,
        search_params=settings,
        show_progress=False,
        with_manifest=False,
    )

    assert _state(retriever) == before
    assert _same(_rows(retriever.search(texts, k=10)), hits_before)
    # the run was searched with the settings given to evaluate, for that call only
    with_settings = _rows(retriever.search(texts, k=10, search_params=settings))
    assert [sorted(result.run[q]) for q in queries] == [sorted(d for d, _ in row) for row in with_settings]
    assert result.settings["batch_size"] == 2
