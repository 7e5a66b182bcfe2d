"""Reranking: each query's candidates from any first stage rescored by a second model, with no index.

- `colbert`: exact MaxSim, the sum over the query's token vectors of the best cosine with any of the
  candidate's (the ColBERT head of `load_encoder`, as `mbret index --mode colbert` encodes).
- `dense`: the cosine of the query's and the candidate's unit vectors.
- `cross-encoder`: a sentence-transformers `CrossEncoder` reading each (query, document) pair.

The bi-encoders encode each distinct candidate once, however many queries retrieved it. Candidates come
as (doc id, text) pairs per query; `rerank` returns them best first, ties by doc id.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mbret.deprecation import no_other_kwargs, renamed
from mbret.errors import MbretError, ParameterError
from mbret.retrieval.backbone import choose_device, model_kwargs, resolve_model_path
from mbret.retrieval.colbert import ColBERTEncoder
from mbret.retrieval.dense import DenseEncoder
from mbret.retrieval.retriever import Hit, load_encoder

RERANK_MODES = ("colbert", "dense", "cross-encoder")
Candidates = Sequence[Sequence[tuple[str, str]]]


def split_model_mode(spec: str, default: str = "colbert") -> tuple[str, str]:
    """`MODEL[:mode]` (as `mbret eval --rerank` takes it) -> (model, mode)."""
    model, sep, mode = spec.rpartition(":")
    if sep and mode in RERANK_MODES:
        return model, mode
    return spec, default


@dataclass
class Reranker:
    """A model that scores (query, document) pairs: a bi-encoder (`encoder`) or a cross-encoder."""

    mode: str
    name: str
    encoder: DenseEncoder | ColBERTEncoder | None = None
    cross_encoder: Any = None
    batch_size: int = 32

    @classmethod
    def load(
        cls,
        model: str,
        mode: str = "colbert",
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int = 32,
        document_length: int | None = None,
        **deprecated: Any,
    ) -> Reranker:
        """A reranker of `mode`; texts are cut at `document_length` tokens (None: the model's own limit);
        `max_length=` is the old name of `document_length`."""
        document_length = renamed(deprecated, "max_length", "document_length", document_length, None)
        no_other_kwargs(deprecated, "Reranker.load")
        if mode not in RERANK_MODES:
            raise ParameterError("mode", f"{mode}: a reranker is one of {', '.join(RERANK_MODES)}")
        if batch_size <= 0:
            raise ParameterError("batch_size", f"{batch_size}: must be a positive integer")
        if mode == "cross-encoder":
            from sentence_transformers import CrossEncoder

            device = choose_device(device)
            try:
                cross = CrossEncoder(
                    resolve_model_path(model),
                    device=device,
                    max_length=document_length,  # CrossEncoder's own keyword
                    model_kwargs=model_kwargs(device, dtype),
                )
            except (OSError, ValueError) as exc:
                first = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
                raise ParameterError("model", f"{model}: could not load a cross-encoder ({first})") from None
            return cls(mode, model, cross_encoder=cross, batch_size=batch_size)
        encoder = load_encoder(model, mode, device=device, dtype=dtype, document_length=document_length)
        assert isinstance(encoder, (DenseEncoder, ColBERTEncoder))
        return cls(mode, encoder.name, encoder=encoder, batch_size=batch_size)

    def rerank(self, queries: Sequence[str], candidates: Candidates, k: int | None = None) -> list[list[Hit]]:
        """Each query's candidates, rescored and sorted best first (the top `k`, or all)."""
        if len(queries) != len(candidates):
            raise MbretError(f"{len(queries)} queries but candidates for {len(candidates)}")
        scores = self.score(queries, candidates)
        out = []
        for row, values in zip(candidates, scores):
            hits = sorted(
                (Hit(doc_id, float(s)) for (doc_id, _), s in zip(row, values)), key=lambda h: (-h.score, h.doc_id)
            )
            out.append(hits[:k] if k is not None else hits)
        return out

    def score(self, queries: Sequence[str], candidates: Candidates) -> list[np.ndarray]:
        """The score of each candidate of each query, in the order given."""
        if self.cross_encoder is not None:
            pairs = [(q, text) for q, row in zip(queries, candidates) for _, text in row]
            flat = (
                np.asarray(
                    self.cross_encoder.predict(pairs, batch_size=self.batch_size, show_progress_bar=False),
                    dtype=np.float32,
                ).reshape(-1)
                if pairs
                else np.zeros(0, dtype=np.float32)
            )
            return list(np.split(flat, np.cumsum([len(row) for row in candidates])[:-1]))
        assert self.encoder is not None
        texts: dict[str, str] = {}
        for row in candidates:
            for doc_id, text in row:
                texts.setdefault(doc_id, text)
        order = list(texts)
        documents = self.encoder.encode_corpus(
            [texts[d] for d in order], batch_size=self.batch_size, show_progress=False
        )
        encoded_queries = self.encoder.encode_queries(list(queries), batch_size=self.batch_size)
        position = {d: i for i, d in enumerate(order)}
        out = []
        for query, row in zip(encoded_queries, candidates):
            picks = [position[d] for d, _ in row]
            if self.mode == "dense":
                out.append(np.asarray(documents, dtype=np.float32)[picks] @ np.asarray(query, dtype=np.float32))
            else:
                q = torch.as_tensor(query).float()
                out.append(
                    np.array(
                        [float((q @ documents[i].float().T).max(dim=1).values.sum()) for i in picks],
                        dtype=np.float32,
                    )
                )
        return out


def rerank(
    queries: Sequence[str],
    candidates: Candidates,
    model: str | Reranker,
    mode: str = "colbert",
    k: int | None = None,
    **load_options: Any,
) -> list[list[Hit]]:
    """Rescore each query's (doc id, text) candidates with `model` (a name, loaded as `mode`, or a
    `Reranker`): the reranked hits per query, best first. For example
    `rerank(["does smoking cause cancer"], [[("d1", "smoking and cancer"), ("d2", "mice")]], "minilm", "dense")`.
    """
    reranker = model if isinstance(model, Reranker) else Reranker.load(model, mode, **load_options)
    return reranker.rerank(queries, candidates, k)
