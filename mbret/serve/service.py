"""One served index: a `Retriever` loaded once per worker process, its query batcher, and its one writer.

Reads and writes meet only through the index object, whose searches are thread-safe while one thread
changes it (see each index's thread-safety note):

- a search encodes its queries through the batcher and searches the index as it is, never waiting for a
  write; when another process (a `--workers` sibling, an `mbret index --add`) committed a newer
  generation, the next search first `refresh()`es, unless this process's writer is busy (it refreshes
  under the lock itself);
- a write is queued (`max_pending_writes`, then 503) for the index's writer thread, which takes every
  queued write at once, and under the directory's lock refreshes to the newest generation, applies them,
  saves one new generation and only then answers each caller with it. A 200 thus names a generation on
  disk (fsynced by the save), and a write the server dies during is in no generation at all.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mbret.errors import MbretError
from mbret.indexes import load_index
from mbret.indexes.base import MANIFEST
from mbret.io import index_lock
from mbret.retrieval import Retriever
from mbret.serve.batching import QueryBatcher
from mbret.serve.config import ServeConfig
from mbret.types import SearchParams

GROUP_COMMIT = 64  # write requests applied together under one save, at most


class ServeError(MbretError):
    """A request the service refuses: its HTTP status, a stable code, a one-line message and, when one request
    field is at fault, its name (`field`)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}
        self.field = field


@dataclass
class _Write:
    kind: str  # "add" or "delete"
    payload: Any
    done: threading.Event = field(default_factory=threading.Event)
    generation: int | None = None
    error: BaseException | None = None


