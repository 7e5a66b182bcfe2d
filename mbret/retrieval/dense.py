"""Dense single-vector head on `SentenceTransformer`: mean pooling, unit-norm embeddings, optional prompts.

Corpus encoding tokenizes everything once, sorts by token count (not characters, as plain `encode` does), and
batches neighbours of equal length, so padding costs almost nothing; the result is identical to `encode`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mbret.deprecation import no_other_kwargs, renamed
from mbret.errors import ParameterError
from mbret.retrieval.backbone import (
    EncodePool,
    check_max_length,
    choose_device,
    model_identity,
    model_kwargs,
    resolve_model_path,
    split_devices,
)

logger = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS_CPU = 1024
DEFAULT_MAX_TOKENS_GPU = 65536


def _load_sentence_transformer(model: str, device: str, dtype: str | None) -> Any:
    from sentence_transformers import SentenceTransformer

    path = resolve_model_path(model)
    kwargs = model_kwargs(device, dtype)
    try:
        try:
            return SentenceTransformer(path, device=device, model_kwargs=kwargs)
        except ValueError as exc:  # an architecture without SDPA support: fall back to eager attention
            if "sdpa" not in str(exc).lower():
                raise
            kwargs["attn_implementation"] = "eager"
            return SentenceTransformer(path, device=device, model_kwargs=kwargs)
    except (OSError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise ParameterError("model", f"{model}: could not load the model ({first})") from None


def token_budget_batches(lengths: np.ndarray, batch_size: int, max_tokens: int) -> Iterator[np.ndarray]:
    """Indices grouped longest first, each group within `batch_size` texts and `max_tokens` padded tokens."""
    order = np.argsort(-lengths, kind="stable")
    start = 0
    while start < len(order):
        longest = int(lengths[order[start]])
        size = max(1, min(batch_size, max_tokens // max(longest, 1)))
        yield order[start : start + size]
        start += size


def _ensure_normalized(st_model: Any) -> None:
    """Append a Normalize module if the pipeline lacks one, so the saved model emits unit vectors too."""
    from sentence_transformers.sentence_transformer.modules import Normalize

    if not any(isinstance(module, Normalize) for module in st_model):
        st_model.append(Normalize())


@dataclass
class DenseEncoder:
    """A sentence-transformers model used as a retriever: queries and documents to unit vectors.

    Thread safety: any number of threads may encode at once; each tokenization and each batch runs alone
    under `lock` (a Hugging Face tokenizer must not be used by two threads at once), so a long corpus
    encoding lets other threads' queries through between its batches."""

    model: Any  # sentence_transformers.SentenceTransformer
    name: str
    query_prompt: str | None = None
    document_prompt: str | None = None
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)
    pool: EncodePool | None = field(default=None, repr=False, compare=False)  # several devices: the corpus's
    query_cut: int | None = None  # queries' own token limit; None: `document_length`, as the model takes

    @classmethod
    def load(
        cls,
        model: str,
        device: str | None = None,
        dtype: str | None = None,
        document_length: int | None = None,
        query_prompt: str | None = None,
        document_prompt: str | None = None,
        query_length: int | None = None,
        **deprecated: Any,
    ) -> DenseEncoder:
        """Load a hub id, local dir, `minilm` or `tiny-modernbert`; a plain HF encoder gets mean pooling.
        `device` "cuda:0,cuda:1" encodes corpora on both (a sentence-transformers multi-process pool) and
        queries on the first. Documents are cut at `document_length` tokens (None: the model's own limit),
        queries at `query_length` (None: the document length); `max_length=` is the old name of
        `document_length`."""
        document_length = renamed(deprecated, "max_length", "document_length", document_length, None)
        no_other_kwargs(deprecated, "DenseEncoder.load")
        device, devices = split_devices(device)
        device = choose_device(device)
        st_model = _load_sentence_transformer(model, device, dtype)
        config = getattr(st_model[0], "auto_model", None)
        limit = getattr(getattr(config, "config", None), "max_position_embeddings", None)
        check_max_length(document_length, limit, "document_length")
        check_max_length(query_length, limit, "query_length")
        if document_length is not None:
            st_model.max_seq_length = document_length
        _ensure_normalized(st_model)
        prompts = getattr(st_model, "prompts", {}) or {}
        encoder = cls(
            model=st_model,
            name=model_identity(model),
            query_prompt=query_prompt if query_prompt is not None else prompts.get("query") or None,
            document_prompt=(
                document_prompt
                if document_prompt is not None
                else prompts.get("document") or prompts.get("passage") or None
            ),
            query_cut=query_length,
        )
        if devices:
            encoder.pool = EncodePool(st_model, devices)
        return encoder

    @property
    def dimension(self) -> int:
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(get_dim())

    @property
    def document_length(self) -> int:
        """Documents are cut at this many tokens (the model's `max_seq_length`)."""
        return int(self.model.max_seq_length)

    @property
    def query_length(self) -> int:
        """Queries are cut at this many tokens: their own limit if one was given, else `document_length`."""
        return self.query_cut if self.query_cut is not None else self.document_length

    @property
    def max_length(self) -> int:
        """The old name of `document_length`."""
        return self.document_length

    @property
    def device(self) -> torch.device:
        return self.model.device

    def count_cut_queries(self, queries: Sequence[str]) -> int:
        """How many of `queries` (with the query prompt) are longer than `query_length` tokens and get cut."""
        if not queries:
            return 0
        prefix = self.query_prompt or ""
        with self.lock:
            ids = self.model.tokenizer(
                [prefix + q for q in queries], return_attention_mask=False, return_token_type_ids=False, verbose=False
            )["input_ids"]
        return sum(len(i) > self.query_length for i in ids)

    def encode_queries(self, queries: Sequence[str], batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        return self.encode(
            queries,
            prompt=self.query_prompt,
            batch_size=batch_size,
            show_progress=show_progress,
            desc="Encoding queries",
            length=self.query_length,
        )

    def encode_corpus(self, documents: Sequence[str], batch_size: int = 64, show_progress: bool = True) -> np.ndarray:
        if self.pool is not None and len(documents):
            embeddings = self.model.encode(
                list(documents),
                prompt=self.document_prompt,
                batch_size=batch_size,
                show_progress_bar=show_progress,
                pool=self.pool.get(),
                convert_to_numpy=True,
                normalize_embeddings=True,
            )
            return np.ascontiguousarray(embeddings, dtype=np.float32)
        return self.encode(
            documents,
            prompt=self.document_prompt,
            batch_size=batch_size,
            show_progress=show_progress,
            desc="Encoding corpus",
        )

    @torch.inference_mode()
    def encode(
        self,
        texts: Sequence[str],
        prompt: str | None = None,
        batch_size: int = 64,
        show_progress: bool = False,
        desc: str = "Encoding",
        max_tokens: int | None = None,
        length: int | None = None,
    ) -> np.ndarray:
        """Unit-norm float32 embeddings, one row per text, in input order, each cut at `length` tokens (None:
        `document_length`).

        A batch holds at most `batch_size` texts and at most `max_tokens` padded tokens (default: 1024 on
        CPU, where activations that fit in cache beat big batches; 65536 on GPU); a longer text goes alone.
        """
        if batch_size <= 0:
            raise ParameterError("batch_size", f"{batch_size}: must be a positive integer")
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        if not texts:
            return out
        tokenizer = self.model.tokenizer
        inputs = [prompt + t for t in texts] if prompt else list(texts)
        with self.lock:
            token_ids = tokenizer(
                inputs,
                truncation=True,
                max_length=length or self.document_length,
                padding=False,
                return_attention_mask=False,
                return_token_type_ids=False,
            )["input_ids"]
        lengths = np.fromiter((len(ids) for ids in token_ids), dtype=np.int64, count=len(token_ids))
        budget = max_tokens or (DEFAULT_MAX_TOKENS_GPU if self.device.type == "cuda" else DEFAULT_MAX_TOKENS_CPU)
        self.model.eval()
        device = self.device
        with tqdm(total=len(texts), desc=desc, unit="text", disable=not show_progress, dynamic_ncols=True) as bar:
            for rows in token_budget_batches(lengths, batch_size, budget):
                with self.lock:
                    batch = tokenizer.pad({"input_ids": [token_ids[i] for i in rows]}, return_tensors="pt")
                    features = {key: value.to(device) for key, value in batch.items()}
                    embeddings = self.model(features)["sentence_embedding"]
                embeddings = torch.nn.functional.normalize(embeddings.float(), dim=-1)
                out[rows] = embeddings.cpu().numpy()
                bar.update(len(rows))
        return out

    def save(self, path: str | Path) -> None:
        """Save in the sentence-transformers format (loadable by plain `SentenceTransformer(path)`)."""
        prompts = {}
        if self.query_prompt:
            prompts["query"] = self.query_prompt
        if self.document_prompt:
            prompts["document"] = self.document_prompt
        self.model.prompts = prompts
        self.model.save(str(path))
