"""Fidelity check on real data: PLAID against exact MaxSim on SciFact, ColBERT head over all-MiniLM-L6-v2.

The corpus is encoded once (a few minutes on 2 cores); exact MaxSim and PLAID at nbits 4 and 2 are built
from the same token vectors. PLAID must score NDCG@10 within 0.005 of exact at nbits=4, 0.01 at nbits=2.
"""

from __future__ import annotations

import pytest
import torch

from mbret.eval.data import load_dataset
from mbret.eval.runner import evaluate
from mbret.indexes import ExactMaxSimIndex, PlaidIndex
from mbret.retrieval import Retriever
from mbret.retrieval.colbert import ColBERTEncoder

from .conftest import SCIFACT


@pytest.mark.slow
def test_plaid_fidelity_on_scifact() -> None:
    dataset = load_dataset(SCIFACT)
    encoder = ColBERTEncoder.load("minilm", device="cpu")
    exact = Retriever(encoder=encoder, index=ExactMaxSimIndex(encoder.dimension))
    exact.add(dataset.corpus, show_progress=False)
    tokens, lengths = exact.index._flat()
    docs = list(torch.split(tokens.float(), lengths.tolist()))
    # eval's own depth (100 hits, PLAID's k<=100 defaults); only NDCG@10 is compared
    options = {"metrics": ["ndcg@10"], "k": 100, "show_progress": False}
    ndcg = {"exact": evaluate(dataset, exact, **options).metrics["ndcg@10"]}
    for nbits in (4, 2):
        plaid = PlaidIndex(encoder.dimension, nbits=nbits)
        plaid.add(list(dataset.corpus), docs)
        result = evaluate(dataset, Retriever(encoder=encoder, index=plaid), **options)
        ndcg[f"plaid{nbits}"] = result.metrics["ndcg@10"]
    print(ndcg)
    assert ndcg["exact"] > 0.6, ndcg  # the untrained ColBERT head over MiniLM is a real retriever
    assert abs(ndcg["plaid4"] - ndcg["exact"]) <= 0.005, ndcg
    assert abs(ndcg["plaid2"] - ndcg["exact"]) <= 0.01, ndcg
