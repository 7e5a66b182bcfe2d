"""Documents and filters: every index keeps its documents' title, text and metadata in a SQLite store that
follows its generations, and searches restricted by metadata or ids return what a brute-force
filter-then-rank returns."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mbret.errors import MbretError
from mbret.indexes import ExactMaxSimIndex, FaissIndex, Manifest, PlaidIndex, load_index
from mbret.indexes.info import index_info

DIM = 32
VENUES = ("ACL", "EMNLP", "NAACL", "SIGIR")


def _metadata(i: int) -> dict[str, Any]:
    """Seeded metadata with subsets of every size: `bucket` b < 100 holds 1% of 1000 docs, `half` 50%."""
    rng = np.random.default_rng(i)
    meta: dict[str, Any] = {
        "year": 2000 + int(rng.integers(0, 25)),
        "venue": VENUES[int(rng.integers(0, 4))],
        "score": round(float(rng.random()), 3),
        "open": bool(i % 2),
        "bucket": i % 100,
        "half": i % 2 == 0,
    }
    if i % 7 == 0:
        meta["note"] = None
    return meta


def _corpus(n: int) -> tuple[list[str], list[dict[str, Any]]]:
    ids = [f"d{i}" for i in range(n)]
    return ids, [{"title": f"title {i}", "text": f"text of document {i}", "metadata": _metadata(i)} for i in range(n)]


def _token_docs(n: int, seed: int = 0) -> list[torch.Tensor]:
    """Multi-vector documents of 6-14 tokens near three of 40 topics (clustered, as real token vectors are)."""
    g = torch.Generator().manual_seed(seed)
    topics = torch.nn.functional.normalize(torch.randn(40, DIM, generator=g), dim=-1)
    docs = []
    for _ in range(n):
        mix = topics[torch.randint(0, 40, (3,), generator=g)]
        length = int(torch.randint(6, 15, (1,), generator=g))
        tokens = mix[torch.randint(0, 3, (length,), generator=g)] + 0.1 * torch.randn(length, DIM, generator=g)
        docs.append(torch.nn.functional.normalize(tokens, dim=-1))
    return docs


def _dense(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _manifest(kind: str) -> Manifest:
    mode = "dense" if kind == "faiss" else "colbert"
    return Manifest(kind=kind, mode=mode, model="m", dimension=DIM, normalized=True, max_length=16, num_docs=0,
                    index_type="")  # fmt: skip


def _build(index_type: str, n: int) -> tuple[Any, Any]:
    """An index of `n` documents with metadata, and its vectors (dense rows or token matrices)."""
    ids, documents = _corpus(n)
    if index_type in ("flat", "hnsw", "ivfpq"):
        vectors = _dense(n)
        params = {"nlist": 16, "m": 16, "nbits": 4, "nprobe": 4} if index_type == "ivfpq" else None
        index = FaissIndex(DIM, index_type, params)
        index.add(ids, vectors, documents)
        return index, vectors
    vectors = _token_docs(n)
    if index_type == "exact":
        index = ExactMaxSimIndex(DIM)
    else:
        index = PlaidIndex(DIM, nbits=4, num_centroids=64)
        index.train(torch.cat(vectors))
    index.add(ids, vectors, documents)
    return index, vectors


def _kind(index: Any) -> str:
    return {FaissIndex: "faiss", ExactMaxSimIndex: "maxsim", PlaidIndex: "plaid"}[type(index)]


# -- the store follows the index -------------------------------------------------------------------------
@pytest.mark.parametrize("index_type", ["flat", "hnsw", "exact", "plaid"])
def test_metadata_round_trips_through_add_delete_compact_and_reload(tmp_path: Path, index_type: str) -> None:
    index, vectors = _build(index_type, 60)
    path = tmp_path / "idx"
    index.save(path, _manifest(_kind(index)))
    index, manifest = load_index(path)
    got = index.get_documents(["d3", "d59", "missing"])
    assert got[0].title == "title 3" and got[0].text == "text of document 3" and got[0].metadata == _metadata(3)
    assert got[1].metadata == _metadata(59) and got[2] is None
    assert got[0].metadata["open"] is True and isinstance(got[0].metadata["year"], int)  # JSON types survive

    new = _dense(1, seed=9) if index_type in ("flat", "hnsw") else _token_docs(1, seed=9)
    index.add(["new"], new, [{"title": "a new one", "text": "fresh", "metadata": {"year": 1999, "venue": "X"}}])
    index.delete(["d3", "d4"])
    assert index.get_documents(["d3"]) == [None]  # unsaved changes are seen at once
    assert index.get_documents(["new"])[0].metadata == {"year": 1999, "venue": "X"}
    index.save(path, manifest)
    index, manifest = load_index(path)
    assert index.get_documents(["d3", "new"])[0] is None
    assert index.get_documents(["new"])[0].title == "a new one"
    assert len(index.select("venue = ?", ["X"])) == 1

    if hasattr(index, "compact"):
        index.compact()
        assert index.get_documents(["d5", "new"])[0].metadata == _metadata(5)  # renumbered, still found
        index.save(path, manifest, replace=True)
        index, manifest = load_index(path)
    survivors = [f"d{i}" for i in range(60) if i not in (3, 4)]
    for doc_id, document in zip(survivors, index.get_documents(survivors)):
        assert document is not None and document.doc_id == doc_id and document.metadata == _metadata(int(doc_id[1:]))
    info = index_info(path)
    assert (info["num_live"], info["num_deleted"]) == (59, info["num_docs"] - 59)
    assert info["metadata_fields"]["year"] == {"integer": 59}
    assert info["metadata_fields"]["open"] == {"boolean": 58} and info["metadata_fields"]["note"] == {"null": 9}
    assert info["bytes"]["documents"] > 0 and info["bytes"]["total"] > info["bytes"]["documents"]
    assert info["generation"] == manifest.generation
    # the store holds no row for a deleted document, whatever generation is read
    import sqlite3

    rows = sqlite3.connect(path / "documents.sqlite").execute("SELECT doc_id FROM documents").fetchall()
    assert {r[0] for r in rows} == set(survivors) | {"new"}


def _plans(path: Path, fields: list[str]) -> dict[str, str]:
    """SQLite's plan for a filter on each field, over the store as a reader queries it."""
    import sqlite3

    from mbret.indexes.filters import compile_where

    conn = sqlite3.connect(path / "documents.sqlite")
    plans = {}
    for name in fields:
        sql = compile_where(f'"{name}" >= ?', [1], fields).sql
        rows = conn.execute(
            f"EXPLAIN QUERY PLAN SELECT pos FROM documents WHERE added <= 9 AND (deleted IS NULL OR deleted > 9) "
            f"AND {sql}",
            [1],
        ).fetchall()
        plans[name] = " ".join(r[-1] for r in rows)
    conn.close()
    return plans


