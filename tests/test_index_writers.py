"""Writers of one index directory never lose each other's changes: the directory lock, stale generations,
and saves into a directory that holds another index. Real processes (spawned) and threads."""

from __future__ import annotations

import multiprocessing
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from mbret.errors import MbretError, StaleIndexError
from mbret.indexes import FaissIndex, Manifest, load_index
from mbret.io import index_lock

ROUNDS = 20


def _manifest() -> Manifest:
    return Manifest(
        kind="faiss", mode="dense", model="m", dimension=8, normalized=True, max_length=16, num_docs=0,
        index_type="flat",
    )  # fmt: skip


def _vectors(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, 8)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _build(path: Path, ids: list[str], seed: int = 0) -> None:
    index = FaissIndex(8, "flat")
    index.add(ids, _vectors(len(ids), seed))
    index.save(path, _manifest())


def _delete_each(path: str, ids: list[str], barrier: multiprocessing.synchronize.Barrier) -> None:
    """A second process: `mbret delete` once per id, each started together with the other process's."""
    from mbret.cli import run

    for doc_id in ids:
        barrier.wait(timeout=60)
        if run(["delete", path, doc_id]) != 0:
            raise SystemExit(1)


def _add_each(path: str, name: str, barrier: multiprocessing.synchronize.Barrier) -> None:
    """A second process: add one document per round, holding the lock from load to save."""
    for i in range(ROUNDS):
        barrier.wait(timeout=60)
        with index_lock(path):
            index, manifest = load_index(path)
            index.add([f"{name}{i}"], _vectors(1, seed=100 * ord(name) + i))
            index.save(path, manifest)


def _race(target, path: Path, *per_process: object) -> None:  # noqa: ANN001
    spawn = multiprocessing.get_context("spawn")  # not fork: torch's and FAISS's thread pools are not fork-safe
    barrier = spawn.Barrier(len(per_process))
    workers = [spawn.Process(target=target, args=(str(path), arg, barrier)) for arg in per_process]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=180)
    assert all(w.exitcode == 0 for w in workers), [w.exitcode for w in workers]


@pytest.mark.slow  # several processes (kill -9 or concurrent writers): CI runs it
def test_two_processes_deleting_at_once_both_persist(tmp_path: Path) -> None:
    path = tmp_path / "idx"
    a, b = [f"a{i}" for i in range(ROUNDS)], [f"b{i}" for i in range(ROUNDS)]
    _build(path, a + b + ["kept"])
    _race(_delete_each, path, a, b)  # 20 rounds of two `mbret delete` processes started together
    index, manifest = load_index(path)
    assert list(d for d in index.doc_ids if d is not None) == ["kept"]
    assert manifest.num_docs == 1 and manifest.generation == 1 + 2 * ROUNDS


@pytest.mark.slow  # several processes (kill -9 or concurrent writers): CI runs it
def test_two_processes_adding_at_once_all_present(tmp_path: Path) -> None:
    path = tmp_path / "idx"
    _build(path, ["seed"])
    _race(_add_each, path, "x", "y")
    index, manifest = load_index(path)
    live = {d for d in index.doc_ids if d is not None}
    assert live == {"seed"} | {f"{n}{i}" for n in "xy" for i in range(ROUNDS)}
    assert manifest.generation == 1 + 2 * ROUNDS


def test_a_stale_save_is_refused_and_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "idx"
    _build(path, ["a", "b", "c"])
    first, manifest_1 = load_index(path)
    second, manifest_2 = load_index(path)
    first.delete(["a"])
    first.save(path, manifest_1)
    second.delete(["b"])
    with pytest.raises(StaleIndexError, match="generation 2 was committed by another writer since this index"):
        second.save(path, manifest_2)
    with pytest.raises(StaleIndexError):
        second.save(path, manifest_2, replace=True)  # a whole-directory swap is no way around it
    index, manifest = load_index(path)
    assert sorted(d for d in index.doc_ids if d is not None) == ["b", "c"] and manifest.generation == 2
    first.delete(["c"])
    first.save(path, manifest_1)  # the object that committed generation 2 may go on writing
    assert load_index(path)[1].generation == 3 and first.generation == 3


