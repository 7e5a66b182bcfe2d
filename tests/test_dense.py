"""The dense encoder matches plain sentence-transformers, applies prompts, and round-trips its format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from mbret.data.datasets import doc_text, load_corpus
from mbret.errors import MbretError
from mbret.retrieval import DenseEncoder
from mbret.retrieval.backbone import resolve_model_path

from .conftest import SCIFACT_MINI


@pytest.fixture(scope="module")
def minilm() -> DenseEncoder:
    return DenseEncoder.load("minilm", device="cpu")


def test_matches_sentence_transformers_encode(minilm: DenseEncoder) -> None:
    texts = [doc_text(d) for d in list(load_corpus(SCIFACT_MINI).values())[:48]] + ["short", "a b c"]
    ours = minilm.encode_corpus(texts, batch_size=16, show_progress=False)
    plain = SentenceTransformer(resolve_model_path("minilm"), device="cpu").encode(
        texts, batch_size=16, normalize_embeddings=True
    )
    assert ours.shape == (50, 384) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, plain, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_order_is_input_order_whatever_the_lengths(tiny_model: str) -> None:
    encoder = DenseEncoder.load(tiny_model, device="cpu")
    texts = ["cell " * n for n in (1, 40, 3, 25, 7)]
    together = encoder.encode(texts, batch_size=2)
    one_by_one = np.stack([encoder.encode([t])[0] for t in texts])
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)


def test_prompts_change_embeddings_and_are_saved(tiny_model: str, tmp_path: Path) -> None:
    encoder = DenseEncoder.load(tiny_model, device="cpu", query_prompt="query: ", document_prompt="passage: ")
    plain = DenseEncoder.load(tiny_model, device="cpu")
    q = encoder.encode_queries(["brain activity"])
    assert not np.allclose(q, plain.encode_queries(["brain activity"]))
    np.testing.assert_allclose(q, plain.encode(["query: brain activity"]), atol=1e-6)
    encoder.save(tmp_path / "st")
    reloaded = DenseEncoder.load(str(tmp_path / "st"), device="cpu")
    assert (reloaded.query_prompt, reloaded.document_prompt) == ("query: ", "passage: ")
    np.testing.assert_allclose(reloaded.encode_queries(["brain activity"]), q, atol=1e-6)
    st = SentenceTransformer(str(tmp_path / "st"), device="cpu")  # plain sentence-transformers reads it
    np.testing.assert_allclose(st.encode_query(["brain activity"]), q, atol=1e-5)


def test_document_length_truncates(tiny_model: str) -> None:
    short = DenseEncoder.load(tiny_model, device="cpu", document_length=8)
    long = DenseEncoder.load(tiny_model, device="cpu")
    assert short.document_length == 8 and long.document_length == 8192
    text = "protein " * 50
    assert not np.allclose(short.encode([text]), long.encode([text]))
    np.testing.assert_allclose(short.encode([text]), short.encode([text + " virus " * 30]), atol=1e-6)
    with pytest.raises(MbretError, match="document_length: 9000"):
        DenseEncoder.load(tiny_model, device="cpu", document_length=9000)


def test_minilm_keeps_its_own_default_length(minilm: DenseEncoder) -> None:
    assert minilm.document_length == 256 and minilm.dimension == 384


def test_bad_batch_size(tiny_model: str) -> None:
    with pytest.raises(MbretError, match="batch_size: 0"):
        DenseEncoder.load(tiny_model, device="cpu").encode(["x"], batch_size=0)


def test_unloadable_model_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(MbretError, match="could not load"):
        DenseEncoder.load(str(tmp_path / "empty"), device="cpu")


def test_token_budget_batches_cover_everything_within_limits() -> None:
    from mbret.retrieval.dense import token_budget_batches

    lengths = np.array([5, 300, 40, 40, 8000, 12, 256, 256, 256, 1])
    batches = list(token_budget_batches(lengths, batch_size=3, max_tokens=1024))
    assert sorted(int(i) for b in batches for i in b) == list(range(10))
    assert [int(i) for i in batches[0]] == [4]  # a text over budget goes alone
    for batch in batches:
        assert len(batch) <= 3
        assert len(batch) == 1 or len(batch) * lengths[batch].max() <= 1024
        assert lengths[batch[0]] == lengths[batch].max()  # longest first: padding is to the first


def test_token_budget_does_not_change_embeddings(minilm: DenseEncoder) -> None:
    texts = [doc_text(d) for d in list(load_corpus(SCIFACT_MINI).values())[:24]]
    small = minilm.encode(texts, batch_size=64, max_tokens=300)
    large = minilm.encode(texts, batch_size=64, max_tokens=100_000)
    np.testing.assert_allclose(small, large, atol=1e-5)