class ServedIndex:
    """An index directory served as `name`."""

    def __init__(self, name: str, path: Path, config: ServeConfig, retriever: Retriever) -> None:
        self.name, self.path, self.config, self.retriever = name, Path(path), config, retriever
        self.batcher = QueryBatcher(
            lambda texts: retriever.encoder.encode_queries(texts, batch_size=max(len(texts), 1)),
            window_s=config.batch_window_ms / 1000,
            max_queries=config.max_batch_queries,
        )
        self._writes: queue.Queue[_Write | None] = queue.Queue(maxsize=config.max_pending_writes)
        self._writing = threading.Lock()  # held by the writer while it changes and saves the index
        self._seen_manifest = self._manifest_stamp()
        self._closed = False
        self._committing = False
        self._writer = threading.Thread(target=self._write_loop, name=f"mbret-writer-{name}", daemon=True)
        self._writer.start()

    @classmethod
    def load(cls, path: str | Path, config: ServeConfig) -> ServedIndex:
        path = Path(path)
        retriever = Retriever.load(path, device=config.device)
        return cls(path.absolute().name, path, config, retriever)

    # -- reading ---------------------------------------------------------------------------------------
    @property
    def index(self) -> Any:
        return self.retriever.index

    @property
    def generation(self) -> int:
        return int(self.index.generation or 0)

    @property
    def pending_writes(self) -> int:
        """Writes queued, not yet taken by the writer."""
        return self._writes.qsize()

    @property
    def committing(self) -> bool:
        """Whether the writer is applying and saving a group of writes now."""
        return self._committing

    def _manifest_stamp(self) -> tuple[int, int] | None:
        try:
            stat = os.stat(self.path / MANIFEST)
        except FileNotFoundError:
            return None
        return stat.st_mtime_ns, stat.st_ino

    def refresh_if_changed(self) -> None:
        """Pick up a generation another process committed (a stat per request when nothing changed)."""
        stamp = self._manifest_stamp()
        if stamp == self._seen_manifest:
            return
        if not self._writing.acquire(blocking=False):
            return  # this process's writer is committing; it leaves the index at the newest generation
        try:
            self.retriever.refresh()
            self._seen_manifest = stamp
        finally:
            self._writing.release()

    def check_search(self, where: str | None, params: Sequence[Any], search_params: SearchParams | None) -> None:
        if where is not None:
            # a refused condition is a ParameterError naming `where`: the app answers it with that field
            self.index.documents.check_where(where, params)
        elif params:
            raise ServeError(400, "bad_filter", "params: values for the ? of where; add where", field="params")
        # one served index: a setting it does not read would change nothing, so it is refused by name
        reads = tuple(getattr(self.index, "search_settings", ()))
        unused = [name for name in (search_params.given() if search_params else {}) if name not in reads]
        if unused:
            takes = f"it takes {', '.join(reads)}" if reads else "it takes no search settings"
            message = f"does not apply to index {self.name!r} ({self.index.index_type}); {takes}"
            raise ServeError(400, "bad_request", f"{unused[0]}: {message}", field=unused[0])

    def search(
        self,
        queries: Sequence[str],
        k: int,
        where: str | None = None,
        params: Sequence[Any] = (),
        ids: Sequence[str] | None = None,
        return_documents: bool = True,
        search_params: SearchParams | None = None,
    ) -> tuple[list[list[Any]], int]:
        """Hits per query and the generation searched; `search_params` apply to this request only."""
        self.refresh_if_changed()
        self.check_search(where, params, search_params)
        embeddings = self.batcher.encode(queries)
        generation = self.generation
        hits = self.retriever.search_embeddings(
            embeddings,
            k,
            where=where,
            params=params,
            ids=ids,
            return_documents=return_documents,
            search_params=search_params,
        )
        return hits, generation

    def get(self, doc_id: str) -> Any:
        self.refresh_if_changed()
        document = self.index.get_documents([doc_id])[0]
        if document is None:
            raise ServeError(404, "unknown_document", f"index {self.name!r} has no document {doc_id!r}")
        return document

    # -- writing ---------------------------------------------------------------------------------------
    def add(self, documents: dict[str, dict[str, Any]]) -> int:
        """Add documents (doc id -> title, text, metadata); returns the committed generation."""
        return self._submit(_Write("add", documents))

    def delete(self, doc_ids: Sequence[str]) -> int:
        return self._submit(_Write("delete", list(doc_ids)))

    def _submit(self, write: _Write) -> int:
        if self._closed:
            raise ServeError(503, "shutting_down", "the service is shutting down", {"Retry-After": "1"})
        try:
            self._writes.put_nowait(write)
        except queue.Full:
            raise ServeError(
                503,
                "write_queue_full",
                f"index {self.name!r} has {self.config.max_pending_writes} writes queued; retry later",
                {"Retry-After": "1"},
            ) from None
        write.done.wait()
        if write.error is not None:
            raise write.error
        assert write.generation is not None
        return write.generation

    def _write_loop(self) -> None:
        stop = False
        while not stop:
            first = self._writes.get()
            if first is None:
                return
            group = [first]
            while len(group) < GROUP_COMMIT:
                try:
                    more = self._writes.get_nowait()
                except queue.Empty:
                    break
                if more is None:  # `close`: this group is the last
                    stop = True
                    break
                group.append(more)
            self._commit(group)

    def _commit(self, group: list[_Write]) -> None:
        """Apply `group` and save it as one generation; every write of it is answered, whatever happens."""
        generation: int | None = None
        with self._writing:
            self._committing = True
            try:
                applied = 0
                with index_lock(self.path):
                    self.retriever.refresh()  # another process's commit first: ours goes on top of it
                    for write in group:
                        try:
                            self._apply(write)
                            applied += 1
                        except ServeError as exc:  # this write alone is refused; the others go on
                            write.error = exc
                    if applied:
                        self.retriever.save(self.path)
                    self._seen_manifest = self._manifest_stamp()
                generation = self.generation
            except BaseException as exc:  # nothing of this group is committed: drop its changes from memory
                failed = ServeError(500, "write_failed", f"index {self.name!r}: not committed ({exc})")
                for write in group:
                    if write.error is None:
                        write.error = failed
                with contextlib.suppress(Exception):
                    self._reload()
                if not isinstance(exc, Exception):
                    raise
            finally:
                self._committing = False
                for write in group:
                    if write.error is None:
                        write.generation = generation
                    write.done.set()

    def _apply(self, write: _Write) -> None:
        index = self.index
        if write.kind == "add":
            documents: dict[str, dict[str, Any]] = write.payload
            present = next((d for d in documents if d in index), None)
            if present is not None:
                raise ServeError(409, "duplicate_id", f"index {self.name!r} already has document {present!r}")
            try:
                self.retriever.add(documents, show_progress=False)
            except MbretError as exc:  # refused before the index changed (ids and metadata are checked first)
                raise ServeError(400, "bad_document", str(exc)) from None
        else:
            doc_ids: list[str] = write.payload
            unknown = next((d for d in doc_ids if d not in index), None)
            if unknown is not None:
                raise ServeError(404, "unknown_document", f"index {self.name!r} has no document {unknown!r}")
            self.retriever.delete(doc_ids)

    def _reload(self) -> None:
        """Back to the generation on disk, dropping changes not saved (after a failed write)."""
        index, _ = load_index(self.path)
        index.to(self.retriever.encoder.device)
        self.retriever.index = index

    def close(self, timeout: float = 60.0) -> None:
        """Commit the writes already queued, refuse new ones, stop the writer and the batcher."""
        self._closed = True
        with contextlib.suppress(queue.Full):  # a full queue: the writer drains it, or is gone
            self._writes.put(None, timeout=timeout)
        self._writer.join(timeout=timeout)
        while True:  # whatever came after the stop mark: refused, not lost silently
            try:
                write = self._writes.get_nowait()
            except queue.Empty:
                break
            if write is not None:
                write.error = ServeError(503, "shutting_down", "the service is shutting down", {"Retry-After": "1"})
                write.done.set()
        self.batcher.close()


def load_indexes(config: ServeConfig, progress: Callable[[str], None] | None = None) -> dict[str, ServedIndex]:
    """Every index of `config`, by name; two directories with one name are refused."""
    served: dict[str, ServedIndex] = {}
    for path in config.indexes:
        name = Path(path).absolute().name
        if name in served:
            raise MbretError(f"{path}: another index is already served as {name!r}; give each a distinct name")
        start = time.perf_counter()
        served[name] = ServedIndex.load(path, config)
        if progress:
            progress(f"loaded index {name!r} from {path} in {time.perf_counter() - start:.1f}s")
    return served