def test_saving_into_another_index_is_refused_unless_replace(tmp_path: Path) -> None:
    _build(tmp_path / "a", ["a1", "a2"])
    _build(tmp_path / "b", ["b1"], seed=1)
    other, manifest = load_index(tmp_path / "b")
    with pytest.raises(MbretError, match="holds another index; save to a new directory, or pass replace=True"):
        other.save(tmp_path / "a", manifest)
    fresh = FaissIndex(8, "flat")
    fresh.add(["n1"], _vectors(1, 2))
    with pytest.raises(MbretError, match="holds another index"):
        fresh.save(tmp_path / "a", _manifest())
    assert [d for d in load_index(tmp_path / "a")[0].doc_ids] == ["a1", "a2"]  # untouched
    other.save(tmp_path / "a", manifest, replace=True)
    assert [d for d in load_index(tmp_path / "a")[0].doc_ids] == ["b1"]
    other.save(tmp_path / "copy", manifest)  # a new directory takes a copy, which is a new index
    assert load_index(tmp_path / "copy")[1].index_id != load_index(tmp_path / "b")[1].index_id


def test_index_lock_excludes_other_threads_and_is_reentrant(tmp_path: Path) -> None:
    inside, overlaps = [0], []

    def hold() -> None:
        for _ in range(5):
            with index_lock(tmp_path / "idx"), index_lock(tmp_path / "idx"):  # re-entrant in one thread
                inside[0] += 1
                overlaps.append(inside[0])
                time.sleep(0.01)
                inside[0] -= 1

    threads = [threading.Thread(target=hold) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert overlaps == [1] * 20


def _save_killed_mid_swap(path: str, doc_id: str, barrier: object) -> None:
    """A second process: a whole-directory save (as after `compact`), killed by SIGKILL right after it moved
    the old directory aside and before it moved the new one in."""
    import os
    import signal

    real = os.replace

    def replace(src: str, dst: str) -> None:
        real(src, dst)
        if str(src) == path:
            os.kill(os.getpid(), signal.SIGKILL)

    os.replace = replace
    index, manifest = load_index(path)
    index.delete([doc_id])
    index.save(path, manifest, replace=True)


@pytest.mark.slow  # several processes (kill -9 or concurrent writers): CI runs it
def test_a_write_killed_mid_swap_leaves_the_previous_generation_loadable(tmp_path: Path) -> None:
    path = tmp_path / "idx"
    _build(path, ["a", "b"])
    spawn = multiprocessing.get_context("spawn")
    worker = spawn.Process(target=_save_killed_mid_swap, args=(str(path), "a", None))
    worker.start()
    worker.join(timeout=120)
    assert worker.exitcode == -9 and not path.exists()  # killed with the index moved aside
    index, manifest = load_index(path)  # puts the previous generation back
    assert [d for d in index.doc_ids] == ["a", "b"] and manifest.generation == 1
    index.delete(["a"])
    index.save(path, manifest)
    assert load_index(path)[1].generation == 2


def _plaid_manifest() -> Manifest:
    return Manifest(
        kind="plaid", mode="colbert", model="m", dimension=32, normalized=True, max_length=64, num_docs=0,
        index_type="plaid",
    )  # fmt: skip


def test_threads_search_a_plaid_index_while_another_writes(tmp_path: Path) -> None:
    import torch

    from mbret.indexes import PlaidIndex
    from mbret.types import SearchParams

    torch_threads = torch.get_num_threads()
    g = torch.Generator().manual_seed(0)
    topics = torch.nn.functional.normalize(torch.randn(40, 32, generator=g), dim=-1)

    def doc(n: int) -> torch.Tensor:
        tokens = topics[torch.randint(0, 40, (n,), generator=g)] + 0.1 * torch.randn(n, 32, generator=g)
        return torch.nn.functional.normalize(tokens, dim=-1)

    base_ids, extra_ids = [f"d{i}" for i in range(300)], [f"x{i}" for i in range(200)]
    base, extra = [doc(20) for _ in base_ids], [doc(20) for _ in extra_ids]
    queries = [doc(8) for _ in range(6)]
    index = PlaidIndex(32, nbits=2, num_centroids=64)
    index.add(base_ids, base)
    index.save(tmp_path / "a", _plaid_manifest())
    # a document's PLAID score depends only on the query, the codec and its own codes, so an index with the
    # same codec that scores every document of every version gives each hit's true score
    reference, _ = PlaidIndex.load(tmp_path / "a")
    reference.add(extra_ids, extra)
    everything = SearchParams(n_ivf_probe=64, centroid_score_threshold=-1.0, n_candidates=500, n_full_scores=500)
    truth = [dict(hits) for hits in reference.search(queries, k=500, search_params=everything)]

    deleted: set[str] = set()
    stop = threading.Event()
    errors: list[BaseException] = []
    searches = [0]

    def write() -> None:
        try:
            for step in range(10):
                index.add(extra_ids[step * 20 : (step + 1) * 20], extra[step * 20 : (step + 1) * 20])
                gone = base_ids[step * 25 : (step + 1) * 25]
                index.delete(gone)
                deleted.update(gone)
                if step % 3 == 2:
                    index.compact()
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)
        finally:
            stop.set()

    def search() -> None:
        try:
            while not stop.is_set():
                gone_before = set(deleted)
                for q, hits in zip(range(len(queries)), index.search(queries, k=10)):
                    assert len(hits) == 10
                    for doc_id, score in hits:
                        assert doc_id not in gone_before, doc_id  # deleted before this search began
                        assert abs(score - truth[q][doc_id]) < 1e-4, (doc_id, score, truth[q][doc_id])
                searches[0] += 1
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=search) for _ in range(3)] + [threading.Thread(target=write)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors[0]
    assert searches[0] >= 3 and len(index) == 300 - 250 + 200
    assert torch.get_num_threads() == torch_threads  # no search left the process's thread count changed
    live = {d for d in index.doc_ids if d is not None}
    assert live == set(base_ids[250:]) | set(extra_ids)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "exact", "bm25"])
