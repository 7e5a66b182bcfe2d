"""The encoder of `--mode bm25`: texts pass through as they are, since a BM25 index tokenizes them itself
(with the settings in its manifest). It has the encoders' surface, so `Retriever`, the CLI, evaluation and
the service treat BM25 as one more mode."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

BM25_MODEL = "bm25"


@dataclass
class TextEncoder:
    """Identity "encoder": queries and documents stay text."""

    name: str = BM25_MODEL
    dimension: int = 0
    device: str = "cpu"
    max_length: int = 0
    query_prompt: str | None = None
    document_prompt: str | None = None
    model: None = None

    def encode_queries(self, queries: Sequence[str], batch_size: int = 64, show_progress: bool = False) -> list[str]:
        return list(queries)

    def encode_corpus(self, documents: Sequence[str], batch_size: int = 64, show_progress: bool = True) -> list[str]:
        return list(documents)

    def count_tokens(self, texts: Sequence[str]) -> int:
        return sum(len(t.split()) for t in texts)

    def count_cut_queries(self, queries: Sequence[str]) -> int:
        return 0  # BM25 reads a query whole

    def to(self, device: object) -> TextEncoder:
        return self
