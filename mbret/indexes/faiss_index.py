"""Dense indexes on FAISS: `flat` (exact inner product), `hnsw` and `ivfpq`, with stable doc ids.

Each document gets an int64 id when added, its position in `doc_ids`, and keeps it for life: deletes never
renumber. `flat` and `ivfpq` remove vectors physically; HNSW cannot, so deleted ids are filtered at search
time with an ID selector (and dropped for good when the index is rebuilt).

Thread safety: any number of threads may search one index while others add, delete, save or refresh it.
FAISS allows concurrent searches but no search during a change, so searches share a `ReadWriteLock` and a
change waits for the searches under way (and holds new ones off) while it runs. Changes and saves take
turns (`_changing`); a save writes its files alongside searches, holding them off only for the moment
the object takes on the generation it wrote.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from mbret.errors import IndexFormatError, MbretError, ParameterError
from mbret.indexes.base import (
    Manifest,
    ReadWriteLock,
    StableDocIds,
    Stored,
    origin_of,
    read_manifest,
)
from mbret.indexes.parts import read_part
from mbret.io import atomic_file
from mbret.types import SearchParams

INDEX_TYPES = ("flat", "hnsw", "ivfpq")
SEARCH_SETTINGS = {"flat": (), "hnsw": ("ef_search",), "ivfpq": ("nprobe",)}  # the `SearchParams` each reads
EXACT_SUBSET_DOCS = 4096  # HNSW: a filter matching this few documents scores them exactly instead (--sweep)


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
    raise ParameterError("index_type", f"{index_type}: choose one of {', '.join(INDEX_TYPES)}")


class FaissIndex(StableDocIds, Stored):
    """A FAISS index over unit vectors (inner product = cosine) keyed by string doc ids."""

    def __init__(self, dimension: int, index_type: str = "flat", params: dict[str, Any] | None = None) -> None:
        if index_type not in INDEX_TYPES:
            raise ParameterError("index_type", f"{index_type}: choose one of {', '.join(INDEX_TYPES)}")
        self.dimension = dimension
        self.index_type = index_type
        self.params: dict[str, Any] = dict(params or {})
        self._init_ids()
        self._tombstones: set[int] = set()  # deleted but still inside the FAISS index (HNSW only)
        self.index: Any = None
        self._rw = ReadWriteLock()
        self._changing = threading.RLock()  # one change or save at a time

    _keep_on_refresh = ("_rw", "_changing")

    @property
    def search_settings(self) -> tuple[str, ...]:
        """The `SearchParams` a search of this index reads: `nprobe` (ivfpq), `ef_search` (hnsw), none (flat)."""
        return SEARCH_SETTINGS[self.index_type]

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

    def add(self, doc_ids: Sequence[str], embeddings: np.ndarray, documents: Sequence[Any] | None = None) -> None:
        """Add documents; ids must be new (a live duplicate is an error). IVF-PQ trains on its first add.
        `documents` (title, text, metadata per doc, as corpus rows) go to the document store."""
        with self._exclusive():
            self._add(doc_ids, embeddings, documents)

    def _add(self, doc_ids: Sequence[str], embeddings: np.ndarray, documents: Sequence[Any] | None = None) -> None:
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or embeddings.shape[1] != self.dimension:
            raise MbretError(f"expected embeddings of shape (n, {self.dimension}), got {embeddings.shape}")
        if len(doc_ids) != len(embeddings):
            raise MbretError(f"{len(doc_ids)} doc ids for {len(embeddings)} embeddings")
        self._add_vectors(doc_ids, embeddings, self._prepare_documents(doc_ids, documents))

    def _add_vectors(self, doc_ids: Sequence[str], embeddings: np.ndarray, rows: list[tuple[Any, ...]]) -> None:
        if self.index is None:
            self.index = self._new_faiss_index(len(doc_ids))
        if not self.index.is_trained:
            needed = 2 ** int(self.params["nbits"])
            if len(embeddings) < max(needed, int(self.params["nlist"])):
                raise ParameterError(
                    "index_type",
                    f"ivfpq needs at least {max(needed, int(self.params['nlist']))} documents to "
                    f"train on, got {len(embeddings)}; use flat or hnsw",
                )
            self.index.train(embeddings)
        start = len(self.doc_ids)
        self.index.add_with_ids(embeddings, np.arange(start, start + len(doc_ids), dtype=np.int64))
        self._append_ids(doc_ids, rows)

    def add_parts(self, directories: Sequence[str | Path]) -> None:
        """Add the parts of a distributed build (`mbret.indexes.parts`: each a `vectors` array, float32
        (n, dimension), with its doc ids and documents), in order, in one FAISS add: the same index as one
        `add` of all their vectors."""
        parts = [read_part(Path(d)) for d in directories]
        arrays = [p.array("vectors") for p in parts if p.num_docs]
        bad = next((a.shape for a in arrays if a.ndim != 2 or a.shape[1] != self.dimension), None)
        if bad is not None:
            raise IndexFormatError(f"a part holds vectors of shape {bad}, not (n, {self.dimension})")
        if not arrays:
            return
        with self._exclusive():
            doc_ids = self._import_documents(parts)
            self._add_vectors(doc_ids, np.ascontiguousarray(np.concatenate(arrays), dtype=np.float32), [])

    def delete(self, doc_ids: Sequence[str]) -> int:
        """Delete documents by doc id; other ids are untouched. Returns how many were deleted."""
        with self._exclusive():
            internal = np.array(self._remove_ids(doc_ids), dtype=np.int64)
            if self.index_type == "hnsw":
                self._tombstones.update(int(i) for i in internal)
            elif len(internal):
                self.index.remove_ids(internal)
            return len(internal)

    # -- search --------------------------------------------------------------------------------------
    def _search_params(
        self, subset: np.ndarray | None = None, exhaustive: bool = False, settings: SearchParams | None = None
    ) -> Any:
        """FAISS search parameters: an ID selector for a filter's `subset` (live ids only) or, without
        one, for HNSW's deleted ids; `exhaustive` probes every IVF list (a filtered search that came back
        short). HNSW's efSearch and IVF's nprobe are `settings`' where set, else the index's own (`params`,
        from its build): FAISS takes them per call here, so the index object never changes and concurrent
        searches with different settings do not meet."""
        settings = settings or SearchParams()
        selector = None
        if subset is not None:
            selector = self._subset_selector(subset)
        elif self._tombstones:
            selector = faiss.IDSelectorNot(faiss.IDSelectorBatch(np.fromiter(self._tombstones, dtype=np.int64)))
        if self.index_type == "hnsw":
            ef_search = int(settings.ef_search or self.params["ef_search"])
            return faiss.SearchParametersHNSW(sel=selector, efSearch=ef_search)
        if self.index_type == "ivfpq":
            nprobe = int(self.params["nlist"]) if exhaustive else int(settings.nprobe or self.params["nprobe"])
            return faiss.SearchParametersIVF(sel=selector, nprobe=nprobe)
        return faiss.SearchParameters(sel=selector) if selector is not None else None

    def _subset_selector(self, subset: np.ndarray) -> Any:
        """A hash set for a small subset, else a bitmap over all ids (an eighth of a byte per document,
        built in one numpy call, where a hash set of millions of ids takes longer to build than to search)."""
        if len(subset) * 64 < len(self.doc_ids):
            selector = faiss.IDSelectorBatch(subset)
        else:
            bits = np.zeros(len(self.doc_ids), dtype=bool)
            bits[subset] = True
            bitmap = np.packbits(bits, bitorder="little")
            selector = faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap))
            selector.referenced_bitmap = bitmap  # FAISS keeps a pointer; the array must outlive the search
        return selector

    def search(
        self,
        queries: np.ndarray,
        k: int = 10,
        where: str | None = None,
        params: Sequence[Any] = (),
        ids: Iterable[str] | None = None,
        search_params: SearchParams | None = None,
    ) -> list[list[tuple[str, float]]]:
        """Top-k (doc id, score) per query, best first; with a filter (`select`: `where`, `params`, `ids`)
        among the matching documents only, through FAISS's ID selectors inside the search. A filtered
        search returns k hits whenever k documents match: an approximate index (HNSW, IVF-PQ) that comes
        back short searches again exhaustively among the matches.

        `search_params`: `nprobe` (ivfpq) or `ef_search` (hnsw) for this call only, over the index's own
        (its build's `nprobe`/`ef_search`, saved in the manifest); other settings are ignored."""
        if k <= 0:
            raise MbretError(f"-k {k}: must be a positive integer")
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dimension:
            raise MbretError(f"expected queries of shape (n, {self.dimension}), got {queries.shape}")
        with self._rw.read():
            subset = self.select(where, params, ids)
            available = len(self) if subset is None else len(subset)
            if self.index is None or available == 0:
                return [[] for _ in range(len(queries))]
            want = min(k, available)
            if subset is not None and self.index_type == "hnsw" and len(subset) <= EXACT_SUBSET_DOCS:
                return self._subset_exact(queries, subset, want)
            scores, found = self.index.search(queries, want, params=self._search_params(subset, False, search_params))
            results = [self._hits(s, f) for s, f in zip(scores, found)]
            short = [i for i, hits in enumerate(results) if len(hits) < want]
            if subset is not None and short:
                if self.index_type == "ivfpq":
                    scores, found = self.index.search(queries[short], want, params=self._search_params(subset, True))
                    for i, s, f in zip(short, scores, found):
                        results[i] = self._hits(s, f)
                else:
                    for i, hits in zip(short, self._subset_exact(queries[short], subset, want)):
                        results[i] = hits
            return results

    def _hits(self, scores: np.ndarray, found: np.ndarray) -> list[tuple[str, float]]:
        hits = []
        for score, i in zip(scores, found):
            if i >= 0 and self.doc_ids[int(i)] is not None:
                hits.append((self.doc_ids[int(i)], float(score)))  # type: ignore[arg-type]
        return hits

    def _subset_exact(self, queries: np.ndarray, subset: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
        """Exact inner products against the subset's stored vectors (flat and HNSW keep them whole): for a
        subset so small that HNSW's walk would mostly visit documents that do not match. The vectors come
        out in one call, and FAISS scores and ranks them (`faiss.knn`) on its own threads: numpy's BLAS
        threads would contend with FAISS's OpenMP threads, which spin on after each search."""
        subset = np.ascontiguousarray(subset, dtype=np.int64)
        vectors = self.index.reconstruct_batch(subset)
        scores, rows = faiss.knn(queries, vectors, k, metric=faiss.METRIC_INNER_PRODUCT)
        results = []
        for row_scores, row in zip(scores, rows):
            keep = row >= 0
            row_scores, row = row_scores[keep], row[keep]
            order = np.lexsort((row, -row_scores))  # best first; ties by subset order
            results.append(self._hits(row_scores[order], subset[row[order]]))
        return results

    # -- persistence ---------------------------------------------------------------------------------
    def save(self, path: str | Path, manifest: Manifest, replace: bool = False) -> None:
        """Write the FAISS file, the doc ids (JSON, null for deleted) and the manifest, atomically."""

        def prepare() -> Any:
            if self.index is None:
                raise MbretError("cannot save an empty index: add documents first")
            manifest.kind, manifest.index_type = "faiss", self.index_type
            manifest.dimension, manifest.num_docs = self.dimension, len(self)
            manifest.index_params = dict(self.params)

            def write_files(directory: Path, gen: int) -> dict[str, str]:
                names = {"faiss": f"index-{gen:06d}.faiss", "doc_ids": f"doc_ids-{gen:06d}.json"}
                with atomic_file(directory / names["faiss"], "wb") as fh:
                    fh.write(faiss.serialize_index(self.index).tobytes())
                with atomic_file(directory / names["doc_ids"]) as fh:
                    json.dump({"doc_ids": self.doc_ids, "tombstones": sorted(self._tombstones)}, fh)
                return names | self._write_documents(directory, gen)

            return write_files

        self._save_beside_searches(path, manifest, replace, prepare)

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
        self._open_documents(path, manifest)
        return self, manifest
