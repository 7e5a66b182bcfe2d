"""Dense indexes on FAISS: `flat` (exact inner product), `hnsw` and `ivfpq`, with stable doc ids.

Each document gets an int64 id when added, its position in `doc_ids`, and keeps it for life: deletes never
renumber. `flat` and `ivfpq` remove vectors physically; HNSW cannot, so deleted ids are filtered at search
time with an ID selector (and dropped for good when the index is rebuilt).

Thread safety: any number of threads may search one index while others add, delete, save or refresh it.
FAISS allows concurrent searches but no search during a change, so searches share a `ReadWriteLock` and a
change waits for the searches under way (and holds new ones off) while it runs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from mbret.errors import IndexFormatError, MbretError
from mbret.indexes.base import (
    Manifest,
    ReadWriteLock,
    StableDocIds,
    Stored,
    origin_of,
    read_manifest,
    save_generation,
)
from mbret.io import atomic_file

INDEX_TYPES = ("flat", "hnsw", "ivfpq")


def default_params(index_type: str, dimension: int, num_docs: int) -> dict[str, Any]:
    """Parameters that suit the corpus size; every one can be overridden."""
    if index_type == "flat":
        return {}
    if index_type == "hnsw":
        return {"M": 32, "ef_construction": 200, "ef_search": 128}
    if index_type == "ivfpq":
        nlist = max(1, min(int(4 * math.sqrt(max(num_docs, 1))), num_docs // 39 or 1))
        # 4 dimensions per 8-bit sub-quantizer: d/4 bytes a vector, 16x smaller than float32
        m = next(m for m in (dimension // 4, dimension // 2, dimension, 1) if m and dimension % m == 0)
        nbits = 8 if num_docs >= 1024 else max(4, min(8, int(math.log2(max(num_docs, 2) / 4))))
        return {"nlist": nlist, "m": m, "nbits": nbits, "nprobe": min(nlist, 16)}
    raise MbretError(f"--index-type {index_type}: choose one of {', '.join(INDEX_TYPES)}")


class FaissIndex(StableDocIds, Stored):
    """A FAISS index over unit vectors (inner product = cosine) keyed by string doc ids."""

    def __init__(self, dimension: int, index_type: str = "flat", params: dict[str, Any] | None = None) -> None:
        if index_type not in INDEX_TYPES:
            raise MbretError(f"--index-type {index_type}: choose one of {', '.join(INDEX_TYPES)}")
        self.dimension = dimension
        self.index_type = index_type
        self.params: dict[str, Any] = dict(params or {})
        self._init_ids()
        self._tombstones: set[int] = set()  # deleted but still inside the FAISS index (HNSW only)
        self.index: Any = None
        self._rw = ReadWriteLock()

    _keep_on_refresh = ("_rw",)

    # -- building ------------------------------------------------------------------------------------
    is_trained = True  # IVF-PQ trains on its first add; nothing to sample beforehand

    def to(self, device: object) -> FaissIndex:
        """FAISS indexes search on the CPU here (faiss-gpu is the `gpu` extra's): a no-op."""
        return self

    def _new_faiss_index(self, num_docs: int) -> Any:
        self.params = {**default_params(self.index_type, self.dimension, num_docs), **self.params}
        d, p = self.dimension, self.params
        if self.index_type == "flat":
            return faiss.IndexIDMap2(faiss.IndexFlatIP(d))
        if self.index_type == "hnsw":
            hnsw = faiss.IndexHNSWFlat(d, int(p["M"]), faiss.METRIC_INNER_PRODUCT)
            hnsw.hnsw.efConstruction = int(p["ef_construction"])
            return faiss.IndexIDMap2(hnsw)
        quantizer = faiss.IndexFlatIP(d)
        return faiss.IndexIVFPQ(quantizer, d, int(p["nlist"]), int(p["m"]), int(p["nbits"]), faiss.METRIC_INNER_PRODUCT)

    def add(self, doc_ids: Sequence[str], embeddings: np.ndarray) -> None:
        """Add documents; ids must be new (a live duplicate is an error). IVF-PQ trains on its first add."""
        with self._rw.write():
            self._add(doc_ids, embeddings)

    def _add(self, doc_ids: Sequence[str], embeddings: np.ndarray) -> None:
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or embeddings.shape[1] != self.dimension:
            raise MbretError(f"expected embeddings of shape (n, {self.dimension}), got {embeddings.shape}")
        if len(doc_ids) != len(embeddings):
            raise MbretError(f"{len(doc_ids)} doc ids for {len(embeddings)} embeddings")
        self._check_new_ids(doc_ids)
        if self.index is None:
            self.index = self._new_faiss_index(len(doc_ids))
        if not self.index.is_trained:
            needed = 2 ** int(self.params["nbits"])
            if len(embeddings) < max(needed, int(self.params["nlist"])):
                raise MbretError(
                    f"ivfpq needs at least {max(needed, int(self.params['nlist']))} documents to "
                    f"train on, got {len(embeddings)}; use --index-type flat or hnsw"
                )
            self.index.train(embeddings)
        start = len(self.doc_ids)
        self.index.add_with_ids(embeddings, np.arange(start, start + len(doc_ids), dtype=np.int64))
        self._append_ids(doc_ids)

    def delete(self, doc_ids: Sequence[str]) -> int:
        """Delete documents by doc id; other ids are untouched. Returns how many were deleted."""
        with self._rw.write():
            internal = np.array(self._remove_ids(doc_ids), dtype=np.int64)
            if self.index_type == "hnsw":
                self._tombstones.update(int(i) for i in internal)
            elif len(internal):
                self.index.remove_ids(internal)
            return len(internal)

    # -- search --------------------------------------------------------------------------------------
    def _search_params(self) -> Any:
        selector = None
        if self._tombstones:
            selector = faiss.IDSelectorNot(faiss.IDSelectorBatch(np.fromiter(self._tombstones, dtype=np.int64)))
        if self.index_type == "hnsw":
            return faiss.SearchParametersHNSW(sel=selector, efSearch=int(self.params["ef_search"]))
        if self.index_type == "ivfpq":
            return faiss.SearchParametersIVF(sel=selector, nprobe=int(self.params["nprobe"]))
        return None

    def search(self, queries: np.ndarray, k: int = 10) -> list[list[tuple[str, float]]]:
        """Top-k (doc id, score) per query, best first."""
        if k <= 0:
            raise MbretError(f"-k {k}: must be a positive integer")
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dimension:
            raise MbretError(f"expected queries of shape (n, {self.dimension}), got {queries.shape}")
        with self._rw.read():
            if self.index is None or len(self) == 0:
                return [[] for _ in range(len(queries))]
            scores, ids = self.index.search(queries, min(k, len(self)), params=self._search_params())
            results: list[list[tuple[str, float]]] = []
            for row_scores, row_ids in zip(scores, ids):
                hits = []
                for score, i in zip(row_scores, row_ids):
                    if i < 0:
                        continue
                    doc_id = self.doc_ids[int(i)]
                    if doc_id is not None:
                        hits.append((doc_id, float(score)))
                results.append(hits)
            return results

    # -- persistence ---------------------------------------------------------------------------------
    def save(self, path: str | Path, manifest: Manifest, replace: bool = False) -> None:
        """Write the FAISS file, the doc ids (JSON, null for deleted) and the manifest, atomically."""
        with self._rw.write():  # a save records the generation it wrote: one writer at a time
            if self.index is None:
                raise MbretError("cannot save an empty index: add documents first")
            manifest.kind, manifest.index_type = "faiss", self.index_type
            manifest.dimension, manifest.num_docs, manifest.index_params = self.dimension, len(self), dict(self.params)

            def write_files(directory: Path, gen: int) -> dict[str, str]:
                names = {"faiss": f"index-{gen:06d}.faiss", "doc_ids": f"doc_ids-{gen:06d}.json"}
                with atomic_file(directory / names["faiss"], "wb") as fh:
                    fh.write(faiss.serialize_index(self.index).tobytes())
                with atomic_file(directory / names["doc_ids"]) as fh:
                    json.dump({"doc_ids": self.doc_ids, "tombstones": sorted(self._tombstones)}, fh)
                return names

            self._origin = save_generation(path, manifest, write_files, replace=replace, origin=self._origin)
            self._path = Path(path)

    @classmethod
    def load(cls, path: str | Path) -> tuple[FaissIndex, Manifest]:
        """Load and cross-check an index directory; a truncated or inconsistent file is a clear error."""
        path = Path(path)
        manifest = read_manifest(path)
        if manifest.kind != "faiss":
            raise IndexFormatError(f"{path}: a {manifest.kind} index, not a FAISS one")
        faiss_file, ids_file = path / manifest.files["faiss"], path / manifest.files["doc_ids"]
        try:
            index = faiss.deserialize_index(np.fromfile(faiss_file, dtype=np.uint8))
        except RuntimeError:
            raise IndexFormatError(f"{faiss_file}: truncated or corrupt FAISS file") from None
        try:
            ids = json.loads(ids_file.read_text(encoding="utf-8"))
            doc_ids, tombstones = ids["doc_ids"], ids["tombstones"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
            raise IndexFormatError(f"{ids_file}: truncated or corrupt doc id file") from None
        self = cls(manifest.dimension, manifest.index_type, manifest.index_params)
        self.index, self._tombstones = index, set(tombstones)
        self._init_ids(doc_ids)
        if index.d != manifest.dimension:
            raise IndexFormatError(f"{faiss_file}: {index.d}-d vectors but the manifest says {manifest.dimension}")
        if index.ntotal != len(self._position) + len(self._tombstones):
            raise IndexFormatError(
                f"{path}: FAISS holds {index.ntotal} vectors but the id file lists "
                f"{len(self._position) + len(self._tombstones)}"
            )
        if len(self) != manifest.num_docs:
            raise IndexFormatError(f"{path}: manifest says {manifest.num_docs} docs, id file has {len(self)}")
        self._origin, self._path = origin_of(manifest, path), path
        return self, manifest
