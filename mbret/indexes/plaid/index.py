"""PLAID: ColBERT's engine, in PyTorch. `PlaidIndex` ties the stages together: the codec (`codec.py`),
chunks with their stored inverted lists and the immutable search state (`ivf.py`), the four search stages
(`search.py`) and the files (`storage.py`).

Building: `train(sample, num_tokens=...)` fits the codec on a sample of the corpus's token vectors, then
`add(doc_ids, vectors)` compresses documents chunk by chunk. An index that is not trained yet holds what
`add` gives it (as float16, up to `UNTRAINED_TOKENS`) and trains on a sample of all of it when first
searched or saved, so vectors added in several calls get centroids sized for all of them, never for the
first call's; past that limit `add` refuses and names `train`. `add_in_chunks` samples whole documents
from a corpus held in memory (as `Retriever` does from text).
"""

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mbret.errors import IndexFormatError, MbretError, ParameterError
from mbret.hardware import map_on_cores
from mbret.indexes.base import Manifest, StableDocIds, Stored, origin_of, read_manifest, save_generation
from mbret.indexes.kernels import token_groups
from mbret.indexes.parts import Part, read_part, write_part
from mbret.indexes.plaid import storage
from mbret.indexes.plaid.codec import (
    NBITS,
    QUANTIZERS,
    TRAIN_PER_CENTROID,
    ResidualCodec,
    check_quantizer,
    default_num_centroids,
    sample_rows,
)
from mbret.indexes.plaid.ivf import (
    CHUNK_ARRAYS,
    Chunk,
    ChunkTensors,
    SearchState,
    code_dtype,
    make_chunk,
    merge_chunks,
    select_documents,
)
from mbret.indexes.plaid.ivf import search_state as make_search_state
from mbret.indexes.plaid.search import PLAID_SETTINGS, live_subset, resolve_budgets, search_one
from mbret.types import SearchParams

COMPRESS_TOKENS = 65536  # token vectors converted to float32 and compressed at a time by PlaidIndex.add
# documents drawn for the k-means sample, as a multiple of the fewest that hold it; each gives a random share
# of its tokens. Tokens of one document are alike, so a sample of whole documents covers the corpus worse
# than the same number of tokens drawn at random; spreading the sample over more documents brought PLAID's
# recall of exact MaxSim's top 10 up to the one-shot build's (docs/benchmarks.md)
SAMPLE_SPREAD = 4
UNTRAINED_TOKENS = 1 << 24  # token vectors an untrained index holds for training (4 GiB at 128-d float16)


