"""The exact MaxSim index's appendable files: a write costs what it changes, a killed save leaves a loadable
generation, and indexes in the older one-`.npy`-per-generation layout still load."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import torch

from mbret.indexes import ExactMaxSimIndex, Manifest, load_index


def _manifest() -> Manifest:
    return Manifest(
        kind="maxsim", mode="colbert", model="m", dimension=16, normalized=True, max_length=64, num_docs=0,
        index_type="exact",
    )  # fmt: skip


def _docs(n: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.functional.normalize(torch.randn(12, 16, generator=g), dim=-1) for _ in range(n)]


def test_a_one_document_write_costs_the_same_whatever_the_index_size(tmp_path: Path) -> None:
    docs = _docs(2001)
    written, stored = [], []
    for n in (250, 2000):
        path = tmp_path / f"idx{n}"
        index = ExactMaxSimIndex(16)
        index.add([f"d{i}" for i in range(n)], docs[:n])
        index.save(path, _manifest())
        index, manifest = load_index(path)
        sizes = {f.name: f.stat().st_size for f in path.iterdir()}
        index.add(["new"], [docs[2000]])
        index.delete(["d3"])
        index.save(path, manifest)
        growth = {f.name: f.stat().st_size - sizes.get(f.name, 0) for f in path.iterdir() if f.is_file()}
        written.append(sum(v for name, v in growth.items() if not name.startswith("documents.sqlite")))
        stored.append(sum(v for name, v in growth.items() if name.startswith("documents.sqlite")))
        again, _ = load_index(path)
        assert "new" in again and "d3" not in again and len(again) == n
        assert again.search([docs[2000]], k=1)[0][0][0] == "new"
        assert again.search([docs[5]], k=1)[0][0][0] == "d5"
    assert written[1] <= written[0] + 64, written  # 8x the documents, the same bytes appended
    assert written[0] < 12 * 16 * 2 + 1024
    # the document store's write is SQLite pages touched (its WAL): a page or two more at 8x, not 8x the bytes
    assert stored[1] <= stored[0] + 2 * 4096, stored


def _deadly_fsync(nth: int):  # noqa: ANN202
    """os.fsync that kills its process (SIGKILL) on its nth call: a file written but not yet synced."""
    calls = {"n": 0}
    real = os.fsync

    def deadly(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] == nth:
            os.kill(os.getpid(), signal.SIGKILL)
        real(fd)

    return deadly


def test_a_killed_append_leaves_the_previous_generation_and_the_next_save_repairs(tmp_path: Path) -> None:
    docs = _docs(60)
    path = tmp_path / "idx"
    index = ExactMaxSimIndex(16)
    index.add([f"d{i}" for i in range(50)], docs[:50])
    index.save(path, _manifest())
    pristine = tmp_path / "pristine"
    shutil.copytree(path, pristine)
    for nth in range(1, 8):
        shutil.rmtree(path)
        shutil.copytree(pristine, path)
        index, manifest = load_index(path)
        index.add([f"x{i}" for i in range(10)], docs[50:])
        index.delete(["d1"])
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child: only file writes (no torch op survives a fork)
            os.fsync = _deadly_fsync(nth)
            try:
                index.save(path, manifest)
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        killed = os.WIFSIGNALED(status)
        loaded, manifest = load_index(path)
        ids = {d for d in loaded.doc_ids if d is not None}
        new = {f"d{i}" for i in range(50)} - {"d1"} | {f"x{i}" for i in range(10)}
        assert ids in ({f"d{i}" for i in range(50)}, new), nth
        if ids != new:  # the previous generation: a save on top of it must still land whole
            loaded.add(["late"], docs[:1])
            loaded.save(path, manifest)
            again, _ = load_index(path)
            assert "late" in again and again.search([docs[7]], k=1)[0][0][0] == "d7"
        if not killed:
            break
    assert nth > 3  # several fsyncs were kill points


def test_an_index_in_the_older_layout_loads_and_is_rewritten_on_save(tmp_path: Path) -> None:
    docs = _docs(5)
    path = tmp_path / "old"
    path.mkdir()
    np.save(path / "embeddings-000001.npy", torch.cat(docs).numpy().astype(np.float16))
    np.save(path / "doclens-000001.npy", np.full(5, 12, dtype=np.int64))
    (path / "doc_ids-000001.json").write_text(json.dumps({"doc_ids": ["a", "b", None, "c", "d"]}))
    manifest = _manifest()
    manifest.num_docs, manifest.generation = 4, 1
    manifest.files = {"embeddings": "embeddings-000001.npy", "doclens": "doclens-000001.npy"}
    manifest.files["doc_ids"] = "doc_ids-000001.json"
    (path / "manifest.json").write_text(json.dumps(manifest.to_json()))
    index, manifest = load_index(path)
    assert len(index) == 4 and index.search([docs[3]], k=1)[0][0][0] == "c"
    index.add(["e"], [docs[2]])
    index.save(path, manifest)
    again, manifest = load_index(path)
    assert manifest.files["embeddings"] == "embeddings.f16" and not (path / "embeddings-000001.npy").exists()
    assert again.search([docs[2]], k=1)[0][0][0] == "e" and again.search([docs[0]], k=1)[0][0][0] == "a"
