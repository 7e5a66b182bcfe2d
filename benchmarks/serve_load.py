"""`mbret serve` under load on SciFact, against in-process `Retriever.search` on the same index.

1. In-process baseline: `--clients` threads, each calling `Retriever.search` on one query at a time, for
   `--seconds` (encoding included).
2. Served: the same clients through `mbret.client.Client` against `mbret serve` (encoding included).
3. Served with writes: the same searches while one client adds 4-document batches and another deletes
   one document at a time; search latency p50/p95/p99 beside step 2's.
4. Kill cycles: `--kills` times, start the server, load it for 2 s with writes and searches, `kill -9` it,
   and check that every acknowledged add is present and every acknowledged delete absent on disk, and a
   write in flight is all there or not at all.

Every request is counted; errors must be 0. The index is a copy of `--index` (default: the PLAID index
`benchmarks/filtered_search.py` builds, nbits 2, ColBERT head over all-MiniLM-L6-v2, documents stored).

    python benchmarks/serve_load.py --index runs/filter-bench/colbert-plaid --work runs/serve-bench
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000
    return {f"p{p}_ms": round(float(np.percentile(ms, p)), 2) for p in (50, 95, 99)} if len(ms) else {}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(path: Path, log: Path, *options: str) -> tuple[subprocess.Popen, str]:
    from mbret.client import Client

    port = free_port()
    command = [sys.executable, "-m", "mbret.cli", "serve", str(path), "--port", str(port), *options]
    process = subprocess.Popen(command, stdout=open(log, "ab"), stderr=subprocess.STDOUT)  # noqa: SIM115
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if Client(url).health()["status"] == "ready":
                return process, url
        except Exception:  # noqa: BLE001 - not up yet
            if process.poll() is not None:
                break
            time.sleep(0.2)
    raise RuntimeError(f"server did not start; see {log}")


def run_clients(search_one, queries: list[str], clients: int, seconds: float) -> dict[str, Any]:  # noqa: ANN001
    """`clients` threads calling `search_one(query)` back to back for `seconds`: q/s, latencies, errors."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(c: int) -> None:
        i = c
        mine, bad = [], []
        while time.monotonic() < stop:
            start = time.perf_counter()
            try:
                search_one(queries[i % len(queries)])
                mine.append(time.perf_counter() - start)
            except Exception as exc:  # noqa: BLE001 - counted, never hidden
                bad.append(repr(exc)[:200])
            i += clients
        with lock:
            latencies.extend(mine)
            errors.extend(bad)

    began = time.perf_counter()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    return {"requests": len(latencies) + len(errors), "errors": len(errors), "error_samples": errors[:3],
            "qps": round(len(latencies) / elapsed, 1), **percentiles(latencies)}  # fmt: skip


class Writers:
    """One client adding 4-document batches (SciFact texts under new ids), one deleting original documents."""

    def __init__(self, client, name: str, texts: list[str], deletable: list[str], prefix: str) -> None:  # noqa: ANN001
        self.client, self.name, self.texts, self.deletable, self.prefix = client, name, texts, deletable, prefix
        self.added: list[list[str]] = []
        self.deleted: list[str] = []
        self.in_flight: list[list[str]] = []
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.add_s: list[float] = []
        self.threads = [threading.Thread(target=self._add), threading.Thread(target=self._delete)]

    def start(self) -> Writers:
        for t in self.threads:
            t.start()
        return self

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(120)

    def _add(self) -> None:
        from mbret.client import ServiceError

        n = 0
        while not self.stop.is_set():
            ids = [f"{self.prefix}-{n}-{j}" for j in range(4)]
            docs = [{"_id": d, "text": self.texts[(4 * n + j) % len(self.texts)]} for j, d in enumerate(ids)]
            start = time.perf_counter()
            try:
                self.client.add(self.name, docs)
                self.added.append(ids)
                self.add_s.append(time.perf_counter() - start)
            except ServiceError as exc:
                self.errors.append(str(exc)[:200])
            except Exception:  # noqa: BLE001 - the server is gone: this write's outcome is unknown
                self.in_flight.append(ids)
                return
            n += 1

    def _delete(self) -> None:
        from mbret.client import ServiceError

        while self.deletable and not self.stop.is_set():
            doc_id = self.deletable.pop()
            try:
                self.client.delete(self.name, [doc_id])
                self.deleted.append(doc_id)
            except ServiceError as exc:
                self.errors.append(str(exc)[:200])
            except Exception:  # noqa: BLE001
                self.in_flight.append([doc_id])
                return
            time.sleep(0.05)


