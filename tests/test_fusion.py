"""Hybrid fusion (`--fuse`): reciprocal rank and linear fusion against hand computation, over real indexes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mbret.errors import MbretError
from mbret.retrieval.fusion import FusedRetriever, fuse, fuse_linear, fuse_rrf
from tests.conftest import SCIFACT_MINI, _run_cli


def test_rrf_by_hand() -> None:
    a = [("d1", 9.0), ("d2", 5.0), ("d3", 1.0)]
    b = [("d3", 0.9), ("d1", 0.8), ("d4", 0.1)]
    fused = fuse_rrf([a, b], k=10)
    by_hand = {
        "d1": 1 / 61 + 1 / 62,
        "d3": 1 / 63 + 1 / 61,
        "d2": 1 / 62,
        "d4": 1 / 63,
    }
    assert [d for d, _ in fused] == ["d1", "d3", "d2", "d4"]
    assert all(abs(score - by_hand[d]) < 1e-12 for d, score in fused)
    assert fuse_rrf([a, b], k=2) == fused[:2]
    assert fuse_rrf([[("x", 1.0)], [("y", 1.0)]], k=2) == [("x", 1 / 61), ("y", 1 / 61)]  # ties by doc id


def test_linear_by_hand() -> None:
    a = [("d1", 10.0), ("d2", 6.0), ("d3", 2.0)]
    b = [("d3", 0.9), ("d4", 0.5), ("d1", 0.1)]
    fused = dict(fuse_linear([a, b], k=10, alpha=0.3))
    assert fused["d1"] == pytest.approx(0.3 * 1.0 + 0.7 * 0.0)
    assert fused["d2"] == pytest.approx(0.3 * 0.5)
    assert fused["d3"] == pytest.approx(0.3 * 0.0 + 0.7 * 1.0)
    assert fused["d4"] == pytest.approx(0.7 * 0.5)
    three = dict(fuse_linear([a, b, [("d2", 3.0)]], k=10, alpha=0.5))
    assert three["d2"] == pytest.approx(0.5 * 0.5 + 0.25 * 1.0)  # the others share 1 - alpha; one hit -> 1
    with pytest.raises(MbretError, match="alpha: 1.5"):
        fuse_linear([a, b], k=3, alpha=1.5)
    with pytest.raises(MbretError, match="fusion: max"):
        fuse([[a], [b]], 3, fusion="max")


@pytest.fixture(scope="module")
def two_indexes(tmp_path_factory: pytest.TempPathFactory, tiny_model: str) -> tuple[Path, Path]:
    """A BM25 and a dense index of scifact-mini, built once for this file's tests (they only read them).
    Documents are cut at 256 tokens: fusion reads rankings, and the tiny model's 8192 would only cost time."""
    corpus, root = SCIFACT_MINI / "corpus.jsonl", tmp_path_factory.mktemp("fused")
    bm25, dense = root / "bm25", root / "dense"
    _run_cli("index", corpus, "--mode", "bm25", "--output", bm25)
    _run_cli("index", corpus, "--model", tiny_model, "--document-length", "256", "--output", dense)
    return bm25, dense


def test_fused_search_fuses_each_index_own_ranking(two_indexes: tuple[Path, Path]) -> None:
    from mbret.retrieval import Retriever

    queries = ["vitamin D and bone fractures", "tumour suppressor genes in mice"]
    fused = FusedRetriever.load(two_indexes, fusion_depth=30)
    parts = [Retriever.load(p).search(queries, k=30) for p in two_indexes]
    for q in range(len(queries)):
        expected = fuse_rrf([[(h.doc_id, h.score) for h in part[q]] for part in parts], k=10)
        assert [(h.doc_id, h.score) for h in fused.search(queries, k=10)[q]] == expected
    linear = FusedRetriever.load(two_indexes, fusion="linear", alpha=0.7, fusion_depth=30)
    expected = fuse_linear([[(h.doc_id, h.score) for h in part[0]] for part in parts], k=5, alpha=0.7)
    assert [(h.doc_id, h.score) for h in linear.search(queries, k=5)[0]] == expected
    chosen = [h.doc_id for h in parts[0][0][:3]] + [h.doc_id for h in parts[1][1][:3]]
    filtered = fused.search(queries, k=10, ids=chosen, return_documents=True)
    assert all(row for row in filtered) and all(h.doc_id in chosen and h.text for row in filtered for h in row)


def test_cli_fuse_search_and_eval(two_indexes: tuple[Path, Path], tmp_path: Path, cli) -> None:
    fuse = ",".join(map(str, two_indexes))
    found = cli("search", "--fuse", fuse, "vitamin D and bone fractures", "-k", "4", "--json")
    assert found.code == 0, found.err
    payload = json.loads(found.out)
    assert payload[0]["query"] == "vitamin D and bone fractures" and len(payload[0]["hits"]) == 4
    out = tmp_path / "e"
    scored = cli("eval", SCIFACT_MINI, "--fuse", fuse, "--fusion", "linear", "--alpha", "0.6", "--output", out)
    assert scored.code == 0 and "ndcg@10" in scored.out, scored.err
    results = json.loads((tmp_path / "e" / "results.json").read_text())
    assert results["mode"] == "fusion" and results["settings"]["fusion"] == "linear"
    assert results["settings"]["alpha"] == 0.6 and len(results["settings"]["indexes"]) == 2
    lines = (SCIFACT_MINI / "corpus.jsonl").read_text().splitlines()
    (tmp_path / "half.jsonl").write_text("\n".join(lines[:250]) + "\n")
    assert cli("index", tmp_path / "half.jsonl", "--mode", "bm25", "--output", tmp_path / "half").code == 0
    other = cli("search", "--fuse", f"{two_indexes[0]},{tmp_path / 'half'}", "virus")
    assert other.code == 2 and "holds other documents" in other.err
    one = cli("search", "--fuse", str(two_indexes[0]), "virus")
    assert one.code == 2 and "two or more index directories" in one.err
    alone = cli("search", two_indexes[0], "virus", "--alpha", "0.3")
    assert alone.code == 2 and "applies to a fused search" in alone.err
    rrf_alpha = cli("search", "--fuse", fuse, "virus", "--alpha", "0.3")
    assert rrf_alpha.code == 2 and "rrf fuses ranks" in rrf_alpha.err
    built = cli("eval", SCIFACT_MINI, "--fuse", fuse, "--query-length", "8")
    assert built.code == 2 and "--query-length" in built.err
