"""Retriever = encoder + index: build from a corpus, add, delete, search, save and reload as one unit.

`mode="dense"` pairs a `DenseEncoder` with a FAISS index; `mode="colbert"` pairs a `ColBERTEncoder` with
an exact MaxSim index. Both sides share one protocol (`encode_corpus`, `encode_queries`; `add`, `delete`,
`search`, `save`), so everything here is mode-agnostic.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mbret.errors import MbretError
from mbret.eval.data import Corpus, doc_text
from mbret.indexes import (
    INDEX_TYPES_BY_MODE,
    ExactMaxSimIndex,
    FaissIndex,
    Manifest,
    PlaidIndex,
    PlaidSearchParams,
    check_compatible,
    load_index,
    read_manifest,
)
from mbret.retrieval.backbone import model_identity
from mbret.retrieval.colbert import ColBERTEncoder
from mbret.retrieval.dense import DenseEncoder

MODES = ("dense", "colbert")
DEFAULT_INDEX_TYPE = {"dense": "flat", "colbert": "plaid"}


@dataclass
class Hit:
    doc_id: str
    score: float


def check_mode(mode: str, index_type: str | None = None) -> str:
    """Validate a mode and index type pair; returns the index type (the mode's default if None)."""
    if mode not in MODES:
        raise MbretError(f"--mode {mode}: choose one of {', '.join(MODES)}")
    index_type = index_type or DEFAULT_INDEX_TYPE[mode]
    if index_type not in INDEX_TYPES_BY_MODE[mode]:
        raise MbretError(f"--index-type {index_type}: --mode {mode} takes {', '.join(INDEX_TYPES_BY_MODE[mode])}")
    return index_type


def load_encoder(
    model: str,
    mode: str = "dense",
    device: str | None = None,
    dtype: str | None = None,
    max_length: int | None = None,
    query_length: int | None = None,
    document_length: int | None = None,
    seed: int = 0,
) -> DenseEncoder | ColBERTEncoder:
    check_mode(mode)
    if mode == "colbert":
        return ColBERTEncoder.load(
            model,
            device=device,
            dtype=dtype,
            query_length=query_length,
            document_length=document_length if document_length is not None else max_length,
            seed=seed,
        )
    return DenseEncoder.load(model, device=device, dtype=dtype, max_length=max_length)


@dataclass
class Retriever:
    """An encoder and the index of its corpus embeddings."""

    encoder: DenseEncoder | ColBERTEncoder
    index: FaissIndex | ExactMaxSimIndex | PlaidIndex
    batch_size: int = 64
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def mode(self) -> str:
        return "colbert" if isinstance(self.encoder, ColBERTEncoder) else "dense"

    @classmethod
    def build(
        cls,
        corpus: Corpus,
        model: str | DenseEncoder | ColBERTEncoder,
        index_type: str | None = None,
        index_params: dict[str, Any] | None = None,
        batch_size: int = 64,
        max_length: int | None = None,
        device: str | None = None,
        dtype: str | None = None,
        show_progress: bool = True,
        mode: str = "dense",
        query_length: int | None = None,
        document_length: int | None = None,
        seed: int = 0,
    ) -> Retriever:
        """Encode `corpus` and index it; the corpus is fully validated before this is called."""
        if isinstance(model, (DenseEncoder, ColBERTEncoder)):
            encoder = model
            mode = "colbert" if isinstance(model, ColBERTEncoder) else "dense"
        else:
            encoder = load_encoder(
                model,
                mode,
                device=device,
                dtype=dtype,
                max_length=max_length,
                query_length=query_length,
                document_length=document_length,
                seed=seed,
            )
        index_type = check_mode(mode, index_type)
        index: FaissIndex | ExactMaxSimIndex | PlaidIndex
        if mode == "colbert" and index_type == "plaid":
            params = dict(index_params or {})
            search = PlaidSearchParams(
                **{f: params.pop(f) for f in list(params) if f in PlaidSearchParams.__dataclass_fields__}
            )
            index = PlaidIndex(encoder.dimension, search=search, **params)
        elif mode == "colbert":
            index = ExactMaxSimIndex(encoder.dimension)
        else:
            index = FaissIndex(encoder.dimension, index_type, index_params)
        retriever = cls(encoder=encoder, index=index, batch_size=batch_size)
        retriever.add(corpus, show_progress=show_progress)
        return retriever

    def add(self, corpus: Corpus, show_progress: bool = True) -> None:
        """Encode and add documents whose ids are not yet in the index."""
        clash = next((doc_id for doc_id in corpus if doc_id in self.index), None)
        if clash is not None:
            raise MbretError(f"doc id {clash!r} is already in the index (delete it first to replace it)")
        start = time.perf_counter()
        embeddings = self.encoder.encode_corpus(
            [doc_text(d) for d in corpus.values()], batch_size=self.batch_size, show_progress=show_progress
        )
        encoded = time.perf_counter()
        self.index.add(list(corpus), embeddings)
        self.timings["encode_corpus_s"] = self.timings.get("encode_corpus_s", 0.0) + encoded - start
        self.timings["index_build_s"] = self.timings.get("index_build_s", 0.0) + time.perf_counter() - encoded

    def delete(self, doc_ids: Sequence[str]) -> int:
        return self.index.delete(doc_ids)

    def configure_search(self, params: PlaidSearchParams) -> None:
        """Override PLAID's search knobs (those left None keep their saved or k-dependent defaults)."""
        if not isinstance(self.index, PlaidIndex):
            if any(v is not None for v in vars(params).values()):
                raise MbretError("PLAID search options apply to --index-type plaid indexes only")
            return
        saved = vars(self.index.search_params)
        self.index.search_params = PlaidSearchParams(
            **{name: value if value is not None else saved[name] for name, value in vars(params).items()}
        )

    def search(self, queries: Sequence[str], k: int = 10, show_progress: bool = False) -> list[list[Hit]]:
        """Top-k hits per query, best first."""
        start = time.perf_counter()
        embeddings = self.encoder.encode_queries(queries, batch_size=self.batch_size, show_progress=show_progress)
        encoded = time.perf_counter()
        results = self.index.search(embeddings, k)
        self.timings["encode_queries_s"] = encoded - start
        self.timings["search_s"] = time.perf_counter() - encoded
        return [[Hit(doc_id, score) for doc_id, score in hits] for hits in results]

    def manifest(self) -> Manifest:
        encoder = self.encoder
        if isinstance(encoder, ColBERTEncoder):
            prompts = encoder.prompts
            return Manifest(
                kind="plaid" if isinstance(self.index, PlaidIndex) else "maxsim",
                mode="colbert",
                model=encoder.name,
                dimension=encoder.dimension,
                normalized=True,
                max_length=encoder.document_length,
                num_docs=len(self.index),
                index_type=self.index.index_type,
                query_prompt=prompts.get("query"),
                document_prompt=prompts.get("document"),
                query_length=encoder.query_length,
                document_length=encoder.document_length,
                seed=encoder.seed,
            )
        return Manifest(
            kind="faiss",
            mode="dense",
            model=encoder.name,
            dimension=encoder.dimension,
            normalized=True,
            max_length=encoder.max_length,
            num_docs=len(self.index),
            index_type=self.index.index_type,
            query_prompt=encoder.query_prompt,
            document_prompt=encoder.document_prompt,
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
    ) -> Retriever:
        """Reload an index with the model it was built with; a different `model` is refused."""
        manifest = read_manifest(path)
        if model is not None:
            check_compatible(manifest, model=model_identity(model), where=path)
        index, manifest = load_index(path)
        encoder: DenseEncoder | ColBERTEncoder
        if manifest.mode == "colbert":
            encoder = ColBERTEncoder.load(
                manifest.model,
                device=device,
                dtype=dtype,
                query_length=manifest.query_length,
                document_length=manifest.document_length,
                seed=manifest.seed or 0,
            )
        else:
            encoder = DenseEncoder.load(
                manifest.model,
                device=device,
                dtype=dtype,
                max_length=manifest.max_length,
                query_prompt=manifest.query_prompt,
                document_prompt=manifest.document_prompt,
            )
        check_compatible(manifest, dimension=encoder.dimension, where=path)
        return cls(encoder=encoder, index=index, batch_size=batch_size)