def check_durable(path: Path, added: list[list[str]], deleted: list[str], in_flight: list[list[str]]) -> int:
    """Acknowledged writes that the directory lost (must be 0); raises if a write is half there."""
    from mbret.indexes import load_index

    index, _ = load_index(path)
    lost = sum(1 for ids in added for d in ids if d not in index) + sum(1 for d in deleted if d in index)
    for ids in in_flight:
        present = [d in index for d in ids]
        if any(present) and not all(present):
            raise AssertionError(f"a write in flight at the kill is half there: {ids}")
    return lost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", default="runs/filter-bench/colbert-plaid")
    parser.add_argument("--data", default="../shared/data/beir/scifact")
    parser.add_argument("--work", default="runs/serve-bench")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()

    from mbret.client import Client
    from mbret.data.datasets import load_dataset
    from mbret.retrieval import Retriever

    dataset = load_dataset(args.data)
    queries = list(dataset.queries.values())
    texts = [f"{d.get('title', '')} {d.get('text', '')}".strip() for d in dataset.corpus.values()]
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    served = work / "scifact"
    shutil.copytree(args.index, served)
    log = work / "server.log"
    results: dict[str, Any] = {"clients": args.clients, "seconds": args.seconds, "k": args.k}

    retriever = Retriever.load(served)
    retriever.search(queries[:8], k=args.k)  # warm-up
    results["in_process"] = run_clients(lambda q: retriever.search([q], k=args.k), queries, args.clients, args.seconds)
    print("in-process", json.dumps(results["in_process"]), flush=True)
    retriever = None  # the server loads its own copy

    process, url = start_server(served, log)
    client = Client(url)
    client.search("scifact", queries[:8], k=args.k)
    results["served"] = run_clients(
        lambda q: client.search("scifact", [q], k=args.k), queries, args.clients, args.seconds
    )
    print("served", json.dumps(results["served"]), flush=True)
    ids = [d for d in dataset.corpus][:2000]
    writers = Writers(client, "scifact", texts, list(ids), "load").start()
    loaded = run_clients(lambda q: client.search("scifact", [q], k=args.k), queries, args.clients, args.seconds)
    writers.finish()
    loaded.update(adds=len(writers.added), deletes=len(writers.deleted), write_errors=len(writers.errors))
    loaded.update(write_error_samples=writers.errors[:3])
    loaded.update({f"add_{name}": value for name, value in percentiles(writers.add_s).items()})
    results["served_with_writes"] = loaded
    print("served with writes", json.dumps(loaded), flush=True)
    process.send_signal(signal.SIGTERM)
    process.wait(120)
    results["lost_after_sigterm"] = check_durable(served, writers.added, writers.deleted, writers.in_flight)

    deletable = [d for d in ids if d not in set(writers.deleted)]
    lost = acknowledged = 0
    cycles = []
    for cycle in range(args.kills):
        process, url = start_server(served, log)
        writers = Writers(Client(url), "scifact", texts, deletable, f"kill{cycle}").start()
        searchers = threading.Thread(
            target=run_clients, args=(lambda q, u=url: Client(u).search("scifact", [q], k=args.k), queries, 4, 2.0)
        )
        searchers.start()
        time.sleep(2.0)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(60)
        writers.finish()
        searchers.join(60)
        missing = check_durable(served, writers.added, writers.deleted, writers.in_flight)
        lost += missing
        acknowledged += sum(len(i) for i in writers.added) + len(writers.deleted)
        cycles.append({"acknowledged": sum(len(i) for i in writers.added) + len(writers.deleted), "lost": missing,
                       "in_flight": len(writers.in_flight), "errors": len(writers.errors)})  # fmt: skip
        print(f"kill {cycle + 1}/{args.kills}", json.dumps(cycles[-1]), flush=True)
    results["kill_cycles"] = {"cycles": args.kills, "acknowledged_changes": acknowledged, "lost": lost,
                              "errors": sum(c["errors"] for c in cycles)}  # fmt: skip
    served_qps, local_qps = results["served"]["qps"], results["in_process"]["qps"]
    results["served_vs_in_process"] = round(served_qps / local_qps, 3) if local_qps else None
    base, busy = results["served"], results["served_with_writes"]
    results["p99_over_p50_with_writes"] = round(busy["p99_ms"] / busy["p50_ms"], 2) if busy.get("p50_ms") else None
    results["p50_with_writes_over_without"] = round(busy["p50_ms"] / base["p50_ms"], 2) if base.get("p50_ms") else None
    print(json.dumps({k: v for k, v in results.items() if not isinstance(v, dict)}, indent=1))
    (work / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
