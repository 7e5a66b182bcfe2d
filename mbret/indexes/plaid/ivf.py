"""PLAID's stored structures: chunks of compressed tokens with their inverted lists, and the search state.

A chunk is a run of consecutive documents, written once and never rewritten (until a compaction replaces
every chunk). Besides its tokens' centroid ids (`codes`, in their stored width), packed residuals and the
norms of the decompressed vectors, it holds what search reads instead of the tokens:
- `doc_codes` / `doc_code_offsets`: each document's distinct centroids (centroid interaction is a max over a
  set, so repeats add nothing), document-major;
- `ivf_docs` / `ivf_offsets`: the same (centroid, document) pairs centroid-major: the inverted lists, with
  documents numbered within the chunk.
All are computed from the chunk alone when it is made (`make_chunk`) and memory-mapped when loaded, so
loading an index and answering its first query read only the files a query touches.

`SearchState` is one immutable snapshot (chunks, live-document mask, doc ids, codec) that a search uses from
start to end while writers build the next one.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mbret.indexes.kernels import as_words
from mbret.indexes.plaid.codec import ResidualCodec


@dataclass(frozen=True)
class Chunk:
    """One chunk's arrays (numpy, possibly memory maps); document `i` of the chunk is the index's
    document `doc_start + i`."""

    doclens: np.ndarray  # int32 (docs,)
    codes: np.ndarray  # uint16 or int32 (tokens,)
    residuals: np.ndarray  # uint8 (tokens, dim * nbits / 8)
    norms: np.ndarray  # float32 (tokens,)
    doc_codes: np.ndarray  # like codes (pairs,)
    doc_code_offsets: np.ndarray  # int64 (docs + 1,)
    ivf_docs: np.ndarray  # int32 (pairs,), documents of the chunk
    ivf_offsets: np.ndarray  # int64 (centroids + 1,)

    @property
    def num_docs(self) -> int:
        return len(self.doclens)

    @property
    def num_tokens(self) -> int:
        return len(self.codes)

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in CHUNK_ARRAYS}


CHUNK_ARRAYS = tuple(Chunk.__dataclass_fields__)


def code_dtype(num_centroids: int) -> type:
    return np.uint16 if num_centroids <= 65535 else np.int32


def make_chunk(
    codes: np.ndarray, residuals: np.ndarray, doclens: np.ndarray, codec: ResidualCodec, norms: np.ndarray | None = None
) -> Chunk:
    """A chunk from its tokens' codes and residuals, computing norms (unless given) and both pair lists."""
    num_centroids = len(codec.centroids)
    dtype = code_dtype(num_centroids)
    codes = np.ascontiguousarray(codes, dtype=dtype)
    doclens = np.ascontiguousarray(doclens, dtype=np.int32)
    with warnings.catch_warnings():  # read-only memory maps: torch warns, and nothing here writes to them
        warnings.simplefilter("ignore", UserWarning)
        codes_t = torch.from_numpy(codes.astype(np.int64))
        if norms is None:
            norms = codec.norms(codes_t, torch.from_numpy(np.ascontiguousarray(residuals))).numpy()
    num_docs = len(doclens)
    doc_of_token = torch.repeat_interleave(torch.arange(num_docs), torch.from_numpy(doclens.astype(np.int64)))
    pairs = torch.unique(doc_of_token * num_centroids + codes_t)  # sorted: document-major
    del doc_of_token, codes_t
    pair_docs, pair_codes = pairs // num_centroids, pairs % num_centroids
    doc_code_offsets = torch.zeros(num_docs + 1, dtype=torch.int64)
    doc_code_offsets[1:] = torch.cumsum(torch.bincount(pair_docs, minlength=num_docs), 0)
    by_centroid = torch.argsort(pair_codes, stable=True)
    ivf_offsets = torch.zeros(num_centroids + 1, dtype=torch.int64)
    ivf_offsets[1:] = torch.cumsum(torch.bincount(pair_codes, minlength=num_centroids), 0)
    return Chunk(
        doclens=doclens,
        codes=codes,
        residuals=np.ascontiguousarray(residuals, dtype=np.uint8),
        norms=np.ascontiguousarray(norms, dtype=np.float32),
        doc_codes=pair_codes.numpy().astype(dtype),
        doc_code_offsets=doc_code_offsets.numpy(),
        ivf_docs=pair_docs[by_centroid].numpy().astype(np.int32),
        ivf_offsets=ivf_offsets.numpy(),
    )


def merge_chunks(chunks: Sequence[Chunk], codec: ResidualCodec) -> Chunk:
    """One chunk holding `chunks`' documents in order (their norms are kept, their lists rebuilt)."""
    if len(chunks) == 1:
        return chunks[0]
    return make_chunk(
        np.concatenate([c.codes for c in chunks]),
        np.concatenate([c.residuals for c in chunks]),
        np.concatenate([c.doclens for c in chunks]),
        codec,
        norms=np.concatenate([c.norms for c in chunks]),
    )


