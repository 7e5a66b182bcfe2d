"""One name per concept: each renamed parameter works under its new name, its old spelling still works with a
DeprecationWarning, and indexes written under the old names (manifest kind "maxsim", ColBERT markers in the
prompt fields, PLAID's `bucket_weights` role) still load and search as before. Library errors name the Python
parameter at fault (`ParameterError.parameter`)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from mbret.data.datasets import Dataset
from mbret.errors import ParameterError
from mbret.indexes import INDEX_CLASSES, ExactIndex, ExactMaxSimIndex, Manifest, PlaidIndex, load_index
from mbret.indexes.bm25 import check_params
from mbret.indexes.filters import compile_where
from mbret.retrieval.retriever import check_mode

# --- errors in Python parameter names ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "parameter", "start"),
    [
        (lambda: PlaidIndex(128, nbits=3), "nbits", "3: choose one of"),
        (lambda: check_mode("colbert", "hnsw"), "index_type", "hnsw: mode colbert takes plaid, exact"),
        (lambda: check_mode("sparse"), "mode", "sparse: choose one of"),
        (lambda: check_params({"k9": 1}), "index_params", "k9: bm25 takes"),
        (lambda: check_params({"b": 2}), "index_params", "b=2"),
        (lambda: compile_where("year = 2020", [], ["year"]), "where", "literal values are not allowed"),
        (lambda: compile_where("year = ?", [], ["year"]), "where", "the condition has 1 `?`"),
    ],
)
def test_library_errors_name_the_python_parameter(call, parameter: str, start: str) -> None:  # noqa: ANN001
    with pytest.raises(ParameterError) as caught:
        call()
    error = caught.value
    assert error.parameter == parameter and error.message.startswith(start), str(error)
    assert "--" not in error.message and "torchrun" not in error.message
    assert error.render("--flag") == f"--flag: {error.message}"


def test_params_without_where_names_params() -> None:
    index = ExactIndex(16)
    index.add(["a"], [torch.nn.functional.normalize(torch.randn(3, 16), dim=-1)])
    with pytest.raises(ParameterError) as caught:
        index.search([torch.randn(2, 16)], k=1, params=[1])
    assert caught.value.parameter == "params"


# --- the exact index: ExactIndex, manifest kind "exact" ("maxsim" still loads) -------------------------------


def _exact_manifest(kind: str = "exact") -> Manifest:
    return Manifest(kind=kind, mode="colbert", model="m", dimension=16, normalized=True, max_length=64,
                    num_docs=0, index_type="exact")  # fmt: skip


def test_exact_index_writes_kind_exact_and_loads_indexes_of_kind_maxsim(tmp_path: Path) -> None:
    assert ExactMaxSimIndex is ExactIndex and INDEX_CLASSES["exact"] is INDEX_CLASSES["maxsim"] is ExactIndex
    g = torch.Generator().manual_seed(0)
    docs = [torch.nn.functional.normalize(torch.randn(5, 16, generator=g), dim=-1) for _ in range(6)]
    index = ExactIndex(16)
    index.add([f"d{i}" for i in range(6)], docs)
    index.save(tmp_path, _exact_manifest("maxsim"))  # whatever the caller passes, the current kind is written
    manifest_file = tmp_path / "manifest.json"
    data = json.loads(manifest_file.read_text())
    assert data["kind"] == "exact"
    query = [docs[2][:3]]
    expected = index.search(query, k=3)
    manifest_file.write_text(json.dumps({**data, "kind": "maxsim"}))  # as indexes were written before
    old, manifest = load_index(tmp_path)
    assert isinstance(old, ExactIndex) and manifest.kind == "maxsim"
    assert old.search(query, k=3) == expected


# --- PLAID's codebook role (was bucket_weights) -------------------------------------------------------------


def test_plaid_codebook_role_and_old_bucket_weights_role_load_alike(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(1)
    docs = [torch.nn.functional.normalize(torch.randn(8, 128, generator=g), dim=-1) for _ in range(200)]
    index = PlaidIndex(128, nbits=2, seed=1)
    index.add([f"d{i}" for i in range(len(docs))], docs)
    manifest = Manifest(kind="plaid", mode="colbert", model="m", dimension=128, normalized=True, max_length=64,
                        num_docs=0, index_type="plaid")  # fmt: skip
    index.save(tmp_path, manifest)
    manifest_file = tmp_path / "manifest.json"
    data = json.loads(manifest_file.read_text())
    assert "codebook" in data["files"] and "bucket_weights" not in data["files"]
    queries = [docs[7][:4], docs[150][:4]]
    expected = load_index(tmp_path)[0].search(queries, k=5)
    assert [row[0][0] for row in expected] == ["d7", "d150"]
    # an index written before the rename: the same array under the role (and file) bucket_weights
    (tmp_path / data["files"]["codebook"]).rename(tmp_path / "bucket_weights.npy")
    files = {("bucket_weights" if role == "codebook" else role): name for role, name in data["files"].items()}
    files["bucket_weights"] = "bucket_weights.npy"
    manifest_file.write_text(json.dumps({**data, "files": files}))
    old, _ = load_index(tmp_path)
    assert old.search(queries, k=5) == expected


# --- keep_identical_ids (was ignore_identical_ids, its opposite) --------------------------------------------


@pytest.fixture()
def self_matching() -> Dataset:
    """Queries whose ids are documents' ids, each document matching its own query best."""
    corpus = {
        "q1": {"title": "", "text": "smoking and lung cancer risk"},
        "q2": {"title": "", "text": "vitamin levels in the blood"},
        "d3": {"title": "", "text": "lung cancer among smokers"},
        "d4": {"title": "", "text": "blood vitamin measurements"},
    }
    queries = {"q1": "smoking lung cancer", "q2": "vitamin blood levels"}
    qrels = {"q1": {"d3": 1}, "q2": {"d4": 1}}
    return Dataset("self", corpus, queries, qrels)


