"""The document store of an index: each document's id, title, text and metadata, in SQLite beside the
vectors (`documents.sqlite`), following the index's generations.

Why SQLite: it gives readers in other processes a consistent view while one writer commits (WAL mode,
read-only connections), crash-safe transactions, and the metadata filters users write (`filters.py`).

Rows are keyed by the document's internal id (its position in the index's `doc_ids`, stable for life), so a
filter hands an index the positions it searches among, never a list of strings. A row records the
generation that added it and, once deleted, the generation that deleted it; a reader of generation g
sees the rows with `added <= g` and not `deleted <= g`. That makes one save two commits that agree:

1. under the index's lock, the store commits the new rows and deletions tagged with the new generation g;
2. the manifest rename commits the vectors at g;
3. rows deleted at g are purged for good.

A crash after 1 leaves rows that readers at g - 1 do not see, and the next writer rolls them back; a
crash after 2 leaves deleted rows no reader of g sees, and the next writer purges them. So whatever step a
writer dies at, the vectors and the documents a reader sees are of one generation. A reader still
holding a generation older than the last one finds no row for a document deleted since (its title and
text come back as None, and filters skip it): `refresh()` catches up.

Each metadata field (up to `MAX_INDEXED_FIELDS`, the first seen) gets an SQLite expression index on the
very expression a filter reads it with (`filters.field_sql`), with the visibility columns beside it, so a
filter on that field reads the matching index entries rather than every row's JSON.

An index object's changes not yet saved are held in a private temporary SQLite file (`pending`), so
searches see them and a save copies them over with SQL rather than row by row through Python.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import tempfile
import threading
import weakref
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mbret.data.datasets import metadata_error
from mbret.errors import IndexFormatError, MbretError
from mbret.types import Document

STORE_FILE = "documents.sqlite"
BUSY_TIMEOUT_MS = 30_000  # how long a connection waits for another's lock (a writer's commit) before failing
MAX_INDEXED_FIELDS = 64  # metadata fields given an expression index; filters on others scan every row
SELECTION_CACHE = 16  # filters whose matching positions are kept per store version (repeated filters are free)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    pos INTEGER PRIMARY KEY, doc_id TEXT NOT NULL, title TEXT, text TEXT,
    metadata TEXT NOT NULL DEFAULT '{}', added INTEGER NOT NULL DEFAULT 0, deleted INTEGER);
CREATE INDEX IF NOT EXISTS documents_doc_id ON documents(doc_id);
CREATE TABLE IF NOT EXISTS fields (name TEXT PRIMARY KEY, added INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_PENDING_SCHEMA = """
CREATE TABLE documents (pos INTEGER PRIMARY KEY, doc_id TEXT NOT NULL, title TEXT, text TEXT,
    metadata TEXT NOT NULL DEFAULT '{}');