def select_documents(chunk: Chunk, keep: np.ndarray, codec: ResidualCodec) -> Chunk:
    """The chunk restricted to the documents where `keep` (bool, per document) is true."""
    token_keep = np.repeat(keep, chunk.doclens)
    return make_chunk(
        np.asarray(chunk.codes)[token_keep],
        np.asarray(chunk.residuals)[token_keep],
        np.asarray(chunk.doclens)[keep],
        codec,
        norms=np.asarray(chunk.norms)[token_keep],
    )


@dataclass(frozen=True)
class ChunkTensors:
    """A chunk seen through torch, without copies on CPU (tensors over the arrays or their memory maps)."""

    doc_start: int
    doclens: torch.Tensor  # int64
    offsets: torch.Tensor  # int64 (docs + 1,): the first token of each document
    codes: torch.Tensor  # int16 (uint16 bits) or int32: widen with `widen`
    residuals: torch.Tensor  # packed residuals, as int64 words where the row width allows
    norms: torch.Tensor
    doc_codes: torch.Tensor
    doc_code_offsets: torch.Tensor
    ivf_docs: torch.Tensor
    ivf_offsets: torch.Tensor
    unsigned16: bool  # codes hold uint16 bits in int16 (torch gathers no uint16)

    def widen(self, codes: torch.Tensor) -> torch.Tensor:
        """Gathered codes as int32 centroid ids (index_select takes int32 indices as they are)."""
        if self.unsigned16:
            return codes.to(torch.int32).bitwise_and_(0xFFFF)
        return codes


def chunk_tensors(chunk: Chunk, doc_start: int, device: torch.device) -> ChunkTensors:
    unsigned16 = chunk.codes.dtype == np.uint16

    def view(array: np.ndarray) -> torch.Tensor:
        if array.dtype == np.uint16:
            array = array.view(np.int16)
        return torch.from_numpy(array).to(device)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        doclens = torch.from_numpy(np.asarray(chunk.doclens).astype(np.int64)).to(device)
        offsets = torch.zeros(len(doclens) + 1, dtype=torch.int64, device=device)
        offsets[1:] = torch.cumsum(doclens, 0)
        return ChunkTensors(
            doc_start=doc_start,
            doclens=doclens,
            offsets=offsets,
            codes=view(chunk.codes),
            residuals=as_words(view(chunk.residuals)),
            norms=view(chunk.norms),
            doc_codes=view(chunk.doc_codes),
            doc_code_offsets=view(chunk.doc_code_offsets),
            ivf_docs=view(chunk.ivf_docs),
            ivf_offsets=view(chunk.ivf_offsets),
            unsigned16=unsigned16,
        )


@dataclass(frozen=True)
class SearchState:
    """Everything one search reads, of one version of the index: writers never change it, they make the
    next one. `live` is None when no document is deleted."""

    chunks: tuple[ChunkTensors, ...]
    doc_starts: torch.Tensor  # int64 (chunks + 1,): each chunk's first document, then the document count
    live: torch.Tensor | None  # bool (documents,)
    doc_ids: tuple[str | None, ...]
    codec: ResidualCodec
    residual_bytes: int

    @property
    def centroids(self) -> torch.Tensor:
        return self.codec.centroids

    @property
    def num_docs(self) -> int:
        return int(self.doc_starts[-1])

    def per_chunk(self, docs: torch.Tensor) -> Iterator[tuple[ChunkTensors, int, int, torch.Tensor]]:
        """For ascending document numbers: (chunk, begin, end, the chunk's own numbers of docs[begin:end])
        for each chunk that holds some of them."""
        if len(self.chunks) == 1:
            yield self.chunks[0], 0, len(docs), docs
            return
        bounds = torch.searchsorted(docs, self.doc_starts).tolist()
        for c, chunk in enumerate(self.chunks):
            if bounds[c + 1] > bounds[c]:
                yield chunk, bounds[c], bounds[c + 1], docs[bounds[c] : bounds[c + 1]] - chunk.doc_start


def search_state(
    chunks: Sequence[Chunk],
    doc_ids: Sequence[str | None],
    codec: ResidualCodec,
    device: torch.device,
    cached: dict[int, tuple[Chunk, ChunkTensors]] | None = None,
) -> SearchState:
    """The snapshot for these chunks. `cached` maps id(chunk) to (chunk, its views) made for an earlier
    snapshot on the same device: chunks are immutable, so their views are reused and a write costs what it
    adds, not the index."""
    views, start = [], 0
    for chunk in chunks:
        entry = cached.get(id(chunk)) if cached is not None else None
        if entry is None or entry[0] is not chunk or entry[1].doc_start != start:
            entry = (chunk, chunk_tensors(chunk, start, device))
            if cached is not None:
                cached[id(chunk)] = entry
        view = entry[1]
        views.append(view)
        start += chunk.num_docs
    doc_starts = torch.tensor([v.doc_start for v in views] + [start], dtype=torch.int64, device=device)
    live = None
    if any(d is None for d in doc_ids):
        live = torch.tensor([d is not None for d in doc_ids], dtype=torch.bool, device=device)
    residual_bytes = int(chunks[0].residuals.shape[1]) if chunks else 0
    return SearchState(tuple(views), doc_starts, live, tuple(doc_ids), codec, residual_bytes)