def test_filters_read_an_index_per_metadata_field_up_to_the_cap(tmp_path: Path) -> None:
    """A filter on a field reads that field's expression index, not every row's JSON; past
    `MAX_INDEXED_FIELDS` fields the rest are scanned, and still filter right. A store written before field
    indexes (here: indexes dropped) gets them at its next write."""
    import sqlite3

    from mbret.indexes.store import MAX_INDEXED_FIELDS

    n, extra = 40, MAX_INDEXED_FIELDS + 3
    names = [f"f{j:03d}" for j in range(extra)]
    ids = [f"d{i}" for i in range(n)]
    documents = [{"metadata": {name: (i + j) % 10 for j, name in enumerate(names)}} for i in range(n)]
    index = FaissIndex(DIM, "flat")
    index.add(ids, _dense(n), documents)
    for name in (names[0], names[-1]):  # before any save: the pending store
        assert len(index.select(f"{name} = ?", [3])) == 4
    path = tmp_path / "idx"
    index.save(path, _manifest("faiss"))
    plans = _plans(path, names)
    indexed = [name for name in names if "USING INDEX" in plans[name]]
    assert indexed == names[:MAX_INDEXED_FIELDS], plans
    index, manifest = load_index(path)
    for name in (names[0], names[-1]):
        expected = [i for i in range(n) if (i + int(name[1:])) % 10 == 3]
        assert index.select(f"{name} = ?", [3]).tolist() == expected

    conn = sqlite3.connect(path / "documents.sqlite")
    listed = conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND name GLOB 'field_*'").fetchall()
    for (table,) in listed:
        conn.execute(f"DROP INDEX {table}")
    conn.commit()
    conn.close()
    assert not any("USING INDEX" in plan for plan in _plans(path, names[:3]).values())
    index.add(["new"], _dense(1, seed=3), [{"metadata": {names[0]: 3}}])
    index.save(path, manifest)
    assert all("USING INDEX" in plan for plan in _plans(path, names[:3]).values())
    assert len(load_index(path)[0].select(f"{names[0]} = ?", [3])) == 5


