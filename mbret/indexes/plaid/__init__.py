"""PLAID (Santhanam et al., 2022) in PyTorch, one module per part of the engine:

- `codec`: k-means centroids and the residual codec (ColBERTv2's compression, its residuals product-quantized);
- `ivf`: chunks with their stored inverted lists, and the immutable search state;
- `search`: the four search stages, as functions of that state (the paper's section 4);
- `storage`: files, manifest roles and generations;
- `index`: `PlaidIndex`, which ties them together behind the `Index` interface.
"""

from mbret.indexes.plaid.codec import (
    NBITS,
    QUANTILE_SAMPLE,
    QUANTIZERS,
    TRAIN_PER_CENTROID,
    ResidualCodec,
    default_num_centroids,
    pack_bits,
    unpack_bits,
)
from mbret.indexes.plaid.index import COMPRESS_TOKENS, SAMPLE_SPREAD, UNTRAINED_TOKENS, PlaidIndex
from mbret.indexes.plaid.ivf import Chunk, SearchState
from mbret.indexes.plaid.search import (
    FULL_SCORE_BUDGET,
    PLAID_SETTINGS,
    PlaidSearchParams,  # deprecated: mbret.types.SearchParams
    full_scores,
    resolve_budgets,
)

__all__ = [
    "COMPRESS_TOKENS",
    "FULL_SCORE_BUDGET",
    "NBITS",
    "PLAID_SETTINGS",
    "QUANTILE_SAMPLE",
    "QUANTIZERS",
    "SAMPLE_SPREAD",
    "TRAIN_PER_CENTROID",
    "UNTRAINED_TOKENS",
    "Chunk",
    "PlaidIndex",
    "PlaidSearchParams",
    "ResidualCodec",
    "SearchState",
    "default_num_centroids",
    "full_scores",
    "pack_bits",
    "resolve_budgets",
    "unpack_bits",
]
