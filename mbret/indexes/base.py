"""What every mbret index shares: the JSON manifest, its checks, and generation-swapped saving.

An index is a directory. Its `manifest.json` names the data files of the current generation; an update
writes new files under a new generation number and then swaps the manifest with one atomic rename, so a
killed write leaves the previous generation loadable. A new directory is built in a temp dir and renamed.

Writers never lose each other's changes. Every save holds the directory's lock (`mbret.io.index_lock`) and
commits only on top of the generation its index object was loaded from (or last saved as): a save from a
stale object raises `StaleIndexError`, and a save into a directory that holds a different index (another
`index_id`) is refused unless `replace=True`. To apply a change whatever others commit meanwhile, hold the
lock around load, change and save, as the CLI's write commands do:

    with index_lock(path):
        index, manifest = load_index(path)
        index.delete(ids)
        index.save(path, manifest)
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import mbret
from mbret.errors import IndexFormatError, MbretError, ParameterError, StaleIndexError
from mbret.indexes.store import Document, DocumentStore
from mbret.io import atomic_new_dir, index_lock, restore_interrupted_swap, write_json_atomic

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


@dataclass
class Manifest:
    """Everything needed to reload an index and to refuse a model it was not built with."""

    kind: str  # which class loads it (mbret.indexes.INDEX_CLASSES): "faiss", "exact" (was "maxsim"), "plaid", "bm25"
    mode: str  # "dense", "colbert" or "bm25"
    model: str
    dimension: int
    normalized: bool
    max_length: int
    num_docs: int
    index_type: str
    index_params: dict[str, Any] = field(default_factory=dict)
    query_prompt: str | None = None  # dense: put before each query (older colbert indexes: their marker)
    document_prompt: str | None = None
    query_marker: str | None = None  # colbert: the marker put before each query ("[Q] ", "" for none)
    document_marker: str | None = None  # colbert: the marker put before each document
    query_length: int | None = None  # colbert: the expansion width or the longest query; dense: the longest query
    query_expansion: bool | None = None  # colbert: queries padded with [MASK]; None (older indexes): expanded
    document_length: int | None = None  # documents cut at this many tokens (dense indexes before: max_length)
    pool_factor: int | None = None  # colbert: documents' token vectors pooled to ~1/pool_factor (None, 1: not)
    seed: int | None = None  # colbert: seed of a freshly initialised projection
    files: dict[str, str] = field(default_factory=dict)
    generation: int = 0
    index_id: str | None = None  # set when a directory is first written; None in indexes older than it
    format_version: int = FORMAT_VERSION
    mbret_version: str = mbret.__version__

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any], path: Path) -> Manifest:
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise IndexFormatError(f"{path}: index format version {version!r}; this mbret reads {FORMAT_VERSION}")
        known = set(cls.__dataclass_fields__)
        missing = {"kind", "mode", "model", "dimension", "index_type", "files"} - set(data)
        if missing:
            raise IndexFormatError(f"{path}: manifest lacks {', '.join(sorted(missing))}")
        return cls(**{k: v for k, v in data.items() if k in known})


def read_manifest(path: str | Path) -> Manifest:
    """The manifest of index directory `path`, its files checked. A writer that commits meanwhile removes
    the previous generation's files: a file gone because of that is read again from the new manifest."""
    path = Path(path)
    file = path / MANIFEST
    restore_interrupted_swap(path)
    if not path.is_dir():
        raise IndexFormatError(f"{path}: no such index directory")
    for attempt in range(8):
        if not file.is_file():
            raise IndexFormatError(f"{path}: not an mbret index (no {MANIFEST})")
        try:
            text = file.read_text(encoding="utf-8")
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise IndexFormatError(f"{file}: unreadable manifest ({exc})") from None
        manifest = Manifest.from_json(data, file)
        missing = next(((r, n) for r, n in manifest.files.items() if not (path / n).is_file()), None)
        if missing is None:
            return manifest
        if attempt < 7 and file.is_file() and file.read_text(encoding="utf-8") != text:
            continue  # a newer generation was committed while this one was read
        role, name = missing
        raise IndexFormatError(f"{path / name}: {role} file named in the manifest is missing")
    raise AssertionError("unreachable")