def test_threads_search_a_dense_or_exact_index_while_another_writes(kind: str) -> None:
    """FAISS allows no search during a change, and the exact and BM25 indexes cache derived state: three
    threads searching while a fourth adds and deletes must see no exception and never a document deleted
    before their search began; afterwards the index equals one built from its final documents."""
    import torch

    from mbret.indexes import Bm25Index, ExactMaxSimIndex

    base_ids, extra_ids = [f"d{i}" for i in range(400)], [f"x{i}" for i in range(200)]
    if kind == "bm25":  # every document shares "study", so every search has its 10 hits
        texts = {d: f"study of topic{i % 7} and subject{i % 11} item{i}" for i, d in enumerate(base_ids + extra_ids)}
        queries = ["topic3 study", "subject5 topic1", "study"] * 2
        make = lambda: Bm25Index()  # noqa: E731
        rows = lambda ids: [texts[i] for i in ids]  # noqa: E731
    elif kind == "exact":
        g = torch.Generator().manual_seed(0)
        vectors = {
            i: torch.nn.functional.normalize(torch.randn(6, 32, generator=g), dim=-1) for i in base_ids + extra_ids
        }
        queries: object = [torch.nn.functional.normalize(torch.randn(4, 32, generator=g), dim=-1) for _ in range(6)]
        make = lambda: ExactMaxSimIndex(32)  # noqa: E731
        rows = lambda ids: [vectors[i] for i in ids]  # noqa: E731
    else:
        table = dict(zip(base_ids + extra_ids, _vectors(600, seed=0)))
        queries = _vectors(6, seed=1)
        make = lambda: FaissIndex(8, kind)  # noqa: E731
        rows = lambda ids: np.stack([table[i] for i in ids])  # noqa: E731
    index = make()
    index.add(base_ids, rows(base_ids))
    deleted: set[str] = set()
    stop = threading.Event()
    errors: list[BaseException] = []
    searches = [0]

    def write() -> None:
        try:
            for step in range(10):
                index.add(extra_ids[step * 20 : (step + 1) * 20], rows(extra_ids[step * 20 : (step + 1) * 20]))
                gone = base_ids[step * 30 : (step + 1) * 30]
                index.delete(gone)
                deleted.update(gone)
                if kind in ("exact", "bm25") and step % 3 == 2:
                    index.compact()
                time.sleep(0.005)
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)
        finally:
            stop.set()

    def search() -> None:
        try:
            while not stop.is_set() or searches[0] < 3:
                gone_before = set(deleted)
                for hits in index.search(queries, k=10):
                    assert len(hits) == 10
                    assert not {doc_id for doc_id, _ in hits} & gone_before
                searches[0] += 1
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=search) for _ in range(3)] + [threading.Thread(target=write)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors[0]
    live = base_ids[300:] + extra_ids
    assert {d for d in index.doc_ids if d is not None} == set(live)
    fresh = make()
    fresh.add(live, rows(live))
    ours, theirs = index.search(queries, k=10), fresh.search(queries, k=10)
    assert [[d for d, _ in row] for row in ours] == [[d for d, _ in row] for row in theirs]


@pytest.mark.parametrize("kind", ["flat", "exact"])
def test_refresh_picks_up_another_processs_commit(tmp_path: Path, kind: str) -> None:
    import torch

    from mbret.indexes import ExactMaxSimIndex

    path = tmp_path / "idx"
    ids = [f"d{i}" for i in range(50)]
    if kind == "exact":
        vectors = [torch.nn.functional.normalize(torch.randn(5, 32), dim=-1) for _ in range(51)]
        index = ExactMaxSimIndex(32)
        index.add(ids, vectors[:50])
        late, query = [vectors[50]], [vectors[50]]
    else:
        vectors = _vectors(51, seed=0)
        index = FaissIndex(8, "flat")
        index.add(ids, vectors[:50])
        late, query = vectors[50:], vectors[50:]
    index.save(path, _manifest())
    reader, _ = load_index(path)
    assert reader.refresh() is False
    writer, manifest = load_index(path)
    writer.add(["late"], late)
    writer.delete(["d0"])
    writer.save(path, manifest)
    assert reader.search(query, k=1)[0][0][0] != "late"
    assert reader.refresh() is True and reader.generation == writer.generation
    assert reader.search(query, k=1)[0][0][0] == "late" and "d0" not in reader


@pytest.mark.parametrize("kind", ["flat", "exact"])
def test_searches_go_on_while_a_save_writes_its_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """A save holds searches off only for the moment its object takes on the new generation, not while it
    writes its files: here the file write is held until a search has finished beside it, and an add
    started meanwhile waits for the save, so the saved generation holds exactly what was there."""
    import torch

    import mbret.indexes.faiss_index as faiss_module
    import mbret.indexes.maxsim as maxsim_module
    from mbret.indexes import ExactMaxSimIndex

    ids = [f"d{i}" for i in range(50)]
    if kind == "flat":
        index, query = FaissIndex(8, "flat"), _vectors(1, 9)
        index.add(ids, _vectors(50, 1))
        manifest, module, name = _manifest(), faiss_module.faiss, "serialize_index"
    else:
        index, query = ExactMaxSimIndex(8), [torch.from_numpy(_vectors(3, 9))]
        index.add(ids, [torch.from_numpy(_vectors(4, i)) for i in range(50)])
        manifest = Manifest(kind="maxsim", mode="colbert", model="m", dimension=8, normalized=True, max_length=16,
                            num_docs=0, index_type="exact")  # fmt: skip
        module, name = maxsim_module, "_append"
    writing, searched = threading.Event(), threading.Event()
    original = getattr(module, name)

    def held(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        writing.set()
        assert searched.wait(30), "no search finished while the save wrote its files"
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, held)
    saver = threading.Thread(target=index.save, args=(tmp_path / "idx", manifest))
    saver.start()
    assert writing.wait(30)
    added = threading.Thread(target=index.add, args=(["late"], _vectors(1, 5) if kind == "flat" else
                                                      [torch.from_numpy(_vectors(2, 5))]))  # fmt: skip
    added.start()
    hits = index.search(query, 5)  # runs beside the save's file write
    searched.set()
    saver.join(30)
    added.join(30)
    assert len(hits[0]) == 5 and not saver.is_alive() and not added.is_alive()
    saved, _ = load_index(tmp_path / "idx")
    assert len(saved) == 50 and "late" not in saved and "late" in index  # the add waited for the save
