"""`--mode bm25`: BM25 on bm25s in mbret's index format (stable ids, generations, filters), checked against
bm25s itself and against the published SciFact figure."""

from __future__ import annotations

import json
from pathlib import Path

import bm25s
import numpy as np
import pytest
import Stemmer

from mbret.data.datasets import doc_text, load_corpus, load_dataset
from mbret.eval.runner import evaluate
from mbret.indexes import Bm25Index, load_index
from mbret.retrieval import Retriever
from tests.conftest import SCIFACT_MINI

# xhluca/bm25-benchmarks, README "NDCG@10", row "1.5 0.75 Lucene", column SF (BEIR SciFact test): 68.7, made by
# its benchmark/on_bm25s.py (title + " " + text, stopwords "en", Snowball English stemmer), mbret's defaults.
PUBLISHED_SCIFACT_NDCG10 = 0.687


def bm25s_top(corpus: dict, query: str, k: int, keep: set[str] | None = None) -> list[tuple[str, float]]:
    """bm25s on its own, over the documents in `corpus` (those in `keep`), for one query."""
    ids = list(corpus)
    stemmer = Stemmer.Stemmer("english")
    tokens = bm25s.tokenize([doc_text(corpus[d]) for d in ids], stopwords="en", stemmer=stemmer, show_progress=False)
    model = bm25s.BM25(method="lucene", k1=1.5, b=0.75)
    model.index(tokens, show_progress=False)
    vocab = tokens.vocab
    terms = bm25s.tokenize([query], stopwords="en", stemmer=stemmer, return_ids=False, show_progress=False)[0]
    known = [vocab[t] for t in terms if t in vocab]
    if not known:
        return []
    scores = model.get_scores(known)
    ranked = sorted(
        ((ids[i], float(s)) for i, s in enumerate(scores) if s > 0 and (keep is None or ids[i] in keep)),
        key=lambda hit: (-hit[1], ids.index(hit[0])),
    )
    return ranked[:k]


@pytest.mark.slow
def test_scifact_ndcg_matches_the_published_bm25s_figure(scifact: Path) -> None:
    result = evaluate(load_dataset(scifact), mode="bm25", show_progress=False)
    assert result.mode == "bm25" and result.settings["index_params"]["method"] == "lucene"
    assert abs(result.metrics["ndcg@10"] - PUBLISHED_SCIFACT_NDCG10) <= 0.01, result.metrics


def test_scores_are_bm25s_scores() -> None:
    corpus = load_corpus(SCIFACT_MINI / "corpus.jsonl")
    retriever = Retriever.build(corpus, None, mode="bm25", show_progress=False)
    for query in ("vitamin D and bone fractures", "Tumour suppressor genes in mice", "zzz unknownword"):
        hits = retriever.index.search([query], k=10)[0]
        expected = bm25s_top(corpus, query, 10)
        assert [d for d, _ in hits] == [d for d, _ in expected]
        assert np.allclose([s for _, s in hits], [s for _, s in expected], atol=1e-5)
    assert retriever.index.search(["zzz unknownword"], k=5) == [[]]


def test_add_delete_reload_keep_ids_and_score_as_a_fresh_build(tmp_path: Path) -> None:
    corpus = load_corpus(SCIFACT_MINI / "corpus.jsonl")
    ids = list(corpus)
    first, later, gone = ids[:300], ids[300:], ids[10:40]
    retriever = Retriever.build({d: corpus[d] for d in first}, None, mode="bm25", show_progress=False)
    retriever.save(tmp_path / "idx")
    retriever = Retriever.load(tmp_path / "idx")
    retriever.add({d: corpus[d] for d in later}, show_progress=False)
    assert retriever.delete(gone) == len(gone)
    retriever.save(tmp_path / "idx")
    reloaded = Retriever.load(tmp_path / "idx")
    index = reloaded.index
    assert isinstance(index, Bm25Index) and index.generation == 2
    assert index.doc_ids[:10] == ids[:10] and index.doc_ids[10:40] == [None] * 30  # no renumbering
    assert index.doc_ids[300:] == later and len(index) == len(ids) - len(gone)
    live = {d: corpus[d] for d in ids if d not in gone}
    query = "cancer risk of smoking in patients"
    hits = index.search([query], k=20)[0]
    expected = bm25s_top(live, query, 20)  # IDF and lengths of the live corpus, as a rebuild gives
    assert [d for d, _ in hits] == [d for d, _ in expected]
    assert np.allclose([s for _, s in hits], [s for _, s in expected], atol=1e-5)
    assert not set(gone) & {h.doc_id for row in reloaded.search([query, "protein"], k=500) for h in row}
    assert index.get_documents([ids[0]])[0].text == corpus[ids[0]]["text"]
    index.compact()
    assert index.doc_ids == [d for d in ids if d not in gone]
    assert index.search([query], k=20)[0] == hits


