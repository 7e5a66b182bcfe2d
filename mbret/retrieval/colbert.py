"""ColBERT multi-vector head on sentence-transformers' `MultiVectorEncoder`.

A ColBERT or PyLate checkpoint loads as it is, with the query expansion, lengths and markers its config
says. Any other encoder (ModernBERT, MiniLM, ...) gets the ColBERT pipeline around it: query and document
markers, documents cut at `document_length`, a 128-d projection initialised from `seed` (so untrained runs
are reproducible), a punctuation skiplist for documents, and unit-norm token vectors.

Query expansion (padding every query with the mask token to a fixed width, whose vectors then match
documents too) is ColBERT's, and it only helps a model trained with it: an untrained head's mask vectors
are noise, and a short query is mostly mask. So a head built from a non-ColBERT checkpoint does not expand
by default; its queries keep their own tokens, up to `query_length` (by default the document length, so
long queries, such as code or claims, are not cut). `query_expansion=True` turns ColBERT's expansion on,
and then `query_length` is its width (32 by default). The choice is saved with a checkpoint (sentence-
transformers' `query_expansion` config) and in an index manifest.
"""

from __future__ import annotations

import json
import string
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mbret.errors import MbretError, ParameterError
from mbret.hardware import release_freed_memory
from mbret.retrieval.backbone import (
    EncodePool,
    check_max_length,
    choose_device,
    model_identity,
    model_kwargs,
    resolve_model_path,
    split_devices,
)
from mbret.retrieval.dense import DEFAULT_MAX_TOKENS_CPU, DEFAULT_MAX_TOKENS_GPU, token_budget_batches

DEFAULT_QUERY_LENGTH = 32  # the expansion width ColBERT and PyLate train with
DEFAULT_DOCUMENT_LENGTH = 300
PROJECTION_DIM = 128
TRIM_EVERY = 32  # encoded batches between hand-backs of freed memory to the OS (see encode_corpus)
# Query and document markers for heads built from non-ColBERT checkpoints (docs/benchmarks.md, "ColBERT
# defaults", compares them): ColBERT's "[Q] "/"[D] " as plain text; BERT's never-trained [unused0]/[unused1]
# vocabulary entries as single tokens (Stanford ColBERT's and PyLate's choice for BERT checkpoints); none.
MARKERS = {"text": ("[Q] ", "[D] "), "unused": ("[unused0] ", "[unused1] "), "none": ("", "")}
DEFAULT_MARKERS = "none"  # an untrained head over MiniLM scored best without (SciFact, all three query sets)


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


def _vocabulary_has(tokenizer: Any, token: str) -> bool:
    token_id = tokenizer.convert_tokens_to_ids(token)
    return token_id is not None and token_id != tokenizer.unk_token_id


def resolve_markers(tokenizer: Any, markers: str | tuple[str, str] | None) -> tuple[str, str]:
    """(query marker, document marker) for a name in `MARKERS` (None: `DEFAULT_MARKERS`) or an explicit
    pair; `unused` needs a vocabulary with [unused0] and [unused1] (BERT's)."""
    markers = DEFAULT_MARKERS if markers is None else markers
    if isinstance(markers, str):
        if markers not in MARKERS:
            raise MbretError(f"markers {markers!r}: choose one of {', '.join(MARKERS)}")
        missing = [m.strip() for m in MARKERS[markers] if m.strip() and not _vocabulary_has(tokenizer, m.strip())]
        if markers == "unused" and missing:
            raise MbretError(f"markers 'unused': this tokenizer's vocabulary has no {missing[0]} (choose text or none)")
        return MARKERS[markers]
    query, document = markers
    return query or "", document or ""


def _register_marker_tokens(tokenizer: Any, markers: tuple[str, str]) -> None:
    """Keep a marker that names one vocabulary entry (BERT's `[unused0]`) as that single token, as PyLate
    does, instead of letting the tokenizer split it into `[`, `unused`, `##0`, `]`. A marker outside the
    vocabulary stays text: adding it would need a new, untrained embedding row."""
    single = [
        m.strip()
        for m in markers
        if m.strip() and _vocabulary_has(tokenizer, m.strip()) and len(tokenizer.tokenize(m.strip())) > 1
    ]
    if single:
        tokenizer.add_tokens(single)


def _build_colbert_pipeline(
    path: str,
    device: str,
    dtype: str | None,
    document_length: int,
    seed: int,
    markers: str | tuple[str, str] | None,
) -> Any:
    from sentence_transformers import MultiVectorEncoder
    from sentence_transformers.base.modules import Dense, Transformer
    from sentence_transformers.multi_vector_encoder.modules import MultiVectorMask
    from sentence_transformers.sentence_transformer.modules import Normalize

    transformer = Transformer(path, model_kwargs=model_kwargs(device, dtype), document_length=document_length)
    markers = resolve_markers(transformer.tokenizer, markers)
    _register_marker_tokens(transformer.tokenizer, markers)
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
    prompts = {name: marker for name, marker in zip(("query", "document"), markers) if marker}
    return MultiVectorEncoder(modules=modules, device=device, prompts=prompts)


