"""`mbret serve`: the endpoints, their errors, batching and the write queue in-process (FastAPI's test
client); a live server in other processes for the client, `mbret search --url`, several workers, SIGTERM
draining and `kill -9` under load (loopback only, bounded in time)."""

from __future__ import annotations

import json
import re
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from mbret.client import Client, ServiceError
from mbret.indexes import load_index
from mbret.io import index_lock
from mbret.serve import ServeConfig, create_app

from .serving import TOPICS, Server, copy_index


@pytest.fixture()
def served(served_indexes: dict[str, Path], tmp_path: Path):  # noqa: ANN201
    def make(**options: Any) -> TestClient:
        paths = [str(copy_index(p, tmp_path / name)) for name, p in served_indexes.items()]
        return TestClient(create_app(ServeConfig(indexes=tuple(paths), **options)))

    return make


def test_search_add_get_delete_and_info_on_dense_and_plaid(served) -> None:  # noqa: ANN001
    with served() as http:
        assert http.get("/health").json() == {"status": "ready", "indexes": ["exact", "flat", "plaid"]}
        listed = {row["name"]: row for row in http.get("/indexes").json()["indexes"]}
        assert listed["plaid"]["mode"] == "colbert" and listed["flat"]["num_live"] == 40
        for name in ("flat", "plaid", "exact"):
            body = {"queries": ["vitamin levels", "brain activity"], "k": 5, "where": "venue = ?", "params": ["ACL"]}
            answer = http.post(f"/indexes/{name}/search", json=body).json()
            assert answer["generation"] == 1 and len(answer["results"]) == 2
            for row in answer["results"]:
                assert len(row) == 5 and all(hit["metadata"]["venue"] == "ACL" for hit in row)
                assert [h["score"] for h in row] == sorted((h["score"] for h in row), reverse=True)
                assert row[0]["title"].startswith("Study ") and row[0]["text"].startswith("a study of")

            new = {
                "_id": "new 1",
                "title": "Fresh",
                "text": "vitamin levels of a new cohort",
                "metadata": {"year": 2030},
            }
            added = http.post(f"/indexes/{name}/documents", json={"documents": [new]})
            assert added.status_code == 200 and added.json() == {"added": 1, "generation": 2}
            assert load_index(Path(http.app.state.served[name].path))[0].generation == 2  # on disk when answered
            hits = http.post(f"/indexes/{name}/search", json={"queries": ["x"], "k": 3, "where": "year = ?",
                                                              "params": [2030]}).json()  # fmt: skip
            assert [h["doc_id"] for h in hits["results"][0]] == ["new 1"] and hits["generation"] == 2
            assert http.get(f"/indexes/{name}/documents/new 1").json()["metadata"] == {"year": 2030}

            gone = http.request("DELETE", f"/indexes/{name}/documents", json={"ids": ["new 1", "d0"]})
            assert gone.json() == {"deleted": 2, "generation": 3}
            assert http.get(f"/indexes/{name}/documents/d0").status_code == 404
            info = http.get(f"/indexes/{name}").json()
            assert (info["num_live"], info["generation"]) == (39, 3) and "year" in info["metadata_fields"]
            bare = http.post(f"/indexes/{name}/search", json={"queries": ["x"], "k": 2, "return_documents": False})
            assert set(bare.json()["results"][0][0]) == {"doc_id", "score"}
        plaid = http.post(
            "/indexes/plaid/search", json={"queries": ["x"], "k": 3, "n_ivf_probe": 4, "n_candidates": 64}
        )
        assert plaid.status_code == 200 and len(plaid.json()["results"][0]) == 3
        metrics = http.get("/metrics").text
        assert 'mbret_requests_total{method="POST",route="/indexes/{name}/search",status="200"}' in metrics
        assert 'mbret_generation{index="flat"} 3.0' in metrics and 'mbret_documents{index="plaid"} 39.0' in metrics
        assert "mbret_request_seconds_bucket" in metrics and "mbret_write_queue_depth" in metrics
        page = http.get("/")
        assert page.status_code == 200 and "<title>mbret search</title>" in page.text
        assert "/indexes/{name}/search" in http.get("/openapi.json").json()["paths"]