def check_compatible(
    manifest: Manifest, model: str | None = None, dimension: int | None = None, where: str | Path = "index"
) -> None:
    """Refuse to pair an index with a model or dimension it was not built with."""
    if model is not None and model != manifest.model:
        raise ParameterError(
            "model", f"{model!r}: {where} was built with model {manifest.model!r}; re-index or use the same model"
        )
    if dimension is not None and dimension != manifest.dimension:
        raise MbretError(f"{where}: holds {manifest.dimension}-d vectors but the model gives {dimension}-d")


@dataclass(frozen=True)
class Origin:
    """The stored index an index object holds: which one (`index_id`) and at which generation."""

    index_id: str
    generation: int


def stored_id(manifest: Manifest, path: str | Path) -> str:
    """A directory's index id; an index written before ids existed is named by its absolute path."""
    return manifest.index_id or f"path:{Path(path).absolute()}"


def origin_of(manifest: Manifest, path: str | Path) -> Origin:
    """The origin of an index object just loaded from `path`."""
    return Origin(stored_id(manifest, path), manifest.generation)


class Stored:
    """Mixin for index objects: the stored generation they hold and the directory it lives in, set by load
    and save (`Origin`)."""

    _origin: Origin | None = None
    _path: Path | None = None

    @property
    def generation(self) -> int | None:
        """The stored generation this object holds (None until it is loaded or saved)."""
        return self._origin.generation if self._origin else None

    # attributes an object keeps across `refresh`: its locks (searches may hold them) and its device
    _keep_on_refresh: tuple[str, ...] = ()

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """What a change holds: its turn among changes and saves (`_changing`), and searches kept out
        (`_rw`) while the object's state changes (an add, a delete, `refresh`'s swap)."""
        with self._changing, self._rw.write():  # type: ignore[attr-defined]
            yield

    def _save_beside_searches(
        self,
        path: str | Path,
        manifest: Manifest,
        replace: bool,
        prepare: Callable[[], Callable[[Path, int], dict[str, str]]],
    ) -> None:
        """Save one generation while searches go on: `prepare` (run with changes held off and searches
        reading) fills the manifest and returns `save_generation`'s `write_files`; searches are held off only
        for the moment this object takes on the generation it wrote."""
        with self._changing:  # type: ignore[attr-defined]
            with self._rw.read():  # type: ignore[attr-defined]
                origin = save_generation(path, manifest, prepare(), replace=replace, origin=self._origin)
            with self._rw.write():  # type: ignore[attr-defined]
                self._origin, self._path = origin, Path(path)
                self._documents_committed(path, manifest)  # type: ignore[attr-defined]

    def _reload_options(self) -> dict[str, Any]:
        """Keyword arguments `refresh` passes to `load`."""
        return {}

    def refresh(self) -> bool:
        """Pick up the generation another process committed to this index's directory since it was loaded
        or saved (True if there was one). Changes made here and not saved are dropped; searches running
        meanwhile finish on what they read before."""
        if self._path is None:
            raise MbretError("refresh(): this index was never loaded or saved, so it has no directory")
        manifest = read_manifest(self._path)
        if origin_of(manifest, self._path) == self._origin:
            return False
        fresh = load_committed(type(self).load, self._path, **self._reload_options())[0]  # type: ignore[attr-defined]
        with self._exclusive():
            kept = {name: getattr(self, name) for name in self._keep_on_refresh}
            self.__dict__.update(fresh.__dict__)
            self.__dict__.update(kept)
        return True


def load_committed(load: Callable[..., Any], path: str | Path, **options: Any) -> Any:
    """`load(path)`, again if a writer committed a newer generation while it read (and removed the files of
    the one it was reading): a reader never needs the lock, and never fails for a write it raced."""
    for _ in range(8):
        before = read_manifest(path).generation
        try:
            return load(path, **options)
        except (IndexFormatError, FileNotFoundError):
            if read_manifest(path).generation == before:
                raise
    return load(path, **options)