def test_keep_identical_ids_and_its_deprecated_opposite(self_matching: Dataset) -> None:
    from mbret.eval.runner import evaluate

    dropped = evaluate(self_matching, mode="bm25", show_progress=False, with_manifest=False)
    kept = evaluate(self_matching, mode="bm25", keep_identical_ids=True, show_progress=False, with_manifest=False)
    assert "q1" not in dropped.run["q1"] and "q1" in kept.run["q1"]
    assert dropped.settings["keep_identical_ids"] is False and kept.settings["keep_identical_ids"] is True
    assert "ignore_identical_ids" not in kept.settings
    with pytest.warns(DeprecationWarning, match="ignore_identical_ids= is deprecated; use keep_identical_ids="):
        old = evaluate(self_matching, mode="bm25", ignore_identical_ids=False, show_progress=False,
                       with_manifest=False)  # fmt: skip
    assert old.run == kept.run and old.settings["keep_identical_ids"] is True
    with pytest.raises(TypeError, match="unexpected keyword argument 'ignore_identical'"):
        evaluate(self_matching, mode="bm25", ignore_identical=False, show_progress=False)


def test_suite_yaml_reads_keep_identical_ids_and_the_old_key(tmp_path: Path) -> None:
    from mbret.eval.registry import read_suite_yaml

    (tmp_path / "a").mkdir()
    path = tmp_path / "suite.yaml"
    path.write_text("datasets:\n  - name: a\n    path: a\n    keep_identical_ids: true\n", encoding="utf-8")
    assert read_suite_yaml(path).datasets[0].keep_identical_ids is True
    path.write_text("datasets:\n  - name: a\n    path: a\n    ignore_identical_ids: true\n", encoding="utf-8")
    with pytest.warns(DeprecationWarning, match="use keep_identical_ids"):
        assert read_suite_yaml(path).datasets[0].keep_identical_ids is False


# --- rerank_depth (was depth) -------------------------------------------------------------------------------


class _Reversing:
    """A reranker that scores candidates in reverse order of the first stage."""

    name, mode = "reverse", "test"

    def rerank(self, queries, candidates, k=None):  # noqa: ANN001, ANN201
        from mbret.types import Hit

        return [[Hit(doc_id=d, score=float(i)) for i, (d, _) in enumerate(row)] for row in candidates]


