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


def test_two_processes_deleting_at_once_both_persist(tmp_path: Path) -> None:
    path = tmp_path / "idx"
    a, b = [f"a{i}" for i in range(ROUNDS)], [f"b{i}" for i in range(ROUNDS)]
    _build(path, a + b + ["kept"])
    _race(_delete_each, path, a, b)  # 20 rounds of two `mbret delete` processes started together
    index, manifest = load_index(path)
    assert list(d for d in index.doc_ids if d is not None) == ["kept"]
    assert manifest.num_docs == 1 and manifest.generation == 1 + 2 * ROUNDS


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
