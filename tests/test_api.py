"""The public API at the top: `import mbret` gives the names the README uses, imports each on first use
(so `import mbret` and the light names load no torch, faiss, transformers or numpy), `__version__` is the
package's version, and the HTTP client is light."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import typing

import pytest

import mbret

from .conftest import REPO

PUBLIC = {
    "Retriever",
    "FusedRetriever",
    "load_corpus",
    "load_dataset",
    "load_index",
    "evaluate",
    "rerank",
    "Client",
    "SearchParams",
    "Hit",
    "Document",
    "MbretError",
    "InputError",
    "ParameterError",
    "IndexFormatError",
    "StaleIndexError",
    "MbretWarning",
}
HEAVY = ("torch", "faiss", "transformers", "sentence_transformers", "numpy")


def _loaded_after(code: str) -> list[str]:
    """The heavy modules a fresh interpreter holds after running `code`."""
    probe = f"import sys\n{code}\nprint(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO)
    return eval(out.stdout.strip().splitlines()[-1])


def test_import_mbret_gives_the_public_names() -> None:
    assert set(mbret.__all__) == PUBLIC | {"__version__"}
    assert set(dir(mbret)) >= PUBLIC
    assert set(mbret._EXPORTS) == PUBLIC  # the lazy table and the literal __all__ agree
    for name in PUBLIC:
        assert getattr(mbret, name) is not None
    # the same objects as where they are defined
    from mbret.data import load_corpus, load_dataset
    from mbret.eval.runner import evaluate
    from mbret.indexes import load_index
    from mbret.retrieval import FusedRetriever, Retriever, rerank
    from mbret.retrieval.retriever import Hit
    from mbret.types import Document, SearchParams

    assert (mbret.Retriever, mbret.FusedRetriever, mbret.rerank) == (Retriever, FusedRetriever, rerank)
    assert (mbret.load_corpus, mbret.load_dataset, mbret.evaluate) == (load_corpus, load_dataset, evaluate)
    assert (mbret.load_index, mbret.Hit, mbret.Document, mbret.SearchParams) == (
        load_index,
        Hit,
        Document,
        SearchParams,
    )
    with pytest.raises(AttributeError, match="no_such_name"):
        mbret.no_such_name  # noqa: B018


def test_import_is_lazy_and_the_light_names_stay_light() -> None:
    assert _loaded_after("import mbret") == []
    light = "import mbret\n" + "\n".join(
        f"mbret.{name}"
        for name in ("Client", "SearchParams", "Hit", "Document", "MbretError", "ParameterError", "MbretWarning")
    )
    assert _loaded_after(light) == []
    assert _loaded_after("import mbret.client\nmbret.client.Client('http://127.0.0.1:1')") == []
    assert _loaded_after("from mbret import Client, Hit, SearchParams") == []
    # lazy, not absent: the heavy names load what they need when first used
    assert "torch" in _loaded_after("import mbret\nmbret.Retriever")


def test_version_lives_in_one_place() -> None:
    from mbret._version import __version__

    assert mbret.__version__ == __version__ == importlib.metadata.version("mbret")
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert 'dynamic = ["version"]' in pyproject and 'attr = "mbret._version.__version__"' in pyproject
    assert f'"{__version__}"' not in pyproject.split("[project.optional-dependencies]")[0]


def test_types_of_the_api() -> None:
    import mbret.retrieval
    from mbret.indexes import Index, Manifest

    assert typing.get_type_hints(mbret.load_index)["return"] == tuple[Index, Manifest]
    assert "ColBERTEncoder" in mbret.retrieval.__all__


def test_client_names_its_parameter() -> None:
    with pytest.raises(mbret.ParameterError) as bad:
        mbret.Client("127.0.0.1:8000")
    assert bad.value.parameter == "url" and bad.value.render("--url").startswith("--url: 127.0.0.1:8000: ")
