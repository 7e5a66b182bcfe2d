"""Dynamic batching of query encoding: the queries of requests that arrive within a short window (or while
the encoder is busy) are encoded in one forward pass, and each request gets its own rows back.

Hand-written because it is one queue and one thread: the serving libraries that batch (Ray Serve, Triton,
TorchServe) bring a runtime of their own, and FastAPI has no batching of its own.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any


class _Job:
    __slots__ = ("queries", "done", "result", "error")

    def __init__(self, queries: Sequence[str]) -> None:
        self.queries = list(queries)
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None


class QueryBatcher:
    """`encode(queries)` from any thread returns what `encode_batch` returns for those queries (rows of an
    array, or items of a list), in order. One thread encodes: it takes the first waiting request, collects
    others for up to `window_s` (or until `max_queries`), encodes them together and hands each its part.
    A request larger than `max_queries` is encoded alone."""

    def __init__(self, encode_batch: Callable[[list[str]], Any], window_s: float = 0.002, max_queries: int = 64):
        self._encode_batch = encode_batch
        self._window_s = max(0.0, window_s)
        self._max_queries = max(1, max_queries)
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self.batches = 0  # encodings run (for metrics and tests)
        self.batched_requests = 0
        self._thread = threading.Thread(target=self._run, name="mbret-query-encoder", daemon=True)
        self._thread.start()

    def encode(self, queries: Sequence[str]) -> Any:
        job = _Job(queries)
        self._queue.put(job)
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.result

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs, count = [first], len(first.queries)
            deadline = time.monotonic() + self._window_s
            stop = False
            while count < self._max_queries:
                left = deadline - time.monotonic()
                try:
                    job = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                jobs.append(job)
                count += len(job.queries)
            self._encode(jobs)
            if stop:
                return

    def _encode(self, jobs: list[_Job]) -> None:
        texts = [q for job in jobs for q in job.queries]
        try:
            encoded = self._encode_batch(texts)
        except BaseException as exc:  # every waiter gets the error; the thread keeps serving
            for job in jobs:
                job.error = exc
                job.done.set()
            return
        self.batches += 1
        self.batched_requests += len(jobs)
        begin = 0
        for job in jobs:
            job.result = encoded[begin : begin + len(job.queries)]
            begin += len(job.queries)
            job.done.set()
