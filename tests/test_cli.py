"""The CLI contract end to end on the tiny ModernBERT: index, search, add, delete, eval and its outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mbret.data.datasets import load_dataset
from mbret.eval.runner import evaluate
from mbret.retrieval import Retriever

from .conftest import write_beir


def test_index_search_add_delete(tmp_path: Path, cli, tiny_model: str, small_beir: Path) -> None:
    out = tmp_path / "idx"
    result = cli("index", small_beir / "corpus.jsonl", "--model", tiny_model, "--output", out, "--batch-size", "4")
    assert result.code == 0, result.err
    assert "indexed 6 documents" in result.out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"] == str(Path(tiny_model).resolve())
    assert manifest["mode"] == "dense" and manifest["dimension"] == 64 and manifest["normalized"] is True
    assert manifest["num_docs"] == 6 and manifest["index_type"] == "flat" and manifest["max_length"] == 8192
    assert manifest["format_version"] == 1 and manifest["mbret_version"]

    result = cli("search", out, "smoking increased the cancer risk in patients", "brain", "-k", "3", "--json")
    assert result.code == 0, result.err
    payload = json.loads(result.out)
    assert [p["query"] for p in payload] == ["smoking increased the cancer risk in patients", "brain"]
    assert len(payload[0]["hits"]) == 3 and payload[0]["hits"][0]["rank"] == 1
    scores = [h["score"] for h in payload[0]["hits"]]
    assert scores == sorted(scores, reverse=True)

    extra = tmp_path / "extra.jsonl"
    extra.write_text(json.dumps({"_id": "d7", "text": "a brand new document about tumor genes"}) + "\n")
    assert cli("index", extra, "--output", out).code == 2  # exists: needs --add or --overwrite
    result = cli("index", extra, "--output", out, "--add")
    assert result.code == 0, result.err
    assert "7 in all" in result.out
    payload = json.loads(cli("search", out, "a brand new document about tumor genes", "--json").out)
    assert payload[0]["hits"][0]["doc_id"] == "d7"

    result = cli("delete", out, "d7", "d1")
    assert result.code == 0 and "5 left" in result.out
    payload = json.loads(cli("search", out, "a brand new document about tumor genes", "-k", "10", "--json").out)
    returned = [h["doc_id"] for h in payload[0]["hits"]]
    assert "d7" not in returned and "d1" not in returned and len(returned) == 5

    result = cli("search", out, "x", "-k", "2")
    assert result.code == 0 and result.out.startswith("query: x")

    result = cli("index", small_beir, "--model", tiny_model, "--output", out, "--overwrite", "--index-type", "hnsw")
    assert result.code == 0, result.err
    assert json.loads((out / "manifest.json").read_text())["index_type"] == "hnsw"


def test_index_refuses_other_model(tmp_path: Path, cli, tiny_model: str, small_beir: Path) -> None:
    out = tmp_path / "idx"
    assert cli("index", small_beir, "--model", tiny_model, "--output", out).code == 0
    result = cli("index", small_beir / "corpus.jsonl", "--output", out, "--add", "--model", "minilm")
    assert result.code == 2
    assert result.err.startswith("error: --model: ") and "built with model" in result.err and "'minilm'" in result.err
    with pytest.raises(Exception, match="built with model"):
        Retriever.load(out, model="minilm")


def test_index_refuses_other_dimension(tmp_path: Path, cli, tiny_model: str, small_beir: Path) -> None:
    from mbret.retrieval.backbone import build_tiny_modernbert

    out = tmp_path / "idx"
    assert cli("index", small_beir, "--model", tiny_model, "--output", out).code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    other = build_tiny_modernbert(tmp_path / "wide", hidden_size=96)
    manifest["model"] = str(other)  # same path name game: a model whose output is 96-d
    (out / "manifest.json").write_text(json.dumps(manifest))
    result = cli("search", out, "x")
    assert result.code == 2 and "holds 64-d vectors but the model gives 96-d" in result.err


def test_eval_writes_results_and_trec_run(tmp_path: Path, cli, tiny_model: str, small_beir: Path) -> None:
    out = tmp_path / "results"
    result = cli(
        "eval", small_beir, "--model", tiny_model, "--output", out, "--metrics", "ndcg@10,recall@100,mrr@10,map@5"
    )
    assert result.code == 0, result.err
    assert "ndcg@10" in result.out and "3 queries, 6 docs" in result.out
    results = json.loads((out / "results.json").read_text())
    assert {"dataset", "split", "model", "mode", "metrics", "num_queries", "num_docs", "timings"} <= set(results)
    assert set(results["metrics"]) == {"ndcg@10", "recall@100", "mrr@10", "map@5"}
    assert results["split"] == "test" and results["mode"] == "dense" and results["num_queries"] == 3
    assert results["metrics"]["recall@100"] == 1.0  # 6 docs: everything is retrieved
    assert {"encode_corpus_s", "search_s", "total_s"} <= set(results["timings"])
    lines = (out / "run.trec").read_text().splitlines()
    assert len(lines) == 3 * 6
    qid, q0, doc, rank, score, tag = lines[0].split()
    assert q0 == "Q0" and rank == "1" and tag == "mbret" and doc.startswith("d")
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_eval_on_existing_index_gives_same_numbers(tmp_path: Path, cli, tiny_model: str, small_beir: Path) -> None:
    assert cli("index", small_beir, "--model", tiny_model, "--output", tmp_path / "idx").code == 0
    a = cli("eval", small_beir, "--index", tmp_path / "idx", "--output", tmp_path / "a")
    b = cli("eval", small_beir, "--model", tiny_model, "--output", tmp_path / "b")
    assert a.code == 0 and b.code == 0, a.err + b.err
    ra = json.loads((tmp_path / "a" / "results.json").read_text())
    rb = json.loads((tmp_path / "b" / "results.json").read_text())
    assert ra["metrics"] == pytest.approx(rb["metrics"])


def test_identical_id_policy(tmp_path: Path, tiny_model: str) -> None:
    corpus = {"q1": {"title": "", "text": "the exact same text"}, "d2": {"title": "", "text": "unrelated words"}}
    root = write_beir(tmp_path / "ds", corpus, {"q1": "the exact same text"}, {"q1": {"d2": 1}})
    dataset = load_dataset(root)
    dropped = evaluate(dataset, model=tiny_model, show_progress=False)
    kept = evaluate(dataset, model=tiny_model, ignore_identical_ids=False, show_progress=False)
    assert "q1" not in dropped.run["q1"] and dropped.metrics["mrr@10"] == 1.0
    assert list(kept.run["q1"])[0] == "q1" and kept.metrics["mrr@10"] == 0.5


def test_split_option(tmp_path: Path, cli, tiny_model: str, small_corpus: dict) -> None:
    root = write_beir(tmp_path / "ds", small_corpus, {"q": "heart disease"}, {"q": {"d4": 1}}, split="dev")
    assert cli("eval", root, "--model", tiny_model).code == 2
    result = cli("eval", root, "--model", tiny_model, "--split", "dev")
    assert result.code == 0 and "dev" in result.out


def test_cli_errors_are_one_line(tmp_path: Path, cli, small_beir: Path) -> None:
    for args in (
        ("eval", small_beir),  # no model
        ("eval", small_beir, "--model", "tiny-modernbert", "--mode", "sparse"),
        ("eval", small_beir, "--model", "tiny-modernbert", "--metrics", "ndcg"),
        ("search", tmp_path / "nothing", "q"),
        ("index", small_beir, "--output", tmp_path / "x"),
    ):
        result = cli(*args)
        assert result.code == 2, args
        assert result.err.startswith("error: ") and result.err.count("\n") == 1, result.err
    assert not (tmp_path / "x").exists()


def test_help_teaches(cli) -> None:
    result = cli("--help")
    assert result.code == 0 and "index" in result.out and "eval" in result.out
    result = cli("eval", "--help")
    assert "--index-type" in result.out and "Example" in result.out


def test_overwrite_never_touches_a_directory_that_is_not_an_index(tmp_path: Path, cli, small_beir: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    result = cli("index", small_beir, "--model", "tiny-modernbert", "--output", precious, "--overwrite")
    assert result.code == 2 and "is not an mbret index" in result.err
    assert (precious / "notes.txt").read_text() == "keep me"
