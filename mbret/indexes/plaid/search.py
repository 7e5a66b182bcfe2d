"""PLAID's search (Santhanam et al., 2022, section 4), one stage per function, each a function of one
immutable `SearchState`:

1. `probe_candidates`: the documents in the top `n_ivf_probe` centroids of each query token;
2. `pruned_interaction`: approximate MaxSim from centroid scores alone, counting only the centroids that
   score at least `centroid_score_threshold` for some query token; keeps `n_candidates`;
3. `centroid_interaction` without pruning over those; keeps `n_full_scores` (by default sized per query:
   more for short queries, whose centroid-only scores pick worse);
4. `exact_scores`: MaxSim over the decompressed vectors, computed without decompressing.

A query's working memory is O(candidates x query tokens) plus its (centroids x query tokens) score table:
stages 2-4 read candidate documents' own pair lists and tokens, never a buffer over all documents.
"""

from __future__ import annotations

import threading
import warnings

import torch

from mbret.indexes.kernels import max_per_segment, ranges, segment_blocks
from mbret.indexes.plaid.ivf import SearchState
from mbret.types import SearchParams

# Stages 2-4 gather rows (candidate pairs, or tokens) in blocks of at most this many (row x query token)
# floats, so those temporaries stay bounded whatever the query's length and the candidates. Larger blocks
# are slower on CPU, not faster: a temporary past glibc's largest heap chunk (32 MB) is mapped fresh from
# the OS each time, and its page faults then cost more than the gather that fills it (docs/benchmarks.md,
# "PLAID kernels")
BLOCK_FLOATS = 1 << 20
# a filter matching at most this many documents has them all scored by stage 4 rather than searched for
# (measured where the two cost the same on SciFact: docs/benchmarks.md, "Filtered search")
EXACT_SUBSET_DOCS = 128


