"""FAISS indexes: exactness of flat, recall of hnsw/ivfpq, stable ids on add/delete, atomic saves."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mbret.errors import IndexFormatError, MbretError
from mbret.indexes import FaissIndex, Manifest, base


def _unit(rng: np.random.Generator, n: int, d: int = 32) -> np.ndarray:
    centers = rng.normal(size=(20, d))
    x = centers[rng.integers(0, 20, size=n)] + 0.3 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _manifest() -> Manifest:
    return Manifest(
        kind="faiss",
        mode="dense",
        model="m",
        dimension=32,
        normalized=True,
        max_length=16,
        num_docs=0,
        index_type="flat",
    )


@pytest.fixture(scope="module")
def vectors() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return _unit(rng, 2000), _unit(rng, 50)


def test_flat_is_exact(vectors: tuple[np.ndarray, np.ndarray]) -> None:
    docs, queries = vectors
    index = FaissIndex(32, "flat")
    index.add([f"d{i}" for i in range(len(docs))], docs)
    hits = index.search(queries, k=5)
    truth = np.argsort(-(queries @ docs.T), axis=1)[:, :5]
    assert [[h[0] for h in row] for row in hits] == [[f"d{i}" for i in row] for row in truth]
    np.testing.assert_allclose(hits[0][0][1], float(queries[0] @ docs[truth[0, 0]]), rtol=1e-5)


@pytest.mark.parametrize(("index_type", "min_recall"), [("hnsw", 0.95), ("ivfpq", 0.75)])
def test_approximate_indexes_recall(vectors: tuple[np.ndarray, np.ndarray], index_type: str, min_recall: float) -> None:
    docs, queries = vectors
    index = FaissIndex(32, index_type)
    index.add([f"d{i}" for i in range(len(docs))], docs)
    truth = np.argsort(-(queries @ docs.T), axis=1)[:, :10]
    hits = index.search(queries, k=10)
    recall = np.mean([len({h[0] for h in row} & {f"d{i}" for i in t}) / 10 for row, t in zip(hits, truth)])
    assert recall >= min_recall


@pytest.mark.parametrize("index_type", ["flat", "hnsw", "ivfpq"])
def test_add_delete_keep_ids_stable(vectors: tuple[np.ndarray, np.ndarray], index_type: str, tmp_path: Path) -> None:
    docs, _ = vectors
    index = FaissIndex(32, index_type)
    index.add([f"d{i}" for i in range(1500)], docs[:1500])
    assert index.delete(["d3", "d10"]) == 2
    assert "d3" not in index and len(index) == 1498
    index.add(["new"], docs[1500:1501])
    assert index.doc_ids.index("new") == 1500  # a fresh id; nothing renumbered
    assert index.doc_ids[3] is None and index.doc_ids[4] == "d4"
    hits = index.search(docs[[1500, 3, 10, 4]], k=5)
    assert hits[0][0][0] == "new"
    assert all(h[0] not in {"d3", "d10"} for row in hits for h in row)
    assert hits[3][0][0] == "d4"
    index.save(tmp_path / "idx", _manifest())
    loaded, manifest = FaissIndex.load(tmp_path / "idx")
    assert manifest.num_docs == 1499 and manifest.index_type == index_type
    assert loaded.search(docs[[1500, 3, 4]], k=5) == index.search(docs[[1500, 3, 4]], k=5)
    with pytest.raises(MbretError, match="'d4' is already in the index"):
        loaded.add(["d4"], docs[:1])
    with pytest.raises(MbretError, match="'d3' is not in the index"):
        loaded.delete(["d3"])


def test_deleted_ids_can_come_back_with_a_new_internal_id(vectors: tuple[np.ndarray, np.ndarray]) -> None:
    docs, _ = vectors
    index = FaissIndex(32, "hnsw")
    index.add(["a", "b"], docs[:2])
    index.delete(["a"])
    index.add(["a"], docs[5:6])
    assert index.doc_ids == [None, "b", "a"]
    assert index.search(docs[5:6], k=1)[0][0][0] == "a"


def test_ivfpq_too_small_is_a_clear_error(vectors: tuple[np.ndarray, np.ndarray]) -> None:
    with pytest.raises(MbretError, match="use flat or hnsw"):
        FaissIndex(32, "ivfpq").add(["a", "b"], vectors[0][:2])


def test_killed_update_leaves_previous_index_loadable(
    vectors: tuple[np.ndarray, np.ndarray], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs, queries = vectors
    index = FaissIndex(32, "flat")
    index.add([f"d{i}" for i in range(100)], docs[:100])
    index.save(tmp_path / "idx", _manifest())
    before = FaissIndex.load(tmp_path / "idx")[0].search(queries, k=3)
    index.add(["late"], docs[100:101])

    def killed(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt("killed while writing the manifest")

    monkeypatch.setattr(base, "write_json_atomic", killed)
    with pytest.raises(KeyboardInterrupt):
        index.save(tmp_path / "idx", _manifest())
    monkeypatch.undo()
    reloaded, manifest = FaissIndex.load(tmp_path / "idx")
    assert manifest.num_docs == 100 and "late" not in reloaded
    assert reloaded.search(queries, k=3) == before
    index.save(tmp_path / "idx", _manifest())  # the next save succeeds and cleans up
    reloaded, manifest = FaissIndex.load(tmp_path / "idx")
    assert "late" in reloaded and manifest.generation == 2
    left = sorted(p.name for p in (tmp_path / "idx").iterdir() if not p.name.endswith(("-wal", "-shm")))  # SQLite's
    assert left == sorted([*manifest.files.values(), "manifest.json"])


def test_killed_first_build_leaves_nothing(
    vectors: tuple[np.ndarray, np.ndarray], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = FaissIndex(32, "flat")
    index.add(["a"], vectors[0][:1])
    monkeypatch.setattr(base, "write_json_atomic", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        index.save(tmp_path / "idx", _manifest())
    assert [p.name for p in tmp_path.iterdir()] == [".idx.lock"]  # only the write lock, which stays


def test_corrupt_and_mismatched_files_are_clear_errors(vectors: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    index = FaissIndex(32, "flat")
    index.add(["a", "b"], vectors[0][:2])
    index.save(tmp_path / "idx", _manifest())
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    faiss_file = tmp_path / "idx" / manifest["files"]["faiss"]
    data = faiss_file.read_bytes()
    faiss_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(IndexFormatError, match="truncated or corrupt FAISS file"):
        FaissIndex.load(tmp_path / "idx")
    faiss_file.write_bytes(data)
    ids_file = tmp_path / "idx" / manifest["files"]["doc_ids"]
    ids_file.write_text(json.dumps({"doc_ids": ["a"], "tombstones": []}))
    with pytest.raises(IndexFormatError, match="FAISS holds 2 vectors but the id file lists 1"):
        FaissIndex.load(tmp_path / "idx")
    ids_file.unlink()
    with pytest.raises(IndexFormatError, match="doc_ids file named in the manifest is missing"):
        FaissIndex.load(tmp_path / "idx")
    with pytest.raises(IndexFormatError, match="not an mbret index"):
        FaissIndex.load(tmp_path)


def test_no_pickle_in_index_files(vectors: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    index = FaissIndex(32, "hnsw")
    index.add(["a", "b"], vectors[0][:2])
    index.save(tmp_path / "idx", _manifest())
    for path in (tmp_path / "idx").iterdir():
        assert not path.read_bytes().startswith(b"\x80"), path  # pickle protocol 2+ header


def test_written_files_get_ordinary_permissions(vectors: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    import os

    index = FaissIndex(32, "flat")
    index.add(["a"], vectors[0][:1])
    index.save(tmp_path / "idx", _manifest())
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "idx").stat().st_mode & 0o777 == 0o777 & ~mask
    for path in (tmp_path / "idx").iterdir():
        assert path.stat().st_mode & 0o777 == 0o666 & ~mask, path