class ReadWriteLock:
    """Any number of readers, or one writer. A waiting writer holds off new readers (so a stream of
    searches cannot starve a write); the writer may re-enter, and may read while it writes. A reader must
    not ask to write (it would wait for itself). The standard library has no such lock."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer: int | None = None
        self._depth = 0
        self._waiting = 0

    @contextlib.contextmanager
    def read(self) -> Iterator[None]:
        me = threading.get_ident()
        with self._cond:
            if self._writer == me:
                self._depth += 1
            else:
                while self._writer is not None or self._waiting:
                    self._cond.wait()
                self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                if self._writer == me:
                    self._depth -= 1
                else:
                    self._readers -= 1
                    if not self._readers:
                        self._cond.notify_all()

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        me = threading.get_ident()
        with self._cond:
            if self._writer == me:
                self._depth += 1
            else:
                self._waiting += 1
                while self._writer is not None or self._readers:
                    self._cond.wait()
                self._waiting -= 1
                self._writer, self._depth = me, 1
        try:
            yield
        finally:
            with self._cond:
                self._depth -= 1
                if not self._depth:
                    self._writer = None
                    self._cond.notify_all()


def save_generation(
    path: str | Path,
    manifest: Manifest,
    write_files: Callable[[Path, int], dict[str, str]],
    replace: bool = False,
    origin: Origin | None = None,
) -> Origin:
    """Write one generation of an index: `write_files(dir, gen)` writes data files and returns their names.

    Under the directory's lock. On an existing index of the same origin: a new generation, written in place
    (or with `replace`, a whole new directory swapped in, as after a compaction), refused with
    `StaleIndexError` when another writer committed since `origin`'s generation. A different index there is
    refused unless `replace`; a directory that holds anything else is never touched. Returns the new origin.
    """
    path = Path(path)
    with index_lock(path):
        is_index = (path / MANIFEST).is_file()
        if path.exists() and not is_index and any(path.iterdir()):
            raise MbretError(f"{path}: exists and is not an mbret index; choose another directory")
        previous = read_manifest(path) if is_index else None
        same = previous is not None and origin is not None and origin.index_id == stored_id(previous, path)
        if same and origin.generation != previous.generation:
            raise StaleIndexError(
                f"{path}: generation {previous.generation} was committed by another writer since this index "
                f"was loaded at generation {origin.generation}; load it again and redo the change (or hold "
                "mbret.io.index_lock(path) around load, change and save)"
            )
        if previous is not None and not same and not replace:
            raise MbretError(
                f"{path}: holds another index; save to a new directory, or pass replace=True to replace it"
            )
        manifest.index_id = (previous.index_id if same else None) or uuid.uuid4().hex
        manifest.generation = previous.generation + 1 if previous is not None else 1
        if previous is not None and not replace:
            manifest.files = write_files(path, manifest.generation)
            write_json_atomic(path / MANIFEST, manifest.to_json())  # the commit point
            for name in set(previous.files.values()) - set(manifest.files.values()):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path / name)
        else:
            with atomic_new_dir(path) as tmp:
                manifest.files = write_files(tmp, manifest.generation)
                write_json_atomic(tmp / MANIFEST, manifest.to_json())
        return Origin(manifest.index_id, manifest.generation)


def refuse_settings_as_filter(where: object, params: object) -> None:
    """`where` and `params` are a filter's condition and the values of its `?`: a `SearchParams` given there
    (as older PLAID searches took it) is refused with the keyword it belongs to, not misread as a filter."""
    from mbret.errors import ParameterError
    from mbret.types import SearchParams

    for name, value in (("where", where), ("params", params)):
        if isinstance(value, SearchParams):
            raise ParameterError(name, "takes a filter, not search settings; pass them as search_params=")


class StableDocIds:
    """Doc ids of an index: a document's internal id is its position in `doc_ids`, given on add and never
    reused or renumbered (but by a compaction); a deleted document leaves `None` in its place. Each
    document's title, text and metadata live in the index's `documents` store, keyed by that position."""

    doc_ids: list[str | None]
    _position: dict[str, int]
    _store: DocumentStore | None = None

    def _init_ids(self, doc_ids: list[str | None] | None = None) -> None:
        self.doc_ids = list(doc_ids or [])
        self._position = {d: i for i, d in enumerate(self.doc_ids) if d is not None}

    def __len__(self) -> int:
        return len(self._position)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._position

    @property
    def documents(self) -> DocumentStore:
        """The documents' titles, texts and metadata (`DocumentStore`), saved with the vectors."""
        if self._store is None:
            self._store = DocumentStore()
        return self._store

    def _check_new_ids(self, doc_ids: Sequence[str]) -> None:
        """Refuse ids already live in the index or repeated in `doc_ids`: call before touching any data."""
        seen: set[str] = set()
        for doc_id in doc_ids:
            if doc_id in self._position or doc_id in seen:
                raise MbretError(f"doc id {doc_id!r} is already in the index (delete it first to replace it)")
            seen.add(doc_id)

    def _prepare_documents(self, doc_ids: Sequence[str], documents: Sequence[Any] | None) -> list[tuple[Any, ...]]:
        """Check what `add` was given besides vectors (before touching any data): the store's rows."""
        self._check_new_ids(doc_ids)
        return self.documents.rows(doc_ids, documents)

    def _append_ids(self, doc_ids: Sequence[str], rows: list[tuple[Any, ...]] | None = None) -> int:
        """Register new ids (with their store rows from `_prepare_documents`); returns the first internal id."""
        if rows is None:
            rows = self._prepare_documents(doc_ids, None)
        first = len(self.doc_ids)
        self.documents.add_rows(first, rows)
        for offset, doc_id in enumerate(doc_ids):
            self._position[doc_id] = first + offset
            self.doc_ids.append(doc_id)
        return first

    def _import_documents(self, parts: Sequence[Any]) -> list[str]:
        """Inside `add_parts`: check the parts' ids are new, then take their documents' rows into the
        store, at the positions their ids get next (`_append_ids(ids, [])`). Returns the ids, in order."""
        doc_ids = [doc_id for part in parts for doc_id in part.doc_ids]
        self._check_new_ids(doc_ids)
        first = len(self.doc_ids)
        for part in parts:
            if part.num_docs:
                self.documents.import_part(part.documents, first)
            first += part.num_docs
        return doc_ids

    def _remove_ids(self, doc_ids: Sequence[str]) -> list[int]:
        """Forget ids (an unknown one is an error); returns their internal ids, sorted."""
        missing = [d for d in doc_ids if d not in self._position]
        if missing:
            raise MbretError(f"doc id {missing[0]!r} is not in the index")
        internal = sorted({self._position.pop(d) for d in set(doc_ids)})
        for i in internal:
            self.doc_ids[i] = None
        self.documents.delete(internal)
        return internal

    def _compact_ids(self) -> None:
        """Renumber the live documents 0, 1, ... in order (a compaction dropped the others' vectors)."""
        live = np.array([d is not None for d in self.doc_ids], dtype=bool)
        self.documents.renumber(live)
        self._init_ids([d for d in self.doc_ids if d is not None])

    def positions(self, doc_ids: Iterable[str]) -> np.ndarray:
        """Ascending internal ids of those of `doc_ids` that are live here (others are skipped)."""
        found = {self._position[d] for d in doc_ids if d in self._position}
        return np.array(sorted(found), dtype=np.int64)

    def select(
        self, where: str | None = None, params: Sequence[Any] = (), ids: Iterable[str] | None = None
    ) -> np.ndarray | None:
        """The internal ids a filtered search may return, ascending: the live documents whose metadata
        satisfies `where` (SQLite syntax, `?` for each of `params`; see `mbret.indexes.filters`) and that
        are among `ids`; None when neither is given (no filter)."""
        refuse_settings_as_filter(where, params)
        if where is None and ids is None:
            if params:
                raise ParameterError("params", "values for the ? of where, given without where")
            return None
        subset = self.documents.select(where, params) if where is not None else None
        if ids is not None:
            chosen = self.positions(ids)
            subset = chosen if subset is None else np.intersect1d(subset, chosen, assume_unique=True)
        return subset

    def get_documents(self, doc_ids: Sequence[str]) -> list[Document | None]:
        """The stored documents of `doc_ids` (None for an id not in the index)."""
        known = [d for d in doc_ids if d in self._position]
        found = dict(zip(known, self.documents.get([self._position[d] for d in known])))
        return [found.get(d) for d in doc_ids]

    def _write_documents(self, directory: Path, generation: int) -> dict[str, str]:
        """Inside `save_generation`'s `write_files`: commit the store at `generation` (see `store.py`)."""
        return {"documents": self.documents.write(directory, generation, self.doc_ids)}

    def _documents_committed(self, path: str | Path, manifest: Manifest) -> None:
        """After `save_generation`: the store purges what the new generation deleted."""
        self.documents.committed(Path(path), manifest.generation)

    def _open_documents(self, path: str | Path, manifest: Manifest) -> None:
        self._store = DocumentStore.open(Path(path), manifest.files, manifest.generation)
