"""Fidelity check on real data: PLAID against exact MaxSim on SciFact, ColBERT head over all-MiniLM-L6-v2.

The corpus is encoded once, by the ColBERT run of the SciFact suite (exact MaxSim, index kept); PLAID at
nbits 4 and 2 is built from the same token vectors. PLAID must score NDCG@10 within 0.005 of exact at
nbits=4, 0.01 at nbits=2. Then `mbret report` compares the dense and ColBERT suite runs.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch

from mbret.eval.data import load_dataset
from mbret.eval.runner import evaluate
from mbret.indexes import PlaidIndex
from mbret.retrieval import Retriever

from .conftest import SCIFACT


@pytest.mark.slow
def test_plaid_fidelity_on_scifact(scifact_colbert_suite: Path) -> None:
    dataset = load_dataset(SCIFACT)
    exact = Retriever.load(scifact_colbert_suite / "scifact" / "index", device="cpu")
    assert exact.encoder.document_length == 300  # set by examples/suites/scifact.yaml
    tokens, lengths = exact.index._flat()
    docs = list(torch.split(tokens.float(), lengths.tolist()))
    ids = exact.index.doc_ids
    # eval's own depth (100 hits, PLAID's k<=100 defaults); only NDCG@10 is compared
    options = {"metrics": ["ndcg@10"], "k": 100, "show_progress": False}
    ndcg = {"exact": evaluate(dataset, exact, **options).metrics["ndcg@10"]}
    suite = json.loads((scifact_colbert_suite / "scifact" / "results.json").read_text())
    assert ndcg["exact"] == pytest.approx(suite["metrics"]["ndcg@10"], abs=1e-6)  # the saved index is the run's
    for nbits in (4, 2):
        plaid = PlaidIndex(exact.encoder.dimension, nbits=nbits)
        plaid.add(ids, docs)
        result = evaluate(dataset, Retriever(encoder=exact.encoder, index=plaid), **options)
        ndcg[f"plaid{nbits}"] = result.metrics["ndcg@10"]
    print(ndcg)
    assert ndcg["exact"] > 0.6, ndcg  # the untrained ColBERT head over MiniLM is a real retriever
    assert abs(ndcg["plaid4"] - ndcg["exact"]) <= 0.005, ndcg
    assert abs(ndcg["plaid2"] - ndcg["exact"]) <= 0.01, ndcg


@pytest.mark.slow
def test_report_on_the_scifact_suites(scifact_dense_suite: Path, scifact_colbert_suite: Path, cli, tmp_path) -> None:
    result = cli("report", scifact_dense_suite, scifact_colbert_suite, "--out", tmp_path / "report")
    assert result.code == 0, result.err
    md = (tmp_path / "report" / "report.md").read_text()
    dense = json.loads((scifact_dense_suite / "results.json").read_text())["datasets"]["scifact"]["metrics"]
    colbert = json.loads((scifact_colbert_suite / "results.json").read_text())["datasets"]["scifact"]["metrics"]
    row = next(line for line in md.splitlines() if line.startswith("| SciFact |"))
    assert row == f"| SciFact | {dense['ndcg@10']:.4f} | {colbert['ndcg@10']:.4f} | 0.5700 | 0.7300 |"
    png = (tmp_path / "report" / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24])[0] >= 500
