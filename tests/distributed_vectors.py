"""Build a PLAID index from precomputed token vectors, in one process or as one rank of a torchrun job:
`python tests/distributed_vectors.py CORPUS OUT` (under torchrun: `-m torch.distributed.run ... this file`).

The encoder is a stand-in that returns each document's vectors from a seeded generator keyed by its
text, so a 1-process and a 2-process build are fed exactly the same vectors whatever batches they form:
the comparison checks the sharded build itself, apart from any model's numerics."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mbret.distributed import join, leave
from mbret.retrieval.colbert import ColBERTEncoder
from mbret.retrieval.distributed import build_sharded

DIM = 32


def vectors_of(text: str) -> torch.Tensor:
    seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")
    rng = np.random.default_rng(seed)
    tokens = 4 + seed % 29
    vectors = rng.standard_normal((tokens, DIM)).astype(np.float32)
    return torch.from_numpy(vectors / np.linalg.norm(vectors, axis=1, keepdims=True))


@dataclass
class VectorEncoder(ColBERTEncoder):
    """A ColBERT encoder whose documents' vectors are fixed by their text."""

    @property
    def dimension(self) -> int:
        return DIM

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def prompts(self) -> dict[str, str]:
        return {}

    @property
    def query_expansion(self) -> bool:
        return False

    @property
    def query_length(self) -> int:
        return 32

    @property
    def document_length(self) -> int:
        return 300

    def token_lengths(self, documents: Sequence[str]) -> np.ndarray:
        return np.array([len(vectors_of(d)) for d in documents], dtype=np.int64)

    def encode_corpus(
        self,
        documents: Sequence[str],
        batch_size: int = 32,
        show_progress: bool = True,
        max_tokens: int | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> list[torch.Tensor]:
        return [vectors_of(d).to(dtype) for d in documents]


def main(corpus: str, out: str) -> None:
    world = join("cpu")
    try:
        build_sharded(
            corpus,
            out,
            world,
            VectorEncoder(model=None, name="vectors"),
            index_type="plaid",
            index_params={"nbits": 2, "seed": 7},
            show_progress=False,
        )
    finally:
        leave(world)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
