"""Tensor kernels both ColBERT indexes (exact MaxSim and PLAID) share: segment reductions and row ranges.

Plain torch, no custom ops: each is a handful of vectorised calls, measured faster on CPU than the obvious
alternatives (noted per function), and runs unchanged on an accelerator.
"""

from __future__ import annotations

import torch


def max_per_segment(values: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """(segments, lq) column-wise max of consecutive row segments of values (rows, lq) with the given row
    counts; an empty segment gives 0. No padded copy: on CPU, with fewer than `NARROW_COLUMNS` columns (a
    short query's tokens), `torch.segment_reduce`; otherwise one scatter through an expanded (not copied)
    owner index into a -inf buffer. Torch's CPU scatter-reduce has its fast path only from 16 columns and
    `segment_reduce` is the slower of the two from there; `include_self=False` would first fill the rows
    through a generic scatter (docs/benchmarks.md, "PLAID kernels"). Both beat
    `embedding_bag(mode="max")`, which has no fast CPU kernel."""
    if not len(counts):
        return values.new_zeros(0, values.shape[1])
    if values.shape[1] < NARROW_COLUMNS and values.device.type == "cpu":
        best = torch.segment_reduce(values, "max", lengths=counts, axis=0)  # checks counts against rows
    else:
        owner = torch.repeat_interleave(torch.arange(len(counts), device=values.device), counts)
        best = torch.full((len(counts), values.shape[1]), float("-inf"), device=values.device, dtype=values.dtype)
        best.scatter_reduce_(0, owner[:, None].expand_as(values), values, "amax", include_self=True)
    return best.masked_fill_((counts == 0)[:, None], 0.0)


NARROW_COLUMNS = 16  # below this many columns `max_per_segment` takes `torch.segment_reduce` on CPU


def token_groups(tensors: list[torch.Tensor], max_tokens: int) -> list[list[torch.Tensor]]:
    """Consecutive documents in groups of at most `max_tokens` token vectors (a longer one goes alone)."""
    groups: list[list[torch.Tensor]] = [[]]
    tokens = 0
    for t in tensors:
        if groups[-1] and tokens + len(t) > max_tokens:
            groups.append([])
            tokens = 0
        groups[-1].append(t)
        tokens += len(t)
    return groups


def segment_blocks(counts: torch.Tensor, max_rows: int) -> list[tuple[int, int]]:
    """Consecutive [begin, end) ranges of segments (with `counts` rows each) holding at most `max_rows` rows
    each (a longer segment alone): a stage's work in blocks whose temporaries stay bounded. The cumulative
    counts are read on the host once (one device sync, not one per block)."""
    if not len(counts):
        return []
    ends = torch.cumsum(counts, 0).cpu()
    if int(ends[-1]) <= max_rows:
        return [(0, len(counts))]
    out, begin, base = [], 0, 0
    while begin < len(counts):
        end = max(int(torch.searchsorted(ends, base + max_rows, right=True)), begin + 1)
        out.append((begin, end))
        base, begin = int(ends[end - 1]), end
    return out


def ranges(starts: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
    """Concatenation of arange(start, end) for each pair, without a Python loop."""
    lengths = ends - starts
    total = int(lengths.sum())
    offsets = torch.repeat_interleave(starts - torch.cumsum(lengths, 0) + lengths, lengths)
    return offsets + torch.arange(total, device=starts.device)


def as_words(packed: torch.Tensor) -> torch.Tensor:
    """View (n, b) packed bytes as (n, b/8) int64 words when b allows: a row gather then copies a few
    words instead of b single bytes."""
    if packed.ndim == 2 and packed.shape[1] % 8 == 0 and packed.is_contiguous():
        return packed.view(torch.int64)
    return packed