BAD_BODIES = [b"{", b"\xff\xfe\x00garbage", b"[]", b"null", b"1e999999", b'{"queries": ' + b"[" * 5000]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("POST", "/indexes/flat/search", {"queries": []}, 422, "invalid_field"),
        ("POST", "/indexes/flat/search", {"queries": ["  \t"]}, 422, "invalid_field"),
        ("POST", "/indexes/flat/search", {"queries": "one"}, 422, "invalid_field"),
        ("POST", "/indexes/flat/search", {"queries": ["x"], "k": 0}, 422, "invalid_field"),
        ("POST", "/indexes/flat/search", {"queries": ["x"], "k": 10**6}, 422, "invalid_field"),
        ("POST", "/indexes/flat/search", {"queries": ["x"], "k": "ten"}, 422, "invalid_field"),
        ("POST", "/indexes/flat/search", {"queries": ["x"], "nope": 1}, 422, "invalid_field"),
        ("POST", "/indexes/flat/search", {"queries": ["x" * 30_000]}, 422, "invalid_field"),
        ("POST", "/indexes/flat/search", {"queries": ["x"] * 300}, 422, "too_many_queries"),
        ("POST", "/indexes/flat/search", {"queries": ["x"], "where": "year = 2020"}, 400, "bad_filter"),
        ("POST", "/indexes/flat/search", {"queries": ["x"], "where": "year = ?; DROP TABLE documents"}, 400,
         "bad_filter"),
        ("POST", "/indexes/flat/search", {"queries": ["x"], "where": "nofield = ?", "params": [1]}, 400, "bad_filter"),
        ("POST", "/indexes/flat/search", {"queries": ["x"], "where": "year = ?", "params": []}, 400, "bad_filter"),
        ("POST", "/indexes/flat/search", {"queries": ["x"], "where": "year = ?", "params": [{"a": 1}]}, 422,
         "invalid_field"),
        ("POST", "/indexes/flat/search", {"queries": ["x"], "n_ivf_probe": 2}, 400, "bad_request"),
        ("POST", "/indexes/flat/search", {"queries": ["x"], "ids": []}, 422, "invalid_field"),
        ("POST", "/indexes/nowhere/search", {"queries": ["x"]}, 404, "unknown_index"),
        ("POST", "/indexes/flat/documents", {"documents": [{"_id": "a", "text": "t"}, {"_id": "a", "text": "u"}]},
         422, "duplicate_id"),
        ("POST", "/indexes/flat/documents", {"documents": [{"_id": "d1", "text": "already there"}]}, 409,
         "duplicate_id"),
        ("POST", "/indexes/flat/documents", {"documents": [{"_id": "", "text": "t"}]}, 422, "invalid_field"),
        ("POST", "/indexes/flat/documents", {"documents": [{"_id": "z", "text": "t", "metadata": {"a": [1]}}]}, 422,
         "invalid_field"),
        ("POST", "/indexes/flat/documents", {"documents": [{"_id": "z", "text": 5}]}, 422, "invalid_field"),
        ("POST", "/indexes/flat/documents", {"documents": [{"_id": "z"}]}, 422, "invalid_field"),
        ("POST", "/indexes/flat/documents", {"documents": []}, 422, "invalid_field"),
        ("POST", "/indexes/flat/documents", {"documents": [{"_id": f"n{i}", "text": "t"} for i in range(1001)]}, 422,
         "too_many_documents"),
        ("DELETE", "/indexes/flat/documents", {"ids": [f"d{i}" for i in range(1001)]}, 422, "too_many_documents"),
        ("DELETE", "/indexes/flat/documents", {"ids": ["d1", "missing"]}, 404, "unknown_document"),
        ("DELETE", "/indexes/flat/documents", {"ids": ["d1", "d1"]}, 422, "duplicate_id"),
        ("DELETE", "/indexes/flat/documents", {"ids": "d1"}, 422, "invalid_field"),
        ("GET", "/indexes/flat/documents/missing", None, 404, "unknown_document"),
        ("GET", "/indexes/nowhere", None, 404, "unknown_index"),
        ("PUT", "/indexes/flat/search", {"queries": ["x"]}, 405, "method_not_allowed"),
        ("GET", "/no/such/path", None, 404, "not_found"),
    ],
)  # fmt: skip
def test_bad_requests_get_one_error_shape_and_change_nothing(served, method, path, body, status, code) -> None:  # noqa: ANN001
    with served() as http:
        response = http.request(method, path, json=body)
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert error["code"] == code and error["message"]
        listed = {row["name"]: row for row in http.get("/indexes").json()["indexes"]}
        assert (listed["flat"]["num_live"], listed["flat"]["generation"]) == (40, 1)  # nothing half-written
        assert http.post("/indexes/flat/search", json={"queries": ["still up"]}).status_code == 200


