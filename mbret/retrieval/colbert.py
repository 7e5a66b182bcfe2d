"""ColBERT multi-vector head on sentence-transformers' `MultiVectorEncoder`.

A ColBERT or PyLate checkpoint loads as it is. Any other encoder (ModernBERT, MiniLM, ...) gets the
ColBERT pipeline around it: query expansion with the mask token up to `query_length`, documents cut at
`document_length`, a 128-d projection initialised from `seed` (so untrained runs are reproducible), a
punctuation skiplist for documents, and unit-norm token vectors.
"""

from __future__ import annotations

import json
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mbret.errors import MbretError
from mbret.hardware import release_freed_memory
from mbret.retrieval.backbone import check_max_length, choose_device, model_identity, model_kwargs, resolve_model_path
from mbret.retrieval.dense import DEFAULT_MAX_TOKENS_CPU, DEFAULT_MAX_TOKENS_GPU, token_budget_batches

DEFAULT_QUERY_LENGTH = 32
DEFAULT_DOCUMENT_LENGTH = 300
PROJECTION_DIM = 128
TRIM_EVERY = 32  # encoded batches between hand-backs of freed memory to the OS (see encode_corpus)
QUERY_PREFIX, DOCUMENT_PREFIX = "[Q] ", "[D] "


def is_multivector_checkpoint(path: str) -> bool:
    """True for a saved MultiVectorEncoder, a PyLate checkpoint, or a Stanford ColBERT one."""
    root = Path(path)
    st_config = root / "config_sentence_transformers.json"
    if st_config.is_file():
        config = json.loads(st_config.read_text(encoding="utf-8"))
        if config.get("model_type") in ("ColBERT", "MultiVectorEncoder") or "query_prefix" in config:
            return True
    hf_config = root / "config.json"
    if hf_config.is_file():
        return "HF_ColBERT" in (json.loads(hf_config.read_text(encoding="utf-8")).get("architectures") or [])
    return False


def _build_colbert_pipeline(
    path: str, device: str, dtype: str | None, query_length: int, document_length: int, seed: int
) -> Any:
    from sentence_transformers import MultiVectorEncoder
    from sentence_transformers.base.modules import Dense, Transformer
    from sentence_transformers.multi_vector_encoder.modules import MultiVectorMask
    from sentence_transformers.sentence_transformer.modules import Normalize

    transformer = Transformer(
        path,
        model_kwargs=model_kwargs(device, dtype),
        document_length=document_length,
        query_expansion={"strategy": "fixed", "attend": False, "length": query_length},
    )
    projection = Dense(
        in_features=transformer.get_embedding_dimension(),
        out_features=PROJECTION_DIM,
        bias=False,
        activation_function=torch.nn.Identity(),
        module_input_name="token_embeddings",
    )
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        bound = 1.0 / np.sqrt(projection.linear.in_features)  # nn.Linear's default range, seeded
        weight = torch.empty(projection.linear.weight.shape).uniform_(-bound, bound, generator=generator)
        projection.linear.weight.copy_(weight.to(projection.linear.weight.dtype))
    modules = [
        transformer,
        projection.to(transformer.auto_model.dtype),
        MultiVectorMask(skiplist_words=list(string.punctuation)),
        Normalize(module_input_name="token_embeddings"),
    ]
    return MultiVectorEncoder(
        modules=modules, device=device, prompts={"query": QUERY_PREFIX, "document": DOCUMENT_PREFIX}
    )


def _set_lengths(mve: Any, query_length: int | None, document_length: int | None) -> None:
    transformer = mve[0]
    if document_length is not None:
        transformer.document_length = document_length
    if query_length is not None:
        expansion = dict(transformer.query_expansion or {"strategy": "fixed", "attend": False})
        expansion["length"] = query_length
        transformer.query_length = query_length
        transformer.query_expansion = expansion