class PlaidIndex(StableDocIds, Stored):
    """A PLAID index: compressed token vectors, inverted lists, staged search; stable doc ids.

    Thread safety: any number of threads may search one index while one thread adds, deletes, compacts,
    reclusters, saves or refreshes it. A search takes one immutable `SearchState` (doc ids, codec, chunks,
    all of one version) and uses only that; writers change the index under a lock and then drop the
    snapshot, so the next search sees the change whole. Writers are serialised by that lock too."""

    def __init__(
        self,
        dimension: int,
        nbits: int = 2,
        num_centroids: int | None = None,
        seed: int = 0,
        kmeans_niter: int = 8,
        search_params: SearchParams | None = None,
        residual_quantizer: str = QUANTIZERS[0],
        search: SearchParams | None = None,
        centroids: torch.Tensor | None = None,
    ) -> None:
        """`search_params`: this index's default PLAID settings (saved in its manifest), which a search's
        own `search_params` override for that search; `search` is its deprecated name.

        `centroids`: (k, dimension) centroids to train with instead of running k-means, e.g. another index's
        `codec.centroids` for the same corpus at another `nbits` (k-means does not depend on nbits, and is
        most of a build's training time). Training then fits only the residual quantizer, on the sample a
        build of `len(centroids)` centroids draws, so the index is the one a build whose k-means reached
        these centroids gives (when the other index had as many centroids as it asked for)."""
        if search is not None:
            warnings.warn("PlaidIndex(search=...) is deprecated; use search_params=", DeprecationWarning, stacklevel=2)
            search_params = search_params or search
        if nbits not in NBITS:
            raise ParameterError("nbits", f"{nbits}: choose one of {', '.join(map(str, NBITS))}")
        check_quantizer(residual_quantizer)
        if dimension * nbits % 8:
            raise MbretError(f"dimension {dimension} × nbits {nbits} must be a whole number of bytes")
        self.dimension, self.nbits, self.seed, self.kmeans_niter = dimension, nbits, seed, kmeans_niter
        if centroids is not None:
            centroids = torch.as_tensor(centroids).detach().float().cpu().clone()  # the caller's may change
            if centroids.ndim != 2 or centroids.shape[1] != dimension or not len(centroids):
                raise ParameterError("centroids", f"shape {tuple(centroids.shape)}: expected (k, {dimension})")
            if num_centroids is not None and num_centroids != len(centroids):
                raise ParameterError("num_centroids", f"{num_centroids} with {len(centroids)} centroids given")
            num_centroids = len(centroids)
        self._given_centroids = centroids  # for the first training only (`recluster` runs k-means)
        self.num_centroids = num_centroids
        self.residual_quantizer = residual_quantizer  # the codec's, once there is one (`codec.py`)
        self.index_type = "plaid"
        self.search_settings = PLAID_SETTINGS  # the `SearchParams` a search of this index reads
        given = (search_params or SearchParams()).given()
        self.search_params = SearchParams(**{name: v for name, v in given.items() if name in PLAID_SETTINGS})
        self.codec: ResidualCodec | None = None
        self._init_ids()
        self._chunks: list[Chunk] = []  # immutable; the first `_saved_chunks` are on disk
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # compressed, not yet a chunk
        self._untrained: list[torch.Tensor] = []  # float16 documents added before the codec was trained
        self._saved_chunks = 0
        self._sources: dict[int, Part] = {}  # unsaved chunks whose arrays are a part's files (`add_parts`)
        self._rewrite_all = False  # set by compact/recluster and legacy loads: the next save rewrites all
        self.drift = 0.0
        self._state: SearchState | None = None
        self._views: dict[int, tuple[Chunk, ChunkTensors]] = {}
        self._path: Path | None = None
        self.device = torch.device("cpu")
        self.resident = False  # loaded into memory rather than memory-mapped
        self._lock = threading.RLock()  # writers, and the (re)building of the search snapshot

    def to(self, device: str | torch.device) -> PlaidIndex:
        """Search on `device` (e.g. "cuda"): centroids, inverted lists and compressed vectors are copied
        there when search first needs them (so an accelerator holds the whole compressed index); building
        and saving stay on the host."""
        with self._lock:
            self.device = torch.device(device)
            self._state, self._views = None, {}
        return self

    @property
    def params(self) -> dict[str, Any]:
        return {
            "nbits": self.nbits,
            "num_centroids": int(len(self.codec.centroids)) if self.codec else self.num_centroids,
            "seed": self.seed,
            "kmeans_niter": self.kmeans_niter,
            "residual_quantizer": self.codec.quantizer if self.codec else self.residual_quantizer,
            "drift": round(self.drift, 4),
            **self.search_params.given(),
        }

    @property
    def num_tokens(self) -> int:
        return (
            sum(c.num_tokens for c in self._chunks)
            + sum(len(p[0]) for p in self._pending)
            + sum(len(t) for t in self._untrained)
        )

    @property
    def is_trained(self) -> bool:
        """Whether the codec is fitted (`train`, or the first search or save of what `add` held)."""
        return self.codec is not None

    @property
    def num_chunks(self) -> int:
        """Chunks of documents, each stored in its own files (unsaved additions become one on save)."""
        return len(self._chunks) + (1 if self._pending or self._untrained else 0)

    def bytes_per_token(self) -> float:
        """Stored bytes per token vector: centroid id, packed residual and norm (the inverted lists add a few
        bytes per distinct (document, centroid) pair)."""
        k = len(self.codec.centroids) if self.codec else (self.num_centroids or 65536)
        return np.dtype(code_dtype(k)).itemsize + self.dimension * self.nbits / 8 + 4

    # -- building ------------------------------------------------------------------------------------
    def sample_documents(self, num_docs: int, tokens_per_doc: float) -> np.ndarray:
        """Sorted indices of a seeded sample of whole documents, out of `num_docs` averaging `tokens_per_doc`
        token vectors, for `train` when a corpus is added in chunks (`Retriever.add` encodes just these
        first): `SAMPLE_SPREAD` times as many as hold `TRAIN_PER_CENTROID` vectors per centroid, of which
        `train` keeps a random share."""
        rng = np.random.default_rng(self.seed)
        centroids = self.num_centroids or default_num_centroids(int(tokens_per_doc * num_docs))
        wanted = SAMPLE_SPREAD * int(math.ceil(TRAIN_PER_CENTROID * centroids / max(tokens_per_doc, 1.0)))
        return np.sort(rng.choice(num_docs, size=min(num_docs, max(wanted, 1)), replace=False))

    def train(self, sample: torch.Tensor, num_tokens: int | None = None) -> None:
        """Fit centroids and the residual quantizer on a sample of token vectors from a corpus of `num_tokens`
        (k-means on `TRAIN_PER_CENTROID` of them per centroid, drawn at random with the index's seed).
        Centroids are sized for `num_tokens`: pass the corpus's token count when the sample is a part."""
        with self._lock:
            if self._chunks or self._pending:
                raise MbretError("this index is trained and holds documents; use recluster() to retrain it")
            k = self.num_centroids or default_num_centroids(num_tokens or len(sample))
            self.num_centroids = k
            sample = sample_rows(torch.as_tensor(sample), TRAIN_PER_CENTROID * k, self.seed)
            self.codec = ResidualCodec.train(
                sample,
                self.nbits,
                k,
                seed=self.seed,
                niter=self.kmeans_niter,
                quantizer=self.residual_quantizer,
                centroids=self._given_centroids,
            )
            self._given_centroids = None  # used once: `recluster` runs k-means
            if self._untrained:  # documents added before: compress them now
                held, self._untrained = self._untrained, []
                self._compress(held)

    def add(
        self, doc_ids: Sequence[str], embeddings: Sequence[torch.Tensor], documents: Sequence[Any] | None = None
    ) -> None:
        """Compress and append documents; ids must be new. Before `train`, documents are held (float16) and
        the index trains on a sample of all that were added when first searched or saved. `documents`
        (title, text, metadata per doc, as corpus rows) go to the document store."""
        with self._lock:
            if len(doc_ids) != len(embeddings):
                raise MbretError(f"{len(doc_ids)} doc ids for {len(embeddings)} embeddings")
            if not doc_ids:
                return
            rows = self._prepare_documents(doc_ids, documents)
            tensors = [torch.as_tensor(e) for e in embeddings]
            bad = next((t.shape for t in tensors if t.ndim != 2 or t.shape[1] != self.dimension), None)
            if bad is not None:
                raise MbretError(f"expected token vectors of shape (n, {self.dimension}), got {tuple(bad)}")
            if self.codec is None:
                held = sum(len(t) for t in self._untrained) + sum(len(t) for t in tensors)
                if held > UNTRAINED_TOKENS:
                    raise MbretError(
                        f"PlaidIndex.add: {held:,} token vectors given to an index that is not trained; it holds "
                        f"at most {UNTRAINED_TOKENS:,} to train on. Call index.train(sample, num_tokens=<the "
                        "corpus's token count>) first, then add the corpus chunk by chunk"
                    )
                self._untrained.extend(t.to(torch.float16) for t in tensors)
            else:
                self._compress(tensors)
            self._append_ids(doc_ids, rows)
            self._state = None

    def _compress(self, tensors: list[torch.Tensor]) -> None:
        """Compress documents into a pending part, ~65k tokens at a time converted to float32 only then: the
        temporaries stay a few tens of MB whatever the chunk."""
        assert self.codec is not None
        dtype = code_dtype(len(self.codec.centroids))
        codes, packed, residual_sum, count = [], [], 0.0, 0
        for group in token_groups(tensors, COMPRESS_TOKENS):
            vectors = torch.cat([t.float() for t in group]) if group else torch.zeros(0, self.dimension)
            group_codes, group_packed, mean_residual = self.codec.compress(vectors)
            codes.append(group_codes.numpy().astype(dtype))
            packed.append(group_packed.numpy())
            residual_sum, count = residual_sum + mean_residual * vectors.numel(), count + vectors.numel()
        if self._chunks or self._pending:  # how far new documents sit from the centroids, relative to training
            self.drift = residual_sum / max(count, 1) / max(self.codec.avg_residual, 1e-12) - 1.0
        doclens = np.array([len(t) for t in tensors], dtype=np.int32)
        self._pending.append((np.concatenate(codes), np.concatenate(packed), doclens))

    def _seal(self) -> None:
        """Train if documents wait for it, then turn pending parts into one chunk (under the lock)."""
        if self.codec is None and self._untrained:
            self.train(torch.cat(self._untrained), num_tokens=sum(len(t) for t in self._untrained))
        if self._pending:
            assert self.codec is not None
            parts, self._pending = self._pending, []
            self._chunks.append(
                make_chunk(
                    np.concatenate([p[0] for p in parts]),
                    np.concatenate([p[1] for p in parts]),
                    np.concatenate([p[2] for p in parts]),
                    self.codec,
                )
            )

    def add_in_chunks(
        self,
        doc_ids: Sequence[str],
        embeddings: Sequence[torch.Tensor],
        chunk_docs: int = 2048,
        documents: Sequence[Any] | None = None,
    ) -> None:
        """Add documents `chunk_docs` at a time, training first (if the index is new) on a seeded sample of
        whole documents (`sample_documents`): how `Retriever` builds from text, for vectors encoded before.
        Centroids are sized for the whole corpus, not its first chunk, and the float32 temporaries are one
        chunk's."""
        if len(doc_ids) != len(embeddings):
            raise MbretError(f"{len(doc_ids)} doc ids for {len(embeddings)} embeddings")
        with self._lock:  # re-entrant: `add` takes it again per chunk
            if self.codec is None and len(embeddings):
                self._seal()
            if self.codec is None and len(embeddings):
                total = sum(len(e) for e in embeddings)
                picks = self.sample_documents(len(embeddings), total / len(embeddings))
                # float16 until `train` has drawn its share: the documents drawn hold SAMPLE_SPREAD times that
                sample = torch.cat([torch.as_tensor(embeddings[i]).to(torch.float16) for i in picks])
                self.train(sample, num_tokens=total)
            for begin in range(0, len(doc_ids), chunk_docs):
                end = begin + chunk_docs
                self.add(doc_ids[begin:end], embeddings[begin:end], None if documents is None else documents[begin:end])

    # -- distributed builds (`mbret.indexes.parts`) -------------------------------------------------
    def use_codec(self, codec: ResidualCodec) -> None:
        """Compress with `codec`, trained elsewhere (by the rank that trained it for a distributed build,
        or another index of the same corpus), instead of training one: for an index that holds nothing."""
        with self._lock:
            if self.codec is not None or self._untrained or len(self.doc_ids):
                raise MbretError("use_codec: the index already holds documents or a codec")
            self.codec, self.num_centroids = codec, len(codec.centroids)
            self.residual_quantizer = codec.quantizer

    def write_part(self, directory: str | Path) -> None:
        """Write everything this index holds as one part (one chunk, its ids and documents) for the rank
        that commits a distributed build to take in (`add_parts`); for an index built since `use_codec` or
        `train`, never saved."""
        with self._lock:
            self._seal()
            if self.codec is None:
                raise MbretError("write_part: the index has no codec (train it or give it one with use_codec)")
            if self._saved_chunks or self._path is not None or any(d is None for d in self.doc_ids):
                raise MbretError("write_part: only an index built since its codec, with nothing saved or deleted")
            arrays = merge_chunks(self._chunks, self.codec).arrays() if self._chunks else {}
            meta = {"codec": self.codec.fingerprint(), "num_tokens": self.num_tokens}
            write_part(Path(directory), list(self.doc_ids), self.documents, arrays, meta)  # type: ignore[arg-type]

    def add_parts(self, directories: Sequence[str | Path]) -> None:
        """Append the parts of a distributed build, in order, each as a chunk of its own whose files the
        next save links in rather than writes (so a commit costs O(1) per part, whatever its size). Every
        part must have been compressed with this index's codec."""
        with self._lock:
            self._seal()
            if self.codec is None:
                raise MbretError("add_parts: the index has no codec (train it or give it one with use_codec)")
            parts = [read_part(Path(d)) for d in directories]
            fingerprint = self.codec.fingerprint()
            stale = next((p for p in parts if p.meta.get("codec") != fingerprint), None)
            if stale is not None:
                raise MbretError(f"{stale.directory}: compressed with another codec than this index's")
            row_bytes, num_centroids = self.dimension * self.nbits // 8, len(self.codec.centroids)
            chunks = []
            for part in parts:
                if part.num_docs:
                    chunk = Chunk(**{r: part.array(r, mmap=r != "doclens") for r in CHUNK_ARRAYS})
                    storage.check_chunk(chunk, part.directory, row_bytes, num_centroids, part.num_docs)
                    chunks.append((chunk, part))
            doc_ids = self._import_documents(parts)
            for chunk, part in chunks:
                self._sources[len(self._chunks)] = part
                self._chunks.append(chunk)
            self._append_ids(doc_ids, [])
            self._state = None

    def delete(self, doc_ids: Sequence[str]) -> int:
        with self._lock:
            removed = self._remove_ids(doc_ids)
            self._state = None
        return len(removed)

    # -- maintenance ---------------------------------------------------------------------------------
    def compact(self) -> int:
        """Drop deleted documents' vectors into one new chunk; doc ids keep their meaning. Returns the
        number of token vectors freed. The next save rewrites the whole directory (atomically)."""
        with self._lock:
            self._seal()
            before = self.num_tokens
            if self.codec is None:
                return 0
            live = np.array([d is not None for d in self.doc_ids], dtype=bool)
            parts, start = [], 0
            for chunk in self._chunks:
                parts.append(select_documents(chunk, live[start : start + chunk.num_docs], self.codec))
                start += chunk.num_docs
            self._chunks = [merge_chunks(parts, self.codec)] if parts else []
            self._compact_ids()
            self._saved_chunks, self._rewrite_all, self._state, self._views = 0, True, None, {}
            self._sources = {}
            return before - self.num_tokens

    def recluster(self, block: int = 65536) -> None:
        """Retrain centroids and residual quantizer on the index's own (decompressed) vectors, then recompress: for
        when `drift` says added documents sit far from the old centroids. Compacts as it goes."""
        with self._lock:
            self.compact()
            if self.codec is None or not self._chunks:
                raise MbretError("cannot recluster an empty index")
            chunk = self._chunks[0]
            codes = torch.from_numpy(np.asarray(chunk.codes).astype(np.int64))
            residuals = torch.from_numpy(np.ascontiguousarray(chunk.residuals))
            k = default_num_centroids(len(codes))
            rows = torch.randperm(len(codes), generator=torch.Generator().manual_seed(self.seed))[: 40 * k]
            old = self.codec
            self.num_centroids, self._chunks = k, []
            self.train(old.decompress(codes[rows], residuals[rows]), num_tokens=len(codes))
            new_codes, new_residuals = [], []
            for start in range(0, len(codes), block):
                vectors = old.decompress(codes[start : start + block], residuals[start : start + block])
                c, r, _ = self.codec.compress(vectors)
                new_codes.append(c.numpy())
                new_residuals.append(r.numpy())
            codes_new, residuals_new = np.concatenate(new_codes), np.concatenate(new_residuals)
            self._chunks = [make_chunk(codes_new, residuals_new, chunk.doclens, self.codec)]
            self.drift, self._state, self._views = 0.0, None, {}

    # -- search --------------------------------------------------------------------------------------
    def search_state(self) -> SearchState:
        """The current immutable snapshot searches read (made after each change, under the writers' lock;
        a chunk's tensors are made once and shared by every later snapshot)."""
        state = self._state
        if state is not None:
            return state
        with self._lock:
            if self._state is None:
                self._seal()
                assert self.codec is not None
                codec = self.codec
                if self.device.type != "cpu":
                    codec = ResidualCodec(
                        codec.centroids, codec.cutoffs, codec.weights, self.nbits, codec.avg_residual
                    ).to(self.device)
                self._state = make_search_state(self._chunks, self.doc_ids, codec, self.device, self._views)
            return self._state

    def search(
        self,
        queries: Sequence[torch.Tensor],
        k: int = 10,
        where: str | None = None,
        params: Sequence[Any] = (),
        ids: Iterable[str] | None = None,
        search_params: SearchParams | None = None,
        workers: int | None = None,
    ) -> list[list[tuple[str, float]]]:
        """Top-k (doc id, MaxSim score over decompressed vectors) per query, best first; with a filter
        (`select`: `where`, `params`, `ids`) among the matching documents only (see `search_one`).
        `search_params`' PLAID settings (`PLAID_SETTINGS`) override the index's own for this call only;
        unset ones keep the index's, then the defaults for k (`resolve_budgets`).

        On CPU, queries are searched `workers` at a time (default: torch's thread count), each on one
        thread: a query's stages are many small tensor operations that split poorly across cores, so
        query-level parallelism beats intra-op threads (`map_on_cores`; docs/benchmarks.md). An
        accelerator takes the queries one by one. Every query of one call searches the same snapshot.
        """
        if k <= 0:
            raise MbretError(f"-k {k}: must be a positive integer")
        if not len(self):
            return [[] for _ in queries]
        settings = self.search_params if search_params is None else search_params.over(self.search_params)
        p = resolve_budgets(settings, k, self.nbits)
        while True:  # the filter's positions must be those of the snapshot searched: redo if a write came between
            state = self.search_state()
            subset = self.select(where, params, ids)
            if self._state is state:
                break
        chosen = None
        if subset is not None:
            chosen = live_subset(state, torch.from_numpy(np.array(subset, dtype=np.int64)).to(state.centroids.device))
        if state.centroids.device.type != "cpu":
            return [search_one(state, query, k, p, chosen) for query in queries]
        return map_on_cores(lambda query: search_one(state, query, k, p, chosen), queries, workers)

    # -- persistence ---------------------------------------------------------------------------------
    def save(self, path: str | Path, manifest: Manifest, replace: bool = False) -> None:
        """Write the chunks added since the last save (as one), the tombstones and the manifest; chunks
        already on disk are never rewritten (a compaction rewrites the directory, atomically)."""
        with self._lock:
            self._seal()
            if self.codec is None:
                raise MbretError("cannot save an empty index: add documents first")
            path = Path(path)
            if len(self._chunks) - self._saved_chunks > 1 and not self._sources:  # several unsaved become one
                unsaved = self._chunks[self._saved_chunks :]
                self._chunks = self._chunks[: self._saved_chunks] + [merge_chunks(unsaved, self.codec)]
                self._state = None
            codec, chunks, doc_ids, sources = self.codec, list(self._chunks), list(self.doc_ids), dict(self._sources)
            manifest.kind, manifest.index_type = "plaid", "plaid"
            manifest.dimension, manifest.num_docs = self.dimension, len(self)
            manifest.index_params = self.params | {"avg_residual": codec.avg_residual}
            replace = replace or self._rewrite_all
            same_dir = self._path is not None and self._path.absolute() == path.absolute()
            fresh = replace or not same_dir or not (path / "manifest.json").is_file()
            first_new = 0 if fresh else self._saved_chunks
            deleted = np.array([i for i, d in enumerate(doc_ids) if d is None], dtype=np.int64)

            def write_files(directory: Path, gen: int) -> dict[str, str]:
                names = storage.write_codec(directory, codec, fresh)
                start = 0
                for c, chunk in enumerate(chunks):
                    names |= storage.chunk_names(c)
                    ids = doc_ids[start : start + chunk.num_docs]
                    if c >= first_new and c in sources:
                        arrays = {role: sources[c].array_path(role) for role in CHUNK_ARRAYS}
                        storage.link_chunk(directory, c, arrays, ids)
                    elif c >= first_new:
                        storage.write_chunk(directory, c, chunk, ids)
                    start += chunk.num_docs
                return names | storage.write_tombstones(directory, gen, deleted) | self._write_documents(directory, gen)

            self._origin = save_generation(path, manifest, write_files, replace=replace, origin=self._origin)
            self._documents_committed(path, manifest)
            self._saved_chunks, self._rewrite_all, self._path = len(chunks), False, path
            self._sources = {}

    @classmethod
    def load(cls, path: str | Path, mmap: bool = True) -> tuple[PlaidIndex, Manifest]:
        """Load an index; its arrays are memory-mapped unless `mmap=False`. Nothing is computed from all
        tokens: the first query reads only the lists and tokens it needs."""
        path = Path(path)
        manifest = read_manifest(path)
        if manifest.kind != "plaid":
            raise IndexFormatError(f"{path}: a {manifest.kind} index, not a PLAID one")
        files = {role: path / name for role, name in manifest.files.items()}
        p = manifest.index_params
        self = cls(
            manifest.dimension,
            nbits=int(p["nbits"]),
            num_centroids=p.get("num_centroids"),
            seed=int(p.get("seed", 0)),
            kmeans_niter=int(p.get("kmeans_niter", 8)),
            search_params=SearchParams(**{name: p[name] for name in PLAID_SETTINGS if name in p}),
        )
        self.drift = float(p.get("drift", 0.0))
        self.resident = not mmap
        row_bytes = self.dimension * self.nbits // 8
        self.codec = storage.read_codec(files, self.nbits, float(p.get("avg_residual", 0.0)))
        self.residual_quantizer = self.codec.quantizer  # older indexes hold scalar buckets
        if "doc_ids" in files:  # written before chunks stored their lists
            self._chunks, doc_ids = storage.read_legacy_chunks(files, self.codec, row_bytes, mmap)
            self._rewrite_all = True
        else:
            self._chunks, doc_ids = storage.read_chunks(files, self.codec, row_bytes, mmap)
            self._saved_chunks = len(self._chunks)
        self._init_ids(doc_ids)
        if len(self) != manifest.num_docs:
            raise IndexFormatError(f"{path}: manifest says {manifest.num_docs} docs, id files hold {len(self)}")
        self._origin, self._path = origin_of(manifest, path), path
        self._open_documents(path, manifest)
        return self, manifest

    # -- refresh (`Stored.refresh`): swap in the state under the writers' lock; searches keep their snapshot
    _keep_on_refresh = ("_lock", "device")

    def _exclusive(self) -> threading.RLock:
        return self._lock

    def _reload_options(self) -> dict[str, Any]:
        return {"mmap": not self.resident}
