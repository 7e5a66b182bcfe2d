"""Exact MaxSim over every document token: ColBERT's ground truth, and the search for small corpora.

Search pads a chunk of documents into one tensor and scores a block of queries against it with one
matmul, so the cost is the GEMM, not Python; peak memory is bounded by `chunk_tokens`, not by the corpus.

Files are appendable, so a write costs what it changes: `embeddings.f16` (raw float16 rows, memory-mapped
on load), `doclens.i64` (token counts) and `doc_ids.jsonl` (one JSON string per line, null for a document
deleted before it was first saved) only grow; the manifest records how much of each belongs to its
generation (`stored_tokens`, `stored_docs`, `doc_ids_bytes`), and a save first cuts off whatever a killed
save left past that, then appends. Deletions are a tombstone file per generation (`deleted-GGGGGG.npy`).
A compaction rewrites the directory (atomically). Older indexes (one `.npy` per generation) still load;
their next save rewrites them in this layout. numpy's `.npy` has no append, hence raw files.
"""

from __future__ import annotations

import json
import os
import threading
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mbret.errors import IndexFormatError, MbretError
from mbret.hardware import cpu_has_native, map_on_cores
from mbret.indexes.base import (
    Manifest,
    ReadWriteLock,
    StableDocIds,
    Stored,
    origin_of,
    read_manifest,
    save_generation,
)
from mbret.indexes.kernels import max_per_segment, token_groups
from mbret.indexes.parts import read_part
from mbret.io import atomic_file
from mbret.types import SearchParams

SORT_WINDOW = 4096  # documents sorted by length together for scoring (see ExactIndex._plan)
CPU_CHUNK_TOKENS = 1024  # padded document tokens scored at once on CPU (see ExactIndex.search)
MERGE_DOCS = 256  # scored documents collected before they are merged into the running top k
RESCORE_TOKENS = 4096  # document tokens rescored at once for one query after the bfloat16 screen
# Worst-case error of one bfloat16 similarity, as a fraction of |q| |d|: q and d each rounded to bfloat16
# (unit roundoff 2^-8 each), the float32-accumulated dot product rounded to bfloat16 (2^-8), and 2^-10 of slack
# for the second-order terms, float32 accumulation (128 terms: 8e-6) and the float32 sum over query tokens.
SCREEN_ERROR = 3 * 2.0**-8 + 2.0**-10


def pad_queries(queries: Sequence[torch.Tensor], dim: int) -> torch.Tensor:
    """(nq, max_len, dim) float32; zero rows add exactly 0 to MaxSim, so padding never changes a score."""
    longest = max((len(q) for q in queries), default=1)
    out = torch.zeros(len(queries), longest, dim)
    for i, q in enumerate(queries):
        out[i, : len(q)] = q.float()
    return out


def _as_numpy(vectors: torch.Tensor | np.ndarray) -> np.ndarray:
    """float16 tensors as they are (no float32 copy); others through float32 (numpy has no bfloat16)."""
    if not isinstance(vectors, torch.Tensor):
        return vectors
    return (vectors if vectors.dtype == torch.float16 else vectors.float()).cpu().numpy()


