"""Loaders: BEIR layout quirks (CRLF, BOM), bare corpora, irds/hf adapters, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from mbret.data import datasets as data
from mbret.data.datasets import doc_text, load_beir_dir, load_corpus, load_dataset
from mbret.errors import InputError, MbretError

from .conftest import SCIFACT_MINI, write_beir


def test_beir_dir_with_crlf_and_bom(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_bytes(
        b'\xef\xbb\xbf{"_id": "a", "title": "T", "text": "x"}\r\n{"_id": 7, "text": "y"}\r\n\r\n'
    )
    (root / "queries.jsonl").write_bytes(b'\xef\xbb\xbf{"_id": "q", "text": "query"}\r\n{"_id": "u", "text": "n"}\r\n')
    (root / "qrels" / "test.tsv").write_bytes(b"\xef\xbb\xbfquery-id\tcorpus-id\tscore\r\nq\ta\t1\r\nq\t7\t0\r\n")
    ds = load_beir_dir(root)
    assert list(ds.corpus) == ["a", "7"]
    assert ds.qrels == {"q": {"a": 1, "7": 0}}
    assert ds.queries == {"q": "query"}  # only judged queries are kept
    assert doc_text(ds.corpus["a"]) == "T x"
    assert doc_text(ds.corpus["7"]) == "y"


def test_bundled_scifact_mini_loads() -> None:
    ds = load_dataset(SCIFACT_MINI)
    assert len(ds.corpus) == 500 and len(ds.queries) == 50
    assert all(d in ds.corpus for judged in ds.qrels.values() for d in judged)
    assert load_corpus(SCIFACT_MINI / "corpus.jsonl") == ds.corpus


@pytest.mark.parametrize(
    ("content", "line", "needle"),
    [
        (b'{"_id": "a", "text": "x"}\n{"_id": "b", "text": \n', 2, "invalid JSON"),
        (b'{"_id": "a", "text": "x"}\n{"text": "no id"}\n', 2, 'missing "_id"'),
        (b'{"_id": "a", "text": "x"}\n{"_id": "b", "text": "y"}\n{"_id": "a", "text": "z"}\n', 3, "duplicate doc id"),
        (b'{"_id": "a", "text": "x"}\n{"_id": "b", "text": "caf\xe9"}\n', 2, "not valid UTF-8"),
        (b'["not", "an", "object"]\n', 1, "expected a JSON object"),
    ],
)
def test_corpus_errors_name_file_and_line(tmp_path: Path, content: bytes, line: int, needle: str) -> None:
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(content)
    with pytest.raises(InputError) as info:
        load_corpus(path)
    assert info.value.line == line
    assert str(info.value).startswith(f"{path}:{line}: ")
    assert needle in str(info.value)


def test_qrels_naming_unknown_doc(tmp_path: Path, small_corpus: dict) -> None:
    root = write_beir(tmp_path / "ds", small_corpus, {"q": "x"}, {"q": {"d1": 1, "nope": 1}})
    with pytest.raises(InputError, match=r"qrels/test.tsv:3: doc id 'nope' is not in the corpus"):
        load_beir_dir(root)


def test_missing_split_lists_available(small_beir: Path) -> None:
    with pytest.raises(MbretError, match="no qrels for split 'dev' \\(available: test\\)"):
        load_beir_dir(small_beir, split="dev")


def test_irds_adapter(monkeypatch: pytest.MonkeyPatch) -> None:
    import ir_datasets

    fake = SimpleNamespace(
        docs_iter=lambda: iter(
            [SimpleNamespace(doc_id="d1", title="T", text="body"), SimpleNamespace(doc_id="d2", title="", text="other")]
        ),
        queries_iter=lambda: iter(
            [SimpleNamespace(query_id="q1", text="what"), SimpleNamespace(query_id="q9", text="unjudged")]
        ),
        qrels_iter=lambda: iter([SimpleNamespace(query_id="q1", doc_id="d2", relevance=1)]),
    )
    loaded: list[str] = []
    monkeypatch.setattr(ir_datasets, "load", lambda name: loaded.append(name) or fake)
    ds = load_dataset("irds:beir/scifact/test")
    assert loaded == ["beir/scifact/test"]
    assert ds.corpus["d1"] == {"title": "T", "text": "body"}
    assert ds.queries == {"q1": "what"} and ds.qrels == {"q1": {"d2": 1}}
    assert ds.split == "test"


def test_hf_adapter_reads_beir_hub_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    tables = {
        ("BeIR/tiny", "corpus", "corpus"): [
            {"_id": "d1", "title": "T", "text": "x"},
            {"_id": "d2", "title": "", "text": "y"},
        ],
        ("BeIR/tiny", "queries", "queries"): [{"_id": "q1", "text": "query"}],
        ("BeIR/tiny-qrels", None, "test"): [{"query-id": "q1", "corpus-id": "d2", "score": 1}],
    }

    def fake_load(repo: str, config: str | None = None, split: str | None = None) -> datasets.Dataset:
        return datasets.Dataset.from_list(tables[(repo, config, split)])

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    ds = load_dataset("hf:BeIR/tiny")
    assert list(ds.corpus) == ["d1", "d2"] and ds.qrels == {"q1": {"d2": 1}}


def test_hf_unreachable_is_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    def offline(*args: object, **kwargs: object) -> None:
        raise ConnectionError("no network\nsecond line")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(MbretError, match="hf:BeIR/x: could not load"):
        data.load_hf_beir("BeIR/x")


def test_unknown_source_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(MbretError, match="not a BEIR directory"):
        load_dataset(tmp_path / "missing")


def test_malformed_corpus_cli_writes_nothing(tmp_path: Path, cli, tiny_model: str) -> None:
    corpus = tmp_path / "bad.jsonl"
    corpus.write_text(json.dumps({"_id": "a", "text": "x"}) + "\n{oops\n", encoding="utf-8")
    out = tmp_path / "idx"
    result = cli("index", corpus, "--model", tiny_model, "--output", out)
    assert result.code == 2
    assert result.err.strip().count("\n") == 0
    assert f"{corpus}:2: invalid JSON" in result.err
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [corpus]


def test_malformed_qrels_cli_eval_writes_nothing(tmp_path: Path, cli, small_corpus: dict) -> None:
    root = write_beir(tmp_path / "ds", small_corpus, {"q": "x"}, {"q": {"ghost": 1}})
    out = tmp_path / "results"
    result = cli("eval", root, "--model", "tiny-modernbert", "--output", out)
    assert result.code == 2
    assert "qrels/test.tsv:2: doc id 'ghost' is not in the corpus" in result.err
    assert not out.exists()
