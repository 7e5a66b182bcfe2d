"""PLAID's codec: k-means centroids plus `nbits` per dimension of residual, ColBERTv2's residual compression
with its residuals product-quantized as FAISS's IVFPQ does.

Training: k-means (FAISS, seeded, spherical) on a sample of token vectors gives the centroids. A token is
stored as its nearest centroid's id plus its residual in `dim * nbits / 8` bytes, each byte covering
`8 / nbits` consecutive dimensions. What a byte decodes to is the codec's `quantizer`:
- "pq" (the default): each byte position has its own codebook of 256 residual pieces, trained by k-means
  on that position's dimensions (`faiss.ProductQuantizer`, 8 bits per sub-vector). On SciFact's token
  vectors it leaves a third of the scalar buckets' squared error at the same bytes (docs/benchmarks.md,
  "PLAID's residual quantizer").
- "scalar": ColBERTv2's buckets. The residuals' quantiles give `2**nbits - 1` cut-offs shared by every
  dimension, and each bucket decodes to the mean of its training residuals. Indexes written before "pq"
  hold these and keep them.
Both decode through one table per byte position (`(bytes, 256, dims per byte)`), so search scores a token's
residual as a sum of table rows whichever quantizer made it.

Training runs on the process's threads, or on `$MBRET_KMEANS_THREADS` where set. The thread count changes
BLAS's float sums and so, by a hair, the centroids: two builds give byte-identical codecs from the same
sample only at the same k-means thread count (a torchrun build trains on its node's cores, see
`mbret.distributed.node_threads`).
"""

from __future__ import annotations

import math
import os
import threading

import torch

from mbret.errors import MbretError, ParameterError
from mbret.hardware import cpu_threads

NBITS = (1, 2, 4, 8)
QUANTIZERS = ("pq", "scalar")  # how a residual byte decodes (module docstring); the first is the default
PQ_TRAIN_ROWS = 65536  # residuals each byte position's codebook is trained on (FAISS's 256 per codeword)
QUANTILE_SAMPLE = 2_000_000  # residual values the bucket cut-offs are estimated from
TRAIN_PER_CENTROID = 40  # k-means sample: token vectors per centroid
KMEANS_THREADS_ENV = "MBRET_KMEANS_THREADS"
_BLAS_SETTING = threading.Lock()


def check_quantizer(quantizer: str) -> None:
    """Refuse a residual quantizer that is not one of `QUANTIZERS`, naming the parameter."""
    if quantizer not in QUANTIZERS:
        raise ParameterError("residual_quantizer", f"{quantizer!r}: choose one of {', '.join(QUANTIZERS)}")