def _configure_queries(transformer: Any, expansion: bool, query_length: int) -> None:
    """Expansion on: queries padded with the mask token to `query_length`. Off: a query keeps its own
    tokens, cut at `query_length`."""
    if expansion:
        current = dict(transformer.query_expansion or {"strategy": "fixed", "attend": False})
        transformer.query_length = None  # sentence-transformers refuses a cap below the expansion width
        transformer.query_expansion = {**current, "length": query_length}
    else:
        transformer.query_expansion = None
    transformer.query_length = query_length


@dataclass
class ColBERTEncoder:
    """Queries and documents to bags of unit-norm token vectors, scored by MaxSim.

    Thread safety: any number of threads may encode at once; each tokenization and each batch runs alone
    under `lock` (a Hugging Face tokenizer must not be used by two threads at once, and queries and
    documents set it to different lengths), so a long corpus encoding lets other threads' queries through
    between its batches."""

    model: Any  # sentence_transformers.MultiVectorEncoder
    name: str
    seed: int = 0
    # what a ColBERT/PyLate checkpoint came with (None for a head built here): its expansion and query length
    own_query_expansion: bool | None = None
    own_query_length: int | None = None
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)
    pool: EncodePool | None = field(default=None, repr=False, compare=False)  # several devices: the corpus's
    pool_factor: int = 1  # documents' token vectors clustered to about 1 / pool_factor of them (1: none)

    @classmethod
    def load(
        cls,
        model: str,
        device: str | None = None,
        dtype: str | None = None,
        query_length: int | None = None,
        document_length: int | None = None,
        seed: int = 0,
        query_expansion: bool | None = None,
        markers: str | tuple[str, str] | None = None,
        pool_factor: int | None = None,
    ) -> ColBERTEncoder:
        """`query_expansion` None keeps a ColBERT/PyLate checkpoint's own setting and is off for a head built
        from any other encoder; `query_length` None takes `default_query_length`. `markers` (a `MARKERS` name
        or a (query, document) pair) applies to a head built here: a checkpoint keeps its own prompts.
        `pool_factor` > 1 clusters each document's token vectors (`pool_documents`)."""
        from sentence_transformers import MultiVectorEncoder

        if pool_factor is not None and (isinstance(pool_factor, bool) or not 1 <= pool_factor <= 64):
            raise ParameterError("pool_factor", f"{pool_factor}: must be a whole number from 1 (no pooling) to 64")
        device, devices = split_devices(device)
        device = choose_device(device)
        path = resolve_model_path(model)
        for name, value in (("query_length", query_length), ("document_length", document_length)):
            if value is not None and not 1 <= value <= 8192:
                raise ParameterError(name, f"{value}: must be between 1 and 8192")
        own_expansion, own_length = None, None
        try:
            if is_multivector_checkpoint(path):
                mve = MultiVectorEncoder(path, device=device, model_kwargs=model_kwargs(device, dtype))
                if mve[0].document_length is None:
                    mve[0].document_length = DEFAULT_DOCUMENT_LENGTH
                if document_length is not None:
                    mve[0].document_length = document_length
                own_expansion = mve[0].query_expansion is not None
                own_length = (mve[0].query_expansion or {}).get("length") or mve[0].query_length
            else:
                mve = _build_colbert_pipeline(
                    path, device, dtype, document_length or DEFAULT_DOCUMENT_LENGTH, seed, markers
                )
            encoder = cls(mve, model_identity(model), seed, own_expansion, own_length, pool_factor=pool_factor or 1)
            expansion = bool(own_expansion) if query_expansion is None else query_expansion
            _configure_queries(mve[0], expansion, query_length or encoder.default_query_length(expansion))
        except (OSError, ValueError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
            raise ParameterError("model", f"{model}: could not load the model ({first})") from None
        check_max_length(mve[0].document_length, encoder.max_position)
        if devices:
            encoder.pool = EncodePool(mve, devices)
        return encoder

    def default_query_length(self, expansion: bool | None = None, document_length: int | None = None) -> int:
        """The query length a setting of query expansion takes when none is given: a checkpoint's own for its
        own setting; else 32 with expansion (ColBERT's width) and, without, the document length (so a query
        is never cut shorter than a document), within the backbone's positions."""
        expansion = self.query_expansion if expansion is None else expansion
        if self.own_query_length and expansion == self.own_query_expansion:
            return int(self.own_query_length)
        if expansion:
            return DEFAULT_QUERY_LENGTH
        return min(document_length or self.document_length, self.max_position or 8192)

    @property
    def dimension(self) -> int:
        return int(self.model.get_embedding_dimension())

    @property
    def max_position(self) -> int | None:
        """The backbone's position limit: the longest query or document it can take."""
        return getattr(self.model[0].auto_model.config, "max_position_embeddings", None)

    def set_lengths(self, query_length: int | None = None, document_length: int | None = None) -> None:
        """Change the query length (the expansion width, or the cap without expansion) and the document
        truncation length; None keeps one as is."""
        for name, value in (("query_length", query_length), ("document_length", document_length)):
            check_max_length(value, self.max_position, name)  # 1..the backbone's positions; None passes
        if document_length is not None:
            self.model[0].document_length = document_length
        if query_length is not None:
            _configure_queries(self.model[0], self.query_expansion, query_length)

    def set_query_expansion(self, query_expansion: bool, query_length: int | None = None) -> None:
        """Turn query expansion on or off; `query_length` None takes `default_query_length` for it."""
        check_max_length(query_length, self.max_position, "query_length")
        _configure_queries(self.model[0], query_expansion, query_length or self.default_query_length(query_expansion))

    @property
    def query_expansion(self) -> bool:
        """Whether queries are padded with the mask token to `query_length` (ColBERT's query expansion)."""
        return self.model[0].query_expansion is not None

    @property
    def query_length(self) -> int:
        """The expansion width with query expansion, else the longest a query may be before it is cut."""
        expansion = self.model[0].query_expansion or {}
        return int(expansion.get("length") or self.model[0].query_length or DEFAULT_QUERY_LENGTH)

    def query_token_counts(self, queries: Sequence[str]) -> np.ndarray:
        """Tokens each query has with its marker, before any cut or expansion."""
        prefix = self.prompts.get("query") or ""
        with self.lock:
            ids = self.model.tokenizer(
                [prefix + q for q in queries], return_attention_mask=False, return_token_type_ids=False, verbose=False
            )["input_ids"]
        return np.fromiter((len(i) for i in ids), dtype=np.int64, count=len(ids))

    def count_cut_queries(self, queries: Sequence[str]) -> int:
        """How many of `queries` are longer than `query_length` and so lose their last tokens."""
        return int((self.query_token_counts(queries) > self.query_length).sum()) if queries else 0

    @property
    def document_length(self) -> int:
        return int(self.model[0].document_length or DEFAULT_DOCUMENT_LENGTH)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def encode_queries(
        self, queries: Sequence[str], batch_size: int = 64, show_progress: bool = False
    ) -> list[torch.Tensor]:
        """One (tokens, dim) float32 tensor per query, on the CPU: `query_length` tokens with query expansion,
        the query's own (at most `query_length`) without."""
        with self.lock:
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
        activations had kept glibc from returning them (docs/benchmarks.md: a lower peak at the same speed).
        """
        if batch_size <= 0:
            raise ParameterError("batch_size", f"{batch_size}: must be a positive integer")
        documents = list(documents)
        if self.pool is not None and documents:  # several devices: sentence-transformers' pool spreads them
            with self.lock:
                encoded = self.model.encode_document(
                    documents,
                    batch_size=batch_size,
                    show_progress_bar=show_progress,
                    pool=self.pool.get(),
                    convert_to_numpy=False,
                )
            return self.pool_documents([t.to(device="cpu", dtype=dtype) for t in encoded])
        return self.pool_documents(self._encode_corpus(documents, batch_size, show_progress, max_tokens, dtype))

    def pool_documents(self, documents: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each document's token vectors clustered into about 1 / `pool_factor` of them (Ward linkage on
        cosine, cluster means re-normalised, the first token kept as it is): sentence-transformers'
        `HierarchicalTokenPooling`, as PyLate's `pool_factor` does. As they are when `pool_factor` is 1."""
        if self.pool_factor <= 1 or not documents:
            return documents
        from sentence_transformers.multi_vector_encoder.modules.token_pooling import HierarchicalTokenPooling

        pooler = HierarchicalTokenPooling(pool_factor=float(self.pool_factor), use_kernels=False)
        return [t.contiguous() for t in pooler.pool(documents)]

    def _encode_corpus(
        self,
        documents: list[str],
        batch_size: int,
        show_progress: bool,
        max_tokens: int | None,
        dtype: torch.dtype,
    ) -> list[torch.Tensor]:
        out: list[torch.Tensor] = [torch.empty(0, self.dimension, dtype=dtype)] * len(documents)
        lengths = self.token_lengths(documents)
        budget = max_tokens or (DEFAULT_MAX_TOKENS_GPU if self.device.type == "cuda" else DEFAULT_MAX_TOKENS_CPU)
        buffer = torch.empty(int(lengths.sum()), self.dimension, dtype=dtype)  # the skiplist only removes
        used = 0
        with tqdm(
            total=len(documents), desc="Encoding corpus", unit="doc", disable=not show_progress, dynamic_ncols=True
        ) as bar:
            for batch, rows in enumerate(token_budget_batches(lengths, batch_size, budget)):
                with self.lock:
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
        with self.lock:
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
        """The query and document markers (prompts) in use; empty ones left out."""
        return {name: text for name, text in (getattr(self.model, "prompts", {}) or {}).items() if text}
