"""Retriever = encoder + index: build from a corpus, add, delete, search, save and reload as one unit.

`mode="dense"` pairs a `DenseEncoder` with a FAISS index; `mode="colbert"` pairs a `ColBERTEncoder` with
a PLAID or exact MaxSim index; `mode="bm25"` pairs a pass-through `TextEncoder` with a BM25 index, which
tokenizes the texts itself. Both sides share one protocol (`encode_corpus`, `encode_queries`; `add`, `delete`,
`search`, `save`), so everything here is mode-agnostic.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mbret.data.datasets import Corpus, doc_text
from mbret.deprecation import no_other_kwargs, renamed
from mbret.errors import MbretError, ParameterError
from mbret.hardware import release_freed_memory
from mbret.indexes import (
    INDEX_CLASSES,
    INDEX_TYPES_BY_MODE,
    Index,
    Manifest,
    PlaidIndex,
    check_compatible,
    load_index,
    new_index,
    read_manifest,
)
from mbret.retrieval.backbone import model_identity
from mbret.retrieval.colbert import ColBERTEncoder
from mbret.retrieval.dense import DenseEncoder
from mbret.retrieval.lexical import BM25_MODEL, TextEncoder
from mbret.types import Hit, SearchParams

MODES = ("dense", "colbert", "bm25")
CHUNK_DOCS = 2048  # ColBERT documents encoded and indexed at a time: bounds peak memory
DEFAULT_INDEX_TYPE = {"dense": "flat", "colbert": "plaid", "bm25": "bm25"}
Encoder = DenseEncoder | ColBERTEncoder | TextEncoder


def fill_documents(hits: list[list[Hit]], index: Index) -> None:
    """Fill each hit's title, text and metadata from `index`'s document store."""
    flat = [hit for row in hits for hit in row]
    for hit, document in zip(flat, index.get_documents([h.doc_id for h in flat])):
        if document is not None:
            hit.title, hit.text, hit.metadata = document.title, document.text, dict(document.metadata)


def colbert_markers(manifest: Manifest) -> tuple[str, str]:
    """A ColBERT index's (query, document) markers: its `query_marker`/`document_marker`, or, in a manifest
    written before those fields, the prompt fields that held them."""
    if manifest.query_marker is not None or manifest.document_marker is not None:
        return manifest.query_marker or "", manifest.document_marker or ""
    return manifest.query_prompt or "", manifest.document_prompt or ""


def check_mode(mode: str, index_type: str | None = None) -> str:
    """Validate a mode and index type pair; returns the index type (the mode's default if None)."""
    if mode not in MODES:
        raise ParameterError("mode", f"{mode}: choose one of {', '.join(MODES)}")
    index_type = index_type or DEFAULT_INDEX_TYPE[mode]
    if index_type not in INDEX_TYPES_BY_MODE[mode]:
        raise ParameterError("index_type", f"{index_type}: mode {mode} takes {', '.join(INDEX_TYPES_BY_MODE[mode])}")
    return index_type


def check_new_out(out: Path, overwrite: bool = False) -> None:
    """Refuse to build a new index into `out` when it holds something else, or an index and not `overwrite`."""
    if out.exists() and any(out.iterdir()):
        if not (out / "manifest.json").is_file():
            raise ParameterError("output", f"{out}: exists and is not an mbret index; choose another directory")
        if not overwrite:
            raise ParameterError("output", f"{out}: already exists; add documents to it, or overwrite to replace it")


def load_encoder(
    model: str | None,
    mode: str = "dense",
    device: str | None = None,
    dtype: str | None = None,
    query_length: int | None = None,
    document_length: int | None = None,
    seed: int = 0,
    query_prompt: str | None = None,
    document_prompt: str | None = None,
    query_expansion: bool | None = None,
    pool_factor: int | None = None,
    **deprecated: Any,
) -> Encoder:
    """The encoder of a mode: prompts are dense-only (ColBERT uses its markers), and so are the query
    expansion and pooling colbert-only; both heads cut texts at `document_length` and `query_length` (dense:
    queries default to the document length); bm25 takes no model (texts pass through). `max_length=` is the
    old name of `document_length`."""
    document_length = renamed(deprecated, "max_length", "document_length", document_length, None)
    no_other_kwargs(deprecated, "load_encoder")
    check_mode(mode)
    if mode == "bm25":
        if model not in (None, BM25_MODEL):
            raise ParameterError("model", f"{model}: mode bm25 takes no model (it scores the texts' words)")
        given = {
            "query_prompt": bool(query_prompt),
            "document_prompt": bool(document_prompt),
            "query_expansion": query_expansion is not None,
            "pool_factor": pool_factor not in (None, 1),
        }
        for name, is_given in given.items():
            if is_given:
                raise ParameterError(name, "does not apply to mode bm25")
        return TextEncoder()
    if model is None:
        raise ParameterError("model", "required to build a new index (e.g. minilm)")
    if mode == "colbert":
        if query_prompt or document_prompt:
            name = "query_prompt" if query_prompt else "document_prompt"
            raise ParameterError(name, "applies to mode dense; ColBERT uses its own markers")
        return ColBERTEncoder.load(
            model,
            device=device,
            dtype=dtype,
            query_length=query_length,
            document_length=document_length,
            seed=seed,
            query_expansion=query_expansion,
            pool_factor=pool_factor,
        )
    if query_expansion is not None:
        raise ParameterError("query_expansion", "applies to mode colbert")
    if pool_factor not in (None, 1):
        raise ParameterError("pool_factor", "applies to mode colbert (documents' token vectors)")
    return DenseEncoder.load(
        model,
        device=device,
        dtype=dtype,
        document_length=document_length,
        query_length=query_length,
        query_prompt=query_prompt,
        document_prompt=document_prompt,
    )


@dataclass
class Retriever:
    """An encoder and the index of its corpus embeddings.

    Threads: any number of threads may `search` (or `search_embeddings`) one Retriever at once, as `mbret
    serve` does. A search changes nothing on the object: its settings (`k`, the filter, `search_params`,
    `batch_size`) are arguments of the call, and `timings` are kept per thread. Writes (`add`, `delete`,
    `recluster`, `refresh`, `save`) and changes to its attributes (`search_params`, `batch_size`) need one
    writer and no searches at the time; searches may go on while the index alone is written, as its own
    locks give each search one version whole.

    `search_params` (`SearchParams`, optional) are this retriever's default search settings: each search's
    own `search_params` override them field by field, and what both leave unset takes the index's defaults.
    """

    encoder: Encoder
    index: Index
    batch_size: int = 64
    # per-thread state (`timings`), so threads searching one Retriever never write to a shared dict
    _local: threading.local = field(default_factory=threading.local, init=False, repr=False, compare=False)
    search_params: SearchParams | None = None

    def __post_init__(self) -> None:
        # ColBERT indexes score where the model runs: MaxSim on the GPU when the encoder is there
        self.index.to(self.encoder.device)

    @property
    def timings(self) -> dict[str, float]:
        """Seconds this thread's calls took: `encode_corpus_s` and `index_build_s` summed over its builds and
        adds, `encode_queries_s` and `search_s` of its last search. Each thread sees only its own."""
        timings: dict[str, float] | None = getattr(self._local, "timings", None)
        if timings is None:
            timings = self._local.timings = {}
        return timings

    @property
    def mode(self) -> str:
        if isinstance(self.encoder, TextEncoder):
            return "bm25"
        return "colbert" if isinstance(self.encoder, ColBERTEncoder) else "dense"

    @classmethod
    def build(
        cls,
        corpus: Corpus,
        model: str | Encoder | None,
        index_type: str | None = None,
        index_params: dict[str, Any] | None = None,
        batch_size: int = 64,
        device: str | None = None,
        dtype: str | None = None,
        show_progress: bool = True,
        mode: str = "dense",
        query_length: int | None = None,
        document_length: int | None = None,
        seed: int = 0,
        query_expansion: bool | None = None,
        store_text: bool = True,
        pool_factor: int | None = None,
        **deprecated: Any,
    ) -> Retriever:
        """Encode `corpus` and index it; the corpus is fully validated before this is called. The index's
        document store keeps each document's title, text and metadata (only ids and metadata when
        `store_text` is False, for corpora too large to copy). `max_length=` is the old name of
        `document_length`."""
        document_length = renamed(deprecated, "max_length", "document_length", document_length, None)
        no_other_kwargs(deprecated, "Retriever.build")
        if isinstance(model, (DenseEncoder, ColBERTEncoder, TextEncoder)):
            encoder = model
            mode = "colbert" if isinstance(model, ColBERTEncoder) else "dense"
            mode = "bm25" if isinstance(model, TextEncoder) else mode
        else:
            encoder = load_encoder(
                model,
                mode,
                device=device,
                dtype=dtype,
                query_length=query_length,
                document_length=document_length,
                seed=seed,
                query_expansion=query_expansion,
                pool_factor=pool_factor,
            )
        index_type = check_mode(mode, index_type)
        index = new_index(mode, index_type, encoder.dimension, index_params)
        index.documents.store_text = store_text
        retriever = cls(encoder=encoder, index=index, batch_size=batch_size)
        retriever.add(corpus, show_progress=show_progress)
        return retriever

    def add(
        self,
        corpus: Corpus,
        show_progress: bool = True,
        chunk_docs: int = CHUNK_DOCS,
        encoded: dict[int, torch.Tensor] | None = None,
    ) -> None:
        """Encode and add documents whose ids are not yet in the index.

        ColBERT indexes are fed `chunk_docs` documents at a time as float16 (what both indexes keep or
        compress from), and a new PLAID index is trained on a seeded sample first, so peak memory follows the
        chunk and the sample, not the corpus. `encoded` holds ColBERT documents encoded already (by their
        position in `corpus`: a distributed build's sample), which are not encoded again.
        """
        clash = next((doc_id for doc_id in corpus if doc_id in self.index), None)
        if clash is not None:
            raise MbretError(f"doc id {clash!r} is already in the index (delete it first to replace it)")
        ids, texts, documents = list(corpus), [doc_text(d) for d in corpus.values()], list(corpus.values())
        if self.mode != "colbert":
            start = time.perf_counter()
            embeddings = self.encoder.encode_corpus(texts, batch_size=self.batch_size, show_progress=show_progress)
            self._time("encode_corpus_s", start)
            start = time.perf_counter()
            self.index.add(ids, embeddings, documents)
            self._time("index_build_s", start)
            return
        reuse: dict[int, Any] = dict(encoded or {})
        if not self.index.is_trained:  # an index that trains on a sample of its corpus first (PLAID)
            sample = self._training_sample(texts)
            start = time.perf_counter()
            encoded = self.encoder.encode_corpus(
                [texts[i] for i in sample], batch_size=self.batch_size, show_progress=False, dtype=torch.float16
            )
            self._time("encode_corpus_s", start)
            reuse = dict(zip(sample.tolist(), encoded))
            start = time.perf_counter()
            total_tokens = sum(len(e) for e in encoded) * len(texts) / max(len(sample), 1)
            self.index.train(torch.cat(encoded), num_tokens=int(total_tokens))
            self._time("index_build_s", start)
            release_freed_memory()
        with tqdm(total=len(texts), desc="Indexing", unit="doc", disable=not show_progress, dynamic_ncols=True) as bar:
            for begin in range(0, len(texts), chunk_docs):
                rows = range(begin, min(begin + chunk_docs, len(texts)))
                start = time.perf_counter()
                todo = [i for i in rows if i not in reuse]
                fresh = (
                    self.encoder.encode_corpus(
                        [texts[i] for i in todo], batch_size=self.batch_size, show_progress=False, dtype=torch.float16
                    )
                    if todo
                    else []
                )
                embeddings = dict(zip(todo, fresh))
                self._time("encode_corpus_s", start)
                start = time.perf_counter()
                self.index.add(
                    [ids[i] for i in rows],
                    [embeddings[i] if i in embeddings else reuse.pop(i) for i in rows],
                    documents[rows.start : rows.stop],
                )
                self._time("index_build_s", start)
                del fresh, embeddings
                release_freed_memory()
                bar.update(len(rows))

    def _training_sample(self, texts: list[str]) -> np.ndarray:
        """The documents a new index trains on (its `sample_documents`), sized from the token counts of a
        seeded probe of 256 documents rather than of all of them."""
        seed = int(getattr(self.index, "seed", 0))
        probe = np.random.default_rng(seed).choice(len(texts), size=min(len(texts), 256), replace=False)
        tokens_per_doc = self.encoder.count_tokens([texts[i] for i in probe]) / max(len(probe), 1)
        tokens_per_doc /= getattr(self.encoder, "pool_factor", 1)  # pooled documents keep ~1/factor of them
        return self.index.sample_documents(len(texts), tokens_per_doc)

    def _time(self, name: str, start: float) -> None:
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start

    def delete(self, doc_ids: Sequence[str]) -> int:
        return self.index.delete(doc_ids)

    def refresh(self) -> bool:
        """Pick up what other processes committed to the index's directory since it was loaded (the index's
        `refresh`); True if there was a newer generation."""
        return self.index.refresh()

    def recluster(self) -> None:
        """Retrain a PLAID index's centroids on its own vectors (see `PlaidIndex.recluster`)."""
        if not isinstance(self.index, PlaidIndex):
            raise ParameterError("recluster", f"applies to plaid indexes only, not {self.index_type}")
        self.index.recluster()

    def configure_search(self, params: SearchParams) -> None:
        """Deprecated: pass `search_params` to `search` (or set `Retriever.search_params`, the defaults
        each search's own override). This sets `params` over those defaults."""
        warnings.warn(
            "Retriever.configure_search is deprecated; pass search_params= to search()",
            DeprecationWarning,
            stacklevel=2,
        )
        self.search_params = params.over(self.search_params)

    def settings_for(self, search_params: SearchParams | None = None) -> SearchParams | None:
        """The settings a search with `search_params` runs with: those over this retriever's defaults."""
        return self.search_params if search_params is None else search_params.over(self.search_params)

    def count_cut_queries(self, queries: Sequence[str]) -> int:
        """How many of `queries` are longer than the encoder takes (a ColBERT head's `query_length`, a dense
        model's `max_length`) and so lose their last tokens."""
        return self.encoder.count_cut_queries(queries)

    def cut_queries_note(self, queries: Sequence[str], cut: int | None = None) -> str | None:
        """A line saying how many of `queries` get cut (`cut`, if counted already) and which flag raises the
        limit; None when none are."""
        cut = self.count_cut_queries(queries) if cut is None else cut
        if not cut:
            return None
        encoder = self.encoder
        limit = encoder.query_length
        return (
            f"{cut} of {len(queries)} queries are longer than {limit} tokens and were cut "
            "(a longer query length keeps them whole)"
        )

    def search(
        self,
        queries: Sequence[str],
        k: int = 10,
        show_progress: bool = False,
        where: str | None = None,
        params: Sequence[Any] = (),
        ids: Iterable[str] | None = None,
        return_documents: bool = False,
        search_params: SearchParams | None = None,
        batch_size: int | None = None,
    ) -> list[list[Hit]]:
        """Top-k hits per query, best first.

        A filter restricts the search to the documents whose metadata satisfies `where` (SQLite syntax over
        metadata fields, a `?` for each of `params`: `where="year >= ? AND venue = ?", params=[2020, "ACL"]`)
        and that are among `ids`; every index applies it inside its search and returns k hits whenever k
        documents match. `return_documents` fills each hit's title, text and metadata from the store.
        `batch_size` is how many queries are encoded at a time in this call (the retriever's own if None).
        `search_params` set this call's search settings (PLAID's budgets, FAISS's `nprobe`/`ef_search`) over
        the retriever's `search_params` and the index's defaults; settings the index does not read are ignored."""
        if ids is not None:
            ids = list(ids)
        if where is not None:  # refuse a bad condition before encoding anything
            self.index.documents.check_where(where, params)
        start = time.perf_counter()
        embeddings = self.encoder.encode_queries(
            queries, batch_size=batch_size or self.batch_size, show_progress=show_progress
        )
        self.timings["encode_queries_s"] = time.perf_counter() - start
        return self.search_embeddings(
            embeddings,
            k,
            where=where,
            params=params,
            ids=ids,
            return_documents=return_documents,
            search_params=search_params,
        )

    def search_embeddings(
        self,
        embeddings: Any,
        k: int = 10,
        where: str | None = None,
        params: Sequence[Any] = (),
        ids: Iterable[str] | None = None,
        return_documents: bool = False,
        search_params: SearchParams | None = None,
    ) -> list[list[Hit]]:
        """`search` for queries already encoded by this retriever's encoder (a service batches the
        encoding of many requests, then searches each request's queries with its own k, filter and
        `search_params`)."""
        start = time.perf_counter()
        settings = self.settings_for(search_params)
        results = self.index.search(embeddings, k, where=where, params=params, ids=ids, search_params=settings)
        self.timings["search_s"] = time.perf_counter() - start
        hits = [[Hit(doc_id, score) for doc_id, score in row] for row in results]
        if return_documents:
            fill_documents(hits, self.index)
        return hits

    def manifest(self) -> Manifest:
        encoder = self.encoder
        if isinstance(encoder, TextEncoder):
            return Manifest(
                kind="bm25",
                mode="bm25",
                model=encoder.name,
                dimension=0,
                normalized=False,
                max_length=0,
                num_docs=len(self.index),
                index_type=self.index.index_type,
            )
        if isinstance(encoder, ColBERTEncoder):
            prompts = encoder.prompts
            return Manifest(
                kind=next(kind for kind, cls in INDEX_CLASSES.items() if cls is type(self.index)),  # its current kind
                mode="colbert",
                model=encoder.name,
                dimension=encoder.dimension,
                normalized=True,
                max_length=encoder.document_length,
                num_docs=len(self.index),
                index_type=self.index.index_type,
                query_marker=prompts.get("query"),
                document_marker=prompts.get("document"),
                query_length=encoder.query_length,
                query_expansion=encoder.query_expansion,
                document_length=encoder.document_length,
                seed=encoder.seed,
                pool_factor=encoder.pool_factor if encoder.pool_factor > 1 else None,
            )
        return Manifest(
            kind="faiss",
            mode="dense",
            model=encoder.name,
            dimension=encoder.dimension,
            normalized=True,
            max_length=encoder.document_length,
            num_docs=len(self.index),
            index_type=self.index.index_type,
            query_prompt=encoder.query_prompt,
            document_prompt=encoder.document_prompt,
            query_length=encoder.query_cut,
            document_length=encoder.document_length,
        )

    def save(self, path: str | Path, replace: bool = False) -> None:
        """Save atomically; an existing index gets a new generation, or is swapped out whole with `replace`."""
        self.index.save(path, self.manifest(), replace=replace)

    @classmethod
    def load(
        cls,
        path: str | Path,
        model: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int = 64,
        query_expansion: bool | None = None,
        query_length: int | None = None,
        search_params: SearchParams | None = None,
    ) -> Retriever:
        """Reload an index with the model it was built with; a different `model` is refused.
        `search_params` become the retriever's default search settings (`Retriever.search_params`).

        A ColBERT index's queries are encoded as its manifest says (markers, query expansion, query length);
        `query_expansion` and `query_length` override that (they change queries only, never the documents).
        An index written before mbret recorded `query_expansion` expanded its queries, and still does."""
        manifest = read_manifest(path)
        if model is not None and model != manifest.model:
            check_compatible(manifest, model=BM25_MODEL if model == BM25_MODEL else model_identity(model), where=path)
        index, manifest = load_index(path)
        encoder: Encoder
        if manifest.mode == "bm25":
            if query_expansion is not None or query_length is not None:
                name = "query_expansion" if query_expansion is not None else "query_length"
                raise ParameterError(name, f"applies to colbert indexes; {path} is a bm25 index")
            encoder = TextEncoder()
        elif manifest.mode == "colbert":
            saved = manifest.query_expansion if manifest.query_expansion is not None else True
            expansion = saved if query_expansion is None else query_expansion
            encoder = ColBERTEncoder.load(
                manifest.model,
                device=device,
                dtype=dtype,
                # the saved length is a width with expansion and a cap without: it only carries over to the same
                query_length=query_length or (manifest.query_length if expansion == saved else None),
                document_length=manifest.document_length,
                seed=manifest.seed or 0,
                query_expansion=expansion,
                markers=colbert_markers(manifest),
                pool_factor=manifest.pool_factor,  # documents added later are pooled as the first were
            )
        else:
            if query_expansion is not None:
                raise ParameterError("query_expansion", f"applies to colbert indexes; {path} is a dense index")
            encoder = DenseEncoder.load(
                manifest.model,
                device=device,
                dtype=dtype,
                document_length=manifest.document_length or manifest.max_length,
                query_length=query_length or manifest.query_length,
                query_prompt=manifest.query_prompt,
                document_prompt=manifest.document_prompt,
            )
        check_compatible(manifest, dimension=encoder.dimension, where=path)
        return cls(encoder=encoder, index=index, batch_size=batch_size, search_params=search_params)
