"""Per-call search settings (`SearchParams`) for every index type: FAISS's nprobe and ef_search and PLAID's
budgets per search, over each index's saved defaults, through the Retriever, fusion, evaluate, the HTTP
service and the client; the deprecated spellings; `params` as the values of `where`'s `?` only."""

from __future__ import annotations

import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from mbret.client import Client
from mbret.data.datasets import Dataset
from mbret.errors import ParameterError
from mbret.eval.runner import evaluate
from mbret.indexes import Bm25Index, ExactMaxSimIndex, FaissIndex, Manifest, PlaidIndex, load_index, new_index
from mbret.retrieval.fusion import FusedRetriever
from mbret.retrieval.retriever import Retriever
from mbret.types import SearchParams

N_DOCS, DIM = 2000, 32


def _unit(rng: np.random.Generator, n: int, d: int = DIM) -> np.ndarray:
    centers = rng.normal(size=(20, d))
    x = centers[rng.integers(0, 20, size=n)] + 0.3 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def vectors() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return _unit(rng, N_DOCS), _unit(rng, 40)


@pytest.fixture(scope="module")
def ivfpq(vectors: tuple[np.ndarray, np.ndarray]) -> FaissIndex:
    """An IVF-PQ index built to probe one list by default."""
    index = FaissIndex(DIM, "ivfpq", {"nprobe": 1})
    index.add([f"d{i}" for i in range(N_DOCS)], vectors[0])
    return index


def _recall(hits: list[list[tuple[str, float]]], docs: np.ndarray, queries: np.ndarray, k: int = 10) -> float:
    truth = np.argsort(-(queries @ docs.T), axis=1)[:, :k]
    return float(np.mean([len({h[0] for h in row} & {f"d{i}" for i in t}) / k for row, t in zip(hits, truth)]))


def _faiss_manifest(index_type: str) -> Manifest:
    return Manifest(
        kind="faiss", mode="dense", model="m", dimension=DIM, normalized=True, max_length=16, num_docs=0,
        index_type=index_type,
    )  # fmt: skip