def test_rerank_run_takes_rerank_depth_and_the_old_depth(self_matching: Dataset) -> None:
    from mbret.eval.runner import rerank_run

    run = {"q1": [("d3", 2.0), ("d4", 1.0), ("q2", 0.5)]}
    new = rerank_run(self_matching, run, _Reversing(), rerank_depth=2)
    assert set(new["q1"]) == {"d3", "d4"}
    with pytest.warns(DeprecationWarning, match="depth= is deprecated; use rerank_depth="):
        assert rerank_run(self_matching, run, _Reversing(), depth=2) == new
    with pytest.raises(ParameterError) as caught:
        rerank_run(self_matching, run, _Reversing(), rerank_depth=0)
    assert caught.value.parameter == "rerank_depth"


# --- document_length / query_length for the dense head (max_length: the old name) ---------------------------


def test_dense_lengths_and_max_length_alias(tiny_model: str) -> None:
    from mbret.retrieval.dense import DenseEncoder

    encoder = DenseEncoder.load(tiny_model, device="cpu", document_length=16)
    assert encoder.document_length == encoder.query_length == 16  # queries default to the document length
    with pytest.warns(DeprecationWarning, match="max_length= is deprecated; use document_length="):
        old = DenseEncoder.load(tiny_model, device="cpu", max_length=16)
    assert old.document_length == 16
    text = "protein " * 40
    np.testing.assert_allclose(old.encode_queries([text]), encoder.encode_queries([text]), atol=1e-6)
    short = DenseEncoder.load(tiny_model, device="cpu", document_length=16, query_length=4)
    assert short.query_length == 4 and short.count_cut_queries([text]) == 1
    np.testing.assert_allclose(short.encode_corpus([text], show_progress=False),
                               encoder.encode_corpus([text], show_progress=False), atol=1e-6)  # fmt: skip
    assert not np.allclose(short.encode_queries([text]), encoder.encode_queries([text]))
    with pytest.raises(ParameterError) as caught:
        DenseEncoder.load(tiny_model, device="cpu", query_length=0)
    assert caught.value.parameter == "query_length"


def test_dense_index_records_and_reloads_its_lengths(tiny_model: str, small_corpus, tmp_path: Path) -> None:  # noqa: ANN001
    from mbret.retrieval import Retriever

    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # the new names raise no deprecation
        built = Retriever.build(small_corpus, tiny_model, document_length=32, query_length=8, show_progress=False)
    built.save(tmp_path / "idx")
    data = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert (data["document_length"], data["query_length"], data["max_length"]) == (32, 8, 32)
    loaded = Retriever.load(tmp_path / "idx")
    assert (loaded.encoder.document_length, loaded.encoder.query_length) == (32, 8)


# --- ColBERT markers in query_marker / document_marker (older manifests: the prompt fields) -----------------


def test_colbert_markers_live_in_marker_fields_and_old_manifests_load(
    tiny_model: str,
    small_corpus,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    from mbret.retrieval import ColBERTEncoder, Retriever

    encoder = ColBERTEncoder.load(tiny_model, device="cpu", markers="text", document_length=32)
    built = Retriever.build(small_corpus, encoder, index_type="exact", show_progress=False)
    path = tmp_path / "idx"
    built.save(path)
    manifest_file = path / "manifest.json"
    data = json.loads(manifest_file.read_text())
    assert (data["query_marker"], data["document_marker"]) == ("[Q] ", "[D] ")
    assert data["query_prompt"] is None and data["document_prompt"] is None
    queries = ["smoking cancer risk", "vitamin in blood"]
    expected = [[(h.doc_id, round(h.score, 4)) for h in row] for row in Retriever.load(path).search(queries, k=3)]
    old = {**data, "query_prompt": "[Q] ", "document_prompt": "[D] "}  # as written before the marker fields
    del old["query_marker"], old["document_marker"]
    manifest_file.write_text(json.dumps(old))
    again = Retriever.load(path)
    assert again.encoder.prompts == {"query": "[Q] ", "document": "[D] "}
    assert [[(h.doc_id, round(h.score, 4)) for h in row] for row in again.search(queries, k=3)] == expected
