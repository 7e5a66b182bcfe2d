"""PLAID: ColBERT's engine, in PyTorch. Centroids + compressed residuals, inverted lists, staged search.

Build: k-means (FAISS, seeded) on a sample of token vectors gives the centroids; every token is stored as
its nearest centroid's id plus its residual quantised to `nbits` per dimension (bucket cut-offs from the
residuals' quantiles, as in ColBERTv2; each bucket decodes to its residuals' mean). An inverted list maps
each centroid to the documents that use it.

Search (Santhanam et al., PLAID, 2022): candidates are the documents in the top `n_ivf_probe` centroids
of each query token; centroid interaction with pruning (centroids scoring below
`centroid_score_threshold` for every query token are ignored) keeps `n_candidates`; centroid interaction
without pruning keeps `n_full_scores` (by default sized per query: more for short queries, whose
centroid-only scores pick worse); those are scored with exact MaxSim over their decompressed vectors.
"""

from __future__ import annotations

import json
import math
import threading
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mbret.errors import IndexFormatError, MbretError
from mbret.hardware import map_on_cores
from mbret.indexes.base import Manifest, StableDocIds, Stored, origin_of, read_manifest, save_generation
from mbret.indexes.maxsim import max_per_segment, token_groups
from mbret.io import atomic_file

NBITS = (1, 2, 4, 8)
QUANTILE_SAMPLE = 2_000_000  # residual values the bucket cut-offs are estimated from
COMPRESS_TOKENS = 65536  # token vectors converted to float32 and compressed at a time by PlaidIndex.add
TRAIN_PER_CENTROID = 40  # k-means sample: token vectors per centroid
# documents drawn for the k-means sample, as a multiple of the fewest that hold it; each gives a random share
# of its tokens. Tokens of one document are alike, so a sample of whole documents covers the corpus worse
# than the same number of tokens drawn at random: on SciFact, PLAID's recall@10 of exact MaxSim's top 10 at
# nbits 4 was 0.936 with whole documents and 0.952 with 4x as many (docs/benchmarks.md)
SAMPLE_SPREAD = 4


