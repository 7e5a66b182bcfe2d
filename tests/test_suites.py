"""Benchmark suites: the registry, hub loaders on fixtures in each on-hub schema, the verified cache,
suite runs (named and YAML, dense and ColBERT), the paper comparison, `mbret report`, long documents."""

from __future__ import annotations

import dataclasses
import json
import logging
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from mbret.errors import MbretError
from mbret.eval.paper import guess_paper_model, paper_table, paper_value
from mbret.eval.registry import REGISTRY, SUITES, HubSource, resolve_suite
from mbret.eval.sources import fetch_hub, load_spec

from . import hub_fixtures as hub
from .conftest import write_beir

BEIR_15 = [
    "nfcorpus",
    "scifact",
    "trec-covid",
    "fiqa",
    "arguana",
    "climate-fever",
    "dbpedia-entity",
    "fever",
    "hotpotqa",
    "msmarco",
    "nq",
    "quora",
    "scidocs",
    "webis-touche2020",
    "cqadupstack",
]


def test_registry_holds_the_papers_suites() -> None:
    assert list(SUITES["beir"]) == BEIR_15
    assert set(SUITES["beir-dev4"]) == {"scifact", "nfcorpus", "fiqa", "trec-covid"}
    assert SUITES["paper"] == (*BEIR_15, "mldr", "codesearchnet", "stackqa")
    assert REGISTRY["msmarco"].split == "dev"  # MS MARCO is scored on dev
    assert REGISTRY["mldr"].lengths.dense == 8192 and REGISTRY["mldr"].lengths.colbert_document >= 8000
    assert len(REGISTRY["cqadupstack"].parts) == 12 and len(REGISTRY["codesearchnet"].parts) == 6
    for name in {n for suite in SUITES.values() for n in suite}:
        spec = REGISTRY[name]
        for part in [REGISTRY[p] for p in spec.parts] or [spec]:
            assert part.hub or part.irds, f"{part.name} has no source"
    assert not any(REGISTRY[n].keep_identical_ids for n in BEIR_15)  # BEIR's policy (ArguAna, Quora)


def test_paper_table_is_consistent_with_its_own_averages() -> None:
    """Transcription check: the 15 per-dataset BEIR numbers average to the printed BEIR average."""
    models = paper_table()["models"]
    for model in ("modernbert-base", "modernbert-large"):
        for mode in ("dense", "colbert"):
            row = models[model][mode]
            mean = sum(row[name] for name in BEIR_15) / 15
            assert abs(mean - row["beir"]) <= 0.1, (model, mode, mean, row["beir"])
    assert paper_value("modernbert-base", "dense", "beir") == 0.416
    assert paper_value("modernbert-base", "colbert", "mldr") == 0.802
    assert paper_value("modernbert-large", "dense", "stackqa") == 0.839
    assert paper_value("modernbert-base", "colbert", "codesearchnet") is None  # single-vector only
    assert guess_paper_model("answerdotai/ModernBERT-large") == "modernbert-large"
    assert guess_paper_model("bert-base-uncased") == "bert-base"
    assert guess_paper_model("minilm") == "modernbert-base"
    with pytest.raises(MbretError, match="paper_model: gpt"):
        paper_value("gpt", "dense", "beir")