def test_nested_metadata_is_refused_with_its_file_and_line(tmp_path: Path) -> None:
    from mbret.data.datasets import load_corpus

    corpus = tmp_path / "corpus.jsonl"
    good = '{"_id": "a", "text": "x", "metadata": {"year": 2020, "ok": true, "gone": null}}\n'
    corpus.write_text(good + '{"_id": "b", "text": "y", "metadata": {"tags": ["p"]}}\n')
    with pytest.raises(MbretError, match=r"corpus.jsonl:2: .*'tags' holds a list"):
        load_corpus(corpus)
    corpus.write_text(good)
    assert load_corpus(corpus)["a"]["metadata"] == {"year": 2020, "ok": True, "gone": None}
    index = FaissIndex(DIM)
    with pytest.raises(MbretError, match="document 'b'"):
        index.add(["a", "b"], _dense(2), [{"metadata": {"ok": 1}}, {"metadata": {"bad": {"x": 1}}}])
    assert len(index) == 0 and index.index is None  # nothing half-added


# -- filters against brute force -----------------------------------------------------------------------
def _brute_force(index_type: str, vectors: Any, query: Any, subset: np.ndarray, k: int) -> list[str]:
    """The true filtered top k: every document of `subset` scored exactly, then ranked."""
    if index_type in ("flat", "hnsw", "ivfpq"):
        scores = vectors[subset] @ query
    else:
        scores = np.array([float((query @ vectors[i].T).max(dim=1).values.sum()) for i in subset])
    order = np.argsort(-scores, kind="stable")[:k]
    return [f"d{subset[i]}" for i in order]


CONDITIONS = {  # name -> (condition, params, python predicate)
    "one": ("bucket = ? AND score = ?", [0, _metadata(0)["score"]], lambda i, m: i == 0),
    "ten": ("bucket = ?", [7], lambda i, m: m["bucket"] == 7),
    "1%": ("bucket BETWEEN ? AND ?", [20, 20], lambda i, m: m["bucket"] == 20),
    "50%": ("half = ?", [True], lambda i, m: m["half"]),
    "mixed": (
        "(year >= ? AND venue IN (?, ?)) OR (NOT open = ? AND score < ?)",
        [2015, "ACL", "SIGIR", True, 0.2],
        lambda i, m: (m["year"] >= 2015 and m["venue"] in ("ACL", "SIGIR")) or (not m["open"] and m["score"] < 0.2),
    ),
}
MIN_RECALL = {"flat": 1.0, "exact": 1.0, "hnsw": 0.95, "ivfpq": 0.8, "plaid": 0.9}


@pytest.mark.parametrize("index_type", ["flat", "hnsw", "ivfpq", "exact", "plaid"])
def test_filtered_search_matches_brute_force_filter_then_rank(index_type: str) -> None:
    n, k = 1000 if index_type != "exact" else 400, 10
    index, vectors = _build(index_type, n)
    queries = _dense(12, seed=5) if index_type in ("flat", "hnsw", "ivfpq") else [v[:5] for v in _token_docs(12, 7)]
    everything = np.arange(n)
    unfiltered = index.search(queries, k)
    # an approximate index's own recall: a filter must not lose more than noise on top of it
    baseline = np.mean(
        [
            len({d for d, _ in h} & set(_brute_force(index_type, vectors, q, everything, k))) / k
            for q, h in zip(queries, unfiltered)
        ]
    )
    for name, (where, params, predicate) in CONDITIONS.items():
        subset = np.array([i for i in range(n) if predicate(i, _metadata(i))], dtype=np.int64)
        assert np.array_equal(index.select(where, params), subset), name
        results = index.search(queries, k, where=where, params=params)
        recalls = []
        for query, hits in zip(queries, results):
            got = [d for d, _ in hits]
            assert len(got) == min(k, len(subset)), (name, len(got), len(subset))  # k hits whenever k match
            assert set(got) <= {f"d{i}" for i in subset}, name
            truth = _brute_force(index_type, vectors, query, subset, k)
            recalls.append(len(set(got) & set(truth)) / len(truth))
        assert np.mean(recalls) >= min(MIN_RECALL[index_type], baseline - 0.1), (name, np.mean(recalls), baseline)
        if index_type == "hnsw":  # every subset here is within EXACT_SUBSET_DOCS: scored exactly
            assert np.mean(recalls) == 1.0, (name, np.mean(recalls))
    # ids alone, and ids with a condition: their intersection
    chosen = [f"d{i}" for i in range(0, n, 37)]
    for hits in index.search(queries[:3], k, ids=chosen + ["no-such-doc"]):
        assert {d for d, _ in hits} <= set(chosen) and len(hits) == k
    both = index.search(queries[:3], k, where="half = ?", params=[True], ids=chosen)
    for hits in both:
        assert {d for d, _ in hits} == {d for d in chosen if int(d[1:]) % 2 == 0} or len(hits) == k
    # a deleted document never comes back, filtered or not
    first = results[0][0][0]
    index.delete([first])
    assert first not in [d for d, _ in index.search(queries[:1], k, where=CONDITIONS["50%"][0], params=[True])[0]]