@dataclass
class PlaidSearchParams:
    """PLAID's search knobs; `None` takes the defaults for the k asked for (`resolved`, `full_scores`),
    chosen from the quality/speed curves in docs/benchmarks.md ("PLAID search budgets")."""

    n_ivf_probe: int | None = None
    centroid_score_threshold: float | None = None
    n_candidates: int | None = None
    n_full_scores: int | None = None

    def resolved(self, k: int) -> PlaidSearchParams:
        """ColBERT's own k-dependent probes, threshold and candidates (colbert/searcher.py) for whatever is
        unset; `n_full_scores` stays None when unset, for `full_scores` to size per query."""
        if k <= 10:
            probe, threshold, candidates = 1, 0.5, 256
        elif k <= 100:
            probe, threshold, candidates = 2, 0.45, 1024
        else:
            probe, threshold, candidates = 4, 0.4, max(k * 4, 4096)
        return PlaidSearchParams(
            n_ivf_probe=self.n_ivf_probe or probe,
            centroid_score_threshold=(
                self.centroid_score_threshold if self.centroid_score_threshold is not None else threshold
            ),
            n_candidates=self.n_candidates or candidates,
            n_full_scores=self.n_full_scores,
        )

    def full_scores(self, k: int, query_tokens: int) -> int:
        """How many candidates stage 4 scores exactly: `n_full_scores` if set, else a budget of query tokens
        x documents (`FULL_SCORE_BUDGET`, by k) over this query's tokens, at least `max(k, 64)` at k <= 10
        and k above, at most `n_candidates`. Stage 4's cost grows with both factors; and the centroid-only
        scores that pick its documents err more, relative to the score, the fewer tokens a query sums over:
        on SciFact, 4-word queries lost 0.015 NDCG@10 with ColBERT's 64 documents at k=10 where 21-token ones
        lost nothing and 116-token ones lost nothing with 17 (docs/benchmarks.md)."""
        candidates = self.n_candidates or 0
        if self.n_full_scores:
            return min(self.n_full_scores, candidates) if candidates else self.n_full_scores
        budget = FULL_SCORE_BUDGET[10] if k <= 10 else FULL_SCORE_BUDGET[100] * max(1, k // 100)
        floor = max(k, 64) if k <= 10 else k
        return max(floor, min(candidates, budget // max(query_tokens, 1)))


# stage 4's default budget: query tokens x documents scored exactly, at k <= 10 and per 100 hits above
FULL_SCORE_BUDGET = {10: 2048, 100: 4096}


def default_num_centroids(num_tokens: int) -> int:
    """A power of two near 4·√tokens (ColBERT uses 16·√tokens; a quarter trains 4× faster at equal quality
    for the corpora this runs on here), at least 16."""
    return max(16, int(2 ** math.floor(math.log2(4 * math.sqrt(max(num_tokens, 1))))))


def pack_bits(buckets: torch.Tensor, nbits: int) -> torch.Tensor:
    """(n, d) ints in [0, 2**nbits) -> (n, d * nbits / 8) uint8, most significant value first."""
    per_byte = 8 // nbits
    n, d = buckets.shape
    grouped = buckets.to(torch.int32).view(n, d // per_byte, per_byte)
    shifts = torch.arange(per_byte - 1, -1, -1, dtype=torch.int32) * nbits
    return (grouped << shifts).sum(dim=2).to(torch.uint8)


def unpack_bits(packed: torch.Tensor, nbits: int) -> torch.Tensor:
    per_byte = 8 // nbits
    n, b = packed.shape
    shifts = torch.arange(per_byte - 1, -1, -1, dtype=torch.int32) * nbits
    values = (packed.to(torch.int32).unsqueeze(2) >> shifts) & ((1 << nbits) - 1)
    return values.view(n, b * per_byte)


class ResidualCodec:
    """Centroids plus `nbits`-per-dimension residual buckets; compresses and restores token vectors."""

    def __init__(
        self, centroids: torch.Tensor, cutoffs: torch.Tensor, weights: torch.Tensor, nbits: int, avg_residual: float
    ) -> None:
        self.centroids, self.cutoffs, self.weights = centroids.float(), cutoffs.float(), weights.float()
        self.nbits, self.avg_residual = nbits, avg_residual
        # byte -> the residual values of the dimensions it packs: one gather per byte, no bit twiddling
        every_byte = torch.arange(256, dtype=torch.uint8)[:, None]
        self._byte_table = self.weights[unpack_bits(every_byte, nbits).long()]  # (256, 8 // nbits)

    def to(self, device: torch.device) -> ResidualCodec:
        self.centroids, self.cutoffs, self.weights = (
            t.to(device) for t in (self.centroids, self.cutoffs, self.weights)
        )
        self._byte_table = self._byte_table.to(device)
        return self

    @classmethod
    def train(
        cls, sample: torch.Tensor, nbits: int, num_centroids: int, seed: int = 0, niter: int = 8
    ) -> ResidualCodec:
        import faiss

        if nbits not in NBITS:
            raise MbretError(f"--nbits {nbits}: choose one of {', '.join(map(str, NBITS))}")
        sample = sample.float().contiguous()
        num_centroids = min(num_centroids, len(sample))
        kmeans = faiss.Kmeans(
            sample.shape[1],
            num_centroids,
            niter=niter,
            seed=seed,
            spherical=True,
            gpu=False,
            verbose=False,
            max_points_per_centroid=256,
            min_points_per_centroid=16,  # only sets when faiss warns; the sample aims at ~40 (35 after skiplist)
        )
        kmeans.train(sample.numpy())
        centroids = torch.from_numpy(kmeans.centroids.copy())
        codes = cls.assign(centroids, sample)
        levels = 1 << nbits
        dim = sample.shape[1]
        if sample.numel() > QUANTILE_SAMPLE:  # quantiles of a fixed, seeded subsample of residual values:
            # the same cut-offs to 3 decimals, without holding every residual or a permutation of them
            picks = torch.randint(sample.numel(), (QUANTILE_SAMPLE,), generator=torch.Generator().manual_seed(seed))
            rows, cols = picks // dim, picks % dim
            values = sample[rows, cols] - centroids[codes[rows], cols]
        else:
            values = (sample - centroids[codes]).flatten()
        cutoffs = torch.quantile(values, torch.arange(1, levels) / levels)
        # each bucket decodes to the mean of the values that fall in it (Lloyd's condition: the least squared
        # error for these cut-offs; ColBERTv2 takes the bucket's middle quantile, ~2% more error at nbits 4)
        buckets = torch.bucketize(values, cutoffs, right=True)
        counts = torch.bincount(buckets, minlength=levels).clamp_min(1)
        weights = torch.zeros(levels).index_add_(0, buckets, values) / counts
        abs_sum = sum(
            float((sample[b : b + 65536] - centroids[codes[b : b + 65536]]).abs().sum())
            for b in range(0, len(sample), 65536)
        )
        return cls(centroids, cutoffs, weights, nbits, abs_sum / max(sample.numel(), 1))

    @staticmethod
    def assign(centroids: torch.Tensor, vectors: torch.Tensor, block: int = 4096) -> torch.Tensor:
        """Nearest centroid (max inner product) per vector, in blocks to bound memory."""
        out = torch.empty(len(vectors), dtype=torch.int64)
        for start in range(0, len(vectors), block):
            out[start : start + block] = (vectors[start : start + block].float() @ centroids.T).argmax(dim=1)
        return out

    def compress(self, vectors: torch.Tensor, block: int = 16384) -> tuple[torch.Tensor, torch.Tensor, float]:
        """-> (centroid ids, packed residual buckets, mean |residual|) for (n, d) vectors, in blocks so the
        temporaries stay small whatever n is."""
        codes = torch.empty(len(vectors), dtype=torch.int64)
        packed = torch.empty(len(vectors), vectors.shape[1] * self.nbits // 8, dtype=torch.uint8)
        total = 0.0
        for start in range(0, len(vectors), block):
            part = vectors[start : start + block].float()
            part_codes = self.assign(self.centroids, part)
            residuals = part - self.centroids[part_codes]
            codes[start : start + block] = part_codes
            packed[start : start + block] = pack_bits(torch.bucketize(residuals, self.cutoffs, right=True), self.nbits)
            total += float(residuals.abs().sum())
        return codes, packed, total / max(vectors.numel(), 1)

    def _reconstruct(self, codes: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
        """Centroid + decoded residual, before normalisation."""
        residuals = torch.nn.functional.embedding(packed.long(), self._byte_table).view(len(packed), -1)
        return torch.nn.functional.embedding(codes.long(), self.centroids).add_(residuals)

    def decompress(self, codes: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(self._reconstruct(codes, packed), dim=-1)

    def norms(self, codes: torch.Tensor, packed: torch.Tensor, block: int = 16384) -> torch.Tensor:
        """Norms of the decompressed (centroid + residual) vectors, which search divides by instead of
        normalising each vector it scores; computed once per index, in blocks."""
        out = torch.empty(len(codes), device=self.centroids.device)
        for start in range(0, len(codes), block):
            vectors = self._reconstruct(codes[start : start + block], packed[start : start + block])
            out[start : start + block] = torch.linalg.vector_norm(vectors, dim=1)
        return out

    def residual_similarities(self, query: torch.Tensor, packed: torch.Tensor, block: int = 16384) -> torch.Tensor:
        """(tokens, lq) inner products of each stored token's decoded residual with each query token,
        without decoding: a byte covers 8/nbits dimensions and takes one of 256 values, so the query's
        products with every (byte position, value) fit a small table, and a token's product is the sum of
        its bytes' rows (one `embedding_bag`). 3x faster than decompressing and multiplying."""
        per_byte, n_bytes, lq = 8 // self.nbits, packed.shape[1], len(query)
        table = torch.bmm(  # (positions, 256, per_byte) @ (positions, per_byte, lq)
            self._byte_table.expand(n_bytes, -1, -1), query.T.reshape(n_bytes, per_byte, lq)
        ).reshape(n_bytes * 256, lq)
        shift = torch.arange(n_bytes, dtype=torch.int32, device=packed.device) * 256
        out = torch.empty(len(packed), lq, device=query.device)
        for start in range(0, len(packed), block):  # int32 rows: 3x faster than int64 here, both to build
            rows = packed[start : start + block].to(torch.int32).add_(shift)  # and for embedding_bag to read
            out[start : start + block] = torch.nn.functional.embedding_bag(rows, table, mode="sum")
        return out


class PlaidIndex(StableDocIds, Stored):
    """A PLAID index: compressed token vectors, inverted lists, staged search; stable doc ids.

    Thread safety: any number of threads may search one index while one thread adds, deletes, compacts or
    reclusters it. A search takes one immutable snapshot of the search state (doc ids, codec, lists, all
    of one version) and uses only that; writers change the index under a lock and then drop the snapshot,
    so the next search sees the change whole. Writers are serialised by that lock too."""

    def __init__(
        self,
        dimension: int,
        nbits: int = 2,
        num_centroids: int | None = None,
        seed: int = 0,
        kmeans_niter: int = 8,
        search: PlaidSearchParams | None = None,
    ) -> None:
        if nbits not in NBITS:
            raise MbretError(f"--nbits {nbits}: choose one of {', '.join(map(str, NBITS))}")
        if dimension * nbits % 8:
            raise MbretError(f"dimension {dimension} × nbits {nbits} must be a whole number of bytes")
        self.dimension, self.nbits, self.seed, self.kmeans_niter = dimension, nbits, seed, kmeans_niter
        self.num_centroids = num_centroids
        self.index_type = "plaid"
        self.search_params = search or PlaidSearchParams()
        self.codec: ResidualCodec | None = None
        self._init_ids()
        self._codes: list[np.ndarray] = []  # per chunk: centroid id per token
        self._residuals: list[np.ndarray] = []  # per chunk: packed residuals per token
        self._doclens: list[np.ndarray] = []  # per chunk: tokens per document
        self._norms: list[torch.Tensor] = []  # per chunk: decompressed vectors' norms, computed for search
        self._saved_chunks = 0  # chunks already on disk (their files are never rewritten)
        self._rewrite_all = False  # set by compact/recluster: the next save replaces the directory
        self.drift = 0.0
        self._state: dict[str, Any] | None = None
        self.device = torch.device("cpu")
        self.resident = False  # search reads one in-memory copy (always so on an accelerator)
        self._lock = threading.RLock()  # writers, and the (re)building of the search snapshot

    def to(self, device: str | torch.device) -> PlaidIndex:
        """Search on `device` (e.g. "cuda"): centroids, inverted lists and compressed vectors are copied
        there when search first needs them (so an accelerator holds the whole compressed index); building
        and saving stay on the host."""
        with self._lock:
            self.device = torch.device(device)
            self._state = None
        return self

    @property
    def params(self) -> dict[str, Any]:
        return {
            "nbits": self.nbits,
            "num_centroids": int(len(self.codec.centroids)) if self.codec else self.num_centroids,
            "seed": self.seed,
            "kmeans_niter": self.kmeans_niter,
            "drift": round(self.drift, 4),
            **{k: v for k, v in asdict(self.search_params).items() if v is not None},
        }

    @property
    def num_tokens(self) -> int:
        return int(sum(len(c) for c in self._codes))

    def bytes_per_token(self) -> float:
        code_bytes = self._codes[0].dtype.itemsize if self._codes else 4
        return code_bytes + self.dimension * self.nbits / 8

    # -- building ------------------------------------------------------------------------------------
    def sample_documents(self, num_docs: int, tokens_per_doc: float) -> np.ndarray:
        """Sorted indices of a seeded sample of whole documents, out of `num_docs` averaging `tokens_per_doc`
        token vectors, for `train` when a corpus is added in chunks (`Retriever.add` encodes just these
        first): `SAMPLE_SPREAD` times as many as hold `TRAIN_PER_CENTROID` vectors per centroid, of which
        `train` keeps a random share."""
        rng = np.random.default_rng(self.seed)
        centroids = self.num_centroids or default_num_centroids(int(tokens_per_doc * num_docs))
        wanted = SAMPLE_SPREAD * int(math.ceil(TRAIN_PER_CENTROID * centroids / max(tokens_per_doc, 1.0)))
        return np.sort(rng.choice(num_docs, size=min(num_docs, max(wanted, 1)), replace=False))

    def train(self, sample: torch.Tensor, num_tokens: int | None = None) -> None:
        """Fit centroids and residual buckets on a sample of token vectors from a corpus of `num_tokens`
        (k-means on `TRAIN_PER_CENTROID` of them per centroid, drawn at random with the index's seed)."""
        k = self.num_centroids or default_num_centroids(num_tokens or len(sample))
        self.num_centroids = k
        sample = _sample(sample, TRAIN_PER_CENTROID * k, self.seed)
        self.codec = ResidualCodec.train(sample, self.nbits, k, seed=self.seed, niter=self.kmeans_niter)

    def add(self, doc_ids: Sequence[str], embeddings: Sequence[torch.Tensor]) -> None:
        """Compress and append documents (training first if the index is new); ids must be new."""
        with self._lock:
            if len(doc_ids) != len(embeddings):
                raise MbretError(f"{len(doc_ids)} doc ids for {len(embeddings)} embeddings")
            if not doc_ids:
                return
            self._check_new_ids(doc_ids)
            tensors = [torch.as_tensor(e) for e in embeddings]
            bad = next((t.shape for t in tensors if t.ndim != 2 or t.shape[1] != self.dimension), None)
            if bad is not None:
                raise MbretError(f"expected token vectors of shape (n, {self.dimension}), got {tuple(bad)}")
            if self.codec is None:
                vectors = torch.cat([t.float() for t in tensors])
                if self.num_centroids is None:
                    self.num_centroids = default_num_centroids(len(vectors))
                self.train(vectors)
                del vectors
            assert self.codec is not None
            # compress ~65k tokens at a time, converted to float32 only then: the temporaries stay a few tens of
            # MB whatever the chunk, and documents given as float16 are never held as float32 all at once
            code_dtype = np.uint16 if len(self.codec.centroids) <= 65535 else np.int32
            codes, packed, residual_sum, count = [], [], 0.0, 0
            for group in token_groups(tensors, COMPRESS_TOKENS):
                vectors = torch.cat([t.float() for t in group])
                group_codes, group_packed, mean_residual = self.codec.compress(vectors)
                codes.append(group_codes.numpy().astype(code_dtype))
                packed.append(group_packed.numpy())
                residual_sum, count = residual_sum + mean_residual * vectors.numel(), count + vectors.numel()
            if self._codes:  # how far new documents sit from the centroids, relative to the training data
                self.drift = residual_sum / max(count, 1) / max(self.codec.avg_residual, 1e-12) - 1.0
            self._codes.append(np.concatenate(codes))
            self._residuals.append(np.concatenate(packed))
            self._doclens.append(np.array([len(e) for e in embeddings], dtype=np.int32))
            self._append_ids(doc_ids)
            self._state = None

    def add_in_chunks(self, doc_ids: Sequence[str], embeddings: Sequence[torch.Tensor], chunk_docs: int = 2048) -> None:
        """Add documents `chunk_docs` at a time, training first (if the index is new) on a seeded sample of
        whole documents (`sample_documents`): how `Retriever` builds from text, for vectors encoded before.
        Centroids are sized for the whole corpus, not its first chunk, and the float32 temporaries are one
        chunk's."""
        if len(doc_ids) != len(embeddings):
            raise MbretError(f"{len(doc_ids)} doc ids for {len(embeddings)} embeddings")
        with self._lock:  # re-entrant: `add` takes it again per chunk
            if self.codec is None and len(embeddings):
                total = sum(len(e) for e in embeddings)
                picks = self.sample_documents(len(embeddings), total / len(embeddings))
                # float16 until `train` has drawn its share: the documents drawn hold SAMPLE_SPREAD times that
                sample = torch.cat([torch.as_tensor(embeddings[i]).to(torch.float16) for i in picks])
                self.train(sample, num_tokens=total)
            for begin in range(0, len(doc_ids), chunk_docs):
                self.add(doc_ids[begin : begin + chunk_docs], embeddings[begin : begin + chunk_docs])

    def delete(self, doc_ids: Sequence[str]) -> int:
        with self._lock:
            removed = self._remove_ids(doc_ids)
            self._state = None
        return len(removed)

    # -- maintenance ---------------------------------------------------------------------------------
    def compact(self) -> int:
        """Drop deleted documents' vectors into one new chunk; doc ids keep their meaning. Returns the
        number of token vectors freed. The next save rewrites the whole directory (atomically)."""
        with self._lock:
            live_docs = np.array([d is not None for d in self.doc_ids], dtype=bool)
            doclens = np.concatenate(self._doclens) if self._doclens else np.zeros(0, np.int32)
            token_live = np.repeat(live_docs, doclens)
            before = self.num_tokens
            self._codes = [np.concatenate(self._codes)[token_live]] if self._codes else []
            self._residuals = [np.concatenate(self._residuals)[token_live]] if self._residuals else []
            self._doclens = [doclens[live_docs]] if self._doclens else []
            self._init_ids([d for d in self.doc_ids if d is not None])
            self._saved_chunks, self._rewrite_all, self._state, self._norms = 0, True, None, []
            return before - self.num_tokens

    def recluster(self, block: int = 65536) -> None:
        """Retrain centroids and buckets on the index's own (decompressed) vectors, then recompress: for
        when `drift` says added documents sit far from the old centroids. Compacts as it goes."""
        with self._lock:
            if self.codec is None:
                raise MbretError("cannot recluster an empty index")
            self.compact()
            codes, residuals = torch.from_numpy(self._codes[0].astype(np.int64)), torch.from_numpy(self._residuals[0])
            k = default_num_centroids(len(codes))
            rows = torch.randperm(len(codes), generator=torch.Generator().manual_seed(self.seed))[: 40 * k]
            old = self.codec
            self.num_centroids = k
            self.train(old.decompress(codes[rows], residuals[rows]), num_tokens=len(codes))
            new_codes, new_residuals = [], []
            for start in range(0, len(codes), block):
                vectors = old.decompress(codes[start : start + block], residuals[start : start + block])
                c, r, _ = self.codec.compress(vectors)
                new_codes.append(c.numpy().astype(self._codes[0].dtype if k <= 65535 else np.int32))
                new_residuals.append(r.numpy())
            self._codes, self._residuals = [np.concatenate(new_codes)], [np.concatenate(new_residuals)]
            self.drift, self._state, self._norms = 0.0, None, []

    # -- search --------------------------------------------------------------------------------------
    def _search_state(self) -> dict[str, Any]:
        """Derived tensors, rebuilt after add/delete: token offsets, and the (centroid, document) pairs
        twice over: centroid-major (the inverted lists) and document-major (each document's distinct
        centroids, which is all that centroid interaction needs: a max over a set ignores repeats)."""
        state = self._state
        if state is not None:
            return state
        with self._lock:
            if self._state is None:
                self._state = self._build_search_state()
            return self._state

    def _build_search_state(self) -> dict[str, Any]:
        assert self.codec is not None
        with warnings.catch_warnings():  # read-only memory maps: torch warns, and we never write to them
            warnings.simplefilter("ignore", UserWarning)
            codes = torch.from_numpy(np.concatenate(self._codes).astype(np.int64))
            residuals = [_as_words(torch.from_numpy(r)) for r in self._residuals]
        doclens = torch.from_numpy(np.concatenate(self._doclens).astype(np.int64))
        num_docs, num_centroids = len(doclens), len(self.codec.centroids)
        offsets = torch.zeros(num_docs + 1, dtype=torch.int64)
        offsets[1:] = torch.cumsum(doclens, 0)
        doc_of_token = torch.repeat_interleave(torch.arange(num_docs), doclens)
        pairs = torch.unique(doc_of_token * num_centroids + codes)  # sorted: document-major
        pair_docs, pair_codes = pairs // num_centroids, pairs % num_centroids
        doc_code_offsets = torch.zeros(num_docs + 1, dtype=torch.int64)
        doc_code_offsets[1:] = torch.cumsum(torch.bincount(pair_docs, minlength=num_docs), 0)
        live = torch.tensor([d is not None for d in self.doc_ids], dtype=torch.bool)
        keep = live[pair_docs]
        by_centroid = torch.argsort(pair_codes[keep], stable=True)
        ivf_docs = pair_docs[keep][by_centroid]
        ivf_offsets = torch.zeros(num_centroids + 1, dtype=torch.int64)
        ivf_offsets[1:] = torch.cumsum(torch.bincount(pair_codes[keep], minlength=num_centroids), 0)
        chunk_starts = torch.tensor([0] + list(np.cumsum([len(c) for c in self._codes])), dtype=torch.int64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            for c in range(len(self._norms), len(self._codes)):  # chunks added since: a delete changes none
                self._norms.append(
                    self.codec.norms(torch.from_numpy(self._codes[c]), torch.from_numpy(self._residuals[c]))
                )
        norms = torch.cat(self._norms) if self._norms else torch.zeros(0)
        state: dict[str, Any] = {
            "doc_ids": tuple(self.doc_ids),
            "codes": codes,
            "norms": norms,
            "residuals": residuals,
            "chunk_starts": chunk_starts,
            "offsets": offsets,
            "doclens": doclens,
            "doc_codes": pair_codes.to(torch.int32),  # half the memory; index_select takes int32 as is
            "doc_code_offsets": doc_code_offsets,
            "ivf_docs": ivf_docs,
            "ivf_offsets": ivf_offsets,
            "centroids": self.codec.centroids,
        }
        if self.resident or self.device.type != "cpu":  # one copy in (accelerator) memory, residuals in one block
            state = {k: v.to(self.device) for k, v in state.items() if k not in ("residuals", "doc_ids")} | {
                "doc_ids": state["doc_ids"],
                "residuals": [torch.cat(residuals).to(self.device)]
                if len(residuals) > 1
                else [residuals[0].to(self.device)],
                "chunk_starts": torch.tensor([0, len(codes)], device=self.device),
            }
            state["codec"] = ResidualCodec(
                self.codec.centroids, self.codec.cutoffs, self.codec.weights, self.nbits, self.codec.avg_residual
            ).to(self.device)
        else:
            state["codec"] = self.codec
        return state

    def _residual_rows(self, rows: torch.Tensor, state: dict[str, Any]) -> torch.Tensor:
        """Packed residuals of the given token rows (ascending), read chunk by chunk from the memory maps."""
        chunks, starts = state["residuals"], state["chunk_starts"]
        if len(chunks) == 1:
            parts = [chunks[0].index_select(0, rows)]
        else:
            bounds = torch.searchsorted(rows, starts).tolist()  # one chunk only on an accelerator
            parts = [
                chunks[c].index_select(0, rows[bounds[c] : bounds[c + 1]] - starts[c])
                for c in range(len(chunks))
                if bounds[c + 1] > bounds[c]
            ]
        if not parts:
            return torch.empty(0, self.dimension * self.nbits // 8, dtype=torch.uint8, device=rows.device)
        out = torch.cat(parts) if len(parts) > 1 else parts[0]
        return out.view(torch.uint8).view(len(rows), -1)

    def _centroid_interaction(self, scores_t: torch.Tensor, docs: torch.Tensor, state: dict[str, Any]) -> torch.Tensor:
        """Approximate MaxSim of one query over docs from centroid scores alone, read through each
        document's distinct centroids: their rows of scores_t (K, lq), max-reduced per document
        (`max_per_segment`). A document without tokens scores 0."""
        starts = state["doc_code_offsets"].index_select(0, docs)
        counts = state["doc_code_offsets"].index_select(0, docs + 1) - starts
        codes = state["doc_codes"].index_select(0, _ranges(starts, starts + counts))
        return max_per_segment(scores_t.index_select(0, codes), counts).sum(dim=1)

    def search(
        self,
        queries: Sequence[torch.Tensor],
        k: int = 10,
        params: PlaidSearchParams | None = None,
        workers: int | None = None,
    ) -> list[list[tuple[str, float]]]:
        """Top-k (doc id, MaxSim score over decompressed vectors) per query, best first.

        On CPU, queries are searched `workers` at a time (default: torch's thread count), each on one
        thread: a query's stages are many small tensor operations that split poorly across cores, so
        query-level parallelism ran 1.5x faster on 2 cores than intra-op threads (`map_on_cores`). An
        accelerator takes the queries one by one. Every query of one call searches the same snapshot.
        """
        if k <= 0:
            raise MbretError(f"-k {k}: must be a positive integer")
        if self.codec is None or not len(self):
            return [[] for _ in queries]
        p = (params or self.search_params).resolved(k)
        state = self._search_state()
        if state["centroids"].device.type != "cpu":
            return [self._search_one(query, k, p, state) for query in queries]
        return map_on_cores(lambda query: self._search_one(query, k, p, state), queries, workers)

    @torch.inference_mode()
    def _search_one(
        self, query: torch.Tensor, k: int, p: PlaidSearchParams, state: dict[str, Any]
    ) -> list[tuple[str, float]]:
        """PLAID's four stages for one query (`p` resolved for k)."""
        centroids, ivf_docs, ivf_offsets = state["centroids"], state["ivf_docs"], state["ivf_offsets"]
        device = centroids.device
        num_docs = len(state["doclens"])
        q = query.to(device).float()
        scores_t = centroids @ q.T  # (K, lq): rows are what stages 2-4 read
        scores = scores_t.T
        lq = len(q)
        # 1. candidates: documents in the top n_ivf_probe centroids of any query token
        probe = torch.unique(scores.topk(min(p.n_ivf_probe, scores.shape[1]), dim=1).indices)
        is_candidate = torch.zeros(num_docs, dtype=torch.bool, device=device)
        is_candidate[ivf_docs.index_select(0, _ranges(ivf_offsets[probe], ivf_offsets[probe + 1]))] = True
        if not bool(is_candidate.any()):
            return []
        # 2. centroid interaction with pruning: only centroids scoring >= threshold for some query
        #    token count, read straight from their inverted lists (a scatter-max per document)
        kept = torch.nonzero(scores.amax(dim=0) >= p.centroid_score_threshold).flatten()
        pair_rows = _ranges(ivf_offsets[kept], ivf_offsets[kept + 1])
        pair_docs = ivf_docs.index_select(0, pair_rows)  # index_select: 2x faster than x[rows] on CPU
        pair_centroids = torch.repeat_interleave(kept, ivf_offsets[kept + 1] - ivf_offsets[kept])
        use = is_candidate.index_select(0, pair_docs)
        pair_docs, pair_centroids = pair_docs[use], pair_centroids[use]
        #    (the (pairs, lq) index is an expanded view: 5x faster than building flat int64 targets)
        best = torch.zeros(num_docs, lq, device=device)
        values = scores_t.index_select(0, pair_centroids)
        best.scatter_reduce_(0, pair_docs[:, None].expand_as(values), values, "amax")
        approx = best.sum(dim=1).masked_fill_(~is_candidate, float("-inf"))
        count = min(p.n_candidates, int(is_candidate.sum()))
        candidates = approx.topk(count).indices
        # 3. centroid interaction without pruning, over every centroid of the survivors (nothing to choose
        #    when stage 4 takes them all)
        n_full = p.full_scores(k, lq)
        if n_full < len(candidates):
            approx = self._centroid_interaction(scores_t, candidates, state)
            candidates = candidates[approx.topk(n_full).indices]
        # 4. exact MaxSim on decompressed vectors
        exact = self._exact_scores(q, scores_t, candidates, state)
        top = exact.topk(min(k, len(candidates)))
        ranked, values = candidates[top.indices].tolist(), top.values.tolist()
        return [(state["doc_ids"][d], s) for d, s in zip(ranked, values)]

    def _exact_scores(
        self, query: torch.Tensor, scores_t: torch.Tensor, docs: torch.Tensor, state: dict[str, Any]
    ) -> torch.Tensor:
        """MaxSim over decompressed vectors, without decompressing: a token's similarity with each query
        token is (centroid score + residual product) / norm of the decompressed vector; then a per-document
        max (`max_per_segment`). Tokens are read in storage order, so the memory maps are read forwards.
        A document without tokens scores 0."""
        order = torch.argsort(docs)
        docs = docs[order]
        lengths = state["doclens"].index_select(0, docs)
        first = state["offsets"].index_select(0, docs)
        rows = _ranges(first, first + lengths)
        codec = state["codec"]
        sims = scores_t.index_select(0, state["codes"].index_select(0, rows))
        sims += codec.residual_similarities(query, self._residual_rows(rows, state))
        sims /= state["norms"].index_select(0, rows).clamp_min(1e-12)[:, None]
        scores = max_per_segment(sims, lengths).sum(dim=1)
        out = torch.empty_like(scores)
        out[order] = scores
        return out

    # -- persistence ---------------------------------------------------------------------------------
    def save(self, path: str | Path, manifest: Manifest, replace: bool = False) -> None:
        """Codec arrays and one set of .npy files per added chunk; chunks already on disk are kept."""
        if self.codec is None:
            raise MbretError("cannot save an empty index: add documents first")
        manifest.kind, manifest.index_type = "plaid", "plaid"
        manifest.dimension, manifest.num_docs, manifest.index_params = self.dimension, len(self), self.params
        codec = self.codec
        replace = replace or self._rewrite_all
        fresh = replace or not (Path(path) / "manifest.json").is_file()
        first_new = 0 if fresh else self._saved_chunks

        def write_files(directory: Path, gen: int) -> dict[str, str]:
            names: dict[str, str] = {}
            arrays = {
                "centroids": codec.centroids.numpy(),
                "bucket_cutoffs": codec.cutoffs.numpy(),
                "bucket_weights": codec.weights.numpy(),
            }
            for role, array in arrays.items():
                names[role] = f"{role}.npy"
                if fresh or not (directory / names[role]).is_file():
                    _save_npy(directory / names[role], array)
            for c in range(len(self._codes)):
                for role, chunks in (
                    ("codes", self._codes),
                    ("residuals", self._residuals),
                    ("doclens", self._doclens),
                ):
                    names[f"{role}_{c}"] = f"{role}-{c:05d}.npy"
                    if c >= first_new:
                        _save_npy(directory / names[f"{role}_{c}"], chunks[c])
            names["doc_ids"] = f"doc_ids-{gen:06d}.json"
            with atomic_file(directory / names["doc_ids"]) as fh:
                json.dump({"doc_ids": self.doc_ids, "avg_residual": codec.avg_residual}, fh)
            return names

        self._origin = save_generation(path, manifest, write_files, replace=replace, origin=self._origin)
        self._saved_chunks, self._rewrite_all = len(self._codes), False

    @classmethod
    def load(cls, path: str | Path, mmap: bool = True) -> tuple[PlaidIndex, Manifest]:
        """Load an index; codes and residuals are memory-mapped unless `mmap=False`."""
        path = Path(path)
        manifest = read_manifest(path)
        if manifest.kind != "plaid":
            raise IndexFormatError(f"{path}: a {manifest.kind} index, not a PLAID one")
        files = {role: path / name for role, name in manifest.files.items()}
        p = manifest.index_params
        self = cls(
            manifest.dimension,
            nbits=int(p["nbits"]),
            num_centroids=p.get("num_centroids"),
            seed=int(p.get("seed", 0)),
            kmeans_niter=int(p.get("kmeans_niter", 8)),
            search=PlaidSearchParams(**{f: p[f] for f in PlaidSearchParams.__dataclass_fields__ if f in p}),
        )
        self.drift = float(p.get("drift", 0.0))
        try:
            meta = json.loads(files["doc_ids"].read_text(encoding="utf-8"))
            doc_ids, avg_residual = meta["doc_ids"], float(meta["avg_residual"])
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError):
            raise IndexFormatError(f"{files['doc_ids']}: truncated or corrupt doc id file") from None
        mode = "r" if mmap else None
        self.resident = not mmap
        self.codec = ResidualCodec(
            torch.from_numpy(_load_npy(files["centroids"], None)),
            torch.from_numpy(_load_npy(files["bucket_cutoffs"], None)),
            torch.from_numpy(_load_npy(files["bucket_weights"], None)),
            self.nbits,
            avg_residual,
        )
        n_chunks = sum(1 for role in files if role.startswith("codes_"))
        for c in range(n_chunks):
            codes = _load_npy(files[f"codes_{c}"], mode)
            residuals = _load_npy(files[f"residuals_{c}"], mode)
            doclens = _load_npy(files[f"doclens_{c}"], None)
            if len(codes) != len(residuals) or int(doclens.sum()) != len(codes):
                raise IndexFormatError(
                    f"{files[f'codes_{c}']}: chunk {c} holds {len(codes)} codes, "
                    f"{len(residuals)} residuals and {int(doclens.sum())} tokens by its doclens"
                )
            if residuals.ndim != 2 or residuals.shape[1] != self.dimension * self.nbits // 8:
                raise IndexFormatError(
                    f"{files[f'residuals_{c}']}: shape {residuals.shape} does not fit "
                    f"{self.dimension}-d at {self.nbits} bits"
                )
            self._codes.append(codes)
            self._residuals.append(residuals)
            self._doclens.append(doclens)
        self._saved_chunks = n_chunks
        total = sum(len(d) for d in self._doclens)
        if total != len(doc_ids):
            raise IndexFormatError(f"{path}: {len(doc_ids)} doc ids but {total} documents in the chunks")
        self._init_ids(doc_ids)
        if len(self) != manifest.num_docs:
            raise IndexFormatError(f"{path}: manifest says {manifest.num_docs} docs, id file has {len(self)}")
        self._origin = origin_of(manifest, path)
        return self, manifest


def _ranges(starts: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
    """Concatenation of arange(start, end) for each pair, without a Python loop."""
    lengths = ends - starts
    total = int(lengths.sum())
    offsets = torch.repeat_interleave(starts - torch.cumsum(lengths, 0) + lengths, lengths)
    return offsets + torch.arange(total, device=starts.device)


def _as_words(packed: torch.Tensor) -> torch.Tensor:
    """View (n, b) packed bytes as (n, b/8) int64 words when b allows: a row gather then copies a few
    words instead of b single bytes."""
    if packed.ndim == 2 and packed.shape[1] % 8 == 0 and packed.is_contiguous():
        return packed.view(torch.int64)
    return packed


def _sample(vectors: torch.Tensor, size: int, seed: int) -> torch.Tensor:
    if len(vectors) <= size:
        return vectors
    generator = torch.Generator().manual_seed(seed)
    return vectors[torch.randperm(len(vectors), generator=generator)[:size]]


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_file(path, "wb") as fh:
        np.save(fh, np.ascontiguousarray(array), allow_pickle=False)


def _load_npy(path: Path, mmap_mode: str | None) -> np.ndarray:
    try:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise IndexFormatError(f"{path}: truncated or corrupt array file ({exc})") from None
