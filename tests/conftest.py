"""Shared fixtures: a tiny random ModernBERT built offline, a small corpus, and a CLI runner."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The real datasets: ../shared/data beside the repo in CI and sessions; MBRET_SHARED_DATA points elsewhere.
SHARED = Path(os.environ.get("MBRET_SHARED_DATA") or REPO.parent / "shared" / "data")
SCIFACT = SHARED / "beir" / "scifact"
SCIFACT_MINI = REPO / "examples" / "scifact-mini"

# Tests never reach the network: set before any test module imports huggingface_hub (it reads these once),
# or each hub lookup waits out its retries (about 45 s a test) wherever the hub cannot be reached.
for _name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_name, "1")


def require_shared(path: Path) -> Path:
    """`path` under the shared data, or the test fails with one line saying where it is expected (no
    traceback: a missing copy of the data is a set-up fact, not a bug to debug)."""
    if not path.is_dir():
        pytest.fail(
            f"shared/data/{path.relative_to(SHARED)} is missing: expected beside the repo at {path} "
            "(MBRET_SHARED_DATA names another copy of shared/data)",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def scifact() -> Path:
    """BEIR SciFact (5,183 documents, 300 test queries) from the shared data."""
    return require_shared(SCIFACT)


def free_port() -> int:
    """A port no one listens on now (the OS picks it), so runs side by side never collide on a fixed one."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that reads the shared real data (a `scifact...` fixture) takes minutes: it is slow wherever it is."""
    for item in items:
        if any(name.startswith("scifact") for name in getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start what a selected test will wait on but that needs no CPU now (Chromium's download for the search
    page check), so that it overlaps the CPU-bound tests instead of adding to them."""
    if session.config.option.collectonly:
        return
    if any(item.nodeid.startswith("tests/test_serve_page.py") for item in session.items):
        from tests.test_serve_page import start_chromium_install

        start_chromium_install()


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ["MBRET_CACHE"] = str(tmp_path_factory.mktemp("mbret-cache"))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    from mbret.retrieval.backbone import build_tiny_modernbert

    return str(build_tiny_modernbert(tmp_path_factory.mktemp("models") / "tiny"))


@pytest.fixture()
def small_corpus() -> dict[str, dict[str, str]]:
    texts = [
        ("d1", "Cancer risk", "smoking increased the cancer risk in patients"),
        ("d2", "Brain study", "the brain study of mice showed reduced activity"),
        ("d3", "", "vitamin levels in blood were lower during the trial"),
        ("d4", "Heart", "heart disease and lung infection are associated"),
        ("d5", "Retrieval", "dense vector search over a corpus of documents"),
        ("d6", "Immune", "immune response to virus infection in human cells"),
    ]
    return {d: {"title": t, "text": x} for d, t, x in texts}


def write_beir(
    path: Path,
    corpus: dict[str, dict[str, str]],
    queries: dict[str, str],
    qrels: dict[str, dict[str, int]],
    split: str = "test",
) -> Path:
    (path / "qrels").mkdir(parents=True, exist_ok=True)
    with open(path / "corpus.jsonl", "w", encoding="utf-8") as fh:
        for doc_id, doc in corpus.items():
            fh.write(json.dumps({"_id": doc_id, **doc}) + "\n")
    with open(path / "queries.jsonl", "w", encoding="utf-8") as fh:
        for qid, text in queries.items():
            fh.write(json.dumps({"_id": qid, "text": text}) + "\n")
    with open(path / "qrels" / f"{split}.tsv", "w", encoding="utf-8") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for qid, docs in qrels.items():
            for doc_id, rel in docs.items():
                fh.write(f"{qid}\t{doc_id}\t{rel}\n")
    return path


@pytest.fixture()
def small_beir(tmp_path: Path, small_corpus: dict[str, dict[str, str]]) -> Path:
    queries = {"q1": "does smoking cause cancer", "q2": "brain activity in mice", "q3": "virus immune response"}
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1}, "q3": {"d6": 2, "d4": 0}}
    return write_beir(tmp_path / "small", small_corpus, queries, qrels)


class CliResult:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err


@pytest.fixture()
def cli(capsys: pytest.CaptureFixture[str]):
    """Run `mbret ARGS...` in-process; returns exit code, stdout and stderr."""
    from mbret.cli import run

    def invoke(*args: str | Path) -> CliResult:
        capsys.readouterr()
        code = run([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return invoke


SCIFACT_SUITE = REPO / "examples" / "suites" / "scifact.yaml"


def _run_cli(*args: str | Path) -> None:
    from mbret.cli import run

    code = run([str(a) for a in args])
    assert code == 0, f"mbret {' '.join(map(str, args))} exited {code}"


SCIFACT_SUITE_PATH = "../../../shared/data/beir/scifact"  # the dataset path the shipped suite file names


def _suite_file(scifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/suites/scifact.yaml as shipped, or (with MBRET_SHARED_DATA) a copy that reads `scifact`."""
    if scifact.resolve() == (SCIFACT_SUITE.parent / SCIFACT_SUITE_PATH).resolve():
        return SCIFACT_SUITE
    text = SCIFACT_SUITE.read_text(encoding="utf-8")
    assert f"path: {SCIFACT_SUITE_PATH}\n" in text, f"{SCIFACT_SUITE} no longer names {SCIFACT_SUITE_PATH}"
    text = text.replace(f"path: {SCIFACT_SUITE_PATH}\n", f"path: {scifact}\n")
    copy = tmp_path_factory.mktemp("suite-file") / SCIFACT_SUITE.name
    copy.write_text(text, encoding="utf-8")
    return copy


@pytest.fixture(scope="session")
def scifact_dense_suite(scifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`mbret eval --suite examples/suites/scifact.yaml --model minilm` (dense), run once per session, index
    kept (the ColBERT checks compare with it on other query sets)."""
    out = tmp_path_factory.mktemp("suite") / "dense"
    suite = _suite_file(scifact, tmp_path_factory)
    _run_cli("eval", "--suite", suite, "--model", "minilm", "--output", out, "--save-index")
    return out


@pytest.fixture(scope="session")
def scifact_colbert_suite(scifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same suite with the ColBERT head over MiniLM, exact MaxSim, index kept for the PLAID fidelity check."""
    out = tmp_path_factory.mktemp("suite") / "colbert"
    suite = _suite_file(scifact, tmp_path_factory)
    _run_cli(
        "eval", "--suite", suite, "--model", "minilm", "--mode", "colbert", "--index-type", "exact",
        "--output", out, "--save-index",
    )  # fmt: skip
    return out


@pytest.fixture(scope="session")
def served_indexes(tmp_path_factory: pytest.TempPathFactory, tiny_model: str) -> dict[str, Path]:
    """A dense flat, a ColBERT PLAID and a ColBERT exact index of `serving.served_corpus()`, built once;
    tests copy them."""
    from mbret.retrieval import Retriever

    from .serving import served_corpus

    root = tmp_path_factory.mktemp("served")
    out = {}
    for mode, index_type in (("dense", "flat"), ("colbert", "plaid"), ("colbert", "exact")):
        retriever = Retriever.build(served_corpus(), tiny_model, mode=mode, index_type=index_type, show_progress=False)
        retriever.save(root / index_type)
        out[index_type] = root / index_type
    return out
