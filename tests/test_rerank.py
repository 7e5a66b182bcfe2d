"""Reranking (`mbret rerank`, `mbret eval --rerank`, `rerank()`): the reranked scores are the model's own
scores of each (query, document) pair, computed here one pair at a time."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mbret.data.datasets import doc_text, load_dataset
from mbret.data.runs import read_trec_run
from mbret.retrieval.colbert import ColBERTEncoder
from mbret.retrieval.dense import DenseEncoder
from mbret.retrieval.rerank import Reranker, rerank, split_model_mode
from tests.conftest import SCIFACT_MINI

QUERIES = ["vitamin D and bone fractures", "tumour suppressor genes in mice"]


@pytest.fixture(scope="module")
def candidates() -> list[list[tuple[str, str]]]:
    dataset = load_dataset(SCIFACT_MINI)
    ids = list(dataset.corpus)
    rng = np.random.default_rng(0)
    return [[(d, doc_text(dataset.corpus[d])) for d in rng.choice(ids, 12, replace=False)] for _ in QUERIES]


def test_colbert_rerank_is_maxsim_pair_by_pair(tiny_model: str, candidates) -> None:
    hits = rerank(QUERIES, candidates, tiny_model, "colbert")
    encoder = ColBERTEncoder.load(tiny_model, device="cpu")
    for query, row, got in zip(QUERIES, candidates, hits):
        q = encoder.encode_queries([query])[0]
        by_hand = {
            d: float((q @ encoder.encode_corpus([text], show_progress=False)[0].T).max(1).values.sum())
            for d, text in row
        }
        assert [h.doc_id for h in got] == sorted(by_hand, key=lambda d: (-by_hand[d], d))
        assert all(abs(h.score - by_hand[h.doc_id]) < 1e-4 for h in got)


def test_dense_rerank_is_the_cosine(tiny_model: str, candidates) -> None:
    reranker = Reranker.load(tiny_model, "dense")
    got = reranker.rerank(QUERIES, candidates, k=5)
    encoder = DenseEncoder.load(tiny_model, device="cpu")
    for query, row, hits in zip(QUERIES, candidates, got):
        q = encoder.encode_queries([query])[0]
        by_hand = {d: float(encoder.encode_corpus([t], show_progress=False)[0] @ q) for d, t in row}
        assert [h.doc_id for h in hits] == sorted(by_hand, key=lambda d: (-by_hand[d], d))[:5]
        assert all(abs(h.score - by_hand[h.doc_id]) < 1e-4 for h in hits)


def test_cross_encoder_rerank_is_its_predict(tiny_model: str, tmp_path: Path, candidates) -> None:
    from sentence_transformers import CrossEncoder

    # a random head, saved once; pairs cut at 128 tokens (saved with it), as the check needs no more
    CrossEncoder(tiny_model, num_labels=1, max_length=128).save(str(tmp_path / "ce"))
    got = rerank(QUERIES, candidates, str(tmp_path / "ce"), "cross-encoder")
    model = CrossEncoder(str(tmp_path / "ce"))
    assert model.max_seq_length == 128
    for query, row, hits in zip(QUERIES, candidates, got):
        scores = model.predict([(query, t) for _, t in row])
        by_hand = {d: float(s) for (d, _), s in zip(row, scores)}
        assert [h.doc_id for h in hits] == sorted(by_hand, key=lambda d: (-by_hand[d], d))
        assert all(abs(h.score - by_hand[h.doc_id]) < 1e-4 for h in hits)


def test_split_model_mode() -> None:
    assert split_model_mode("minilm:dense") == ("minilm", "dense")
    assert split_model_mode("org/model:cross-encoder") == ("org/model", "cross-encoder")
    assert split_model_mode("minilm") == ("minilm", "colbert")


def test_cli_rerank_a_run_and_a_first_stage_and_eval_rerank(tiny_model: str, tmp_path: Path, cli) -> None:
    first = cli("eval", SCIFACT_MINI, "--mode", "bm25", "--output", tmp_path / "bm25-eval")
    assert first.code == 0, first.err
    run = tmp_path / "bm25-eval" / "run.trec"
    out = tmp_path / "reranked.trec"
    done = cli(
        "rerank", run, "--data", SCIFACT_MINI, "--model", tiny_model, "--mode", "dense", "--rerank-depth", "20",
        "--document-length", "64", "--output", out,
    )  # fmt: skip
    assert done.code == 0, done.err
    assert "run.trec" in done.out and "ndcg@10" in done.out  # both stages' rows
    before, after = read_trec_run(run), read_trec_run(out)
    assert set(after) == set(before)
    for qid, hits in after.items():
        assert len(hits) == 20 and {d for d, _ in hits} == {d for d, _ in before[qid][:20]}
    assert cli("index", SCIFACT_MINI / "corpus.jsonl", "--mode", "bm25", "--output", tmp_path / "bm25").code == 0
    again = cli(
        "rerank", "--first-stage", tmp_path / "bm25", "--data", SCIFACT_MINI, "--model", tiny_model,
        "--mode", "dense", "--rerank-depth", "20", "--document-length", "64", "--output", tmp_path / "again.trec",
    )  # fmt: skip
    assert again.code == 0, again.err
    assert read_trec_run(tmp_path / "again.trec") == after  # the same candidates, the same scores
    scored = cli(
        "eval", SCIFACT_MINI, "--mode", "bm25", "--rerank", f"{tiny_model}:dense", "--rerank-depth", "20",
        "--document-length", "64", "--output", tmp_path / "both",
    )  # fmt: skip
    assert scored.code == 0, scored.err
    assert scored.out.count("scifact-mini") == 2  # a row per stage
    results = json.loads((tmp_path / "both" / "results.json").read_text())
    assert results["mode"] == "bm25+rerank" and results["settings"]["rerank"]["depth"] == 20
    assert results["settings"]["first_stage"]["metrics"]["ndcg@10"] > 0


def test_cli_rerank_refuses_bad_input(tiny_model: str, tmp_path: Path, cli) -> None:
    bad = tmp_path / "bad.trec"
    bad.write_text("1 Q0 4983 1 3.2 x\n1 Q0 5836 two 2.0 x\n")
    common = ["--data", SCIFACT_MINI, "--model", tiny_model, "--output", tmp_path / "o.trec"]
    refused = cli("rerank", bad, *common)
    assert refused.code == 2 and f"{bad}:2:" in refused.err and not (tmp_path / "o.trec").exists()
    bad.write_text("1 Q0 no-such-doc 1 3.2 x\n")
    refused = cli("rerank", bad, *common)
    assert refused.code == 2 and "no-such-doc" in refused.err
    neither = cli("rerank", *common)
    assert neither.code == 2 and "give one first stage" in neither.err
    mode = cli("rerank", bad, *common, "--mode", "sparse")
    assert mode.code == 2 and "mode: sparse" in mode.err.replace("--mode sparse", "mode: sparse")
    keep = cli("rerank", bad, *common, "--keep-identical-ids")
    assert keep.code == 2 and "--keep-identical-ids: applies to an index's first stage" in keep.err
    depth = cli("eval", SCIFACT_MINI, "--mode", "bm25", "--rerank-depth", "5")
    assert depth.code == 2 and "--rerank-depth: applies with a reranker" in depth.err