CREATE TABLE deleted (pos INTEGER PRIMARY KEY);
"""
_VISIBLE = "added <= :gen AND (deleted IS NULL OR deleted > :gen)"
_VISIBLE_POSITIONAL = "added <= ? AND (deleted IS NULL OR deleted > ?)"
_JSON_TYPES = {"integer": "integer", "real": "number", "text": "string", "true": "boolean", "false": "boolean"}


def _connect(path: str | Path, read_only: bool = False) -> sqlite3.Connection:
    if read_only:
        conn = sqlite3.connect(f"{Path(path).absolute().as_uri()}?mode=ro", uri=True, check_same_thread=False)
    else:
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")  # a commit is on disk before the manifest names it
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    return conn


def _row(doc_id: str, document: Mapping[str, Any] | Document | None, store_text: bool) -> tuple[Any, ...]:
    """(doc_id, title, text, metadata JSON) of one document given to `add`; metadata is checked here too,
    for callers that bypass the corpus loader."""
    if document is None:
        return doc_id, None, None, "{}"
    if isinstance(document, Document):
        title, text, metadata = document.title, document.text, document.metadata
    else:
        title, text, metadata = document.get("title"), document.get("text"), document.get("metadata") or {}
    problem = metadata_error(metadata)
    if problem:
        raise MbretError(f"document {doc_id!r}: {problem}")
    if not store_text:
        title = text = None
    return doc_id, title, text, json.dumps(metadata, ensure_ascii=False, sort_keys=True)


def _index_fields(conn: sqlite3.Connection, names: Sequence[str], committed: bool, schema: str = "main") -> None:
    """Expression indexes for the metadata fields `names` (those that have none), inside the caller's
    transaction. On a committed store they carry `added, deleted`, so a filter on one field is answered
    from its index alone (`pos` is the rowid, in every index)."""
    from mbret.indexes.filters import field_sql

    have = {r[0] for r in conn.execute(f"SELECT name FROM {schema}.sqlite_master WHERE type = 'index'")}
    room = MAX_INDEXED_FIELDS - sum(1 for n in have if n.startswith("field_"))
    for name in names:
        index = "field_" + hashlib.sha1(name.encode("utf-8")).hexdigest()[:16]
        if index in have:
            continue
        if room <= 0:
            break
        columns = f"{field_sql(name)}, added, deleted" if committed else field_sql(name)
        conn.execute(f"CREATE INDEX {schema}.{index} ON documents({columns})")
        have.add(index)
        room -= 1


class DocumentStore:
    """The documents an index object holds: those committed at its generation in `DIR/documents.sqlite`,
    plus its changes not saved yet. Thread safety: any number of threads may read (`select`, `get`) while
    one thread changes it under the index's write lock."""

    def __init__(self, path: Path | None = None, generation: int = 0, store_text: bool = True) -> None:
        self.path = path  # the committed store file, or None (a new index, or an index older than stores)
        self.generation = generation
        self.store_text = store_text
        self._local = threading.local()  # per-thread read-only connections to `path`
        self._pending: sqlite3.Connection | None = None
        self._pending_file: str | None = None
        self._pending_lock = threading.Lock()
        self._version = 0
        self._cache: OrderedDict[tuple[Any, ...], np.ndarray] = OrderedDict()
        self._fields: tuple[int, set[str]] | None = None

    # -- opening -------------------------------------------------------------------------------------
    @classmethod
    def open(cls, directory: Path, files: Mapping[str, str], generation: int) -> DocumentStore:
        """The store of an index directory at `generation` (an index older than stores has none: empty)."""
        if "documents" not in files:
            return cls()
        path = Path(directory) / files["documents"]
        store = cls(path, generation)
        try:
            rows = store._reader().execute("SELECT value FROM settings WHERE key = 'store_text'").fetchall()
        except sqlite3.DatabaseError as exc:
            raise IndexFormatError(f"{path}: unreadable document store ({exc})") from None
        store.store_text = not rows or rows[0][0] == "1"
        return store

    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = _connect(self.path, read_only=True)  # type: ignore[arg-type]
        return conn

    def _changes(self) -> sqlite3.Connection:
        """The pending changes' connection, made on the first change."""
        if self._pending is None:
            self._pending, self._pending_file = self._new_scratch()
        return self._pending

    def _new_scratch(self) -> tuple[sqlite3.Connection, str]:
        """A private temporary SQLite file for pending changes, removed with this store."""
        fd, name = tempfile.mkstemp(prefix="mbret-pending-", suffix=".sqlite")
        os.close(fd)
        conn = sqlite3.connect(name, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=OFF")  # scratch data: a crash loses nothing committed
        conn.execute("PRAGMA synchronous=OFF")
        conn.executescript(_PENDING_SCHEMA)
        weakref.finalize(self, _drop_scratch, conn, name)
        return conn, name

    def clear_cache(self) -> None:
        """Forget the filters' matching positions kept since the last change (benchmarks time the SQL)."""
        self._cache.clear()

    def _changed(self) -> None:
        self._version += 1
        self._cache.clear()
        self._fields = None

    # -- changes (under the index's write lock) -------------------------------------------------------
    def rows(
        self, doc_ids: Sequence[str], documents: Sequence[Mapping[str, Any] | Document | None] | None
    ) -> list[tuple[Any, ...]]:
        """The rows of documents about to be added (id-only rows when `documents` is None), checked: a bad
        metadata object is refused here, before the index changes anything."""
        if documents is not None and len(documents) != len(doc_ids):
            raise MbretError(f"{len(doc_ids)} doc ids for {len(documents)} documents")
        return [
            _row(d, documents[i] if documents is not None else None, self.store_text) for i, d in enumerate(doc_ids)
        ]

    def add_rows(self, first: int, rows: Sequence[tuple[Any, ...]]) -> None:
        """Add the rows from `rows` at positions `first`, `first + 1`, ..."""
        if not rows:
            return
        with self._pending_lock:
            conn = self._changes()
            with _transaction(conn):
                conn.executemany(
                    "INSERT INTO documents VALUES (?, ?, ?, ?, ?)", ((first + i, *r) for i, r in enumerate(rows))
                )
                new = conn.execute(
                    "SELECT DISTINCT j.key FROM documents, json_each(documents.metadata) AS j WHERE pos >= ?",
                    (first,),
                ).fetchall()
                _index_fields(conn, [r[0] for r in new], committed=False)
            self._changed()

    def export(self, target: Path) -> None:
        """Write the rows added to this store and not saved into a new SQLite file `target` (atomically,
        fsynced): one part of a build that several processes share (`import_part` reads it back)."""
        target = Path(target)
        scratch = target.with_name(f".{target.name}.tmp")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(scratch)
        conn = sqlite3.connect(str(scratch), isolation_level=None)
        try:
            conn.executescript(_PENDING_SCHEMA)
            if self._pending is not None:
                with self._pending_lock:
                    conn.execute("ATTACH DATABASE ? AS pending", (self._pending_file,))
                    with _transaction(conn):
                        conn.execute("INSERT INTO main.documents SELECT * FROM pending.documents")
                    conn.execute("DETACH DATABASE pending")
        finally:
            conn.close()
        with open(scratch, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(scratch, target)

    def import_part(self, source: Path, first: int) -> None:
        """Add the rows of a part written by `export` at positions `first`, `first + 1`, ... (as
        `add_rows` would, in SQL rather than row by row through Python)."""
        with self._pending_lock:
            conn = self._changes()
            conn.execute("ATTACH DATABASE ? AS part", (str(source),))
            try:
                with _transaction(conn):
                    conn.execute(
                        "INSERT INTO main.documents SELECT pos + ?, doc_id, title, text, metadata FROM part.documents",
                        (first,),
                    )
                    new = conn.execute(
                        "SELECT DISTINCT j.key FROM main.documents, json_each(main.documents.metadata) AS j "
                        "WHERE pos >= ?",
                        (first,),
                    ).fetchall()
                    _index_fields(conn, [r[0] for r in new], committed=False)
            finally:
                conn.execute("DETACH DATABASE part")
            self._changed()

    def delete(self, positions: Sequence[int]) -> None:
        if not len(positions):
            return
        with self._pending_lock:
            conn = self._changes()
            with _transaction(conn):
                conn.executemany("DELETE FROM documents WHERE pos = ?", [(int(p),) for p in positions])
                conn.executemany("INSERT OR IGNORE INTO deleted VALUES (?)", [(int(p),) for p in positions])
            self._changed()

    def renumber(self, live: np.ndarray) -> None:
        """After a compaction kept the documents `live` (bool per old position), in order, and renumbered
        them 0, 1, ...: the rows move to a new pending file under their new positions, which the next save
        writes whole (a compaction rewrites the directory anyway)."""
        conn, name = self._new_scratch()
        kept = np.flatnonzero(live)
        parts, values = [], {"gen": self.generation}
        with self._pending_lock:
            if self.path is not None:
                conn.execute("ATTACH DATABASE ? AS old", (str(self.path),))
                gone = " AND pos NOT IN (SELECT pos FROM was.deleted)" if self._pending is not None else ""
                parts.append(f"SELECT pos, doc_id, title, text, metadata FROM old.documents WHERE {_VISIBLE}{gone}")
            if self._pending is not None:
                conn.execute("ATTACH DATABASE ? AS was", (self._pending_file,))
                parts.append("SELECT pos, doc_id, title, text, metadata FROM was.documents")
            with _transaction(conn):
                conn.execute("CREATE TEMP TABLE remap (old INTEGER PRIMARY KEY, new INTEGER NOT NULL)")
                conn.executemany("INSERT INTO remap VALUES (?, ?)", zip(kept.tolist(), range(len(kept))))
                if parts:
                    conn.execute(
                        "INSERT INTO main.documents SELECT remap.new, doc_id, title, text, metadata "
                        f"FROM ({' UNION ALL '.join(parts)}) AS u JOIN remap ON remap.old = u.pos",
                        values,
                    )
                names = conn.execute("SELECT DISTINCT j.key FROM documents, json_each(documents.metadata) AS j")
                _index_fields(conn, [r[0] for r in names.fetchall()], committed=False)
            for schema in ("old", "was"):
                with contextlib.suppress(sqlite3.OperationalError):
                    conn.execute(f"DETACH DATABASE {schema}")
            if self._pending is not None:
                _drop_scratch(self._pending, self._pending_file)
            self._pending, self._pending_file = conn, name
            self.path = None  # every row is pending now: the committed file is not read again
            self._local = threading.local()
        self._changed()

    # -- reading ---------------------------------------------------------------------------------------
    def _committed(self, sql: str, params: Mapping[str, Any] | Sequence[Any]) -> list[tuple[Any, ...]]:
        if self.path is None:
            return []
        try:
            return self._reader().execute(sql, params).fetchall()
        except sqlite3.DatabaseError as exc:
            raise MbretError(f"{self.path}: {exc}") from None

    def _pending_rows(self, sql: str, params: Mapping[str, Any] | Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if self._pending is None:
            return []
        with self._pending_lock:
            return self._pending.execute(sql, params).fetchall()

    def fields(self) -> set[str]:
        """Names of the metadata fields any document has had (what a filter may name)."""
        if self._fields is None or self._fields[0] != self._version:
            names = {r[0] for r in self._committed("SELECT name FROM fields WHERE added <= ?", (self.generation,))}
            names |= {
                r[0] for r in self._pending_rows("SELECT DISTINCT key FROM documents, json_each(documents.metadata)")
            }
            self._fields = (self._version, names)
        return set(self._fields[1])

    def check_where(self, where: str, params: Sequence[Any] = ()) -> None:
        """Refuse a condition `select` would refuse (`compile_where`), without running it."""
        from mbret.indexes.filters import compile_where

        compile_where(where, params, self.fields())

    def select(self, where: str, params: Sequence[Any] = ()) -> np.ndarray:
        """Ascending positions of the live documents whose metadata satisfies `where` (SQLite syntax over
        metadata fields with `?` parameters, checked by `compile_where`), cached per filter."""
        from mbret.indexes.filters import compile_where

        compiled = compile_where(where, params, self.fields())
        key = (compiled.sql, compiled.params)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        sql, values = compiled.sql, list(compiled.params)
        committed = np.array(
            [
                r[0]
                for r in self._committed(
                    f"SELECT pos FROM documents WHERE {_VISIBLE_POSITIONAL} AND ({sql})",
                    [self.generation, self.generation, *values],
                )
            ],
            dtype=np.int64,
        )
        gone = np.array([r[0] for r in self._pending_rows("SELECT pos FROM deleted")], dtype=np.int64)
        added = np.array(
            [r[0] for r in self._pending_rows(f"SELECT pos FROM documents WHERE ({sql})", values)], dtype=np.int64
        )
        positions = np.union1d(np.setdiff1d(committed, gone), added)
        positions.setflags(write=False)
        self._cache[key] = positions
        while len(self._cache) > SELECTION_CACHE:
            self._cache.popitem(last=False)
        return positions

    def get(self, positions: Sequence[int]) -> list[Document | None]:
        """The documents at `positions` (None for one with no row: deleted since this generation)."""
        wanted = np.asarray(positions, dtype=np.int64)
        found: dict[int, Document] = {}
        for begin in range(0, len(wanted), 500):  # SQLite's bound-parameter limit
            part = [int(p) for p in wanted[begin : begin + 500]]
            marks = ",".join("?" * len(part))
            for pos, doc_id, title, text, metadata in self._pending_rows(
                f"SELECT pos, doc_id, title, text, metadata FROM documents WHERE pos IN ({marks})", part
            ):
                found[pos] = Document(doc_id, title, text, json.loads(metadata))
            gone = {r[0] for r in self._pending_rows(f"SELECT pos FROM deleted WHERE pos IN ({marks})", part)}
            rest = [p for p in part if p not in found and p not in gone]
            if rest:
                marks = ",".join("?" * len(rest))
                for pos, doc_id, title, text, metadata in self._committed(
                    f"SELECT pos, doc_id, title, text, metadata FROM documents WHERE pos IN ({marks}) "
                    f"AND {_VISIBLE_POSITIONAL}",
                    [*rest, self.generation, self.generation],
                ):
                    found[pos] = Document(doc_id, title, text, json.loads(metadata))
        return [found.get(int(p)) for p in wanted]

    def field_stats(self) -> dict[str, dict[str, int]]:
        """Per metadata field, how many live documents hold a value of each type (string, integer,
        number, boolean, null)."""
        stats: dict[str, dict[str, int]] = {}
        query = "SELECT j.key, j.type, count(*) FROM documents, json_each(documents.metadata) AS j {} GROUP BY 1, 2"
        gone = {r[0] for r in self._pending_rows("SELECT pos FROM deleted")}
        rows = self._committed(
            query.format(
                f"WHERE {_VISIBLE}" + (" AND pos NOT IN (SELECT value FROM json_each(:gone))" if gone else "")
            ),
            {"gen": self.generation, "gone": json.dumps(sorted(gone))},
        ) + self._pending_rows(query.format(""))
        for name, kind, count in rows:
            per = stats.setdefault(name, {})
            per[_JSON_TYPES.get(kind, kind)] = per.get(_JSON_TYPES.get(kind, kind), 0) + count
        return dict(sorted(stats.items()))

    # -- saving (inside `save_generation`, under the directory's lock) ----------------------------------
    def write(self, directory: Path, generation: int, doc_ids: Sequence[str | None]) -> str:
        """Commit this object's documents as generation `generation` in `directory`: into the store it was
        read from, the rows added and deleted since; else (a new directory, a compaction, an index older
        than stores) a whole new store file. Every live document of `doc_ids` gets a row. Returns the file
        name."""
        target = Path(directory) / STORE_FILE
        in_place = self.path is not None and self.path.absolute() == target.absolute()
        if in_place and target.is_file():
            self._write_changes(target, generation)
        else:
            self._write_new(target, generation, doc_ids)
        return STORE_FILE

    def _write_changes(self, target: Path, generation: int) -> None:
        previous = generation - 1
        conn = _connect(target)
        try:
            if self._pending is not None:
                conn.execute("ATTACH DATABASE ? AS pending", (self._pending_file,))
            with _transaction(conn, "BEGIN IMMEDIATE"):
                # what a writer killed between its store commit and its manifest left, then what a writer
                # killed between its manifest and its purge left
                conn.execute("DELETE FROM documents WHERE added > ?", (previous,))
                conn.execute("UPDATE documents SET deleted = NULL WHERE deleted > ?", (previous,))
                conn.execute("DELETE FROM fields WHERE added > ?", (previous,))
                conn.execute("DELETE FROM documents WHERE deleted IS NOT NULL")
                if self._pending is not None:
                    conn.execute(
                        "INSERT INTO main.documents (pos, doc_id, title, text, metadata, added) "
                        "SELECT pos, doc_id, title, text, metadata, ? FROM pending.documents",
                        (generation,),
                    )
                    conn.execute(
                        "UPDATE main.documents SET deleted = ? WHERE pos IN (SELECT pos FROM pending.deleted)",
                        (generation,),
                    )
                    conn.execute(
                        "INSERT OR IGNORE INTO main.fields SELECT DISTINCT j.key, ? "
                        "FROM pending.documents, json_each(pending.documents.metadata) AS j",
                        (generation,),
                    )
                # every field, so a store written before field indexes gets them at its next write
                names = conn.execute("SELECT name FROM main.fields ORDER BY added, name").fetchall()
                _index_fields(conn, [r[0] for r in names], committed=True)
        finally:
            conn.close()

    def _write_new(self, target: Path, generation: int, doc_ids: Sequence[str | None]) -> None:
        scratch = target.with_name(f".{target.name}.tmp")
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{scratch}{suffix}")
        conn = _connect(scratch)
        try:
            conn.executescript(_SCHEMA)
            source = self.path is not None and self.path.is_file()
            if source:
                conn.execute("ATTACH DATABASE ? AS old", (str(self.path),))
            if self._pending is not None:
                conn.execute("ATTACH DATABASE ? AS pending", (self._pending_file,))
            with _transaction(conn, "BEGIN IMMEDIATE"):
                parts = []
                if source:
                    not_gone = " AND pos NOT IN (SELECT pos FROM pending.deleted)" if self._pending is not None else ""
                    parts.append(
                        "SELECT pos, doc_id, title, text, metadata FROM old.documents "
                        f"WHERE added <= :old AND (deleted IS NULL OR deleted > :old){not_gone}"
                    )
                if self._pending is not None:
                    parts.append("SELECT pos, doc_id, title, text, metadata FROM pending.documents")
                if parts:
                    union = " UNION ALL ".join(parts)
                    conn.execute(
                        "INSERT INTO main.documents (pos, doc_id, title, text, metadata, added) "
                        f"SELECT *, :gen FROM ({union})",
                        {"old": self.generation, "gen": generation},
                    )
                # documents the index holds without a row (an index older than stores): id-only rows
                have = conn.execute("SELECT count(*) FROM main.documents").fetchone()[0]
                live = [(i, d) for i, d in enumerate(doc_ids) if d is not None]
                if have < len(live):
                    conn.executemany(
                        "INSERT OR IGNORE INTO main.documents (pos, doc_id, added) VALUES (?, ?, ?)",
                        [(i, d, generation) for i, d in live],
                    )
                conn.execute(
                    "INSERT OR IGNORE INTO main.fields SELECT DISTINCT j.key, ? "
                    "FROM main.documents, json_each(main.documents.metadata) AS j",
                    (generation,),
                )
                names = conn.execute("SELECT name FROM main.fields ORDER BY added, name").fetchall()
                _index_fields(conn, [r[0] for r in names], committed=True)
                conn.execute(
                    "INSERT OR REPLACE INTO settings VALUES ('store_text', ?)", ("1" if self.store_text else "0",)
                )
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
        os.replace(scratch, target)
        for suffix in ("-wal", "-shm"):  # of an older store file that `target` replaced
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{target}{suffix}")

    def committed(self, directory: Path, generation: int) -> None:
        """After the manifest named `generation`: purge the rows it deleted, forget the pending changes,
        and read from `directory` at `generation` from now on."""
        target = Path(directory) / STORE_FILE
        conn = _connect(target)
        try:
            with _transaction(conn):
                conn.execute("DELETE FROM documents WHERE deleted IS NOT NULL AND deleted <= ?", (generation,))
        finally:
            conn.close()
        if self._pending is not None:
            _drop_scratch(self._pending, self._pending_file)
        self._pending = self._pending_file = None
        self.path, self.generation = target, generation
        self._local = threading.local()
        self._changed()


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection, begin: str = "BEGIN"):  # noqa: ANN202 - a context manager
    conn.execute(begin)
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.commit()


def _drop_scratch(conn: sqlite3.Connection, name: str | None) -> None:
    with contextlib.suppress(Exception):
        conn.close()
    if name:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