@dataclass
class ColBERTEncoder:
    """Queries and documents to bags of unit-norm token vectors, scored by MaxSim."""

    model: Any  # sentence_transformers.MultiVectorEncoder
    name: str
    seed: int = 0

    @classmethod
    def load(
        cls,
        model: str,
        device: str | None = None,
        dtype: str | None = None,
        query_length: int | None = None,
        document_length: int | None = None,
        seed: int = 0,
    ) -> ColBERTEncoder:
        from sentence_transformers import MultiVectorEncoder

        device = choose_device(device)
        path = resolve_model_path(model)
        for flag, value in (("--query-length", query_length), ("--document-length", document_length)):
            if value is not None and not 1 <= value <= 8192:
                raise MbretError(f"{flag} {value}: must be between 1 and 8192")
        try:
            if is_multivector_checkpoint(path):
                mve = MultiVectorEncoder(path, device=device, model_kwargs=model_kwargs(device, dtype))
                if mve[0].document_length is None:
                    mve[0].document_length = DEFAULT_DOCUMENT_LENGTH
                _set_lengths(mve, query_length, document_length)
            else:
                mve = _build_colbert_pipeline(
                    path,
                    device,
                    dtype,
                    query_length or DEFAULT_QUERY_LENGTH,
                    document_length or DEFAULT_DOCUMENT_LENGTH,
                    seed,
                )
        except (OSError, ValueError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
            raise MbretError(f"--model {model}: could not load the model ({first})") from None
        limit = getattr(mve[0].auto_model.config, "max_position_embeddings", None)
        check_max_length(mve[0].document_length, limit)
        return cls(model=mve, name=model_identity(model), seed=seed)

    @property
    def dimension(self) -> int:
        return int(self.model.get_embedding_dimension())

    @property
    def max_position(self) -> int | None:
        """The backbone's position limit: the longest query or document it can take."""
        return getattr(self.model[0].auto_model.config, "max_position_embeddings", None)

    def set_lengths(self, query_length: int | None = None, document_length: int | None = None) -> None:
        """Change the query expansion length and the document truncation length (None keeps one as is)."""
        for flag, value in (("--query-length", query_length), ("--document-length", document_length)):
            check_max_length(value, self.max_position, flag)  # 1..the backbone's positions; None passes
        _set_lengths(self.model, query_length, document_length)

    @property
    def query_length(self) -> int:
        expansion = self.model[0].query_expansion or {}
        return int(expansion.get("length") or self.model[0].query_length or DEFAULT_QUERY_LENGTH)

    @property
    def document_length(self) -> int:
        return int(self.model[0].document_length or DEFAULT_DOCUMENT_LENGTH)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def encode_queries(
        self, queries: Sequence[str], batch_size: int = 64, show_progress: bool = False
    ) -> list[torch.Tensor]:
        """One (query_length, dim) float32 tensor per query, on the CPU."""
        out = self.model.encode_query(
            list(queries), batch_size=batch_size, show_progress_bar=show_progress, convert_to_numpy=False
        )
        return [t.float().cpu() for t in out]

    def encode_corpus(
        self,
        documents: Sequence[str],
        batch_size: int = 32,
        show_progress: bool = True,
        max_tokens: int | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> list[torch.Tensor]:
        """One (n_tokens, dim) tensor per document (skiplisted tokens dropped), on the CPU, in `dtype`
        (float32 by default; indexing asks for float16, which is what the indexes keep, at half the memory).

        Batches are built as the dense encoder builds them: by token count, longest first, each within
        `batch_size` documents and `max_tokens` padded tokens (1024 on CPU, 65536 on GPU), so padding
        costs almost nothing and a batch's activations stay in cache on CPU.

        The tensors are views of one buffer sized by the token counts, and freed memory goes back to the OS
        every `TRIM_EVERY` batches: thousands of small per-document tensors scattered among freed
        activations had kept glibc from returning them (SciFact, 1,024 documents: encoding peak +204 MB
        -> +135 MB, same speed).
        """
        if batch_size <= 0:
            raise MbretError(f"--batch-size {batch_size}: must be a positive integer")
        documents = list(documents)
        out: list[torch.Tensor] = [torch.empty(0, self.dimension, dtype=dtype)] * len(documents)
        lengths = self.token_lengths(documents)
        budget = max_tokens or (DEFAULT_MAX_TOKENS_GPU if self.device.type == "cuda" else DEFAULT_MAX_TOKENS_CPU)
        buffer = torch.empty(int(lengths.sum()), self.dimension, dtype=dtype)  # the skiplist only removes
        used = 0
        with tqdm(
            total=len(documents), desc="Encoding corpus", unit="doc", disable=not show_progress, dynamic_ncols=True
        ) as bar:
            for batch, rows in enumerate(token_budget_batches(lengths, batch_size, budget)):
                encoded = self.model.encode_document(
                    [documents[i] for i in rows],
                    batch_size=len(rows),
                    show_progress_bar=False,
                    convert_to_numpy=False,
                )
                for i, tokens in zip(rows, encoded):
                    if used + len(tokens) <= len(buffer):
                        out[i] = buffer[used : used + len(tokens)]
                        out[i].copy_(tokens)
                        used += len(tokens)
                    else:  # more tokens than counted (a model adding its own markers): a tensor of its own
                        out[i] = tokens.to(device="cpu", dtype=dtype, copy=True)
                del encoded
                if batch % TRIM_EVERY == TRIM_EVERY - 1:
                    release_freed_memory()
                bar.update(len(rows))
        return out

    def token_lengths(self, documents: Sequence[str]) -> np.ndarray:
        """Tokens each document will have after its prefix and truncation (before the skiplist)."""
        prefix = self.prompts.get("document") or ""
        ids = self.model.tokenizer(
            [prefix + d for d in documents],
            truncation=True,
            max_length=self.document_length,
            return_attention_mask=False,
            return_token_type_ids=False,
        )["input_ids"]
        return np.fromiter((len(i) for i in ids), dtype=np.int64, count=len(ids))

    def count_tokens(self, documents: Sequence[str]) -> int:
        """Tokens the documents will have (before the skiplist), for sizing a PLAID index up front."""
        return int(self.token_lengths(documents).sum())

    def save(self, path: str | Path) -> None:
        """Save in the sentence-transformers MultiVectorEncoder format."""
        self.model.save(str(path))

    @property
    def prompts(self) -> dict[str, str]:
        return dict(getattr(self.model, "prompts", {}) or {})
