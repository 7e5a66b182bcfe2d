"""PLAID's engine at scale, in miniature: per-query memory that follows the candidates, not the corpus;
writes that cost what they change; saves killed (SIGKILL) at every file write; refresh; training that
sees everything added before it."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from mbret.errors import MbretError
from mbret.indexes import Manifest, PlaidIndex, load_index
from mbret.indexes.plaid import UNTRAINED_TOKENS


def _manifest() -> Manifest:
    return Manifest(
        kind="plaid", mode="colbert", model="m", dimension=64, normalized=True, max_length=64, num_docs=0,
        index_type="plaid",
    )  # fmt: skip


def _docs(n_docs: int, seed: int, dim: int = 64, lengths: tuple[int, int] = (20, 40)) -> list[torch.Tensor]:
    """Documents of 20-40 tokens (by default) near three of 30 topics; another seed gives unrelated topics."""
    g = torch.Generator().manual_seed(seed)
    topics = torch.nn.functional.normalize(torch.randn(30, dim, generator=g), dim=-1)
    docs = []
    for _ in range(n_docs):
        mix = topics[torch.randint(0, 30, (3,), generator=g)]
        n = int(torch.randint(*lengths, (1,), generator=g))
        tokens = mix[torch.randint(0, 3, (n,), generator=g)] + 0.05 * torch.randn(n, dim, generator=g)
        docs.append(torch.nn.functional.normalize(tokens, dim=-1))
    return docs


def _index(
    docs: list[torch.Tensor], num_centroids: int = 128, train_on: list[torch.Tensor] | None = None
) -> PlaidIndex:
    index = PlaidIndex(64, nbits=2, num_centroids=num_centroids)
    index.train(torch.cat(train_on or docs))
    index.add([f"d{i}" for i in range(len(docs))], docs)
    return index


def _largest_allocation(index: PlaidIndex, queries: list[torch.Tensor], k: int) -> int:
    """The largest single CPU allocation made while searching (bytes), after a warm-up search."""
    index.search(queries, k=k, workers=1)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        index.search(queries, k=k, workers=1)
    return max(max(e.cpu_memory_usage, e.self_cpu_memory_usage) for e in prof.events())


def test_search_memory_follows_candidates_not_the_corpus() -> None:
    """Growing the corpus 40x with short documents on other topics (never a candidate of these queries)
    must not grow what one query allocates: it fails on a (documents, query tokens) buffer per query."""
    near = _docs(300, seed=0)
    far = _docs(20000, seed=9, lengths=(2, 5))
    queries = [d[:16] for d in near[:8]]
    small = _index(near + far[:200], train_on=near + far)  # one codec for both
    large = _index(near + far, train_on=near + far)
    assert [h[0][0] for h in small.search(queries, k=1)] == [f"d{i}" for i in range(8)]
    assert small.search(queries, k=10) == large.search(queries, k=10)  # the same candidates and scores
    for k in (10, 100):
        a, b = _largest_allocation(small, queries, k), _largest_allocation(large, queries, k)
        assert b <= 1.25 * a + 4096, (k, a, b)


def _written_bytes(directory: Path, before: dict[str, int]) -> int:
    """Bytes in files that are new or changed since `before` (name -> mtime_ns)."""
    return sum(
        f.stat().st_size for f in directory.iterdir() if f.is_file() and before.get(f.name) != f.stat().st_mtime_ns
    )


@pytest.mark.parametrize("change", ["add", "delete"])
def test_a_one_document_write_costs_the_same_whatever_the_index_size(tmp_path: Path, change: str) -> None:
    docs = _docs(2000, seed=0)
    written = []
    for n in (250, 2000):
        path = tmp_path / f"idx{n}"
        _index(docs[:n]).save(path, _manifest())
        index, manifest = load_index(path)
        before = {f.name: f.stat().st_mtime_ns for f in path.iterdir()}
        if change == "add":
            index.add(["new"], [docs[0]])
        else:
            index.delete(["d7"])
        index.save(path, manifest)
        written.append(_written_bytes(path, before))
        again, _ = load_index(path)
        assert ("new" in again) == (change == "add") and ("d7" in again) == (change == "add")
    assert written[1] <= written[0] + 512, written  # 8x the documents, the same bytes (the manifest's digits)


def _changed(path: Path, compact: bool) -> tuple[PlaidIndex, Manifest]:
    """The index at `path`, loaded and changed, its new chunk made: what is left for `save` is file writes."""
    index, manifest = load_index(path)
    if compact:
        index.delete(["d1", "d2"])
        index.compact()
    else:
        index.add(["new"], [_docs(1, seed=3)[0]])
        index.delete(["d1"])
    index.search_state()
    return index, manifest


def _save_killed_at(index: PlaidIndex, manifest: Manifest, path: Path, call: str, nth: int) -> None:
    """In a forked child (which runs no torch op: torch's thread pool does not survive a fork): save, killed
    with SIGKILL at the nth `call` (os.fsync: a file is written but not yet renamed into place; os.replace:
    just before a rename)."""
    calls = {"n": 0}
    real = getattr(os, call)

    def deadly(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == nth:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)

    setattr(os, call, deadly)
    index.save(path, manifest)


@pytest.mark.slow  # several processes (kill -9 or concurrent writers): CI runs it
@pytest.mark.parametrize("compact", [False, True], ids=["add-and-delete", "compact"])
def test_a_save_killed_at_any_file_write_leaves_a_loadable_generation(tmp_path: Path, compact: bool) -> None:
    docs = _docs(120, seed=0)
    pristine = tmp_path / "pristine"
    _index(docs, num_centroids=32).save(pristine, _manifest())
    before = set(load_index(pristine)[0].doc_ids)
    after = (before - {"d1", "d2"}) if compact else (before - {"d1"}) | {"new"}
    outcomes = []
    for call in ("fsync", "replace"):
        for nth in range(1, 40):
            path = tmp_path / "idx"
            shutil.rmtree(path, ignore_errors=True)
            shutil.copytree(pristine, path)
            index, manifest = _changed(path, compact)
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child
                try:
                    _save_killed_at(index, manifest, path, call, nth)
                    os._exit(0)
                finally:
                    os._exit(1)
            _, status = os.waitpid(pid, 0)
            killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
            assert killed or os.WEXITSTATUS(status) == 0, (call, nth, status)
            index, manifest = load_index(path)
            ids = set(index.doc_ids) - {None}
            assert ids in (before - {None}, after), (call, nth, sorted(ids ^ before)[:5])
            hits = index.search([docs[5][:8]], k=3)[0]
            assert hits[0][0] == "d5", (call, nth, hits)
            outcomes.append((killed, ids == after))
            if not killed:
                break
    assert sum(killed for killed, _ in outcomes) >= 10  # every file of a save was a kill point
    assert any(killed and new for killed, new in outcomes) and any(killed and not new for killed, new in outcomes)


def test_refresh_picks_up_another_writers_generation(tmp_path: Path) -> None:
    docs = _docs(200, seed=0)
    path = tmp_path / "idx"
    _index(docs[:150]).save(path, _manifest())
    reader, _ = load_index(path)
    assert reader.refresh() is False and reader.generation == 1
    writer, manifest = load_index(path)
    writer.add([f"late{i}" for i in range(50)], docs[150:])
    writer.delete(["d3"])
    writer.save(path, manifest)
    assert reader.search([docs[160][:8]], k=1)[0][0][0] != "late10" and "d3" in reader
    assert reader.refresh() is True and reader.generation == 2
    assert reader.search([docs[160][:8]], k=1)[0][0][0] == "late10" and "d3" not in reader
    reader.delete(["d4"])  # and it writes on top of the generation it refreshed to
    reader.save(path, manifest)
    assert "d4" not in load_index(path)[0]
    with pytest.raises(MbretError, match="never loaded or saved"):
        PlaidIndex(64).refresh()


def test_an_untrained_index_trains_on_everything_added_to_it() -> None:
    """Adding a corpus to a new index in several calls must give the centroids a one-shot add gives (sized
    and trained for all of it), not centroids of the first call's documents."""
    docs = _docs(600, seed=0) + _docs(600, seed=9)  # the second half on topics the first never shows
    ids = [f"d{i}" for i in range(len(docs))]
    one_shot, chunked = PlaidIndex(64, nbits=2), PlaidIndex(64, nbits=2)
    one_shot.add(ids, docs)
    for begin in range(0, len(docs), 200):
        chunked.add(ids[begin : begin + 200], docs[begin : begin + 200])
    queries = [docs[i][:8] for i in range(650, 1200, 50)]
    assert chunked.search(queries, k=10) == one_shot.search(queries, k=10)
    assert torch.equal(chunked.codec.centroids, one_shot.codec.centroids)
    assert [h[0][0] for h in chunked.search(queries, k=1)] == [f"d{i}" for i in range(650, 1200, 50)]


def test_an_untrained_index_refuses_more_than_it_can_hold_and_names_train(monkeypatch: pytest.MonkeyPatch) -> None:
    import mbret.indexes.plaid.index as plaid_index

    monkeypatch.setattr(plaid_index, "UNTRAINED_TOKENS", 1000)
    assert UNTRAINED_TOKENS > 1000
    docs = _docs(100, seed=0)
    index = PlaidIndex(64, nbits=2)
    index.add([f"d{i}" for i in range(20)], docs[:20])
    with pytest.raises(MbretError, match=r"index.train\(sample, num_tokens="):
        index.add([f"d{i}" for i in range(20, 100)], docs[20:])
    assert len(index) == 20  # nothing of the refused call was kept
    index.train(torch.cat(docs), num_tokens=sum(len(d) for d in docs))
    index.add([f"d{i}" for i in range(20, 100)], docs[20:])
    assert len(index) == 100 and index.search([docs[50][:8]], k=1)[0][0][0] == "d50"
    assert np.isclose(index.num_tokens, sum(len(d) for d in docs))