@pytest.mark.parametrize(
    ("where", "params", "message"),
    [
        ("year = ?; DROP TABLE documents", [1], "';'"),
        ("year IN (SELECT pos FROM documents)", [], "SELECT"),
        ("length(venue) > ?", [3], "function"),
        ("yeer = ?", [2020], "unknown field 'yeer'"),
        ("year = ?", [], "1 `?` placeholders but 0"),
        ("year = ?", [1, 2], "but 2 parameters"),
        ("year = 2020", [], "param"),
    ],
)
def test_bad_conditions_are_refused_before_anything_runs(where: str, params: list[Any], message: str) -> None:
    index, _ = _build("flat", 30)
    with pytest.raises(MbretError, match=r"where: .*" + __import__("re").escape(message)):
        index.search(_dense(1), 5, where=where, params=params)


# -- crash consistency: a kill at each step of an add ----------------------------------------------------
def _steps_of_save(index: Any, manifest: Manifest, path: Path, stop_at: int | None) -> int:
    """Save, counting its durable steps: each SQLite commit and each os.fsync / os.replace. With `stop_at`,
    SIGKILL this process just before that step (the count so far is returned otherwise)."""
    count = {"n": 0}

    def step() -> None:
        count["n"] += 1
        if count["n"] == stop_at:
            os.kill(os.getpid(), signal.SIGKILL)

    real = {name: getattr(os, name) for name in ("fsync", "replace")}

    def wrap(name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            step()
            return real[name](*args, **kwargs)

        return call

    def profile(frame: Any, event: str, arg: Any) -> None:
        owner = type(getattr(arg, "__self__", None)).__name__
        if event == "c_call" and getattr(arg, "__name__", "") == "commit" and owner == "Connection":
            step()

    for name in real:
        setattr(os, name, wrap(name))
    sys.setprofile(profile)
    try:
        index.save(path, manifest)
    finally:
        sys.setprofile(None)
        for name, fn in real.items():
            setattr(os, name, fn)
    return count["n"]


@pytest.mark.slow  # several processes (kill -9 or concurrent writers): CI runs it
@pytest.mark.parametrize("index_type", ["flat", "exact"])
def test_a_kill_at_each_step_of_an_add_leaves_vectors_and_store_at_one_generation(
    tmp_path: Path, index_type: str
) -> None:
    pristine = tmp_path / "pristine"
    index, _ = _build(index_type, 40)
    index.save(pristine, _manifest(_kind(index)))
    extra = _dense(3, seed=3) if index_type == "flat" else _token_docs(3, seed=3)
    extra_docs = [{"title": f"n{i}", "text": "t", "metadata": {"year": 3000 + i}} for i in range(3)]

    def changed(path: Path) -> tuple[Any, Manifest]:
        index, manifest = load_index(path)
        index.add(["n0", "n1", "n2"], extra, extra_docs)
        index.delete(["d1"])
        return index, manifest

    scratch = tmp_path / "count"
    shutil.copytree(pristine, scratch)
    steps = _steps_of_save(*changed(scratch), scratch, None)
    assert steps >= 4  # the store's commit, the vector files, the manifest, the purge
    seen = set()
    for stop_at in range(1, steps + 1):
        path = tmp_path / f"idx{stop_at}"
        shutil.copytree(pristine, path)
        index, manifest = changed(path)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                _steps_of_save(index, manifest, path, stop_at)
            finally:
                os._exit(3)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (stop_at, status)
        index, manifest = load_index(path)
        live = set(index.doc_ids) - {None}
        new = "n0" in live
        seen.add(new)
        assert (
            live == ({f"d{i}" for i in range(40)} - {"d1"}) | {"n0", "n1", "n2"}
            if new
            else live == {f"d{i}" for i in range(40)}
        ), stop_at
        # the store shows exactly the index's documents, at the index's generation
        assert len(index.select("year > ?", [0])) == len(live), stop_at
        assert (index.get_documents(["n1"])[0] is not None) == new and (index.get_documents(["d1"])[0] is None) == new
        assert len(index.select("year >= ?", [3000])) == (3 if new else 0), stop_at
        # and the next writer finds a clean directory: its change lands, nothing the killed one left shows
        index.add(["later"], _dense(1, 4) if index_type == "flat" else _token_docs(1, 4), [{"metadata": {"year": 1}}])
        index.save(path, manifest)
        again, _ = load_index(path)
        assert again.get_documents(["later"])[0].metadata == {"year": 1}
        assert len(again.select("year >= ?", [3000])) == (3 if new else 0), stop_at
        assert len(again.select("year > ?", [0])) == len(live) + 1
    assert seen == {True, False}  # kills landed on both sides of the commit


# -- readers in other processes while a writer adds ---------------------------------------------------------
DELETED_BY_WRITER = {f"d{batch}" for batch in range(8)}


def _reader(path: str, ready: Any, done: Any, queue: Any) -> None:
    """Search with a filter and fetch documents, refreshing, until `done` is set (and once more after);
    report counts or the error."""
    try:
        index, _ = load_index(path)
        searches, generations = 0, set()
        query = _dense(1, seed=11)
        ready.release()
        last = False
        while not last:
            last = done.is_set()
            index.refresh()
            hits = index.search(query, 5, where="year >= ? OR year < ?", params=[2010, 2010])[0]
            documents = index.get_documents([d for d, _ in hits])
            # a document the writer deleted since this reader's generation may have lost its row (store.py)
            assert len(hits) == 5, hits
            assert all(doc is not None or d[0] in DELETED_BY_WRITER for d, doc in zip(hits, documents)), hits
            searches += 1
            generations.add(index.generation)
        queue.put(("ok", searches, len(generations)))
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        queue.put(("error", repr(exc), 0))


@pytest.mark.slow  # several processes (kill -9 or concurrent writers): CI runs it
def test_readers_in_other_processes_keep_searching_while_a_writer_adds(tmp_path: Path) -> None:
    path = tmp_path / "idx"
    index, _ = _build("flat", 200)
    index.save(path, _manifest("faiss"))
    context = multiprocessing.get_context("spawn")
    queue, ready, done = context.Queue(), context.Semaphore(0), context.Event()
    readers = [context.Process(target=_reader, args=(str(path), ready, done, queue)) for _ in range(2)]
    for reader in readers:
        reader.start()
    for _ in readers:
        assert ready.acquire(timeout=120)  # the readers are up and searching
    writer, manifest = load_index(path)
    for batch in range(8):
        ids = [f"w{batch}-{i}" for i in range(20)]
        writer.add(ids, _dense(20, seed=100 + batch), [{"text": "w", "metadata": {"year": 3024}} for _ in ids])
        writer.delete([f"d{batch}"])
        writer.save(path, manifest)
        time.sleep(0.2)
    done.set()
    reports = [queue.get(timeout=60) for _ in readers]
    for reader in readers:
        reader.join(timeout=30)
    assert all(r[0] == "ok" for r in reports), reports
    assert all(r[1] > 5 and r[2] >= 2 for r in reports), reports  # they searched, and saw new generations
    final, _ = load_index(path)
    assert len(final.select("year = ?", [3024])) == 160 and final.get_documents(["d0"]) == [None]
    assert json.loads((path / "manifest.json").read_text())["generation"] == manifest.generation


# -- the CLI: index with metadata, search with text and filters, info, eval --where --------------------------
def _corpus_with_metadata(tmp_path: Path, small_corpus: dict) -> Path:
    years = {"d1": 2019, "d2": 2021, "d3": 2022, "d4": 2018, "d5": 2023, "d6": 2021}
    venues = {"d1": "ACL", "d2": "EMNLP", "d3": "ACL", "d4": "NAACL", "d5": "ACL", "d6": "EMNLP"}
    from .conftest import write_beir

    corpus = {
        d: {**doc, "metadata": {"year": years[d], "venue": venues[d], "peer reviewed": d != "d5"}}
        for d, doc in small_corpus.items()
    }
    queries = {"q1": "does smoking cause cancer", "q2": "brain activity in mice", "q3": "virus immune response"}
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1}, "q3": {"d6": 2, "d4": 0}}
    return write_beir(tmp_path / "meta", corpus, queries, qrels)