def padded_rows(starts: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(n, longest) row indices of n documents' tokens. Positions past a document's end repeat its first
    token: a repeated token cannot change a max, so MaxSim needs no mask (and no pass to apply one)."""
    longest = max(int(lengths.max()), 1) if len(lengths) else 1
    positions = torch.arange(longest, device=starts.device)[None, :]
    return starts[:, None] + torch.where(positions < lengths[:, None], positions, 0)


def length_bounds(lengths: Sequence[int], chunk_tokens: int) -> list[tuple[int, int]]:
    """Consecutive (start, end) runs of documents whose padded size (count x longest) fits `chunk_tokens`;
    a document longer than that gets a run of its own."""
    bounds, start = [], 0
    while start < len(lengths):
        end, longest = start + 1, lengths[start]
        while end < len(lengths) and (end - start + 1) * max(longest, lengths[end]) <= chunk_tokens:
            longest = max(longest, lengths[end])
            end += 1
        bounds.append((start, end))
        start = end
    return bounds


def _windowed_order(counts: np.ndarray) -> np.ndarray:
    """Positions of `counts` shortest first within each window of `SORT_WINDOW` (see `_plan`)."""
    windows = [w + np.argsort(counts[w : w + SORT_WINDOW], kind="stable") for w in range(0, len(counts), SORT_WINDOW)]
    return np.concatenate(windows or [np.zeros(0, dtype=np.int64)])


def maxsim_scores(queries: torch.Tensor, docs: torch.Tensor, doc_lengths: torch.Tensor) -> torch.Tensor:
    """MaxSim of padded queries (nq, lq, d) against docs padded by `padded_rows` (nd, ld, d) -> (nq, nd),
    float32 whatever the inputs' dtype. Zero query rows add exactly 0; a document with no tokens scores 0."""
    nq, lq, d = queries.shape
    nd, ld, _ = docs.shape
    similarities = queries.reshape(nq * lq, d) @ docs.reshape(nd * ld, d).T
    # exact for bfloat16 (a max commutes with widening), and the float32 max is faster on CPU than bf16's own
    best = similarities.float().view(nq * lq, nd, ld).amax(dim=2)
    scores = best.view(nq, lq, nd).sum(dim=1)
    scores[:, doc_lengths == 0] = 0.0
    return scores


class ExactIndex(StableDocIds, Stored):
    """Every token vector of every document, scored exactly; doc ids stable across add and delete.

    Thread safety: any number of threads may search one index while others add, delete, compact, save or
    refresh it: searches share a `ReadWriteLock`, and a change waits for the searches under way (and holds
    new ones off), so every search reads one version of the vectors and ids."""

    def __init__(self, dimension: int) -> None:
        self.dimension = dimension
        self.index_type = "exact"
        self.search_settings: tuple[str, ...] = ()  # the `SearchParams` a search reads: none
        self.params: dict[str, int] = {}
        self._init_ids()
        self._chunks: list[np.ndarray] = []  # float16 (tokens, dim) arrays, appended per add
        self._lengths: list[np.ndarray] = []  # int64 token counts per document, per chunk
        self._saved = (0, 0, 0, 0)  # chunks, documents, tokens, doc id bytes in the directory at `_path`
        self._rewrite_all = False  # set by compact and by loading an older layout
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None
        self._resident: torch.Tensor | None = None  # the token vectors in the device's memory
        self._norm: float | None = None  # the largest token vector norm (see _max_norm)
        self._plans: dict[int, tuple[torch.Tensor, list[tuple[int, int]]]] = {}  # by chunk_tokens
        self.device = torch.device("cpu")
        self.resident = False  # on CPU too, gather from one in-memory copy (tests exercise the GPU's path)
        self._rw = ReadWriteLock()
        self._changing = threading.RLock()  # one change or save at a time

    def to(self, device: str | torch.device) -> ExactIndex:
        """Score on `device` (e.g. "cuda"): the float16 token vectors are copied there once when they fit
        in half of its free memory, else each chunk is copied over from the host as it is scored."""
        with self._exclusive():
            return self._to(device)

    def _to(self, device: str | torch.device) -> ExactIndex:
        """Score on `device` (e.g. "cuda"): the float16 token vectors are copied there once when they fit
        in half of its free memory, else each chunk is copied over from the host as it is scored."""
        self.device = torch.device(device)
        self._resident = None
        return self

    def _resident_tokens(self, tokens: torch.Tensor) -> torch.Tensor | None:
        """The token vectors on the search device, copied once; None to stream chunks from the host."""
        if self._resident is not None:
            return self._resident
        if self.device.type == "cpu":
            if self.resident:
                self._resident = tokens.clone()
            return self._resident
        if self.device.type != "cuda":
            return None
        free, _ = torch.cuda.mem_get_info(self.device)
        if tokens.numel() * tokens.element_size() <= free // 2:
            self._resident = tokens.to(self.device)
        return self._resident

    is_trained = True  # nothing to fit: every vector is kept as it is
    _keep_on_refresh = ("_rw", "_changing", "device")

    @property
    def num_tokens(self) -> int:
        return int(sum(len(c) for c in self._chunks))

    def add(
        self,
        doc_ids: Sequence[str],
        embeddings: Sequence[torch.Tensor | np.ndarray],
        documents: Sequence[Any] | None = None,
    ) -> None:
        """Append documents (stored as float16); ids must be new. `documents` (title, text, metadata per
        doc, as corpus rows) go to the document store."""
        with self._exclusive():
            self._add(doc_ids, embeddings, documents)

    def _add(
        self,
        doc_ids: Sequence[str],
        embeddings: Sequence[torch.Tensor | np.ndarray],
        documents: Sequence[Any] | None = None,
    ) -> None:
        if len(doc_ids) != len(embeddings):
            raise MbretError(f"{len(doc_ids)} doc ids for {len(embeddings)} embeddings")
        rows = self._prepare_documents(doc_ids, documents)
        arrays = [np.asarray(_as_numpy(e), dtype=np.float16) for e in embeddings]
        for array in arrays:
            if array.ndim != 2 or array.shape[1] != self.dimension:
                raise MbretError(f"expected token vectors of shape (n, {self.dimension}), got {array.shape}")
        self._append_ids(doc_ids, rows)
        if arrays:
            self._chunks.append(np.concatenate(arrays))
            self._lengths.append(np.array([len(a) for a in arrays], dtype=np.int64))
        self._invalidate()

    def add_parts(self, directories: Sequence[str | Path]) -> None:
        """Add the parts of a distributed build (`mbret.indexes.parts`: each `tokens`, float16 (tokens,
        dimension), and `doclens`, with its doc ids and documents), in order, memory-mapped until saved."""
        parts = [read_part(Path(d)) for d in directories]
        loaded = []
        for part in parts:
            if not part.num_docs:
                continue
            tokens, lengths = part.array("tokens"), part.array("doclens", mmap=False).astype(np.int64)
            if tokens.ndim != 2 or tokens.shape[1] != self.dimension or tokens.dtype != np.float16:
                raise IndexFormatError(f"{part.directory}: tokens of shape {tokens.shape}, not (n, {self.dimension})")
            if len(lengths) != part.num_docs or int(lengths.sum()) != len(tokens):
                raise IndexFormatError(f"{part.directory}: doclens do not fit its documents and tokens")
            loaded.append((tokens, lengths))
        with self._exclusive():
            doc_ids = self._import_documents(parts)
            self._append_ids(doc_ids, [])
            for tokens, lengths in loaded:
                self._chunks.append(tokens)
                self._lengths.append(lengths)
            self._invalidate()

    def delete(self, doc_ids: Sequence[str]) -> int:
        with self._exclusive():
            return self._delete(doc_ids)

    def _delete(self, doc_ids: Sequence[str]) -> int:
        removed = self._remove_ids(doc_ids)
        self._invalidate()
        return len(removed)

    def compact(self) -> int:
        """Drop deleted documents' vectors; returns how many token vectors were freed."""
        with self._exclusive():
            return self._compact()

    def _compact(self) -> int:
        """Drop deleted documents' vectors; returns how many token vectors were freed."""
        tokens, lengths = self._flat()
        live = np.array([d is not None for d in self.doc_ids], dtype=bool)
        before = len(tokens)
        self._chunks = [tokens.numpy()[np.repeat(live, lengths.numpy())]]
        self._lengths = [lengths.numpy()[live]]
        self._compact_ids()
        self._invalidate()
        self._rewrite_all = True
        return before - len(self._chunks[0])

    def _invalidate(self) -> None:
        self._cache = self._resident = self._norm = None
        self._plans = {}

    def _plan(
        self, lengths: torch.Tensor, chunk_tokens: int, subset: np.ndarray | None = None
    ) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """The order documents are scored in and the chunks of that order, cached per `chunk_tokens`
        (a filter's `subset` gets its own plan over just its documents, not cached).

        Within windows of `SORT_WINDOW` documents (so reads stay local in a memory map) documents go
        shortest first, so a chunk pads every document to nearly its own length and little padding is scored
        (docs/benchmarks.md).
        """
        if subset is not None:
            counts = lengths.numpy()[subset]
            order = _windowed_order(counts)
            return torch.from_numpy(subset[order].astype(np.int64)), length_bounds(counts[order].tolist(), chunk_tokens)
        if chunk_tokens not in self._plans:
            counts = lengths.numpy()
            order = _windowed_order(counts)
            bounds = length_bounds(counts[order].tolist(), chunk_tokens)
            self._plans[chunk_tokens] = (torch.from_numpy(order.astype(np.int64)), bounds)
        return self._plans[chunk_tokens]

    def _flat(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._cache is None:
            tokens = np.concatenate(self._chunks) if self._chunks else np.zeros((0, self.dimension), np.float16)
            lengths = np.concatenate(self._lengths) if self._lengths else np.zeros(0, np.int64)
            self._cache = (torch.from_numpy(np.ascontiguousarray(tokens)), torch.from_numpy(lengths))
        return self._cache

    def _max_norm(self) -> float:
        """The largest token vector norm in the index (bounds the bfloat16 screen's error), cached."""
        if self._norm is None:
            tokens, _ = self._flat()
            self._norm = max(
                (float(tokens[b : b + 65536].float().norm(dim=1).max()) for b in range(0, len(tokens), 65536)),
                default=0.0,
            )
        return self._norm

    def search(
        self,
        queries: Sequence[torch.Tensor],
        k: int = 10,
        where: str | None = None,
        params: Sequence[Any] = (),
        ids: Iterable[str] | None = None,
        search_params: SearchParams | None = None,
        chunk_tokens: int | None = None,
        query_block: int | None = None,
        screen: bool | None = None,
    ) -> list[list[tuple[str, float]]]:
        """Top-k (doc id, MaxSim score) per query, best first, over all live documents (`_search`), or with
        a filter (`select`: `where`, `params`, `ids`) over the matching ones only: only they are scored.
        Exact search has no settings to trade quality for speed: `search_params` is accepted and ignored."""
        with self._rw.read():
            subset = self.select(where, params, ids)
            return self._search(queries, k, chunk_tokens, query_block, screen, subset)

    @torch.inference_mode()
    def _search(
        self,
        queries: Sequence[torch.Tensor],
        k: int = 10,
        chunk_tokens: int | None = None,
        query_block: int | None = None,
        screen: bool | None = None,
        subset: np.ndarray | None = None,
    ) -> list[list[tuple[str, float]]]:
        """Top-k (doc id, MaxSim score) per query, best first, over all live documents (or those of `subset`).

        Scores `query_block` queries against `chunk_tokens` padded document tokens at a time. On CPU the
        defaults are small (32 queries x 1,024 tokens: a 4 MiB block of similarities that stays in cache),
        which beat larger blocks (docs/benchmarks.md); an accelerator takes 64 x 2^18 (2 GiB of fp32
        similarities).

        `screen` (the default on a CPU with native bfloat16: AVX512-BF16 or AMX) scores every document in
        bfloat16 first, whose matmul is faster than float32's there, and keeps for each query the documents that
        bfloat16's worst-case error (`SCREEN_ERROR`) leaves a chance of being in its top k; only those are
        rescored in float32. The hits and their float32 scores are those of a float32 pass.
        """
        if k <= 0:
            raise MbretError(f"-k {k}: must be a positive integer")
        if not len(queries):
            return []
        tokens, lengths = self._flat()
        device = self.device
        on_cpu = device.type == "cpu"
        if screen is None:
            screen = on_cpu and cpu_has_native(torch.bfloat16, unknown=False)
        chunk_tokens = chunk_tokens or (CPU_CHUNK_TOKENS if on_cpu else 1 << 18)
        query_block = query_block or (32 if on_cpu else 64)
        live = torch.tensor([d is not None for d in self.doc_ids], dtype=torch.bool)
        offsets = torch.cumsum(lengths, 0) - lengths
        resident = self._resident_tokens(tokens)
        last_row = max(len(tokens) - 1, 0)

        def gather(starts: torch.Tensor, counts: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
            """(n, longest, dim) token vectors of n documents on `device`, padded by `padded_rows`."""
            if resident is not None:  # gather where the vectors live: nothing crosses the bus
                rows = padded_rows(starts.to(resident.device), counts.to(resident.device)).clamp_max(last_row)
                return resident[rows].to(dtype)
            rows = padded_rows(starts, counts).clamp_max(last_row)
            return tokens[rows].to(device, non_blocking=True).to(dtype)

        # queries shortest first, each block padded to its own longest: padding all to the longest query
        # multiplied the work by longest / mean length, which is large for unexpanded queries
        query_order = sorted(range(len(queries)), key=lambda i: len(queries[i]))
        queries = [queries[i] for i in query_order]
        blocks = [
            pad_queries(queries[b : b + query_block], self.dimension).to(device)
            for b in range(0, len(queries), query_block)
        ]
        margin = None
        if screen:
            bound = SCREEN_ERROR * self._max_norm() * torch.cat([b.norm(dim=2).sum(dim=1) for b in blocks])
            margin = 2 * bound[:, None]  # a doc this far below the k-th screened score cannot reach the top k
            blocks = [b.bfloat16() for b in blocks]
        if subset is not None:
            subset = subset[subset < len(lengths)]
        order, bounds = self._plan(lengths, chunk_tokens, subset)
        starts, counts, live = offsets[order], lengths[order], live[order]  # all in scoring order
        order_at = order.to(device)
        nq = len(queries)
        best_scores = torch.full((nq, 0), float("-inf"), device=device)
        best_ids = torch.zeros((nq, 0), dtype=torch.int64, device=device)
        pending: list[tuple[torch.Tensor, torch.Tensor]] = []
        for n, (start, end) in enumerate(bounds):
            docs = gather(starts[start:end], counts[start:end], blocks[0].dtype)
            doc_lengths = counts[start:end].to(device)
            scores = torch.cat([maxsim_scores(block, docs, doc_lengths) for block in blocks])
            scores[:, ~live[start:end].to(device)] = float("-inf")
            pending.append((scores, order_at[start:end]))
            if sum(len(ids) for _, ids in pending) < MERGE_DOCS and n + 1 < len(bounds):
                continue
            merged = torch.cat([best_scores] + [p for p, _ in pending], dim=1)
            ids = torch.cat([best_ids] + [i.expand(nq, -1) for _, i in pending], dim=1)
            pending = []
            keep = min(k, merged.shape[1])
            if margin is not None and keep:
                kth = torch.topk(merged, keep, dim=1).values[:, -1:]
                keep = int((merged >= kth - margin).sum(dim=1).max())
            top = torch.topk(merged, keep, dim=1)
            best_scores, best_ids = top.values, torch.gather(ids, 1, top.indices)
        if screen:
            if best_scores.shape[1]:  # each query's own candidates: within its margin of its own k-th score
                kth = best_scores[:, min(k, best_scores.shape[1]) - 1 :][:, :1]
                best_scores = best_scores.masked_fill(best_scores < kth - margin, float("-inf"))
            best_scores, best_ids = self._rescore(queries, best_scores, best_ids, k, tokens, offsets, lengths)
        results: list[list[tuple[str, float]]] = [[] for _ in queries]
        for q, row_scores, row_ids in zip(query_order, best_scores.cpu().tolist(), best_ids.cpu().tolist()):
            results[q] = [
                (self.doc_ids[i], s)
                for s, i in zip(row_scores, row_ids)
                if s != float("-inf") and self.doc_ids[i] is not None
            ]
        return results

    def _rescore(
        self,
        queries: Sequence[torch.Tensor],
        candidate_scores: torch.Tensor,
        candidate_ids: torch.Tensor,
        k: int,
        tokens: torch.Tensor,
        offsets: torch.Tensor,
        lengths: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each query's screened candidates scored in float32: (nq, k) scores, -inf past a query's last
        candidate, and doc indices. Candidates are read in storage order as whole slices, unpadded, in pieces
        of ~`RESCORE_TOKENS` (faster than gathering padded rows and widening them all at once). Queries
        run on all cores, one each (`map_on_cores`): a query's small GEMMs split poorly across cores."""
        nq = len(queries)
        top_scores = torch.full((nq, k), float("-inf"))
        top_ids = torch.zeros((nq, k), dtype=torch.int64)
        device = candidate_scores.device

        @torch.inference_mode()  # per thread: workers do not inherit the caller's mode
        def rescore_one(i: int) -> None:
            ids = candidate_ids[i][torch.isfinite(candidate_scores[i])].cpu().sort().values
            if not len(ids):
                return
            query = queries[i].cpu().float().T  # (dim, lq)
            slices = [tokens[s : s + c] for s, c in zip(offsets[ids].tolist(), lengths[ids].tolist())]
            scores = [
                max_per_segment(torch.cat(group).float() @ query, torch.tensor([len(t) for t in group])).sum(dim=1)
                for group in token_groups(slices, RESCORE_TOKENS)
            ]
            top = torch.topk(torch.cat(scores), min(k, len(ids)))
            top_scores[i, : len(top.values)] = top.values
            top_ids[i, : len(top.values)] = ids[top.indices]

        map_on_cores(rescore_one, range(nq))
        return top_scores.to(device), top_ids.to(device)

    # -- persistence ---------------------------------------------------------------------------------
    def save(self, path: str | Path, manifest: Manifest, replace: bool = False) -> None:
        """Write token vectors (float16 .npy), token counts and doc ids, then the manifest, atomically.
        Searches go on while the files are written; changes wait for the save."""
        with self._changing:
            with self._rw.read():
                adopt = self._save(path, manifest, replace)
            with self._rw.write():  # a moment: this object becomes the generation it wrote
                adopt()

    def _save(self, path: str | Path, manifest: Manifest, replace: bool) -> Callable[[], None]:
        """Write the files; returns what makes this object the generation written."""
        path = Path(path)
        replace = replace or self._rewrite_all
        same_dir = self._path is not None and self._path.absolute() == path.absolute()
        fresh = replace or not same_dir or not (path / "manifest.json").is_file()
        chunks, docs, tokens, id_bytes = (0, 0, 0, 0) if fresh else self._saved
        new_tokens = [np.ascontiguousarray(c) for c in self._chunks[chunks:]]
        new_lengths = [np.asarray(c, dtype=np.int64) for c in self._lengths[chunks:]]
        lines = "".join(json.dumps(d) + "\n" for d in self.doc_ids[docs:]).encode("utf-8")
        total_tokens = tokens + sum(len(c) for c in new_tokens)
        deleted = np.array([i for i, d in enumerate(self.doc_ids) if d is None], dtype=np.int64)
        manifest.kind, manifest.index_type = "exact", "exact"
        manifest.dimension, manifest.num_docs = self.dimension, len(self)
        manifest.index_params = {
            "stored_docs": len(self.doc_ids),
            "stored_tokens": total_tokens,
            "doc_ids_bytes": id_bytes + len(lines),
        }
        row_bytes = self.dimension * 2

        def write_files(directory: Path, gen: int) -> dict[str, str]:
            names = dict(EXACT_FILES)
            for role, parts, keep in (
                ("embeddings", new_tokens, tokens * row_bytes),
                ("doclens", new_lengths, docs * 8),
                ("doc_ids", [lines], id_bytes),
            ):
                _append(directory / names[role], keep, parts)
            if len(deleted):
                names["deleted"] = f"deleted-{gen:06d}.npy"
                with atomic_file(directory / names["deleted"], "wb") as fh:
                    np.save(fh, deleted, allow_pickle=False)
            return names | self._write_documents(directory, gen)

        origin = save_generation(path, manifest, write_files, replace=replace, origin=self._origin)
        saved = (len(self._chunks), len(self.doc_ids), total_tokens, id_bytes + len(lines))

        def adopt() -> None:
            self._origin, self._path, self._rewrite_all, self._saved = origin, path, False, saved
            self._documents_committed(path, manifest)

        return adopt

    @classmethod
    def load(cls, path: str | Path, mmap: bool = True) -> tuple[ExactIndex, Manifest]:
        """Load an index; token vectors are memory-mapped unless `mmap=False`."""
        path = Path(path)
        manifest = read_manifest(path)
        if manifest.kind not in ("exact", "maxsim"):  # "maxsim": written before the exact index took its name
            raise IndexFormatError(f"{path}: a {manifest.kind} index, not an exact MaxSim one")
        files = {role: path / name for role, name in manifest.files.items()}
        legacy = files["embeddings"].suffix == ".npy"
        if legacy:  # one .npy per generation, from before the files were appendable
            tokens, lengths, doc_ids = _read_legacy(files, mmap)
        else:
            tokens, lengths, doc_ids = _read_appendable(files, manifest, mmap)
        if tokens.ndim != 2 or tokens.shape[1] != manifest.dimension:
            raise IndexFormatError(f"{files['embeddings']}: shape {tokens.shape}, manifest says {manifest.dimension}-d")
        if len(lengths) != len(doc_ids) or int(lengths.sum()) != len(tokens):
            raise IndexFormatError(
                f"{path}: {len(doc_ids)} doc ids, {len(lengths)} token counts summing to "
                f"{int(lengths.sum())}, {len(tokens)} token vectors: files do not match"
            )
        if "deleted" in files:
            try:
                deleted = np.load(files["deleted"], allow_pickle=False)
            except (ValueError, OSError, EOFError) as exc:
                raise IndexFormatError(f"{files['deleted']}: truncated or corrupt array file ({exc})") from None
            for i in deleted.tolist():
                doc_ids[i] = None
        self = cls(manifest.dimension)
        self._init_ids(doc_ids)
        self._chunks, self._lengths = [tokens], [lengths]
        with warnings.catch_warnings():  # a read-only memory map: torch warns, and we never write to it
            warnings.simplefilter("ignore", UserWarning)
            self._cache = (torch.from_numpy(tokens), torch.from_numpy(lengths))
        self._origin, self._path = origin_of(manifest, path), path
        self._open_documents(path, manifest)
        if legacy:
            self._rewrite_all = True
        else:
            self._saved = (1, len(doc_ids), len(tokens), int(manifest.index_params["doc_ids_bytes"]))
        return self, manifest


EXACT_FILES = {"embeddings": "embeddings.f16", "doclens": "doclens.i64", "doc_ids": "doc_ids.jsonl"}


def _append(file: Path, keep: int, parts: Sequence[np.ndarray | bytes]) -> None:
    """Cut `file` to its first `keep` bytes (what the committed generation holds) and append `parts`, then
    fsync; a new file when `keep` is 0."""
    with open(file, "r+b" if keep and file.exists() else "wb") as fh:
        fh.truncate(keep)
        fh.seek(keep)
        for part in parts:
            fh.write(part if isinstance(part, bytes) else memoryview(np.ascontiguousarray(part)).cast("B"))
        fh.flush()
        os.fsync(fh.fileno())


def _read_appendable(
    files: dict[str, Path], manifest: Manifest, mmap: bool
) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
    p = manifest.index_params
    try:
        num_docs, num_tokens, id_bytes = int(p["stored_docs"]), int(p["stored_tokens"]), int(p["doc_ids_bytes"])
    except (KeyError, TypeError, ValueError):
        raise IndexFormatError(f"{files['embeddings'].parent}: manifest lacks the stored counts") from None
    dim = manifest.dimension
    for role, need in (("embeddings", num_tokens * dim * 2), ("doclens", num_docs * 8), ("doc_ids", id_bytes)):
        if files[role].stat().st_size < need:
            raise IndexFormatError(
                f"{files[role]}: truncated or corrupt ({files[role].stat().st_size} of {need} bytes)"
            )
    if not num_tokens:
        tokens = np.zeros((0, dim), np.float16)
    elif mmap:
        tokens = np.memmap(files["embeddings"], dtype=np.float16, mode="r", shape=(num_tokens, dim))
    else:
        tokens = np.fromfile(files["embeddings"], dtype=np.float16, count=num_tokens * dim).reshape(num_tokens, dim)
    lengths = np.fromfile(files["doclens"], dtype=np.int64, count=num_docs)
    with open(files["doc_ids"], "rb") as fh:
        raw = fh.read(id_bytes)
    try:
        doc_ids = [json.loads(line) for line in raw.decode("utf-8").splitlines()]
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise IndexFormatError(f"{files['doc_ids']}: truncated or corrupt doc id file") from None
    if len(doc_ids) != num_docs or not all(d is None or isinstance(d, str) for d in doc_ids):
        raise IndexFormatError(f"{files['doc_ids']}: truncated or corrupt doc id file")
    return tokens, lengths, doc_ids


def _read_legacy(files: dict[str, Path], mmap: bool) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
    try:
        tokens = np.load(files["embeddings"], mmap_mode="r" if mmap else None, allow_pickle=False)
        lengths = np.load(files["doclens"], allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise IndexFormatError(f"{files['embeddings'].parent}: truncated or corrupt array file ({exc})") from None
    try:
        doc_ids = json.loads(files["doc_ids"].read_text(encoding="utf-8"))["doc_ids"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        raise IndexFormatError(f"{files['doc_ids']}: truncated or corrupt doc id file") from None
    return tokens, lengths, doc_ids


ExactMaxSimIndex = ExactIndex  # the class's name before "exact" became its one name; kept for old imports