@pytest.mark.parametrize("share", [1, 10, 0.5])
def test_filters_equal_filter_then_rank(tmp_path: Path, share: float) -> None:
    corpus = load_corpus(SCIFACT_MINI / "corpus.jsonl")
    ids = list(corpus)
    rng = np.random.default_rng(0)
    values = rng.random(len(ids))
    rows = {d: {**corpus[d], "metadata": {"r": float(v)}} for d, v in zip(ids, values)}
    index = Retriever.build(rows, None, mode="bm25", show_progress=False).index
    if share >= 1:
        keep = set(rng.choice(ids, int(share), replace=False).tolist())
        found = index.search(["cells protein expression"], k=10, ids=sorted(keep))[0]
    else:
        keep = {d for d, v in zip(ids, values) if v < share}
        found = index.search(["cells protein expression"], k=10, where="r < ?", params=[share])[0]
    expected = bm25s_top(corpus, "cells protein expression", 10, keep)
    assert [d for d, _ in found] == [d for d, _ in expected]
    assert {d for d, _ in found} <= keep


def test_cli_index_search_eval_and_errors(tmp_path: Path, cli) -> None:
    out = tmp_path / "bm25"
    done = cli("index", SCIFACT_MINI / "corpus.jsonl", "--mode", "bm25", "--output", out, "--index-param", "k1=1.2")
    assert done.code == 0 and "(bm25," in done.out, done.err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["mode"] == "bm25" and manifest["index_params"]["k1"] == 1.2
    assert manifest["index_params"]["stemmer"] == "english"
    found = cli("search", out, "vitamin D bone fractures", "-k", "3", "--json")
    assert found.code == 0 and len(json.loads(found.out)[0]["hits"]) == 3, found.err
    scored = cli("eval", SCIFACT_MINI, "--index", out)
    assert scored.code == 0 and "bm25" in scored.out
    built = cli("eval", SCIFACT_MINI, "--mode", "bm25", "--index-param", "method=bm25l", "--output", tmp_path / "e")
    assert built.code == 0 and "ndcg@10" in built.out, built.err
    settings = json.loads((tmp_path / "e" / "results.json").read_text())["settings"]
    assert settings["index_params"]["method"] == "bm25l" and settings["manifest"]["versions"]["bm25s"]
    corpus = SCIFACT_MINI / "corpus.jsonl"
    bad = cli("index", corpus, "--mode", "bm25", "--output", tmp_path / "x", "--index-param", "k9=1")
    assert bad.code == 2 and "k9: bm25 takes method" in bad.err and not (tmp_path / "x").exists()
    bad = cli("index", corpus, "--mode", "bm25", "--output", tmp_path / "x", "--model", "minilm")
    assert bad.code == 2 and "model: minilm: mode bm25 takes no model" in bad.err
    loaded, _ = load_index(out)
    assert loaded.params["k1"] == 1.2
    first = loaded.doc_ids[0]
    assert cli("delete", out, first).code == 0
    compacted = cli("compact", out)
    assert compacted.code == 0 and "1 deleted documents' slots dropped, 499 documents" in compacted.out
    assert first not in load_index(out)[0] and len(load_index(out)[0].doc_ids) == 499


def test_served_bm25_index_searches_adds_and_deletes(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from mbret.serve import ServeConfig, create_app
    from tests.serving import served_corpus

    Retriever.build(served_corpus(), None, mode="bm25", show_progress=False).save(tmp_path / "bm25")
    with TestClient(create_app(ServeConfig(indexes=(str(tmp_path / "bm25"),)))) as http:
        body = {"queries": ["vitamin levels"], "k": 5, "where": "venue = ?", "params": ["ACL"]}
        rows = http.post("/indexes/bm25/search", json=body).json()["results"][0]
        assert len(rows) == 5 and all(h["metadata"]["venue"] == "ACL" and "vitamin" in h["text"] for h in rows)
        new = {"_id": "n1", "title": "Zebrafish", "text": "fin regeneration in zebrafish"}
        added = http.post("/indexes/bm25/documents", json={"documents": [new]})
        assert added.json() == {"added": 1, "generation": 2}
        found = http.post("/indexes/bm25/search", json={"queries": ["zebrafish fins"], "k": 3}).json()["results"][0]
        assert [h["doc_id"] for h in found] == ["n1"]
        gone = http.request("DELETE", "/indexes/bm25/documents", json={"ids": ["n1"]})
        assert gone.json() == {"deleted": 1, "generation": 3}
        assert http.post("/indexes/bm25/search", json={"queries": ["zebrafish"], "k": 3}).json()["results"] == [[]]
    reloaded, _ = load_index(tmp_path / "bm25")
    assert reloaded.generation == 3 and "n1" not in reloaded


def test_hits_share_a_term_ties_go_by_id_and_an_index_without_terms_finds_nothing() -> None:
    same = "zebrafish fin regeneration"
    docs = {f"t{i}": {"text": same} for i in range(4)} | {"x": {"text": "liver enzymes"}, "y": {"text": "of the"}}
    for method in ("lucene", "bm25l", "bm25+", "robertson"):
        index = Bm25Index({"method": method})
        index.add(list(docs), [doc_text(d) for d in docs.values()])
        hits = index.search(["zebrafish"], k=2)[0]
        assert [d for d, _ in hits] == ["t0", "t1"], method  # four equal scores: the first ids win
        assert {d for d, _ in index.search(["zebrafish"], k=10)[0]} == {"t0", "t1", "t2", "t3"}, method
    empty = Bm25Index()
    empty.add(["a", "b"], ["of the", "a"])  # stopwords and one-letter words only: no terms at all
    assert empty.search(["the zebrafish", "x"], k=3) == [[], []]