def test_a_refused_filter_names_its_request_field(served) -> None:  # noqa: ANN001
    """The library's ParameterError names the Python parameter; the service answers with the request field of
    that name, and no CLI flag leaks into the message."""
    with served() as http:
        for body, field, start in (
            ({"queries": ["x"], "where": "year = 2020"}, "where", "where: literal values are not allowed: '2020'"),
            ({"queries": ["x"], "where": "yeer = ?", "params": [1]}, "where", "where: unknown field 'yeer'"),
            ({"queries": ["x"], "params": [1]}, "params", "params: values for the ? of where"),
        ):
            response = http.post("/indexes/flat/search", json=body)
            error = response.json()["error"]
            assert response.status_code == 400 and error["code"] == "bad_filter", response.text
            assert error["field"] == field and error["message"].startswith(start), error
            assert "--" not in error["message"], error


def test_malformed_bodies_at_every_endpoint_never_give_a_500(served) -> None:  # noqa: ANN001
    routes = [("POST", "/indexes/flat/search"), ("POST", "/indexes/plaid/search"), ("POST", "/indexes/flat/documents"),
              ("DELETE", "/indexes/plaid/documents"), ("GET", "/indexes/flat/documents/d1"), ("GET", "/indexes"),
              ("GET", "/health"), ("GET", "/metrics"), ("GET", "/")]  # fmt: skip
    with served(max_body_bytes=64 * 1024) as http:
        for method, path in routes:
            for body in [*BAD_BODIES, json.dumps({"queries": ["x"], "k": 1, "extra": "y" * 100}).encode()]:
                response = http.request(method, path, content=body, headers={"Content-Type": "application/json"})
                assert response.status_code < 500, (method, path, body[:20], response.text)
                if response.status_code >= 400:
                    assert set(response.json()["error"]) == {"code", "message"}
            huge = http.request(method, path, content=b'{"queries": ["' + b"y" * 100_000 + b'"]}')
            assert huge.status_code == 413 and huge.json()["error"]["code"] == "body_too_large"
            chunked = http.request(method, path, content=iter([b'{"queries": ["', b"y" * 100_000, b'"]}']))
            assert "content-length" not in chunked.request.headers
            assert chunked.status_code == 413 or (method == "GET" and chunked.status_code == 200), chunked.text
        assert http.post("/indexes/flat/search", json={"queries": ["x"]}).status_code == 200