def test_cli_stores_documents_filters_searches_and_describes_the_index(
    tmp_path: Path, cli, tiny_model: str, small_corpus: dict
) -> None:
    beir = _corpus_with_metadata(tmp_path, small_corpus)
    for index_type in ("flat", "exact"):
        out = tmp_path / f"idx-{index_type}"
        mode = "dense" if index_type == "flat" else "colbert"
        result = cli("index", beir, "--model", tiny_model, "--mode", mode, "--index-type", index_type, "--output", out)
        assert result.code == 0, result.err
        result = cli("search", out, "cancer", "-k", "10", "--json", "--snippet", "12",
                     "--where", "year >= ? AND venue = ?", "--param", "2020", "--param", "ACL")  # fmt: skip
        assert result.code == 0, result.err
        hits = json.loads(result.out)[0]["hits"]
        assert {h["doc_id"] for h in hits} == {"d3", "d5"}  # every match, and only matches
        by_id = {h["doc_id"]: h for h in hits}
        assert by_id["d5"]["title"] == "Retrieval" and by_id["d5"]["text"] == "dense vector…"
        assert by_id["d5"]["metadata"] == {"year": 2023, "venue": "ACL", "peer reviewed": False}
        result = cli("search", out, "cancer", "--show-text", "--where", '"peer reviewed" = ?', "--param", "false")
        assert result.code == 0 and "d5" in result.out and "dense vector search" in result.out, result.out
        ids = tmp_path / "ids.txt"
        ids.write_text("d2\n\nd4\nnot-there\n")
        result = cli("search", out, "brain", "--json", "--ids", ids)
        assert [h["doc_id"] for h in json.loads(result.out)[0]["hits"]] in (["d2", "d4"], ["d4", "d2"])
        assert "1 of 3 ids" in result.err
        for bad, message in (
            (["--where", "year = ?; DROP TABLE documents", "--param", "1"], "';'"),
            (["--where", "yr = ?", "--param", "1"], "unknown field 'yr'"),
            (["--where", "year = ? AND venue = ?", "--param", "1"], "2 `?` placeholders but 1"),
            (["--param", "1"], "--param: values for the ? of a where condition"),
        ):
            result = cli("search", out, "x", *bad)
            assert result.code == 2 and message in result.err and result.err.count("\n") == 1, (bad, result.err)

        result = cli("info", out, "--json")
        assert result.code == 0, result.err
        info = json.loads(result.out)
        assert (info["num_docs"], info["num_live"], info["num_deleted"]) == (6, 6, 0)
        assert info["metadata_fields"] == {
            "peer reviewed": {"boolean": 6}, "venue": {"string": 6}, "year": {"integer": 6}
        }  # fmt: skip
        assert info["generation"] == 1 and info["bytes"]["documents"] > 0
        assert ("num_tokens" in info) == (mode == "colbert")
        assert cli("delete", out, "d3").code == 0
        info = json.loads(cli("info", out, "--json").out)
        assert (info["num_live"], info["num_deleted"], info["generation"]) == (5, 1, 2)
        assert "year" in cli("info", out).out

    # eval restricted by --where: the filtered-out judged documents count as missed
    result = cli("eval", beir, "--model", tiny_model, "--where", "venue = ?", "--param", "NAACL",
                 "--metrics", "recall@10", "--output", tmp_path / "eval")  # fmt: skip
    assert result.code == 0, result.err
    saved = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert saved["settings"]["filter"]["where"] == "venue = ?"
    run = (tmp_path / "eval" / "run.trec").read_text().splitlines()
    assert {line.split()[2] for line in run} == {"d4"}

    # --no-store-text keeps ids and metadata only
    out = tmp_path / "no-text"
    assert cli("index", beir, "--model", tiny_model, "--output", out, "--no-store-text").code == 0
    hit = json.loads(cli("search", out, "cancer", "-k", "1", "--json").out)[0]["hits"][0]
    assert hit["title"] is None and hit["text"] is None and "year" in hit["metadata"]
    assert json.loads(cli("info", out, "--json").out)["store_text"] is False