@pytest.mark.parametrize(
    ("schema", "make", "source"),
    [
        ("mteb", hub.mteb_repo, HubSource("mteb/scifact", "mteb")),
        ("beir", hub.beir_repo, HubSource("BeIR/scifact", "beir")),
        (
            "mteb-subset",
            lambda root: hub.mteb_subset_repo(root, "CoIR-Retrieval/CodeSearchNet", "python"),
            HubSource("CoIR-Retrieval/CodeSearchNet", "mteb-subset", "python"),
        ),
        (
            "coir",
            lambda root: hub.coir_repo(root, "CoIR-Retrieval/stackoverflow-qa"),
            HubSource("CoIR-Retrieval/stackoverflow-qa", "coir"),
        ),
        ("mldr", hub.mldr_repo, HubSource("Shitao/MLDR", "mldr", "en")),
        (
            "mldr-mteb",
            lambda root: hub.mteb_subset_repo(root, "mteb/MultiLongDocRetrieval", "en"),
            HubSource("mteb/MultiLongDocRetrieval", "mteb-subset", "en"),
        ),
    ],
)
def test_hub_schema_loaders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, schema, make, source) -> None:
    mirror = tmp_path / "mirror"
    make(mirror)
    monkeypatch.setenv("MBRET_HF_MIRROR", str(mirror))
    dataset = fetch_hub(source, "test", tmp_path / "hf-cache")
    assert sorted(dataset.corpus) == ["d1", "d2", "d3", "d4"]
    assert set(dataset.queries) == {"q1", "q2"}  # only judged queries of the split
    assert dataset.queries["q1"] == "does smoking cause cancer"
    if schema == "mldr":
        assert dataset.qrels == {"q1": {"d1": 1}, "q2": {"d2": 1}}  # positives are relevance 1
    else:
        assert dataset.qrels == {"q1": {"d1": 1}, "q2": {"d2": 2}}
    if schema in ("mteb", "beir", "mteb-subset"):
        assert dataset.corpus["d1"]["title"] == "Smoking"


def test_hub_error_names_the_repo_and_missing_columns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = tmp_path / "mirror"
    hub.write_hub_repo(mirror, "mteb/broken", {"corpus": {"corpus": [{"id": "d1", "body": "x"}]}})
    monkeypatch.setenv("MBRET_HF_MIRROR", str(mirror))
    with pytest.raises(MbretError, match=r"hf:mteb/broken \[queries/queries\]"):
        fetch_hub(HubSource("mteb/broken", "mteb"), "test", tmp_path / "c")
    hub.mteb_repo(mirror, "mteb/cols")
    (mirror / "mteb" / "cols" / "corpus" / "corpus.jsonl").write_text('{"id": "d1", "body": "x"}\n')
    with pytest.raises(MbretError, match="missing column"):
        fetch_hub(HubSource("mteb/cols", "mteb"), "test", tmp_path / "c")


def test_download_is_cached_verified_and_refetched_when_corrupt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    mirror, cache = tmp_path / "mirror", tmp_path / "cache"
    hub.mteb_repo(mirror)
    monkeypatch.setenv("MBRET_HF_MIRROR", str(mirror))
    spec = REGISTRY["scifact"]
    with caplog.at_level(logging.WARNING):
        first = load_spec(spec, cache=cache)
    assert "registry expects 5183" in caplog.text  # counts are checked against the registry
    cached = cache / "scifact" / "test"
    record = json.loads((cached / "source.json").read_text())
    assert record["source"] == "hf:mteb/scifact (mteb schema)" and set(record["sha256"]) == {
        "corpus.jsonl",
        "queries.jsonl",
        "qrels/test.tsv",
    }
    monkeypatch.setenv("MBRET_HF_MIRROR", str(tmp_path / "nowhere"))
    spec_offline = dataclasses.replace(spec, irds=None)  # no ir_datasets download attempt offline
    again = load_spec(spec_offline, cache=cache)  # from the cache, no source reachable
    assert again.corpus == first.corpus and again.qrels == first.qrels
    corpus_file = cached / "corpus.jsonl"
    corpus_file.write_bytes(corpus_file.read_bytes()[:-20])  # truncated
    caplog.clear()
    with caplog.at_level(logging.WARNING), pytest.raises(MbretError, match="no source could be loaded") as info:
        load_spec(spec_offline, cache=cache)
    assert "corpus.jsonl does not match its recorded SHA-256" in str(info.value)
    assert "does not match its recorded SHA-256" in caplog.text
    monkeypatch.setenv("MBRET_HF_MIRROR", str(mirror))
    assert load_spec(spec_offline, cache=cache).corpus == first.corpus  # fetched again and re-verified