def test_api_key_and_read_only(served, tmp_path: Path) -> None:  # noqa: ANN001
    key_file = tmp_path / "key"
    key_file.write_text("s3cret-key\n")
    with served(api_key_file=str(key_file), read_only=True) as http:
        assert http.get("/health").status_code == 200  # open, for load balancers
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "s3cret-ke"}):
            response = http.post("/indexes/flat/search", json={"queries": ["x"]}, headers=headers)
            assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized"
            assert "s3cret" not in response.text
        assert http.get("/metrics").status_code == 401
        good = {"Authorization": "Bearer s3cret-key"}
        assert http.post("/indexes/flat/search", json={"queries": ["x"]}, headers=good).status_code == 200
        assert http.post(
            "/indexes/flat/search", json={"queries": ["x"]}, headers={"X-API-Key": "s3cret-key"}
        ).is_success
        write = http.post("/indexes/flat/documents", json={"documents": [{"_id": "n", "text": "t"}]}, headers=good)
        assert write.status_code == 403 and write.json()["error"]["code"] == "read_only"


def test_concurrent_searches_are_encoded_in_shared_batches(served) -> None:  # noqa: ANN001
    with served(batch_window_ms=200) as http:
        barrier = threading.Barrier(8)
        answers: list[Any] = [None] * 8

        def ask(i: int) -> None:
            barrier.wait()
            answers[i] = http.post("/indexes/plaid/search", json={"queries": [TOPICS[i % 6], "group 3"], "k": 4})

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        batcher = http.app.state.served["plaid"].batcher
        assert all(a.status_code == 200 for a in answers)
        assert batcher.batched_requests == 8 and batcher.batches < 8  # requests shared encodings
        alone = http.post("/indexes/plaid/search", json={"queries": [TOPICS[0], "group 3"], "k": 4}).json()
        assert answers[0].json()["results"] == alone["results"]  # each caller got its own rows back


def test_a_full_write_queue_answers_503_with_retry_after(served) -> None:  # noqa: ANN001
    with served(max_pending_writes=1) as http:
        index = http.app.state.served["flat"]
        results: list[Any] = []

        def add(doc_id: str) -> None:
            results.append(http.post("/indexes/flat/documents", json={"documents": [{"_id": doc_id, "text": "t"}]}))

        with index_lock(index.path):  # the writer waits here with the first write; the second fills the queue
            first = threading.Thread(target=add, args=("w1",))
            first.start()
            deadline = time.monotonic() + 10
            while not (index.committing and not index.pending_writes) and time.monotonic() < deadline:
                time.sleep(0.01)  # until the writer has taken w1 (and waits for the lock)
            second = threading.Thread(target=add, args=("w2",))
            second.start()
            while not index.pending_writes and time.monotonic() < deadline:
                time.sleep(0.01)
            refused = http.post("/indexes/flat/documents", json={"documents": [{"_id": "w3", "text": "t"}]})
            assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
            assert refused.json()["error"]["code"] == "write_queue_full"
            searched = http.post("/indexes/flat/search", json={"queries": ["x"], "k": 1})
            assert searched.status_code == 200  # searches never wait for a write
        first.join(30)
        second.join(30)
        assert sorted(r.status_code for r in results) == [200, 200]
        assert {d for d in ("w1", "w2", "w3") if d in load_index(index.path)[0]} == {"w1", "w2"}


# ------------------------------------------------------------------------------------------- live server