def block_rows(query_tokens: int, row_bytes: int = 0) -> int:
    """Rows a stage gathers at a time: `BLOCK_FLOATS` over the floats (or the bytes, over 4) each row
    takes, whichever is more."""
    return max(BLOCK_FLOATS // max(query_tokens, row_bytes // 4, 1), 1)


PLAID_SETTINGS = ("n_ivf_probe", "centroid_score_threshold", "n_candidates", "n_full_scores")  # what PLAID reads


def resolve_budgets(params: SearchParams | None, k: int, nbits: int = 2) -> SearchParams:
    """PLAID's settings of `params` (None: all defaults) for a search of `k` hits, the unset ones filled in
    (`n_full_scores` stays None when unset, for `full_scores` to size per query). The defaults are ColBERT's
    own k-dependent probes, threshold and candidates (colbert/searcher.py), those of k <= 100 for a k <= 10
    search of an index of `FINE_NBITS` or more (`budget_k`), chosen from the quality/speed curves in
    docs/benchmarks.md ("PLAID search budgets"). Settings of other index types are dropped."""
    params = params or SearchParams()
    tier = budget_k(k, nbits)
    if tier <= 10:
        probe, threshold, candidates = 1, 0.5, 256
    elif tier <= 100:
        probe, threshold, candidates = 2, 0.45, 1024
    else:
        probe, threshold, candidates = 4, 0.4, max(k * 4, 4096)
    return SearchParams(
        n_ivf_probe=params.n_ivf_probe or probe,
        centroid_score_threshold=(
            params.centroid_score_threshold if params.centroid_score_threshold is not None else threshold
        ),
        n_candidates=params.n_candidates or candidates,
        n_full_scores=params.n_full_scores,
    )


def full_scores(params: SearchParams, k: int, query_tokens: int, nbits: int = 2) -> int:
    """How many candidates stage 4 scores exactly: `n_full_scores` if set, else a budget of query tokens x
    documents (`FULL_SCORE_BUDGET`, by `budget_k`) over this query's tokens, at least `max(k, 64)` at k <= 10
    and k above, at most `n_candidates`. Stage 4's cost grows with both factors; and the centroid-only
    scores that pick its documents err more, relative to the score, the fewer tokens a query sums over, so
    short queries get more documents scored (docs/benchmarks.md, "PLAID search budgets")."""
    candidates = params.n_candidates or 0
    if params.n_full_scores:
        return min(params.n_full_scores, candidates) if candidates else params.n_full_scores
    tier = budget_k(k, nbits)
    budget = FULL_SCORE_BUDGET[10] if tier <= 10 else FULL_SCORE_BUDGET[100] * max(1, tier // 100)
    floor = max(k, 64) if k <= 10 else k
    return max(floor, min(candidates, budget // max(query_tokens, 1)))


class PlaidSearchParams(SearchParams):
    """Deprecated: PLAID's settings are `mbret.types.SearchParams`, one type for every index; this name
    still builds one (with a DeprecationWarning) and keeps the old `resolved`/`full_scores` methods."""

    def __post_init__(self) -> None:
        warnings.warn("PlaidSearchParams is deprecated; use mbret.types.SearchParams", DeprecationWarning, stacklevel=3)
        super().__post_init__()

    def resolved(self, k: int, nbits: int = 2) -> SearchParams:
        """`resolve_budgets(self, k, nbits)`."""
        return resolve_budgets(self, k, nbits)

    def full_scores(self, k: int, query_tokens: int, nbits: int = 2) -> int:
        """`full_scores(self, k, query_tokens, nbits)`."""
        return full_scores(self, k, query_tokens, nbits)


def budget_k(k: int, nbits: int) -> int:
    """The k whose default budgets a search of k hits takes: k itself, or 100 for k <= 10 at `FINE_NBITS` or
    more. Residuals of 4 bits score documents so close to exact MaxSim that what the cheaper k <= 10 stages
    2-3 leave out becomes most of the loss; at 2 bits the residuals' own error is the larger part
    (docs/benchmarks.md, "PLAID search budgets")."""
    return 100 if k <= 10 and nbits >= FINE_NBITS else k


# stage 4's default budget: query tokens x documents scored exactly, at k <= 10 and per 100 hits above
FULL_SCORE_BUDGET = {10: 2048, 100: 4096}
FINE_NBITS = 4  # indexes of this many residual bits or more search k <= 10 with the k <= 100 budgets


def probe_candidates(
    state: SearchState, scores: torch.Tensor, n_ivf_probe: int, subset: torch.Tensor | None = None
) -> torch.Tensor:
    """Stage 1: ascending live documents in the inverted lists of each query token's top `n_ivf_probe`
    centroids (`scores` is (query tokens, centroids)); with a filter, only those in `subset` (ascending):
    the documents it drops never reach stages 2-4."""
    probe = torch.unique(scores.topk(min(n_ivf_probe, scores.shape[1]), dim=1).indices)
    parts = []
    for chunk in state.chunks:
        rows = ranges(chunk.ivf_offsets.index_select(0, probe), chunk.ivf_offsets.index_select(0, probe + 1))
        docs = torch.unique(chunk.ivf_docs.index_select(0, rows))
        parts.append(docs.to(torch.int64).add_(chunk.doc_start))
    docs = torch.cat(parts) if len(parts) > 1 else parts[0]
    if state.live is not None:
        docs = docs[state.live.index_select(0, docs)]
    if subset is not None:
        docs = docs[in_sorted(docs, subset)]
    return docs


def in_sorted(values: torch.Tensor, sorted_set: torch.Tensor) -> torch.Tensor:
    """Whether each of `values` is in the ascending `sorted_set`: a binary search each, O(len(values) x
    log(len(sorted_set))), with no buffer the size of the corpus."""
    if not len(sorted_set):
        return torch.zeros(len(values), dtype=torch.bool, device=values.device)
    at = torch.searchsorted(sorted_set, values).clamp_max_(len(sorted_set) - 1)
    return sorted_set.index_select(0, at) == values


def pruned_interaction(
    state: SearchState, scores_t: torch.Tensor, docs: torch.Tensor, kept: torch.Tensor
) -> torch.Tensor:
    """Stage 2: approximate MaxSim of one query over ascending `docs`, counting only the centroids `kept`
    (bool per centroid), each query token's max at least 0. Read from the kept centroids' inverted lists
    (few: pruning keeps the centroids near some query token) and scattered into a (docs, query tokens)
    buffer by each pair's position among `docs`, looked up in the thread's `positions` map."""
    kept_ids = torch.nonzero(kept).flatten()
    best = torch.zeros(len(docs), scores_t.shape[1], device=scores_t.device)
    position = positions(state.num_docs, scores_t.device)
    position.index_copy_(0, docs, torch.arange(1, len(docs) + 1, dtype=torch.int32, device=docs.device))
    try:
        for chunk in state.chunks:
            all_starts = chunk.ivf_offsets.index_select(0, kept_ids)
            all_counts = chunk.ivf_offsets.index_select(0, kept_ids + 1) - all_starts
            for begin, end in segment_blocks(all_counts, block_rows(scores_t.shape[1])):
                starts, counts = all_starts[begin:end], all_counts[begin:end]
                pair_docs = chunk.ivf_docs.index_select(0, ranges(starts, starts + counts))
                where = position.index_select(0, pair_docs.to(torch.int64).add_(chunk.doc_start))
                use = where > 0
                values = scores_t.index_select(0, torch.repeat_interleave(kept_ids[begin:end], counts)[use])
                #  (the (pairs, lq) index is an expanded view: faster than building flat int64 targets)
                target = where[use].to(torch.int64).sub_(1)
                best.scatter_reduce_(0, target[:, None].expand_as(values), values, "amax")
    finally:
        position.index_fill_(0, docs, 0)  # back to all zeros, in O(candidates)
    return best.sum(dim=1)


_scratch = threading.local()


def positions(num_docs: int, device: torch.device) -> torch.Tensor:
    """This thread's map from document number to 1 + its position among a query's candidates (0 for the
    others): int32, one per document, made once per thread and reset after each query in O(candidates), so
    stage 2 finds a pair's candidate with one gather. A binary search over the candidates instead (no map
    at all) made stage 2 slower (docs/benchmarks.md); the map costs 4 bytes per document
    per search thread, allocated when the thread first searches a larger index, not per query."""
    buffer = getattr(_scratch, "positions", None)
    if buffer is None or len(buffer) < num_docs or buffer.device != device:
        with torch.inference_mode(False):  # a normal tensor: usable in and out of inference mode
            buffer = torch.zeros(max(num_docs, 1), dtype=torch.int32, device=device)
        _scratch.positions = buffer
    return buffer


def centroid_interaction(state: SearchState, scores_t: torch.Tensor, docs: torch.Tensor) -> torch.Tensor:
    """Stage 3: approximate MaxSim of one query over ascending `docs` from centroid scores alone, read
    through each document's distinct centroids: their rows of `scores_t` (centroids, query tokens),
    max-reduced per document and query token, summed over query tokens. A document without tokens scores
    0. Gathers the pairs of documents in blocks of `BLOCK_FLOATS`."""
    out = torch.empty(len(docs), device=scores_t.device)
    rows = block_rows(scores_t.shape[1])
    for chunk, begin, _end, local in state.per_chunk(docs):
        all_starts = chunk.doc_code_offsets.index_select(0, local)
        all_counts = chunk.doc_code_offsets.index_select(0, local + 1) - all_starts
        for b, e in segment_blocks(all_counts, rows):
            starts, counts = all_starts[b:e], all_counts[b:e]
            codes = chunk.widen(chunk.doc_codes.index_select(0, ranges(starts, starts + counts)))
            out[begin + b : begin + e] = max_per_segment(scores_t.index_select(0, codes), counts).sum(dim=1)
    return out


def exact_scores(state: SearchState, query: torch.Tensor, scores_t: torch.Tensor, docs: torch.Tensor) -> torch.Tensor:
    """Stage 4: MaxSim over decompressed vectors, without decompressing. A token's similarity with each query
    token is (centroid score + residual product) / norm of the decompressed vector; then a per-document max
    (`max_per_segment`). Tokens are read in storage order, so the memory maps are read forwards. `docs` in
    any order; a document without tokens scores 0."""
    order = torch.argsort(docs)
    ordered = docs[order]
    scores = torch.empty(len(docs), device=scores_t.device)
    rows_per_block = block_rows(scores_t.shape[1], state.residual_bytes)
    for chunk, begin, _end, local in state.per_chunk(ordered):
        all_lengths = chunk.doclens.index_select(0, local)
        all_first = chunk.offsets.index_select(0, local)
        for b, e in segment_blocks(all_lengths, rows_per_block):
            lengths, first = all_lengths[b:e], all_first[b:e]
            rows = ranges(first, first + lengths)
            sims = scores_t.index_select(0, chunk.widen(chunk.codes.index_select(0, rows)))
            packed = chunk.residuals.index_select(0, rows).view(torch.uint8).view(len(rows), state.residual_bytes)
            sims += state.codec.residual_similarities(query, packed)
            sims /= chunk.norms.index_select(0, rows).clamp_min(1e-12)[:, None]
            scores[begin + b : begin + e] = max_per_segment(sims, lengths).sum(dim=1)
    out = torch.empty_like(scores)
    out[order] = scores
    return out


def live_subset(state: SearchState, subset: torch.Tensor) -> torch.Tensor:
    """The documents of an ascending `subset` that this state holds and has not deleted."""
    subset = subset[subset < state.num_docs]
    if state.live is not None:
        subset = subset[state.live.index_select(0, subset)]
    return subset


@torch.inference_mode()
def search_one(
    state: SearchState, query: torch.Tensor, k: int, p: SearchParams, subset: torch.Tensor | None = None
) -> list[tuple[str, float]]:
    """PLAID's four stages for one query (`p` resolved for k): top-k (doc id, score), best first.

    With a filter (`subset`: the ascending live documents it matches), stage 1 drops every other document;
    a subset of at most `EXACT_SUBSET_DOCS` skips stages 1-3 and is scored whole by stage 4, and a larger
    one whose probed lists hold fewer than k of its documents probes more centroids, so a filtered search
    returns k hits whenever k documents match."""
    centroids = state.centroids
    q = query.to(centroids.device).float()
    scores_t = centroids @ q.T  # (K, lq): rows are what stages 2-4 read
    lq = len(q)
    if subset is not None and len(subset) <= EXACT_SUBSET_DOCS:
        if not len(subset):
            return []
        exact = exact_scores(state, q, scores_t, subset)
        top = exact.topk(min(k, len(subset)))
        return [(state.doc_ids[d], s) for d, s in zip(subset[top.indices].tolist(), top.values.tolist())]
    probe = p.n_ivf_probe or 1
    candidates = probe_candidates(state, scores_t.T, probe, subset)
    while subset is not None and len(candidates) < min(k, len(subset)) and probe < len(centroids):
        probe *= 4
        candidates = probe_candidates(state, scores_t.T, probe, subset)
    if not len(candidates):
        return []
    kept = scores_t.amax(dim=1) >= p.centroid_score_threshold
    approx = pruned_interaction(state, scores_t, candidates, kept)
    candidates = candidates[approx.topk(min(p.n_candidates or len(candidates), len(candidates))).indices]
    n_full = full_scores(p, k, lq, state.codec.nbits)
    if n_full < len(candidates):  # nothing to choose when stage 4 takes them all
        candidates = torch.sort(candidates).values
        approx = centroid_interaction(state, scores_t, candidates)
        candidates = candidates[approx.topk(n_full).indices]
    exact = exact_scores(state, q, scores_t, candidates)
    top = exact.topk(min(k, len(candidates)))
    ranked, values = candidates[top.indices].tolist(), top.values.tolist()
    return [(state.doc_ids[d], s) for d, s in zip(ranked, values)]
