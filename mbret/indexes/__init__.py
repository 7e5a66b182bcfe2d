"""Indexes behind one small interface (`Index`): `add`, `delete`, `search`, `save`, `load`, `refresh`.

`INDEX_CLASSES` maps a manifest's `kind` to its class, and `new_index` makes the index a mode and
`--index-type` name, so callers (`Retriever`, the CLI) know no index's internals.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mbret.errors import IndexFormatError
from mbret.indexes.base import Manifest, check_compatible, load_committed, read_manifest
from mbret.indexes.bm25 import Bm25Index
from mbret.indexes.faiss_index import INDEX_TYPES, FaissIndex, default_params
from mbret.indexes.maxsim import ExactIndex, ExactMaxSimIndex
from mbret.indexes.plaid import PLAID_SETTINGS, PlaidIndex, PlaidSearchParams
from mbret.indexes.store import Document, DocumentStore
from mbret.types import SearchParams

INDEX_TYPES_BY_MODE = {"dense": INDEX_TYPES, "colbert": ("plaid", "exact"), "bm25": ("bm25",)}


class Index(Protocol):
    """What every mbret index offers. Doc ids are strings, stable across adds and deletes; `is_trained` is
    False only for an index that wants `train(sample, num_tokens=...)` on a sample of its corpus first
    (`sample_documents(num_docs, tokens_per_doc)` says which documents to draw). Each document's title,
    text and metadata live in `documents` (SQLite, saved with the vectors at the same generation), and a
    search may be filtered by metadata (`where`, `params`: the values of its `?`) and by ids (`ids`).
    `search_params` (`SearchParams`) set that search's own settings: an index reads those it names in
    `search_settings` (PLAID's budgets, FAISS's `nprobe` or `ef_search`) over its defaults, and ignores the
    rest, so one `SearchParams` serves a fused search of several index types."""

    dimension: int
    index_type: str
    search_settings: tuple[str, ...]

    def __len__(self) -> int: ...
    def __contains__(self, doc_id: object) -> bool: ...
    @property
    def is_trained(self) -> bool: ...
    @property
    def generation(self) -> int | None: ...
    @property
    def documents(self) -> DocumentStore: ...
    def add(self, doc_ids: Sequence[str], embeddings: Any, documents: Sequence[Any] | None = None) -> None: ...
    def add_parts(self, directories: Sequence[str | Path]) -> None: ...
    def delete(self, doc_ids: Sequence[str]) -> int: ...
    def search(
        self,
        queries: Any,
        k: int = 10,
        where: str | None = None,
        params: Sequence[Any] = (),
        ids: Iterable[str] | None = None,
        search_params: SearchParams | None = None,
    ) -> list[list[tuple[str, float]]]: ...
    def select(
        self, where: str | None = None, params: Sequence[Any] = (), ids: Iterable[str] | None = None
    ) -> np.ndarray | None: ...
    def get_documents(self, doc_ids: Sequence[str]) -> list[Document | None]: ...
    def save(self, path: str | Path, manifest: Manifest, replace: bool = False) -> None: ...
    def refresh(self) -> bool: ...
    def to(self, device: Any) -> Any: ...
    def sample_documents(self, num_docs: int, tokens_per_doc: float) -> np.ndarray: ...
    def train(self, sample: Any, num_tokens: int | None = None) -> None: ...


INDEX_CLASSES: dict[str, type] = {
    "faiss": FaissIndex,
    "exact": ExactIndex,
    "maxsim": ExactIndex,  # the kind exact indexes were written with before
    "plaid": PlaidIndex,
    "bm25": Bm25Index,
}


def new_index(mode: str, index_type: str, dimension: int, params: dict[str, Any] | None = None) -> Index:
    """An empty index for `mode` ("dense"/"colbert"/"bm25") and `index_type` (`INDEX_TYPES_BY_MODE`).
    Search settings among `params` (PLAID's budgets; FAISS's `nprobe`, `ef_search`) become the index's
    defaults, saved in its manifest; a search's own `search_params` override them for that search."""
    params = dict(params or {})
    if mode == "bm25":
        return Bm25Index(params)
    if mode == "colbert" and index_type == "plaid":
        defaults = SearchParams(**{name: params.pop(name) for name in list(params) if name in PLAID_SETTINGS})
        return PlaidIndex(dimension, search_params=defaults, **params)
    if mode == "colbert":
        return ExactIndex(dimension)
    return FaissIndex(dimension, index_type, params)


def load_index(path: str | Path) -> tuple[Index, Manifest]:
    """Load any mbret index directory by the kind its manifest names (`INDEX_CLASSES`): the index, and the
    manifest of the generation it holds (what to pass back to `index.save`)."""
    kind = read_manifest(path).kind
    if kind not in INDEX_CLASSES:
        raise IndexFormatError(f"{path}: unknown index kind {kind!r}")
    return load_committed(INDEX_CLASSES[kind].load, path)


__all__ = [
    "Bm25Index",
    "Document",
    "DocumentStore",
    "INDEX_CLASSES",
    "INDEX_TYPES",
    "INDEX_TYPES_BY_MODE",
    "ExactIndex",
    "ExactMaxSimIndex",
    "FaissIndex",
    "Index",
    "Manifest",
    "PlaidIndex",
    "PlaidSearchParams",
    "SearchParams",
    "check_compatible",
    "default_params",
    "load_index",
    "new_index",
    "read_manifest",
]