@pytest.mark.slow
def test_client_and_cli_search_url_talk_to_a_live_server(
    served_indexes: dict[str, Path], tmp_path: Path, cli, capsys
) -> None:  # noqa: ANN001
    path = copy_index(served_indexes["flat"], tmp_path / "flat")
    server = Server([path], log=tmp_path / "server.log")
    try:
        client = server.client
        assert client.info()["indexes"][0]["name"] == "flat"
        assert (
            client.add("flat", [{"_id": "n1", "title": "New", "text": "brain activity now", "metadata": {"year": 1}}])
            == 2
        )
        hits = client.search("flat", ["brain activity"], k=3, where="year = ?", params=[1], return_documents=True)
        assert [(h.doc_id, h.title, h.metadata) for h in hits[0]] == [("n1", "New", {"year": 1})]
        assert client.get("flat", "n1").text == "brain activity now"
        assert client.delete("flat", ["n1"]) == 3
        with pytest.raises(ServiceError) as refused:
            client.get("flat", "n1")
        assert refused.value.status == 404 and refused.value.code == "unknown_document"
        assert client.info("flat")["generation"] == 3

        local = cli("search", path, "vitamin levels", "-k", "4", "--json")
        remote = cli("search", "--url", server.url, "flat", "vitamin levels", "-k", "4", "--json")
        assert remote.code == 0, remote.err
        strip = [[{k: v for k, v in h.items() if k != "score"} for h in q["hits"]] for q in json.loads(local.out)]
        assert [
            [{k: v for k, v in h.items() if k != "score"} for h in q["hits"]] for q in json.loads(remote.out)
        ] == strip
        bad = cli("search", "--url", server.url, "flat", "x", "--where", "year = 1")
        assert bad.code == 2 and "where:" in bad.err and "HTTP 400" in bad.err
        missing = cli("search", "--url", server.url, "nope", "x")
        assert missing.code == 2 and "no index named 'nope'" in missing.err

        readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
        block = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "Client(" in b)
        block = block.replace("http://127.0.0.1:8000", server.url).replace('"scifact-mini"', '"flat"')
        exec(compile(block, "README.md", "exec"), {})
        assert capsys.readouterr().out.strip().endswith("['new-1']")
        with pytest.raises(ServiceError):
            client.get("flat", "new-1")  # the example deletes what it added
    finally:
        server.stop(signal.SIGTERM)


def _load(
    client: Client, name: str, prefix: str, deletable: list[str], log: dict[str, Any], stop: threading.Event
) -> None:
    """Two writers add 3-document batches, one deletes `deletable` documents one at a time, two search,
    until `stop`. Every acknowledged change, every refused request and every request the server died
    during is logged."""
    lock = threading.Lock()

    def note(key: str, value: Any) -> None:
        with lock:
            log.setdefault(key, []).append(value)

    def adder(w: int) -> None:
        n = 0
        while not stop.is_set():
            ids = [f"{prefix}-w{w}-{n}-{j}" for j in range(3)]
            documents = [{"_id": d, "text": f"{TOPICS[j]} {d}"} for j, d in enumerate(ids)]
            try:
                client.add(name, documents)
                note("added", ids)
            except ServiceError as exc:
                note("refused", exc.status)
            except Exception:  # noqa: BLE001 - the server died mid-request: either outcome is allowed
                note("in_flight", ids)
                return
            n += 1

    def deleter() -> None:
        while deletable and not stop.is_set():
            doc_id = deletable.pop()
            try:
                client.delete(name, [doc_id])
                note("deleted", doc_id)
            except ServiceError as exc:
                note("refused", exc.status)
            except Exception:  # noqa: BLE001
                note("in_flight", [doc_id])
                return

    def searcher() -> None:
        while not stop.is_set():
            start = time.perf_counter()
            try:
                client.search(name, ["vitamin levels"], k=5)
                note("search_s", time.perf_counter() - start)
            except ServiceError as exc:
                note("refused", exc.status)
            except Exception:  # noqa: BLE001
                return

    threads = [threading.Thread(target=adder, args=(w,)) for w in range(2)]
    threads += [threading.Thread(target=deleter)] + [threading.Thread(target=searcher) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)


def _check_acknowledged(path: Path, log: dict[str, Any]) -> None:
    index, _ = load_index(path)
    for ids in log.get("added", []):
        assert all(d in index for d in ids), f"an acknowledged add is missing: {ids}"
    for doc_id in log.get("deleted", []):
        assert doc_id not in index, f"an acknowledged delete is back: {doc_id}"
    for ids in log.get("in_flight", []):
        present = [d in index for d in ids]
        assert all(present) or not any(present), f"a write the server died during is half there: {ids}"
    known = {f"d{i}" for i in range(40)} | {
        d for key in ("added", "in_flight") for ids in log.get(key, []) for d in ids
    }
    assert set(index.doc_ids) - {None} <= known  # nothing but what clients sent


