"""The short- and long-query sets built from a BEIR dataset (`mbret.data.query_sets`, examples/make_query_sets.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mbret.data.datasets import Dataset, load_beir_dir
from mbret.data.query_sets import long_queries, pre_tokens, query_sets, short_queries, split_sentences

from .conftest import REPO


def _dataset() -> Dataset:
    sentence = "Sentence {i} of document {d} has several words, and a comma or two, to count tokens."
    corpus = {
        f"d{d}": {"title": f"Title {d}", "text": " ".join(sentence.format(i=i, d=d) for i in range(n))}
        for d, n in enumerate([2, 5, 6, 9, 4, 7])
    }
    queries = {"q1": "does smoking cause lung cancer in adults", "q2": "brain"}
    return Dataset("toy", corpus, queries, {"q1": {"d1": 1}, "q2": {"d2": 2}}, split="test")


def test_short_queries_keep_four_words_and_the_qrels() -> None:
    short = short_queries(_dataset())
    assert short.queries == {"q1": "does smoking cause lung", "q2": "brain"}
    assert short.qrels == _dataset().qrels and short.corpus is not None and short.name == "toy-short"


def test_long_queries_are_middle_sentences_of_their_own_document() -> None:
    data = _dataset()
    long = long_queries(data, num_queries=10, sentences=3, min_tokens=40)
    # documents of 2 and 4 sentences have no three sentences between their first and last
    assert set(long.qrels) == {"long-d1", "long-d2", "long-d3", "long-d5"} and set(long.queries) == set(long.qrels)
    for qid, text in long.queries.items():
        (doc_id,) = long.qrels[qid]
        assert qid == f"long-{doc_id}" and text in data.corpus[doc_id]["text"]
        parts = split_sentences(data.corpus[doc_id]["text"])
        assert parts[0] not in text and parts[-1] not in text and pre_tokens(text) >= 40
    assert (
        long_queries(data, num_queries=2, min_tokens=40).queries
        == long_queries(data, num_queries=2, min_tokens=40).queries
    )  # seeded
    assert len(long_queries(data, num_queries=2, min_tokens=40).queries) == 2
    assert long_queries(data, min_tokens=1000).queries == {}


@pytest.mark.slow
def test_scifact_sets_and_the_script(tmp_path: Path, scifact: Path) -> None:
    dataset = load_beir_dir(scifact)
    sets = query_sets(dataset)
    assert [len(sets[n].queries) for n in ("full", "short", "long")] == [300, 300, 300]
    assert all(len(q.split()) <= 4 for q in sets["short"].queries.values())
    assert min(pre_tokens(q) for q in sets["long"].queries.values()) >= 64
    done = subprocess.run(
        [sys.executable, "examples/make_query_sets.py", str(scifact), str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "wrote 300 queries" in done.stdout
    for name in ("short", "long"):
        written = load_beir_dir(tmp_path / f"scifact-{name}")
        assert written.queries == sets[name].queries and written.qrels == sets[name].qrels
        assert len(written.corpus) == 5183
