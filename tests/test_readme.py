"""The README's Python tour runs as written, and the bundled demo retrieves well with a real model."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .conftest import REPO


@pytest.mark.slow
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


@pytest.mark.slow
def test_readme_pipelines_example_runs(capsys) -> None:
    """The README's pipelines example: BM25 without a model, a ColBERT rerank of its hits, RRF with dense."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "FusedRetriever(" in b)
    exec(compile(block, "README.md", "exec"), {})
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2].startswith("Hit(doc_id=")
    fused = eval(lines[-1])
    assert len(fused) == 3 and len(set(fused)) == 3


def _python_blocks(readme: str) -> list[str]:
    import textwrap

    return [textwrap.dedent(b.replace("\n  ```", "")) for b in re.findall(r"```python\n(.*?)```", readme, re.S)]


def _tour_cells(readme: str) -> list[str]:
    """The Python column of the tour table, one statement list per cell."""
    table = readme.split("| Python (`import mbret`) | CLI |", 1)[1].split("\n\n", 1)[0]
    rows = [line.split(" | ")[0] for line in table.splitlines()[2:]]
    return ["\n".join(re.findall(r"`([^`]+)`", row)) for row in rows]


def test_readme_python_uses_the_top_level_api() -> None:
    """Every Python example in the README (the tour table and each code block) names the public API as
    `mbret.X`, each such name exists, and whatever is still imported from a submodule is not a top-level name."""
    import ast
    import importlib

    import mbret

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    blocks, cells = _python_blocks(readme), _tour_cells(readme)
    assert len(blocks) >= 6 and len(cells) >= 14
    used: set[str] = set()
    for source in blocks + cells:
        tree = ast.parse(source)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "mbret":
                assert node.attr in mbret.__all__, f"README uses mbret.{node.attr}, which mbret does not export"
                used.add(node.attr)
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mbret."):
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(module, alias.name), f"README imports {alias.name} from {node.module}"
                    assert alias.name not in mbret.__all__, (
                        f"README imports {alias.name} from {node.module}: use mbret."
                    )
    assert {"Retriever", "FusedRetriever", "evaluate", "load_corpus", "load_dataset", "rerank", "Client"} <= used
    # the table's other helpers live where the note under it says
    homes = ("mbret.eval.suite", "mbret.eval.registry", "mbret.eval.report")
    for cell in cells:
        for node in ast.walk(ast.parse(cell)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                name = node.func.id
                assert any(hasattr(importlib.import_module(m), name) for m in homes), f"tour table: {name}"
                assert f"`{name}`" in readme.split("| Python (`import mbret`)", 1)[1].split("\n\n", 2)[1]


def test_readme_lock_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's change-that-always-lands example, on an index of the bundled SciFact slice."""
    import mbret

    corpus = mbret.load_corpus(REPO / "examples" / "scifact-mini" / "corpus.jsonl")
    mbret.Retriever.build(corpus, None, mode="bm25", show_progress=False).save(tmp_path / "runs" / "scifact-mini")
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = next(b for b in _python_blocks(readme) if "index_lock(" in b)
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "README.md", "exec"), {})
    index, manifest = mbret.load_index(tmp_path / "runs" / "scifact-mini")
    assert "4983" not in index and len(index) == len(corpus) - 1 and index.generation == 2