def kmeans_threads() -> int | None:
    """`$MBRET_KMEANS_THREADS` as a thread count, or None (keep the process's)."""
    value = os.environ.get(KMEANS_THREADS_ENV, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise MbretError(f"${KMEANS_THREADS_ENV}={value!r}: expected a positive number of threads")
    return int(value)


def default_num_centroids(num_tokens: int) -> int:
    """A power of two near 4·√tokens, at least 16. ColBERT uses 16·√tokens; a quarter trains faster at the
    same quality on the corpora in docs/benchmarks.md."""
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
    """Centroids plus `nbits`-per-dimension residuals; compresses and restores token vectors.

    `weights` says the quantizer: `(2**nbits,)` bucket values ("scalar", with `cutoffs` between them) or
    `(bytes, 256, dims per byte)` per-byte codebooks ("pq", `cutoffs` empty)."""

    def __init__(
        self, centroids: torch.Tensor, cutoffs: torch.Tensor, weights: torch.Tensor, nbits: int, avg_residual: float
    ) -> None:
        self.centroids, self.cutoffs, self.weights = centroids.float(), cutoffs.float(), weights.float()
        self.nbits, self.avg_residual = nbits, avg_residual
        dim, per_byte = self.centroids.shape[1], 8 // nbits
        n_bytes = dim // per_byte
        if self.weights.dim() == 3:
            if tuple(self.weights.shape) != (n_bytes, 256, per_byte):
                raise MbretError(
                    f"residual codebooks of shape {tuple(self.weights.shape)} do not fit {dim} dimensions at "
                    f"nbits {nbits}: expected {(n_bytes, 256, per_byte)}"
                )
            tables = self.weights
        else:  # byte -> the bucket values of the dimensions it packs, the same at every position
            every_byte = torch.arange(256, dtype=torch.uint8)[:, None]
            tables = self.weights[unpack_bits(every_byte, nbits).long()].expand(n_bytes, 256, per_byte)
        # (bytes * 256, dims per byte): row 256 * position + byte value is what that byte decodes to there
        self._tables = tables.reshape(n_bytes * 256, per_byte).contiguous()
        self._shift = torch.arange(n_bytes, dtype=torch.int32, device=self._tables.device) * 256
        self._faiss_pq: object | None = None

    @property
    def quantizer(self) -> str:
        """What the residual bytes decode through, "pq" or "scalar" (module docstring)."""
        return "pq" if self.weights.dim() == 3 else "scalar"

    def fingerprint(self) -> str:
        """A digest of the centroids and buckets: parts compressed apart must share it to join one index."""
        import hashlib

        digest = hashlib.sha256()
        for tensor in (self.centroids, self.cutoffs, self.weights):
            digest.update(tensor.detach().cpu().float().contiguous().numpy().tobytes())
        return digest.hexdigest()

    def to(self, device: torch.device) -> ResidualCodec:
        self.centroids, self.cutoffs, self.weights = (
            t.to(device) for t in (self.centroids, self.cutoffs, self.weights)
        )
        self._tables, self._shift = self._tables.to(device), self._shift.to(device)
        return self

    @classmethod
    def train(
        cls,
        sample: torch.Tensor,
        nbits: int,
        num_centroids: int,
        seed: int = 0,
        niter: int = 8,
        quantizer: str = QUANTIZERS[0],
        centroids: torch.Tensor | None = None,
    ) -> ResidualCodec:
        """Fit on `sample`: k-means centroids (or the `centroids` given, kept as they are), then the
        residual quantizer on the sample's residuals from them."""
        if nbits not in NBITS:
            raise ParameterError("nbits", f"{nbits}: choose one of {', '.join(map(str, NBITS))}")
        check_quantizer(quantizer)
        sample = sample.float().contiguous()
        with cpu_threads(kmeans_threads()):
            if centroids is None:
                centroids = kmeans_centroids(sample, min(num_centroids, len(sample)), seed, niter)
            centroids = centroids.float().contiguous()
            codes = cls.assign(centroids, sample)
            if quantizer == "pq":
                cutoffs, weights = torch.zeros(0), train_codebooks(sample, centroids, codes, nbits, seed)
            else:
                cutoffs, weights = train_buckets(sample, centroids, codes, nbits, seed)
        abs_sum = sum(
            float((sample[b : b + 65536] - centroids[codes[b : b + 65536]]).abs().sum())
            for b in range(0, len(sample), 65536)
        )
        return cls(centroids, cutoffs, weights, nbits, abs_sum / max(sample.numel(), 1))

    @staticmethod
    def assign(centroids: torch.Tensor, vectors: torch.Tensor, block: int = 4096) -> torch.Tensor:
        """Nearest centroid (max inner product) per vector. On CPU through `faiss.knn`, which keeps each
        row's best as it scores, on FAISS's OpenMP threads (`cpu_threads` sets them with torch's), instead
        of writing a (block, centroids) product and reading it back for an argmax (docs/benchmarks.md,
        "PLAID kernels"); elsewhere in torch, in blocks to bound memory. A vector with no nearest centroid
        (NaN) is an error, not a code."""
        if centroids.device.type == "cpu" and vectors.device.type == "cpu" and len(vectors):
            import faiss
            import numpy as np

            rows = np.ascontiguousarray(vectors.detach().float().numpy())
            points = np.ascontiguousarray(centroids.float().numpy())
            _, nearest = faiss.knn(rows, points, 1, metric=faiss.METRIC_INNER_PRODUCT)
            if len(nearest) and nearest.min() < 0:
                bad = int(np.argmin(nearest[:, 0]))
                raise MbretError(f"token vector {bad} has no nearest centroid (NaN or infinite values)")
            return torch.from_numpy(nearest[:, 0].astype(np.int64))
        out = torch.empty(len(vectors), dtype=torch.int64, device=vectors.device)
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
            packed[start : start + block] = self.encode_residuals(residuals)
            total += float(residuals.abs().sum())
        return codes, packed, total / max(vectors.numel(), 1)

    def encode_residuals(self, residuals: torch.Tensor) -> torch.Tensor:
        """(n, d) float residuals -> (n, d * nbits / 8) uint8: each byte position's nearest codeword ("pq",
        FAISS's encoder) or the dimensions' buckets, packed ("scalar")."""
        if self.quantizer == "scalar":
            return pack_bits(torch.bucketize(residuals, self.cutoffs, right=True), self.nbits)
        if self.nbits == 8:  # one dimension per byte: a binary search among the sorted codewords' midpoints
            # (FAISS's encoder has no fast path for 1-d sub-vectors, so it is far slower)
            words = self.weights[:, :, 0].to(residuals.device).sort(dim=1)
            midpoints = (words.values[:, 1:] + words.values[:, :-1]) / 2
            nearest = torch.searchsorted(midpoints, residuals.float().T.contiguous())
            return words.indices.gather(1, nearest).T.to(torch.uint8)
        pq = self._faiss_pq
        if pq is None:
            import faiss

            n_bytes = self.weights.shape[0]
            pq = faiss.ProductQuantizer(self.centroids.shape[1], n_bytes, 8)
            faiss.copy_array_to_vector(self.weights.cpu().numpy().ravel(), pq.centroids)
            self._faiss_pq = pq
        rows = residuals.detach().float().cpu().contiguous().numpy()
        return torch.from_numpy(pq.compute_codes(rows)).to(residuals.device)  # type: ignore[attr-defined]

    def _reconstruct(self, codes: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
        """Centroid + decoded residual, before normalisation."""
        rows = packed.to(torch.int32).add_(self._shift)
        residuals = torch.nn.functional.embedding(rows, self._tables).view(len(packed), -1)
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
        its bytes' rows (one `embedding_bag`): faster than decompressing and multiplying."""
        per_byte, n_bytes, lq = 8 // self.nbits, packed.shape[1], len(query)
        if not lq:  # a query without tokens: nothing to look up (embedding_bag refuses an empty table)
            return torch.zeros(len(packed), 0, device=query.device)
        table = torch.bmm(  # (positions, 256, per_byte) @ (positions, per_byte, lq)
            self._tables.view(n_bytes, 256, per_byte), query.T.reshape(n_bytes, per_byte, lq)
        ).reshape(n_bytes * 256, lq)
        out = torch.empty(len(packed), lq, device=query.device)
        for start in range(0, len(packed), block):  # int32 rows: faster than int64, both to build
            rows = packed[start : start + block].to(torch.int32).add_(self._shift)  # and for embedding_bag
            out[start : start + block] = torch.nn.functional.embedding_bag(rows, table, mode="sum")
        return out


def kmeans_centroids(sample: torch.Tensor, num_centroids: int, seed: int, niter: int) -> torch.Tensor:
    """Spherical k-means (FAISS, seeded) on float32 `sample`; on the first GPU where faiss-gpu has one."""
    import faiss

    kmeans = faiss.Kmeans(
        sample.shape[1],
        num_centroids,
        niter=niter,
        seed=seed,
        spherical=True,
        gpu=1 if _faiss_gpus(faiss) else False,  # faiss-gpu (the `gpu` extra): k-means on the first GPU
        verbose=False,
        max_points_per_centroid=256,
        min_points_per_centroid=16,  # only sets when faiss warns; the sample aims at ~40 (35 after skiplist)
    )
    kmeans.train(sample.numpy())
    return torch.from_numpy(kmeans.centroids.copy())


def train_buckets(
    sample: torch.Tensor, centroids: torch.Tensor, codes: torch.Tensor, nbits: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """ColBERTv2's scalar buckets: cut-offs at the residual values' quantiles, shared by every dimension;
    each bucket decodes to the mean of the values that fall in it (Lloyd's condition: the least squared
    error for these cut-offs; ColBERTv2 takes the bucket's middle quantile, which errs a little more)."""
    levels, dim = 1 << nbits, sample.shape[1]
    if sample.numel() > QUANTILE_SAMPLE:  # quantiles of a fixed, seeded subsample of residual values:
        # the same cut-offs to 3 decimals, without holding every residual or a permutation of them
        picks = torch.randint(sample.numel(), (QUANTILE_SAMPLE,), generator=torch.Generator().manual_seed(seed))
        rows, cols = picks // dim, picks % dim
        values = sample[rows, cols] - centroids[codes[rows], cols]
    else:
        values = (sample - centroids[codes]).flatten()
    cutoffs = torch.quantile(values, torch.arange(1, levels) / levels)
    buckets = torch.bucketize(values, cutoffs, right=True)
    counts = torch.bincount(buckets, minlength=levels).clamp_min(1)
    return cutoffs, torch.zeros(levels).index_add_(0, buckets, values) / counts


def train_codebooks(
    sample: torch.Tensor, centroids: torch.Tensor, codes: torch.Tensor, nbits: int, seed: int
) -> torch.Tensor:
    """Per-byte residual codebooks, (bytes, 256, dims per byte): `faiss.ProductQuantizer` with one 8-bit
    sub-quantizer per byte of the stored residual, trained on the residuals of at most `PQ_TRAIN_ROWS`
    seeded rows of the sample (a sample under 256 rows is repeated to give k-means its 256 points)."""
    import faiss
    import numpy as np

    dim, per_byte = sample.shape[1], 8 // nbits
    rows = sample_rows(torch.arange(len(sample)), PQ_TRAIN_ROWS, seed)
    residuals = (sample[rows] - centroids[codes[rows]]).numpy().astype(np.float32)
    if len(residuals) < 256:
        residuals = np.resize(residuals, (256, dim))
    pq = faiss.ProductQuantizer(dim, dim // per_byte, 8)
    pq.cp.seed = seed
    pq.cp.min_points_per_centroid = 1  # small samples are expected (tests, tiny corpora): no warning
    # FAISS finds nearest codewords without BLAS below `distance_compute_blas_threshold` rows (128,000 in
    # 1.15), a path far slower than BLAS on 2-4 dimensions: train on the BLAS path
    with _BLAS_SETTING:  # a process-wide FAISS setting: one trainer changes and restores it at a time
        threshold = faiss.cvar.distance_compute_blas_threshold
        faiss.cvar.distance_compute_blas_threshold = 20
        try:
            pq.train(np.ascontiguousarray(residuals))
        finally:
            faiss.cvar.distance_compute_blas_threshold = threshold
    return torch.from_numpy(faiss.vector_to_array(pq.centroids).reshape(dim // per_byte, 256, per_byte).copy())


def _faiss_gpus(faiss: object) -> int:
    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get is not None else 0


def sample_rows(vectors: torch.Tensor, size: int, seed: int) -> torch.Tensor:
    """At most `size` rows of `vectors`, drawn at random with `seed` (all of them when they are fewer)."""
    if len(vectors) <= size:
        return vectors
    generator = torch.Generator().manual_seed(seed)
    return vectors[torch.randperm(len(vectors), generator=generator)[:size]]
