"""Retriever = encoder + index: build from a corpus, add, delete, search, save and reload as one unit."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mbret.errors import MbretError
from mbret.eval.data import Corpus, doc_text
from mbret.indexes import FaissIndex, Manifest, check_compatible, read_manifest
from mbret.retrieval.backbone import model_identity
from mbret.retrieval.dense import DenseEncoder


@dataclass
class Hit:
    doc_id: str
    score: float


@dataclass
class Retriever:
    """A dense encoder and the FAISS index of its corpus embeddings."""

    encoder: DenseEncoder
    index: FaissIndex
    batch_size: int = 64
    timings: dict[str, float] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        corpus: Corpus,
        model: str | DenseEncoder,
        index_type: str = "flat",
        index_params: dict[str, Any] | None = None,
        batch_size: int = 64,
        max_length: int | None = None,
        device: str | None = None,
        dtype: str | None = None,
        show_progress: bool = True,
    ) -> Retriever:
        """Encode `corpus` and index it; the corpus is fully validated before this is called."""
        encoder = (
            model
            if isinstance(model, DenseEncoder)
            else DenseEncoder.load(model, device=device, dtype=dtype, max_length=max_length)
        )
        retriever = cls(
            encoder=encoder, index=FaissIndex(encoder.dimension, index_type, index_params), batch_size=batch_size
        )
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
        return Manifest(
            kind="faiss",
            mode="dense",
            model=self.encoder.name,
            dimension=self.encoder.dimension,
            normalized=True,
            max_length=self.encoder.max_length,
            num_docs=len(self.index),
            index_type=self.index.index_type,
            query_prompt=self.encoder.query_prompt,
            document_prompt=self.encoder.document_prompt,
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
        index, manifest = FaissIndex.load(path)
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