def test_unreachable_dataset_says_what_was_tried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MBRET_HF_MIRROR", str(tmp_path))
    with pytest.raises(MbretError) as info:
        load_spec(REGISTRY["stackqa"], cache=tmp_path / "cache")
    message = str(info.value)
    assert "hf:CoIR-Retrieval/stackoverflow-qa" in message and "hf:mteb/StackOverflowQA" in message
    assert "pass it as data_dir" in message  # the library's name; the CLI's flag is --data-dir


def _small_dirs(root: Path) -> tuple[Path, Path]:
    corpus = {d: {"title": t, "text": x} for d, t, x in hub.DOCS}
    a = write_beir(root / "a", corpus, dict(hub.QUERIES[:2]), {"q1": {"d1": 1}, "q2": {"d2": 1}})
    b = write_beir(root / "b", corpus, {"q9": "viral infection immune cells"}, {"q9": {"d4": 1}}, split="dev")
    return a, b


def test_yaml_suite_dense_colbert_resume_and_report(tmp_path: Path, cli, tiny_model: str) -> None:
    a, b = _small_dirs(tmp_path / "data")
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        "name: tiny\n"
        "datasets:\n"
        f"  - name: scifact\n    path: {a.relative_to(tmp_path)}\n"
        f"  - name: mine\n    path: {b}\n    split: dev\n"
        "    lengths: {dense: 64, colbert_query: 20, colbert_document: 48}\n",
        encoding="utf-8",
    )
    dense_out = tmp_path / "dense"
    result = cli("eval", "--suite", suite, "--model", tiny_model, "--output", dense_out, "--batch-size", "4")
    assert result.code == 0, result.err
    assert "paper (modernbert-base, dense)" in result.out and "SciFact" in result.out
    summary = json.loads((dense_out / "results.json").read_text())
    assert list(summary["datasets"]) == ["scifact", "mine"]
    manifest = summary["manifest"]
    assert set(manifest["versions"]) >= {"mbret", "torch", "transformers", "sentence-transformers"}
    assert len(manifest["weights_sha256"]) == 64 and manifest["dtype"] == "float32"
    assert manifest["device"].startswith("cpu") and manifest["seed"] == 0
    assert summary["settings"]["batch_size"] == 4 and summary["settings"]["index_type"] == "flat"
    assert summary["datasets"]["mine"]["lengths"]["used"] == {"document_length": 64}
    assert summary["datasets"]["mine"]["split"] == "dev"
    rows = {r["key"]: r for r in summary["paper"]["rows"]}
    ours = summary["datasets"]["scifact"]["metrics"]["ndcg@10"]
    assert rows["scifact"]["paper"] == 0.57 and rows["scifact"]["diff"] == pytest.approx(ours - 0.57, abs=1e-4)
    assert rows["mine"]["paper"] is None
    per = json.loads((dense_out / "scifact" / "results.json").read_text())
    assert per["settings"]["manifest"]["weights_sha256"] == manifest["weights_sha256"]
    assert per["settings"]["conventions"]["keep_identical_ids"] is False
    assert (dense_out / "scifact" / "run.trec").is_file() and "timings" in per

    again = cli("eval", "--suite", suite, "--model", tiny_model, "--output", dense_out, "--resume")
    assert again.code == 0 and "scifact: reusing" in again.err
    changed = cli(
        "eval",
        "--suite",
        suite,
        "--model",
        tiny_model,
        "-o",
        dense_out,
        "--resume",
        "--document-length",
        "32",
    )
    assert changed.code == 0 and "reusing" not in changed.err  # another length is another run

    colbert_out = tmp_path / "colbert"
    result = cli(
        "eval", "--suite", suite, "--model", tiny_model, "--mode", "colbert", "--output", colbert_out,
        "--nbits", "4", "--save-index",
    )  # fmt: skip
    assert result.code == 0, result.err
    summary = json.loads((colbert_out / "results.json").read_text())
    assert summary["settings"]["index_type"] == "plaid" and summary["settings"]["index_params"]["nbits"] == 4
    lengths = summary["datasets"]["mine"]["lengths"]["used"]
    assert lengths == {"query_length": 20, "document_length": 48}  # the entry's own query cap
    # left open, a new head's query cap follows the dataset's documents (no [MASK] expansion)
    assert summary["datasets"]["scifact"]["lengths"]["used"] == {"query_length": 510, "document_length": 510}
    assert summary["settings"]["query_expansion"] is False
    assert (colbert_out / "scifact" / "index" / "manifest.json").is_file()

    report_dir = tmp_path / "report"
    result = cli("report", dense_out, colbert_out, "--output", report_dir)
    assert result.code == 0, result.err
    md = (report_dir / "report.md").read_text()
    assert "| SciFact |" in md and "paper: modernbert-base colbert" in md and "report.png" in md
    png = (report_dir / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert width >= 500 and height >= 300

    bad = cli("report", tmp_path / "data")
    assert bad.code == 2 and "no results.json" in bad.err


def test_named_suite_over_hub_fixtures_drops_identical_ids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli, tiny_model: str
) -> None:
    """`--suite stackqa` end to end from a CoIR-schema repo where a document shares query q1's id."""
    mirror = tmp_path / "mirror"
    hub.coir_repo(mirror, "CoIR-Retrieval/stackoverflow-qa", identical=True)
    monkeypatch.setenv("MBRET_HF_MIRROR", str(mirror))
    monkeypatch.setenv("MBRET_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    result = cli("eval", "--suite", "stackqa", "--model", tiny_model, "--output", out)
    assert result.code == 0, result.err
    run = (out / "stackqa" / "run.trec").read_text().split("\n")
    assert not any(line.split()[:3] == ["q1", "Q0", "q1"] for line in run if line)
    assert (tmp_path / "cache" / "datasets" / "stackqa" / "test" / "source.json").is_file()
    summary = json.loads((out / "results.json").read_text())
    assert summary["paper"]["rows"][0]["paper"] == 0.736


def test_composite_dataset_is_the_mean_of_its_parts(tmp_path: Path, cli, tiny_model: str) -> None:
    data = tmp_path / "data"
    corpus = {d: {"title": t, "text": x} for d, t, x in hub.DOCS}
    queries = dict(hub.QUERIES[:2])
    for i, lang in enumerate(("go", "java", "javascript", "php", "python", "ruby")):
        judged = {"q1": {"d1": 1}} if i % 2 else {"q2": {"d2": 1}, "q1": {"d4": 1}}
        write_beir(data / f"codesearchnet-{lang}", corpus, queries, judged)
    out = tmp_path / "out"
    result = cli("eval", "--suite", "codesearchnet", "--model", tiny_model, "--output", out, "--data-dir", data)
    assert result.code == 0, result.err
    summary = json.loads((out / "results.json").read_text())
    entry = summary["datasets"]["codesearchnet"]
    parts = entry["parts"]
    assert len(parts) == 6
    assert entry["metrics"]["ndcg@10"] == pytest.approx(np.mean([p["ndcg@10"] for p in parts.values()]))
    assert summary["paper"]["rows"][0]["paper"] == 0.564


def test_suite_input_errors(tmp_path: Path, cli, tiny_model: str) -> None:
    suite = tmp_path / "s.yaml"
    suite.write_text("datasets:\n  - name: a\n    path: missing-dir\n", encoding="utf-8")
    result = cli("eval", "--suite", suite, "--model", tiny_model, "--output", tmp_path / "o")
    assert result.code == 2 and f"{suite}:2:" in result.err and "missing-dir" in result.err
    suite.write_text(f"datasets:\n  - name: a\n    path: {tmp_path}\n    colour: red\n", encoding="utf-8")
    assert "unknown key(s) colour" in cli("eval", "--suite", suite, "--model", tiny_model, "-o", tmp_path).err
    result = cli("eval", "--suite", "beer", "--model", tiny_model, "--output", tmp_path / "o")
    assert result.code == 2 and "choose one of beir, beir-dev4" in result.err
    result = cli("eval", "--suite", "beir", "--model", tiny_model)
    assert result.code == 2 and "--output" in result.err
    result = cli("eval", "--suite", "beir", "--model", tiny_model, "-o", tmp_path / "o", "--keep-identical-ids")
    assert result.code == 2 and "keep_identical_ids" in result.err
    assert not (tmp_path / "o").exists()
    ok = tmp_path / "ok.yaml"
    ok.write_text(f"datasets:\n  - name: a\n    path: {_small_dirs(tmp_path / 'd')[0]}\n", encoding="utf-8")
    result = cli("eval", "--suite", ok, "--model", tiny_model, "--mode", "colbert", "-o", tmp_path / "o",
                 "--document-length", "9000")  # fmt: skip
    assert result.code == 2 and "document-length: 9000: must be between 1 and 8192" in result.err.replace("_", "-")
    with pytest.raises(MbretError):
        resolve_suite(tmp_path / "nope.yaml")


def _long_text(words: int = 4000) -> str:
    return " ".join(["smoking brain vitamin cancer mice activity reduced"] * (words // 7))


def test_long_documents_encode_in_token_budget_batches(tiny_model: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """8192-token documents: a batch never pads beyond the budget (a longer text goes alone) and the
    vectors equal those of each text encoded alone, in both heads."""
    from mbret.retrieval.colbert import ColBERTEncoder
    from mbret.retrieval.dense import DenseEncoder

    texts = [_long_text(), "a short document", _long_text(1200), "brain of mice", "vitamin d"]
    dense = DenseEncoder.load(tiny_model, device="cpu", document_length=8192)
    padded: list[int] = []
    forward = dense.model.forward

    def spy(features, **kwargs):
        padded.append(int(features["input_ids"].numel()))
        return forward(features, **kwargs)

    monkeypatch.setattr(dense.model, "forward", spy)
    together = dense.encode(texts, batch_size=8, max_tokens=4096)
    assert max(padded) == 8192 and sorted(padded)[-2] <= 4096  # the 8192-token text alone, others budgeted
    alone = np.stack([dense.encode([t])[0] for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)

    colbert = ColBERTEncoder.load(tiny_model, device="cpu", document_length=8190)
    vectors = colbert.encode_corpus(texts, batch_size=8, max_tokens=4096, show_progress=False)
    assert vectors[0].shape[0] > 8000
    for text, tokens in zip(texts, vectors):
        torch.testing.assert_close(tokens, colbert.encode_corpus([text], show_progress=False)[0], atol=1e-5, rtol=0)


def test_docs_show_the_registry_as_it_is() -> None:
    from mbret.eval.registry import conventions_markdown

    from .conftest import REPO

    docs = (REPO / "docs" / "evaluation.md").read_text(encoding="utf-8")
    assert conventions_markdown() in docs, "regenerate the table in docs/evaluation.md from conventions_markdown()"


def test_custom_dataset_tied_to_the_registry_takes_its_paper_number(tmp_path: Path) -> None:
    from mbret.eval.suite import compare_with_paper

    a, b = _small_dirs(tmp_path / "data")
    path = tmp_path / "s.yaml"
    path.write_text(f"datasets:\n  - name: my-nf\n    path: {a}\n    registry: nfcorpus\n  - name: x\n    path: {b}\n")
    suite = resolve_suite(path)
    scores = {"my-nf": {"metrics": {"ndcg@10": 0.3}}, "x": {"metrics": {"ndcg@10": 0.5}}}
    rows = compare_with_paper(suite, scores, "modernbert-base", "dense")["rows"]
    assert [(r["key"], r["paper"]) for r in rows] == [("my-nf", 0.237), ("x", None)]
