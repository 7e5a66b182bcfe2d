"""Token pooling (`--pool-factor`): each document's token vectors clustered to about 1/N of them, recorded
in the manifest and applied to documents added later."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from mbret.data.datasets import load_corpus
from mbret.retrieval import Retriever
from mbret.retrieval.colbert import ColBERTEncoder
from tests.conftest import SCIFACT_MINI

QUERIES = ["vitamin D and bone fractures", "tumour suppressor genes", "antibiotic resistance in bacteria"]


def maxsim(query: torch.Tensor, document: torch.Tensor) -> float:
    return float((query @ document.T).max(dim=1).values.sum())


def test_pooling_divides_tokens_and_keeps_maxsim_close(tiny_model: str) -> None:
    corpus = load_corpus(SCIFACT_MINI / "corpus.jsonl")
    texts = [d["title"] + " " + d["text"] for d in list(corpus.values())[:40]]
    plain = ColBERTEncoder.load(tiny_model, device="cpu")
    queries = plain.encode_queries(QUERIES)
    whole = plain.encode_corpus(texts, show_progress=False)
    for factor in (2, 3, 4):
        pooled = ColBERTEncoder.load(tiny_model, device="cpu", pool_factor=factor).encode_corpus(
            texts, show_progress=False
        )
        for before, after in zip(whole, pooled):
            # the first token is kept, the rest clustered into at most (len - 1) // factor groups
            assert len(after) <= 1 + max((len(before) - 1) // factor, 1)
            assert torch.allclose(after.norm(dim=1), torch.ones(len(after)), atol=1e-4)
        ratio = sum(len(t) for t in pooled) / sum(len(t) for t in whole)
        assert 1 / factor - 0.02 <= ratio <= 1 / factor + 0.05
        # MaxSim moves by at most this much per query token, document by document (measured on this model:
        # at most 0.00004, 0.015 and 0.107 for factors 2, 3 and 4; the bounds leave room for other platforms)
        gaps = [abs(maxsim(q, a) - maxsim(q, b)) / len(q) for q in queries for a, b in zip(whole, pooled, strict=True)]
        assert max(gaps) <= {2: 0.01, 3: 0.04, 4: 0.15}[factor], (factor, max(gaps))


def test_pool_factor_is_recorded_and_applied_on_add(tiny_model: str, tmp_path: Path, cli) -> None:
    corpus = SCIFACT_MINI / "corpus.jsonl"
    rows = corpus.read_text().splitlines()
    (tmp_path / "a.jsonl").write_text("\n".join(rows[:30]) + "\n")
    (tmp_path / "b.jsonl").write_text("\n".join(rows[30:60]) + "\n")
    out = tmp_path / "idx"
    common = ["--model", tiny_model, "--mode", "colbert", "--index-type", "exact"]
    done = cli("index", tmp_path / "a.jsonl", *common, "--pool-factor", "2", "--output", out)
    assert done.code == 0, done.err
    assert json.loads((out / "manifest.json").read_text())["pool_factor"] == 2
    retriever = Retriever.load(out)
    assert isinstance(retriever.encoder, ColBERTEncoder) and retriever.encoder.pool_factor == 2
    pooled_first = retriever.index.num_tokens
    assert cli("index", tmp_path / "b.jsonl", "--output", out, "--add").code == 0
    added = Retriever.load(out).index.num_tokens - pooled_first
    plain = ColBERTEncoder.load(tiny_model, device="cpu")
    second = load_corpus(tmp_path / "b.jsonl")
    unpooled = sum(len(t) for t in plain.encode_corpus([d["title"] + " " + d["text"] for d in second.values()]))
    assert added < 0.6 * unpooled  # the added documents were pooled too
    refused = cli("index", tmp_path / "b.jsonl", "--output", out, "--add", "--pool-factor", "3")
    assert refused.code == 2 and "pools documents by 2" in refused.err
    dense = cli("index", corpus, "--model", tiny_model, "--pool-factor", "2", "--output", tmp_path / "dense")
    assert dense.code == 2 and "applies to mode colbert" in dense.err.replace("--mode", "mode")
    bad = cli("index", corpus, *common, "--pool-factor", "0", "--output", tmp_path / "zero")
    assert bad.code == 2 and "pool-factor: 0" in bad.err.replace("_", "-") and not (tmp_path / "zero").exists()