@pytest.mark.slow
def test_kill_9_under_load_loses_no_acknowledged_write(served_indexes: dict[str, Path], tmp_path: Path) -> None:
    path = copy_index(served_indexes["flat"], tmp_path / "flat")
    acknowledged: dict[str, Any] = {}
    deletable = [f"d{i}" for i in range(40)]
    for cycle in range(3):
        server = Server([path], log=tmp_path / "server.log")
        log: dict[str, Any] = {}
        stop = threading.Event()
        load = threading.Thread(target=_load, args=(server.client, "flat", f"c{cycle}", deletable, log, stop))
        load.start()
        time.sleep(1.5 + 0.5 * cycle)
        server.stop(signal.SIGKILL)  # mid-load: writes and searches in flight
        stop.set()
        load.join(60)
        print({key: len(value) for key, value in log.items()})
        assert log.get("added") and log.get("search_s"), log.keys()
        assert not log.get("refused"), log["refused"]  # no errors but the kill
        for key in ("added", "deleted", "in_flight"):
            acknowledged.setdefault(key, []).extend(log.get(key, []))
        _check_acknowledged(path, acknowledged)  # after each restart, everything acknowledged so far
    restarted = Server([path], log=tmp_path / "server.log")
    try:
        last = acknowledged["added"][-1]
        assert restarted.client.get("flat", last[0]).doc_id == last[0]  # searchable after the restart
        hits = restarted.client.search("flat", [f"{TOPICS[0]} {last[0]}"], k=5)
        assert last[0] in [h.doc_id for h in hits[0]]
    finally:
        restarted.stop(signal.SIGTERM)


@pytest.mark.slow
def test_sigterm_drains_writes_and_two_workers_share_one_index(served_indexes: dict[str, Path], tmp_path: Path) -> None:
    path = copy_index(served_indexes["plaid"], tmp_path / "plaid")
    server = Server([path], "--workers", "2", log=tmp_path / "server.log")
    log: dict[str, Any] = {}
    stop = threading.Event()
    deletable = [f"d{i}" for i in range(40)]
    load = threading.Thread(target=_load, args=(server.client, "plaid", "t", deletable, log, stop))
    load.start()
    time.sleep(3)
    assert server.stop(signal.SIGTERM) == 0  # drains in-flight requests, then exits cleanly
    stop.set()
    load.join(60)
    # two processes committed to one index: a lost race would show as a refused (500) write
    assert log.get("added") and not [s for s in log.get("refused", []) if s != 503], log.get("refused")
    _check_acknowledged(path, log)


def test_a_write_that_fails_to_save_is_answered_500_and_dropped(served, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    with served() as http:
        index = http.app.state.served["plaid"]

        def full_disk(*args: Any, **kwargs: Any) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(index.retriever, "save", full_disk)
        failed = http.post("/indexes/plaid/documents", json={"documents": [{"_id": "lost", "text": "vitamin levels"}]})
        assert failed.status_code == 500 and failed.json()["error"]["code"] == "write_failed"
        assert "No space left" in failed.json()["error"]["message"]
        assert http.get("/indexes/plaid/documents/lost").status_code == 404  # not left in memory either
        hits = http.post("/indexes/plaid/search", json={"queries": ["vitamin levels"], "k": 41}).json()
        assert "lost" not in [h["doc_id"] for h in hits["results"][0]] and hits["generation"] == 1
        monkeypatch.undo()
        again = http.post("/indexes/plaid/documents", json={"documents": [{"_id": "lost", "text": "vitamin levels"}]})
        assert again.status_code == 200 and again.json()["generation"] == 2