def test_ivfpq_nprobe_is_per_call_over_the_saved_default(
    ivfpq: FaissIndex, vectors: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    docs, queries = vectors
    nlist = int(ivfpq.params["nlist"])
    default = ivfpq.search(queries, k=10)
    one = ivfpq.search(queries, k=10, search_params=SearchParams(nprobe=1))
    every = ivfpq.search(queries, k=10, search_params=SearchParams(nprobe=nlist))
    assert one == default  # the build's nprobe=1 is the default
    assert _recall(every, docs, queries) > _recall(one, docs, queries) + 0.1
    # the call changed nothing on the index: its default, FAISS's own nprobe, the next default search
    assert ivfpq.params["nprobe"] == 1 and ivfpq.index.nprobe == 1
    assert ivfpq.search(queries, k=10) == default
    # settings of other index types are ignored (one SearchParams serves a fused search)
    assert ivfpq.search(queries, k=10, search_params=SearchParams(ef_search=500, n_ivf_probe=9)) == default
    ivfpq.save(tmp_path / "ivfpq", _faiss_manifest("ivfpq"))
    loaded, manifest = load_index(tmp_path / "ivfpq")
    assert manifest.index_params["nprobe"] == 1 and loaded.search(queries, k=10) == default
    assert loaded.search(queries, k=10, search_params=SearchParams(nprobe=nlist)) == every


def test_hnsw_ef_search_is_per_call(vectors: tuple[np.ndarray, np.ndarray]) -> None:
    docs, queries = vectors
    index = new_index("dense", "hnsw", DIM, {"M": 4, "ef_construction": 16, "ef_search": 10})
    index.add([f"d{i}" for i in range(N_DOCS)], docs)
    narrow = index.search(queries, k=10)
    wide = index.search(queries, k=10, search_params=SearchParams(ef_search=512))
    assert _recall(wide, docs, queries) > _recall(narrow, docs, queries) + 0.2
    assert index.params["ef_search"] == 10 and index.search(queries, k=10) == narrow
    assert index.search(queries, k=10, search_params=SearchParams(ef_search=10)) == narrow
    assert index.search_settings == ("ef_search",)


def _plaid_corpus() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    topics = torch.nn.functional.normalize(torch.randn(30, DIM, generator=g), dim=-1)

    def doc(n: int) -> torch.Tensor:
        tokens = topics[torch.randint(0, 30, (n,), generator=g)] + 0.1 * torch.randn(n, DIM, generator=g)
        return torch.nn.functional.normalize(tokens, dim=-1)

    return [doc(16) for _ in range(300)], [doc(6) for _ in range(8)]


@pytest.fixture(scope="module")
def plaid() -> tuple[PlaidIndex, list[torch.Tensor]]:
    docs, queries = _plaid_corpus()
    index = PlaidIndex(DIM, nbits=2, num_centroids=32)
    index.add([f"d{i}" for i in range(len(docs))], docs)
    return index, queries


TIGHT = SearchParams(n_ivf_probe=1, n_candidates=4, n_full_scores=4)


def test_plaid_budgets_are_per_call_and_leave_the_default(plaid: tuple[PlaidIndex, list[torch.Tensor]]) -> None:
    index, queries = plaid
    default = index.search(queries, k=10)
    assert all(len(row) == 10 for row in default)
    tight = index.search(queries, k=10, search_params=TIGHT)
    assert all(len(row) == 4 for row in tight)  # only n_full_scores documents are scored, so at most 4 hits
    assert index.search_params == SearchParams() and index.search(queries, k=10) == default
    # per-call settings sit over the index's own: the same hits as an index whose default they are
    index.search_params = SearchParams(n_candidates=4)
    try:
        assert index.search(queries, k=10, search_params=SearchParams(n_ivf_probe=1, n_full_scores=4)) == tight
    finally:
        index.search_params = SearchParams()


def test_plaid_defaults_from_new_index_are_saved_and_reloaded(
    plaid: tuple[PlaidIndex, list[torch.Tensor]], tmp_path: Path
) -> None:
    _, queries = plaid
    index = new_index("colbert", "plaid", DIM, {"nbits": 2, "num_centroids": 32, **TIGHT.given()})
    assert index.search_params == TIGHT
    docs, _ = _plaid_corpus()
    index.add([f"d{i}" for i in range(len(docs))], docs)
    manifest = Manifest(
        kind="plaid", mode="colbert", model="m", dimension=DIM, normalized=True, max_length=16, num_docs=0,
        index_type="plaid",
    )  # fmt: skip
    index.save(tmp_path / "plaid", manifest)
    loaded, saved = load_index(tmp_path / "plaid")
    assert {name: saved.index_params[name] for name in TIGHT.given()} == TIGHT.given()
    assert loaded.search_params == TIGHT and all(len(row) == 4 for row in loaded.search(queries, k=10))
    wide = SearchParams(n_candidates=64, n_full_scores=64)
    assert all(len(row) == 10 for row in loaded.search(queries, k=10, search_params=wide))


def test_threads_with_different_settings_get_their_serial_results(
    ivfpq: FaissIndex, plaid: tuple[PlaidIndex, list[torch.Tensor]], vectors: tuple[np.ndarray, np.ndarray]
) -> None:
    queries = vectors[1]
    plaid_index, plaid_queries = plaid
    nlist = int(ivfpq.params["nlist"])
    jobs: list[tuple[Any, Any, SearchParams]] = [(ivfpq, queries, SearchParams(nprobe=n)) for n in (1, 3, 8, nlist)] + [
        (plaid_index, plaid_queries, s) for s in (TIGHT, SearchParams(n_ivf_probe=4, n_full_scores=64))
    ]
    serial = [index.search(q, k=10, search_params=s) for index, q, s in jobs]
    assert len({str(r) for r in serial[:4]}) > 1  # the settings do change the results
    found: dict[int, list[Any]] = {i: [] for i in range(len(jobs))}
    errors: list[BaseException] = []
    start = threading.Barrier(len(jobs))

    def run(i: int) -> None:
        index, q, settings = jobs[i]
        try:
            start.wait()
            for _ in range(5):
                found[i].append(index.search(q, k=10, search_params=settings))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors
    for i, expected in enumerate(serial):
        assert found[i] == [expected] * 5
    assert ivfpq.params["nprobe"] == 1 and plaid_index.search_params == SearchParams()


def test_exact_and_bm25_accept_and_ignore_settings() -> None:
    docs, queries = _plaid_corpus()
    exact = ExactMaxSimIndex(DIM)
    exact.add([f"d{i}" for i in range(len(docs))], docs)
    assert exact.search(queries, k=5, search_params=TIGHT) == exact.search(queries, k=5)
    bm25 = Bm25Index()
    bm25.add(["a", "b"], ["vitamin levels in blood", "brain activity"])
    assert bm25.search(["vitamin"], k=2, search_params=SearchParams(nprobe=1)) == bm25.search(["vitamin"], k=2)
    assert exact.search_settings == () and bm25.search_settings == ()


def test_settings_in_the_filter_slots_are_refused(
    plaid: tuple[PlaidIndex, list[torch.Tensor]], ivfpq: FaissIndex, vectors: tuple[np.ndarray, np.ndarray]
) -> None:
    index, queries = plaid
    for name, call in [
        ("params", lambda: index.search(queries, 5, None, TIGHT)),
        ("where", lambda: index.search(queries, 5, TIGHT)),
        ("params", lambda: ivfpq.search(vectors[1], 5, params=SearchParams(nprobe=4))),
    ]:
        with pytest.raises(ParameterError) as caught:
            call()
        assert caught.value.parameter == name and "search_params" in caught.value.message


def test_deprecated_spellings_still_work(plaid: tuple[PlaidIndex, list[torch.Tensor]]) -> None:
    from mbret.indexes import PlaidSearchParams

    index, queries = plaid
    with pytest.warns(DeprecationWarning, match="SearchParams"):
        old = PlaidSearchParams(n_ivf_probe=1, n_candidates=4, n_full_scores=4)
    assert isinstance(old, SearchParams) and old.given() == TIGHT.given()
    assert old.resolved(10).n_candidates == 4 and old.full_scores(10, 3) == 4
    assert index.search(queries, k=10, search_params=old) == index.search(queries, k=10, search_params=TIGHT)
    with pytest.warns(DeprecationWarning, match="search_params"):
        built = PlaidIndex(DIM, nbits=2, search=TIGHT)
    assert built.search_params == TIGHT and built.params["n_candidates"] == 4


class _Queries:
    """A dense encoder stub whose query vectors are given (by query text): Retriever-level tests without a model."""

    name, device, dimension, query_prompt, document_prompt = "stub", "cpu", DIM, None, None
    max_length = document_length = query_length = 16  # what a dense index's manifest records of its model
    query_cut = None

    def __init__(self, vectors: dict[str, np.ndarray]) -> None:
        self.vectors = vectors

    def encode_queries(self, queries: Sequence[str], batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        return np.stack([self.vectors[q] for q in queries])

    def count_cut_queries(self, queries: Sequence[str]) -> int:
        return 0


def test_retriever_defaults_per_call_settings_and_evaluate(
    ivfpq: FaissIndex, vectors: tuple[np.ndarray, np.ndarray]
) -> None:
    docs, queries = vectors
    nlist = int(ivfpq.params["nlist"])
    texts = [f"q{i}" for i in range(len(queries))]
    retriever = Retriever(encoder=_Queries(dict(zip(texts, queries))), index=ivfpq)  # type: ignore[arg-type]
    one = [[(h.doc_id, h.score) for h in row] for row in retriever.search(texts, k=10)]
    assert one == ivfpq.search(queries, k=10)
    every = ivfpq.search(queries, k=10, search_params=SearchParams(nprobe=nlist))
    per_call = retriever.search(texts, k=10, search_params=SearchParams(nprobe=nlist))
    assert [[(h.doc_id, h.score) for h in row] for row in per_call] == every
    # a retriever's own defaults, under each call's
    retriever.search_params = SearchParams(nprobe=nlist)
    assert [[(h.doc_id, h.score) for h in row] for row in retriever.search(texts, k=10)] == every
    again = retriever.search(texts, k=10, search_params=SearchParams(nprobe=1))
    assert [[(h.doc_id, h.score) for h in row] for row in again] == one
    retriever.search_params = None
    with pytest.warns(DeprecationWarning, match="search_params"):
        retriever.configure_search(SearchParams(nprobe=nlist))
    assert retriever.search_params == SearchParams(nprobe=nlist) and ivfpq.params["nprobe"] == 1
    retriever.search_params = None

    # evaluate searches with the given settings, records them, and leaves the retriever's alone
    truth = np.argsort(-(queries @ docs.T), axis=1)[:, :10]
    dataset = Dataset(
        "synthetic",
        corpus={f"d{i}": {"title": "", "text": ""} for i in range(N_DOCS)},
        queries=dict(zip(texts, texts)),
        qrels={q: {f"d{i}": 1 for i in row} for q, row in zip(texts, truth)},
    )
    runs = {
        n: evaluate(
            dataset,
            retriever,
            metrics=["recall@10"],
            k=10,
            with_manifest=False,
            show_progress=False,
            search_params=SearchParams(nprobe=n),
        )  # fmt: skip
        for n in (1, nlist)
    }
    assert runs[nlist].metrics["recall@10"] > runs[1].metrics["recall@10"] + 0.1
    assert runs[1].settings["search_params"] == {"nprobe": 1}
    assert runs[nlist].settings["search_params"] == {"nprobe": nlist}
    assert retriever.search_params is None and ivfpq.params["nprobe"] == 1


def test_fused_search_passes_one_settings_object_to_every_index(
    ivfpq: FaissIndex, vectors: tuple[np.ndarray, np.ndarray]
) -> None:
    docs, queries = vectors
    flat = FaissIndex(DIM, "flat")
    flat.add([f"d{i}" for i in range(N_DOCS)], docs)
    texts = [f"q{i}" for i in range(len(queries))]
    encoder = _Queries(dict(zip(texts, queries)))
    fused = FusedRetriever(
        [Retriever(encoder=encoder, index=ivfpq), Retriever(encoder=encoder, index=flat)],  # type: ignore[arg-type]
        fusion_depth=10,
    )
    nlist = int(ivfpq.params["nlist"])
    wide = fused.search(texts, k=10, search_params=SearchParams(nprobe=nlist, n_ivf_probe=2))
    assert fused.search(texts, k=10) != wide  # the ivfpq index read nprobe; the flat one ignored both
    fused.search_params = SearchParams(nprobe=nlist)
    assert fused.search(texts, k=10) == wide
    with pytest.warns(DeprecationWarning):
        fused.configure_search(SearchParams(nprobe=1))
    assert fused.search_params == SearchParams(nprobe=1) and ivfpq.params["nprobe"] == 1


@pytest.fixture(scope="module")
def served_ivfpq(tmp_path_factory: pytest.TempPathFactory, tiny_model: str) -> tuple[Path, int]:
    """A dense IVF-PQ index of the service tests' corpus, of 8 lists and probing one by default."""
    from .serving import served_corpus

    path = tmp_path_factory.mktemp("served") / "ivfpq"
    params = {"nlist": 8, "m": 4, "nbits": 4, "nprobe": 1}
    retriever = Retriever.build(
        served_corpus(), tiny_model, index_type="ivfpq", index_params=params, show_progress=False
    )
    retriever.save(path)
    return path, 8


def test_http_search_takes_nprobe_per_request(served_ivfpq: tuple[Path, int]) -> None:
    from mbret.serve import ServeConfig, create_app

    path, nlist = served_ivfpq
    with TestClient(create_app(ServeConfig(indexes=(str(path),)))) as http:

        def search(**fields: Any) -> Any:
            return http.post("/indexes/ivfpq/search", json={"queries": ["vitamin levels"], "k": 30, **fields})

        # one list of 8 holds fewer than 30 of the 40 documents; every list holds them all
        assert len(search().json()["results"][0]) < 30
        assert len(search(nprobe=nlist).json()["results"][0]) == 30
        assert len(search().json()["results"][0]) < 30  # the request's nprobe was its own
        bad = search(nprobe=0)
        assert bad.status_code == 422 and bad.json()["error"]["message"].startswith("nprobe:")
        other = search(ef_search=64)
        assert other.status_code == 400 and other.json()["error"]["message"].startswith("ef_search:")
        assert "nprobe" in http.get("/openapi.json").text


def test_client_sends_search_params_as_request_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[Any] = []

    def request(self: Client, method: str, path: str, body: Any = None) -> Any:
        sent.append(body)
        return {"results": [[]]}

    monkeypatch.setattr(Client, "_request", request)
    client = Client("http://127.0.0.1:1")
    client.search("i", ["q"], search_params=SearchParams(nprobe=3, ef_search=40))
    assert sent[-1] == {"queries": ["q"], "k": 10, "return_documents": False, "nprobe": 3, "ef_search": 40}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        client.search("i", ["q"])
    assert set(sent[-1]) == {"queries", "k", "return_documents"}
    with pytest.warns(DeprecationWarning, match="search_params"):
        client.search("i", ["q"], n_ivf_probe=4, n_candidates=None)
    assert sent[-1]["n_ivf_probe"] == 4 and "n_candidates" not in sent[-1]
