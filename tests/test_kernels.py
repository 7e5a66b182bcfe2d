"""The tensor kernels both ColBERT indexes share, against their plain definitions."""

from __future__ import annotations

import pytest
import torch

from mbret.indexes.kernels import max_per_segment, ranges, segment_blocks
from mbret.indexes.plaid import ResidualCodec


@pytest.mark.parametrize("columns", [1, 5, 9, 15, 16, 23, 40])
def test_max_per_segment_is_each_segments_column_max(columns: int) -> None:
    """Narrow (short queries) and wide inputs take different reductions; both give each segment's column
    max, negative maxima included, and 0 for an empty segment, first, last or between."""
    g = torch.Generator().manual_seed(columns)
    counts = torch.randint(0, 7, (40,), generator=g)
    counts[0] = counts[17] = counts[-1] = 0
    values = torch.randn(int(counts.sum()), columns, generator=g) - 2.0  # mostly negative
    got = max_per_segment(values, counts)
    start = 0
    for i, n in enumerate(counts.tolist()):
        want = values[start : start + n].amax(dim=0) if n else torch.zeros(columns)
        assert torch.equal(got[i], want), i
        start += n
    assert max_per_segment(torch.zeros(0, columns), torch.zeros(0, dtype=torch.int64)).shape == (0, columns)


def test_segment_blocks_cover_every_segment_in_order_within_the_bound() -> None:
    g = torch.Generator().manual_seed(0)
    counts = torch.randint(0, 30, (200,), generator=g)
    counts[50] = 100  # longer than a block: alone
    for max_rows in (1, 25, 64, 10_000):
        blocks = segment_blocks(counts, max_rows)
        assert [b for b, _ in blocks] == [0] + [e for _, e in blocks[:-1]] and blocks[-1][1] == len(counts)
        for begin, end in blocks:
            assert end > begin and (int(counts[begin:end].sum()) <= max_rows or end == begin + 1)
    assert segment_blocks(counts, 10_000) == [(0, len(counts))]
    assert segment_blocks(torch.zeros(0, dtype=torch.int64), 8) == []
    assert ranges(torch.tensor([3, 10]), torch.tensor([5, 10])).tolist() == [3, 4]


def test_assign_picks_the_centroid_of_largest_inner_product() -> None:
    g = torch.Generator().manual_seed(0)
    centroids = torch.nn.functional.normalize(torch.randn(300, 32, generator=g), dim=1)
    vectors = torch.randn(5000, 32, generator=g)
    assert torch.equal(ResidualCodec.assign(centroids, vectors), (vectors @ centroids.T).argmax(dim=1))
    assert torch.equal(
        ResidualCodec.assign(centroids, vectors.half()), (vectors.half().float() @ centroids.T).argmax(dim=1)
    )
    assert ResidualCodec.assign(centroids, torch.zeros(0, 32)).shape == (0,)


def test_a_vector_with_no_nearest_centroid_is_an_error_not_a_code() -> None:
    from mbret.errors import MbretError

    centroids = torch.nn.functional.normalize(torch.randn(8, 16), dim=1)
    vectors = torch.randn(5, 16)
    vectors[3, 2] = float("nan")
    with pytest.raises(MbretError, match="token vector 3"):
        ResidualCodec.assign(centroids, vectors)


def test_an_empty_query_scores_every_document_zero() -> None:
    """A query with no token vectors (all cut away): each stage answers zeros, as before blocks."""
    from mbret.indexes import PlaidIndex
    from mbret.indexes.plaid.search import centroid_interaction, exact_scores

    g = torch.Generator().manual_seed(1)
    docs = [torch.nn.functional.normalize(torch.randn(12, 32, generator=g), dim=1) for _ in range(30)]
    index = PlaidIndex(32, nbits=2)
    index.add([str(i) for i in range(30)], docs)
    state = index.search_state()
    query = torch.zeros(0, 32)
    scores_t = index.codec.centroids @ query.T
    docs_asked = torch.tensor([0, 5, 29])
    assert exact_scores(state, query, scores_t, docs_asked).tolist() == [0.0, 0.0, 0.0]
    assert centroid_interaction(state, scores_t, docs_asked).tolist() == [0.0, 0.0, 0.0]
