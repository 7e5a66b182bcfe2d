"""PLAID's codec (ColBERTv2's residual compression): k-means centroids plus `nbits`-per-dimension residuals.

Training: k-means (FAISS, seeded, spherical) on a sample of token vectors gives the centroids; the residuals'
quantiles give the bucket cut-offs, and each bucket decodes to the mean of its training residuals. A token
is stored as its nearest centroid's id plus its residual's buckets, packed `8 / nbits` to a byte.

Training runs on the process's threads, or on `$MBRET_KMEANS_THREADS` where set. The thread count changes
BLAS's float sums and so, by a hair, the centroids: two builds give byte-identical codecs from the same
sample only at the same k-means thread count (a torchrun build trains on its node's cores, see
`mbret.distributed.node_threads`).
"""

from __future__ import annotations

import math
import os

import torch

from mbret.errors import MbretError
from mbret.hardware import cpu_threads

NBITS = (1, 2, 4, 8)
QUANTILE_SAMPLE = 2_000_000  # residual values the bucket cut-offs are estimated from
TRAIN_PER_CENTROID = 40  # k-means sample: token vectors per centroid
KMEANS_THREADS_ENV = "MBRET_KMEANS_THREADS"


def kmeans_threads() -> int | None:
    """`$MBRET_KMEANS_THREADS` as a thread count, or None (keep the process's)."""
    value = os.environ.get(KMEANS_THREADS_ENV, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise MbretError(f"${KMEANS_THREADS_ENV}={value!r}: expected a positive number of threads")
    return int(value)


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
            gpu=1 if _faiss_gpus(faiss) else False,  # faiss-gpu (the `gpu` extra): k-means on the first GPU
            verbose=False,
            max_points_per_centroid=256,
            min_points_per_centroid=16,  # only sets when faiss warns; the sample aims at ~40 (35 after skiplist)
        )
        with cpu_threads(kmeans_threads()):
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


def _faiss_gpus(faiss: object) -> int:
    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get is not None else 0


def sample_rows(vectors: torch.Tensor, size: int, seed: int) -> torch.Tensor:
    """At most `size` rows of `vectors`, drawn at random with `seed` (all of them when they are fewer)."""
    if len(vectors) <= size:
        return vectors
    generator = torch.Generator().manual_seed(seed)
    return vectors[torch.randperm(len(vectors), generator=generator)[:size]]
