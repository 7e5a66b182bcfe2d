"""The README's Python tour runs as written, and the bundled demo retrieves well with a real model."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .conftest import REPO


def test_readme_python_tour_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```python\n(.*?)```", readme, re.S)
    assert block, "README has a python block"
    for name in ("examples",):
        (tmp_path / name).symlink_to(REPO / name)
    monkeypatch.chdir(tmp_path)
    exec(compile(block.group(1), "README.md", "exec"), {})
    out = capsys.readouterr().out
    metrics = eval(out.strip().splitlines()[-1])  # the printed metrics dict
    assert set(metrics) == {"ndcg@10", "recall@100", "mrr@10"}
    assert metrics["ndcg@10"] > 0.6  # all-MiniLM-L6-v2 is a real retriever on SciFact
    assert (tmp_path / "runs" / "api-demo" / "manifest.json").is_file()


def test_readme_commands_match_the_scripts() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    demo = (REPO / "scripts" / "demo.sh").read_text(encoding="utf-8")
    for line in demo.splitlines():
        if line.startswith("mbret "):
            assert line in readme, f"README does not show: {line}"
    assert "bash scripts/test.sh" in (REPO / ".ci" / "run").read_text(encoding="utf-8")


def test_readme_precomputed_vectors_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """The README's path for precomputed token vectors (train, add chunk by chunk, save, load, search)."""
    import textwrap

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "index.train(" in b)
    monkeypatch.chdir(tmp_path)
    exec(compile(textwrap.dedent(block.replace("\n  ```", "")), "README.md", "exec"), {})
    assert capsys.readouterr().out.strip().splitlines()[-1] == "doc7"
    assert (tmp_path / "runs" / "precomputed" / "manifest.json").is_file()


def test_readme_filter_example_runs(capsys) -> None:
    """The README's documents-and-filters example: a filtered search that returns its hits' documents."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "return_documents=True" in b)
    exec(compile(block, "README.md", "exec"), {})
    assert capsys.readouterr().out.strip().splitlines()[-1] == "[('a', 'Parsing', 2021)]"


def test_readme_pipelines_example_runs(capsys) -> None:
    """The README's pipelines example: BM25 without a model, a ColBERT rerank of its hits, RRF with dense."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "FusedRetriever(" in b)
    exec(compile(block, "README.md", "exec"), {})
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2].startswith("Hit(doc_id=")
    fused = eval(lines[-1])
    assert len(fused) == 3 and len(set(fused)) == 3
